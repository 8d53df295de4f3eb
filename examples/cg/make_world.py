"""A small world for compositional generalization, where the MAT triplet is visible in the pixels.

- Modality is the rendering style: X-ray (bright structures on black, soft edges), CT (a grey body disc,
  sharp edges, grain and horizontal streaks), MRI (smooth bright tissue on black with a dark rim).
- Anatomical area is the shape: brain (one large oval), lung (two tall ovals side by side).
- Task is the labelled attribute: cancer (a "tumour": a dense round blob inside the organ, or "normal") and
  disease (an "oedema": a patch of fine stripes inside the organ, or "normal").

Each of the 12 (modality, area, task) combinations is one class-folder source of `--per-class` images per
label, and `recipe.yaml` ingests them with their triplets. Usage: python make_world.py OUT [--per-class N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

MODALITIES = ("X-ray", "CT", "MRI")
AREAS = ("brain", "lung")
TASKS = {"cancer": ("tumour", "normal"), "disease": ("oedema", "normal")}
SIZE = 128


def organs(area: str, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """The organ's ovals (boxes), jittered."""
    j = lambda: int(rng.integers(-6, 7))  # noqa: E731
    if area == "brain":
        return [(22 + j(), 18 + j(), 106 + j(), 112 + j())]
    return [(16 + j(), 20 + j(), 58 + j(), 112 + j()), (70 + j(), 20 + j(), 112 + j(), 112 + j())]


def render(modality: str, area: str, finding: str, rng: np.random.Generator) -> Image.Image:
    background = {"X-ray": 0, "CT": 0, "MRI": 0}[modality]
    im = Image.new("L", (SIZE, SIZE), background)
    d = ImageDraw.Draw(im)
    if modality == "CT":
        d.ellipse([4, 4, SIZE - 4, SIZE - 4], fill=90)  # the body outline around the organ
    tissue = {"X-ray": 200, "CT": 150, "MRI": 230}[modality]
    boxes = organs(area, rng)
    for box in boxes:
        d.ellipse(box, fill=tissue)
        if modality == "MRI":
            d.ellipse(box, outline=40, width=5)
    x0, y0, x1, y1 = boxes[int(rng.integers(len(boxes)))]
    cx, cy = int(rng.integers(x0 + 14, x1 - 14)), int(rng.integers(y0 + 18, y1 - 18))
    if finding == "tumour":
        r = int(rng.integers(7, 12))
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill={"X-ray": 255, "CT": 250, "MRI": 20}[modality])
    elif finding == "oedema":
        for k in range(-12, 13, 4):
            d.line([(cx - 12, cy + k), (cx + 12, cy + k)], fill={"X-ray": 90, "CT": 60, "MRI": 120}[modality], width=2)
    a = np.asarray(im, np.float32)
    if modality == "X-ray":
        a = np.asarray(Image.fromarray(a.astype(np.uint8)).filter(ImageFilter.GaussianBlur(2.5)), np.float32)
        a += rng.normal(0, 4, a.shape)
    elif modality == "CT":
        a += rng.normal(0, 14, a.shape)
        for row in rng.integers(0, SIZE, 3):
            a[row] += 40
    else:
        a = np.asarray(Image.fromarray(a.astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.2)), np.float32)
        a += rng.normal(0, 3, a.shape)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


RECIPE_HEAD = """\
# A generated world for `medloom cg`: modality, area and task visible in the pixels (examples/cg/make_world.py).
name: cg-world
loom: ./loom
sources:
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=30, help="images per label and combination")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    sources = []
    for modality in MODALITIES:
        for area in AREAS:
            for task, labels in TASKS.items():
                name = f"{modality}-{area}-{task}".lower().replace("-ray", "ray")
                for label in labels:
                    folder = args.out / "data" / name / label
                    folder.mkdir(parents=True, exist_ok=True)
                    for i in range(args.per_class):
                        path = folder / f"{name}-{label}-{i:03d}.png"
                        if not path.exists():
                            render(modality, area, label, rng).save(path)
                sources.append(
                    f"  - {{name: {name}, reader: imagefolder, path: data/{name}, modality: {modality}, "
                    f"anatomy: {area}, task: {task}, license: CC0-1.0}}\n"
                )
    (args.out / "recipe.yaml").write_text(RECIPE_HEAD + "".join(sources), encoding="utf-8")
    print(f"{len(sources)} sources, {len(sources) * 2 * args.per_class} images: {args.out / 'recipe.yaml'}")


if __name__ == "__main__":
    main()
