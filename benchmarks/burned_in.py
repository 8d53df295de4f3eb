"""Burned-in text detection (`export --format dicom`): true and false positive rates on real images.

Real images: every DICOM file pydicom's test data and pydicom-data hold (and nibabel's, when installed)
that decodes here, one per distinct image (the same image in another encoding or bit depth counts once),
rendered as export renders them. The ones that carry burned-in text (ultrasound annotations, the SMPTE
pattern's captions) are named in TEXT, after looking at each; the others are the negatives. Each file is
scanned as the export scans it (`burned_in.scan`: every frame up to the budget, else an evenly spaced sample).

Generated cases: a line of text ("DOE^JOHN 1961-02-03 ST MARY") drawn with Pillow onto the first frame of
every real image without text (shorter side of 96 pixels or more), in ten colours and greys, at five places
(four corners and the centre), in Pillow's FreeType font (size: the shorter side / 40, at least 10) and
its bitmap font. Cases where the text differs from the image under it by less than 40 grey levels (black
on black) are invisible and not counted. Then one frame of a multi-frame stack gets the text: the first,
the middle, the last, or one a sample of 32 does not include.

Printed: per real file whether it was flagged, the rates, and the generated cases' rate by colour, place,
font and frame. `--ocr` also reads the frames with tesseract (when installed) and prints its rates.

Usage: python benchmarks/burned_in.py [--ocr] [--every N]
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import sys
import time
import warnings

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from medloom.export.burned_in import MAX_FRAMES, frames_to_check, ocr_words, scan, tesseract, text_box
from medloom.sources.dicom import NOT_IMAGES, display_frame

TEXT = (
    "OBXXXX1A",
    "US1_",
    "examples_rgb_color",
    "examples_palette",
    "examples_jpeg2k",
    "color3d_jpeg_baseline",
    "examples_ybr_color",
    "gdcm-US-ALOKA-16",
    "mlut_18",
    "vlut_04",
)
LINE = "DOE^JOHN 1961-02-03 ST MARY"
COLOURS = {
    "white": (255, 255, 255),
    "grey 180": (180, 180, 180),
    "grey 128": (128, 128, 128),
    "black": (0, 0, 0),
    "yellow": (255, 255, 0),
    "red": (255, 0, 0),
    "green": (0, 220, 0),
    "cyan": (0, 255, 255),
    "blue": (40, 80, 255),
    "orange": (255, 150, 0),
}
PLACES = ("top left", "top right", "centre", "bottom left", "bottom right")


def look(frame: np.ndarray) -> tuple:
    """What a frame looks like at 16 x 16 and 8 grey levels: the same image in another encoding or bit depth
    (pydicom holds many) looks the same."""
    small = Image.fromarray(frame).convert("L").resize((16, 16), Image.BOX)
    return frame.shape[:2], (np.asarray(small) // 32).tobytes()


def real_files() -> list[tuple[str, list[np.ndarray]]]:
    """(name, rendered frames) of every distinct decodable real DICOM image found."""
    import pydicom
    import pydicom.data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = sorted(set(pydicom.data.get_testdata_files("*")))
        try:
            import nibabel

            root = os.path.dirname(nibabel.__file__)
            paths += sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".dcm"))
        except ImportError:
            pass
        seen, out = set(), []
        for path in paths:
            try:
                ds = pydicom.dcmread(path)
                if str(ds.get("SOPClassUID", "")) in NOT_IMAGES or "PixelData" not in ds:
                    continue
                arr = ds.pixel_array
                n = int(ds.get("NumberOfFrames", 1) or 1)
                frames = [display_frame(ds, f)[0] for f in (arr if n > 1 else arr[None])]
            except Exception:  # no decoder here, truncated, not an image
                continue
            digest = look(frames[0])
            if digest in seen or min(frames[0].shape[:2]) < 32:
                continue
            seen.add(digest)
            name = os.path.basename(path) if "nibabel" not in path else "nibabel/" + os.path.relpath(path, root)
            out.append((name, frames))
    return out


def draw(frame: np.ndarray, colour: tuple[int, int, int], place: str, font) -> tuple[np.ndarray, bool]:
    """The frame with the line drawn on it, and whether the line is visible (40 grey levels or more)."""
    im = Image.fromarray(frame).convert("RGB")
    d = ImageDraw.Draw(im)
    left, top, right, bottom = d.textbbox((0, 0), LINE, font=font)
    w, h = im.size
    tw, th, m = right - left, bottom - top, int(0.03 * min(w, h))
    x = {"top left": m, "bottom left": m, "centre": (w - tw) // 2}.get(place, w - tw - m)
    y = {"top left": m, "top right": m, "centre": (h - th) // 2}.get(place, h - th - m)
    d.text((max(0, x) - left, y - top), LINE, fill=colour, font=font)
    out = np.asarray(im)
    if frame.ndim == 2 and len(set(colour)) == 1:
        out = np.ascontiguousarray(out[..., 0])
    base = frame if out.ndim == frame.ndim else np.repeat(frame[..., None], 3, axis=2)
    diff = np.abs(out.astype(int) - base.astype(int)).reshape(h, w, -1).max(axis=2)
    return out, bool((diff > 0).any() and np.percentile(diff[diff > 0], 90) >= 40)


def one_changed(frames: list[np.ndarray], index: int, image: np.ndarray):
    """The frames, frame `index` replaced by `image`, as `scan` renders them."""
    return lambda i: image if i == index else frames[i]


def rate(hits: list[bool]) -> str:
    return f"{sum(hits)}/{len(hits)} = {sum(hits) / max(1, len(hits)):.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ocr", action="store_true", help="also measure tesseract OCR (slow; needs tesseract)")
    ap.add_argument("--every", type=int, default=1, help="generated cases: take every N-th (1: all)")
    args = ap.parse_args()
    program = tesseract() if args.ocr else None
    if args.ocr and not program:
        sys.exit("--ocr: tesseract is not installed (apt-get install tesseract-ocr)")
    started = time.perf_counter()
    files = real_files()
    print(
        f"real DICOM images: {len(files)} distinct, {sum(n.startswith(TEXT) for n, _ in files)} with burned-in "
        f"text; frames checked per file: all up to {MAX_FRAMES}, else {MAX_FRAMES} evenly spaced"
    )
    found = {True: [], False: []}
    frames_flagged, frames_seen, seconds = [], 0, []
    ocr_found, either = {True: [], False: []}, {True: [], False: []}
    for name, frames in files:
        text = name.startswith(TEXT)
        t0 = time.perf_counter()
        hit = scan(len(frames), frames.__getitem__)
        seconds.append(
            (time.perf_counter() - t0)
            / (frames_to_check(len(frames)).index(hit.frame) + 1 if hit else len(frames_to_check(len(frames))))
        )
        found[text].append(hit is not None)
        if not text:  # per frame too: how often a frame alone would flag a file
            checked = frames_to_check(len(frames))
            frames_seen += len(checked)
            frames_flagged += [f"{name}:{i}" for i in checked if text_box(frames[i]) is not None]
        if program:
            ocr_found[text].append(any(ocr_words(frames[i], program) >= 2 for i in frames_to_check(len(frames), 4)))
            either[text].append(ocr_found[text][-1] or hit is not None)
        print(
            f"  {'text   ' if text else 'no text'} {'FLAGGED' if hit else 'clear  '} {name} ({len(frames)} frame(s)"
            f"{', ' + hit.reason() if hit else ''})"
        )
    print(
        f"real, with text: {rate(found[True])} files found; without text: {rate(found[False])} files flagged, "
        f"{len(frames_flagged)}/{frames_seen} frames {frames_flagged or ''}; "
        f"{1000 * float(np.mean(seconds)):.0f} ms a frame on average"
    )
    if program:
        print(
            f"real, OCR alone: with text {rate(ocr_found[True])} found; without text {rate(ocr_found[False])} flagged; "
            f"heuristic or OCR: {rate(either[True])} found, {rate(either[False])} flagged"
        )

    negatives = [(n, f) for n, f in files if not n.startswith(TEXT) and min(f[0].shape[:2]) >= 96]
    by = collections.defaultdict(list)
    ocr_by = collections.defaultdict(list)
    invisible = 0
    cases = itertools.product(negatives, COLOURS.items(), PLACES, ("FreeType", "bitmap"))
    for k, ((_name, frames), (colour_name, colour), place, font_name) in enumerate(cases):
        if k % args.every:
            continue
        frame = frames[0]
        size = max(10, round(min(frame.shape[:2]) / 40))
        font = ImageFont.load_default(size) if font_name == "FreeType" else ImageFont.load_default_imagefont()
        image, visible = draw(frame, colour, place, font)
        if not visible:
            invisible += 1
            continue
        hit = text_box(image) is not None
        for key in ("all", colour_name, place, font_name):
            by[key].append(hit)
        if program and k % 10 == 0:
            read = ocr_words(image, program) >= 2
            ocr_by["all"].append(read)
            ocr_by["either"].append(read or hit)
            ocr_by["heuristic"].append(hit)
    print(f"generated on {len(negatives)} real images without text ({invisible} invisible cases left out): {rate(by['all'])}")
    for group in (COLOURS, PLACES, ("FreeType", "bitmap")):
        print("  " + "; ".join(f"{key} {sum(by[key]) / max(1, len(by[key])):.2f}" for key in group))
    if program:
        print(
            f"generated, every 10th case: OCR alone {rate(ocr_by['all'])}, heuristic {rate(ocr_by['heuristic'])}, "
            f"either {rate(ocr_by['either'])}"
        )

    stacks = [(n, f) for n, f in files if not n.startswith(TEXT) and len(f) > 1 and min(f[0].shape[:2]) >= 64]
    long = max(stacks, key=lambda s: s[1][0].size)
    stacks.append(
        (f"{long[0]} x{-(-3 * MAX_FRAMES // len(long[1]))}", long[1] * -(-3 * MAX_FRAMES // len(long[1])))
    )  # longer than the budget
    font = ImageFont.load_default_imagefont()
    for name, frames in stacks:
        n = len(frames)
        checked = set(frames_to_check(n))
        unsampled = next((i for i in range(n) if i not in checked), None)
        row = []
        for label, index in (("first", 0), ("middle", n // 2), ("last", n - 1), ("unsampled", unsampled)):
            if index is None:
                continue
            image, _ = draw(frames[index], (255, 255, 255), "top left", font)
            hit = scan(n, one_changed(frames, index, image))
            row.append(
                f"{label} (frame {index}{'' if index in checked else ', not sampled'}) "
                f"{'found' if hit and hit.frame == index else 'missed'}"
            )
        print(f"text on one frame of {name} ({n} frames): " + "; ".join(row))
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
