"""Near-duplicate detection: precision, recall and time, measured on generated originals and altered copies.

Originals are 128x128 blends of two random crops from different scikit-image sample photographs (so every
original is a distinct natural-looking image). Each original gets five copies: JPEG re-encoded at quality
60, resized to half, cropped by 5% (2.5% off each side), brightened by 10%, and flipped left-right (a
control: a mirror image is a different image and must not be called a duplicate). Every image's perceptual
hash is computed exactly as ingest computes it.

Printed: recall per alteration (the copy lands in its original's group) and pair precision (pairs the
index reports whose two images share an original and neither is the flipped control), for several
Hamming thresholds; then the time of `duplicate_groups` for 10,000 and 100,000 images, its ratio against
n log n growth, and the all-pairs baseline on the small size, with the share of its pairs the index finds.

Usage: python benchmarks/dedup.py [--small 10000] [--large 100000] [--near 4,6,8,10]
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import time

import numpy as np
import skimage.data
from PIL import Image, ImageEnhance

from medloom.curate.neighbours import all_pairs, duplicate_groups, near_pairs
from medloom.imaging import image_facts

KINDS = ("original", "jpeg q60", "half size", "5% crop", "brightness +10%", "flipped (control)")
SAMPLES = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "camera",
    "coins",
    "moon",
    "page",
    "immunohistochemistry",
    "retina",
    "hubble_deep_field",
    "brick",
    "grass",
    "gravel",
    "cell",
    "human_mitosis",
    "skin",
    "motorcycle_left",
)


def photos() -> list[np.ndarray]:
    out = []
    for name in SAMPLES:
        try:
            img = getattr(skimage.data, name)()
        except Exception:  # a sample that needs a download (pooch) is skipped
            continue
        img = np.asarray(img)
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        out.append(np.asarray(Image.fromarray(img[..., :3].astype(np.uint8)).convert("RGB")))
    return out


def original(rng: np.random.Generator, sources: list[np.ndarray]) -> Image.Image:
    a, b = rng.choice(len(sources), 2, replace=False)

    def crop(img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        side = int(min(h, w) * rng.uniform(0.25, 0.6))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        patch = Image.fromarray(img[y : y + side, x : x + side]).resize((128, 128), Image.BILINEAR)
        return np.rot90(np.asarray(patch, np.float32), rng.integers(0, 4))

    alpha = rng.uniform(0.3, 0.7)
    mixed = alpha * crop(sources[a]) + (1 - alpha) * crop(sources[b])
    return Image.fromarray(np.clip(mixed * rng.uniform(0.8, 1.2, 3), 0, 255).astype(np.uint8))


def copies(im: Image.Image) -> list[Image.Image]:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=60)
    w, h = im.size
    dx, dy = round(w * 0.025), round(h * 0.025)
    return [
        im,
        Image.open(io.BytesIO(buf.getvalue())).convert("RGB"),
        im.resize((w // 2, h // 2), Image.LANCZOS),
        im.crop((dx, dy, w - dx, h - dy)),
        ImageEnhance.Brightness(im).enhance(1.1),
        im.transpose(Image.FLIP_LEFT_RIGHT),
    ]


def corpus(n: int, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Pixel hashes, perceptual hashes, original index and kind index for about n images."""
    rng = np.random.default_rng(seed)
    sources = photos()
    pixel, phash, origin, kind = [], [], [], []
    for i in range(math.ceil(n / len(KINDS))):
        for k, im in enumerate(copies(original(rng, sources))):
            facts = image_facts(im)
            pixel.append(facts.pixel_hash)
            phash.append(facts.phash)
            origin.append(i)
            kind.append(k)
    return pixel[:n], np.array(phash[:n], np.uint64), np.array(origin[:n]), np.array(kind[:n])


def quality(phash: np.ndarray, origin: np.ndarray, kind: np.ndarray, pixel: list[str], near: int) -> dict:
    groups = duplicate_groups(pixel, phash, near)
    first = {}
    for i in np.nonzero(kind == 0)[0]:
        first[origin[i]] = groups[i]
    recall = {
        KINDS[k]: float(np.mean([groups[i] == first[origin[i]] for i in np.nonzero(kind == k)[0]])) for k in range(1, len(KINDS))
    }
    pairs = near_pairs(phash, near)
    a, b = pairs[:, 0], pairs[:, 1]
    true = (origin[a] == origin[b]) & (kind[a] != 5) & (kind[b] != 5)
    target = np.isin(kind[a], (1, 2)) | np.isin(kind[b], (1, 2))  # pairs with a re-encoded or resized copy
    return {
        "recall": recall,
        "precision": float(true.mean()) if len(true) else 1.0,
        "precision_target": float(true[target].mean()) if target.any() else 1.0,
        "pairs": len(pairs),
    }


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--large", type=int, default=100_000)
    ap.add_argument("--near", default="4,6,8,10")
    args = ap.parse_args()
    thresholds = [int(x) for x in args.near.split(",")]
    print(f"generating {args.small} and {args.large} images ...", file=sys.stderr)
    small = corpus(args.small, seed=1)
    large = corpus(args.large, seed=2)

    pixel, phash, origin, kind = small
    print(f"quality on {len(phash)} images ({len(phash) // len(KINDS)} originals, each with 5 copies)")
    print(f"{'near':>5} {'pairs':>7} {'precision':>10} {'prec(jpeg,half)':>16} " + " ".join(f"{k[:14]:>15}" for k in KINDS[1:]))
    for t in thresholds:
        q = quality(phash, origin, kind, pixel, t)
        print(
            f"{t:>5} {q['pairs']:>7} {q['precision']:>10.4f} {q['precision_target']:>16.4f} "
            + " ".join(f"{q['recall'][k]:>15.4f}" for k in KINDS[1:])
        )

    near = thresholds[len(thresholds) // 2 - 1] if len(thresholds) > 1 else thresholds[0]
    near = 6 if 6 in thresholds else near
    t_small, _ = timed(duplicate_groups, small[0], small[1], near)
    t_large, _ = timed(duplicate_groups, large[0], large[1], near)
    t_all, brute = timed(all_pairs, small[1], near)
    indexed = {tuple(p) for p in near_pairs(small[1], near)}
    exact = {tuple(p) for p in brute}
    found = len(indexed & exact) / max(len(exact), 1)
    n1, n2 = len(small[1]), len(large[1])
    nlogn = (n2 * math.log(n2)) / (n1 * math.log(n1))
    print(f"\ntime of duplicate_groups (exact + near, t={near}):")
    print(
        f"  {n1:>7} images: {t_small:8.3f} s   all-pairs baseline: {t_all:8.3f} s "
        f"({t_all / t_small:.1f}x slower); the index finds {found:.4f} of the all-pairs answer's "
        f"{len(exact)} pairs and nothing else: {indexed <= exact}"
    )
    print(f"  {n2:>7} images: {t_large:8.3f} s")
    print(f"  ratio {t_large / t_small:.1f}x for {n2 / n1:.0f}x the images; n log n would be {nlogn:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
