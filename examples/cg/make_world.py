"""A small world for compositional generalization, where the MAT triplet is visible in the pixels.

- Modality is the rendering style: X-ray (bright structures on black, soft edges), CT (a grey body disc,
  sharp edges, grain and horizontal streaks), MRI (smooth bright tissue on black with a dark rim).
- Anatomical area is the shape: brain (one large oval), lung (two tall ovals side by side), knee (two bones
  meeting at a joint).
- Task is the labelled attribute: cancer (a small round "tumour" inside the organ, or "normal"), disease (an
  "oedema": a patch of fine stripes, or "normal"), fracture (a dark line across a bone, or "normal").
- Every image varies in what no label names: exposure (gain and offset), the organ's size and place, noise
  and blur. That variation is larger than a finding's, so an image's nearest neighbour in a frozen network's
  features is an image of the same style and shape, whatever its finding: nearest-neighbour answers do not
  solve the target, and a model must learn which direction in the features is the finding.

The twelve (modality, area, task) combinations of X-ray/CT/MRI, brain/lung and cancer/disease are class-folder
sources; X-ray and MRI knees with fractures are two more, unrelated to a CT / brain / cancer target (so that
each Baseline+ has its own draw); and a CT brain detection source (a table of boxes around oedema patches,
task "lesion detection") is a detection subset: it trains on its boxes (Med-MAT's Table 5). `--per-class`
images per label and source; `recipe.yaml` ingests them with their triplets.
Usage: python make_world.py OUT [--per-class N] [--seed S]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

MODALITIES = ("X-ray", "CT", "MRI")
AREAS = ("brain", "lung")
TASKS = {"cancer": ("tumour", "normal"), "disease": ("oedema", "normal")}
UNRELATED = [("X-ray", "knee", "fracture"), ("MRI", "knee", "fracture")]  # to a CT / brain / cancer target
FINDINGS = {"fracture": ("fracture", "normal")}
DETECTION = ("CT", "brain", "lesion detection")  # boxes around oedema patches
SIZE = 128
TISSUE = {"X-ray": 200, "CT": 150, "MRI": 230}


def organs(area: str, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """The organ's ovals or bones (boxes): scaled and shifted at random, what no label names."""
    s = rng.uniform(0.78, 1.08)
    dx, dy = rng.integers(-10, 11, 2)
    box = lambda x0, y0, x1, y1: tuple(  # noqa: E731
        int(64 + (v - 64) * s + d) for v, d in ((x0, dx), (y0, dy), (x1, dx), (y1, dy))
    )
    if area == "brain":
        return [box(22, 18, 106, 112)]
    if area == "knee":
        return [box(46, 6, 82, 62), box(48, 66, 80, 122)]
    return [box(16, 20, 58, 112), box(70, 20, 112, 112)]


def finding_at(boxes: list[tuple[int, int, int, int]], rng: np.random.Generator) -> tuple[int, int]:
    x0, y0, x1, y1 = boxes[int(rng.integers(len(boxes)))]
    return int(rng.integers(x0 + 12, max(x0 + 13, x1 - 12))), int(rng.integers(y0 + 14, max(y0 + 15, y1 - 14)))


def render(modality: str, area: str, finding: str, rng: np.random.Generator) -> tuple[Image.Image, list[int] | None]:
    """The image, and the box of its finding (x0, y0, x1, y1 in pixels; None for a normal image)."""
    im = Image.new("L", (SIZE, SIZE), 0)
    d = ImageDraw.Draw(im)
    if modality == "CT":
        d.ellipse([4, 4, SIZE - 4, SIZE - 4], fill=90)  # the body outline around the organ
    tissue = TISSUE[modality]
    boxes = organs(area, rng)
    for box in boxes:
        if area == "knee":
            d.rounded_rectangle(box, radius=10, fill=tissue)
        else:
            d.ellipse(box, fill=tissue)
        if modality == "MRI":
            d.ellipse(box, outline=40, width=5) if area != "knee" else d.rounded_rectangle(box, 10, outline=40, width=4)
    cx, cy = finding_at(boxes, rng)
    where = None
    if finding == "tumour":
        r = int(rng.integers(4, 7))
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill={"X-ray": 255, "CT": 230, "MRI": 40}[modality])
        where = [cx - r, cy - r, cx + r, cy + r]
    elif finding == "oedema":
        for k in range(-9, 10, 3):
            d.line([(cx - 9, cy + k), (cx + 9, cy + k)], fill={"X-ray": 110, "CT": 80, "MRI": 130}[modality], width=1)
        where = [cx - 10, cy - 10, cx + 10, cy + 10]
    elif finding == "fracture":
        x0, y0, x1, y1 = boxes[0]
        d.line([(x0, y1 - 14), (x1, y1 - 22)], fill=30, width=3)
        where = [x0, y1 - 25, x1, y1 - 11]
    a = np.asarray(im, np.float32)
    blur = {"X-ray": 2.5, "CT": 0.0, "MRI": 1.2}[modality] * rng.uniform(0.7, 1.3)
    if blur:
        a = np.asarray(Image.fromarray(a.astype(np.uint8)).filter(ImageFilter.GaussianBlur(blur)), np.float32)
    a += rng.normal(0, {"X-ray": 4, "CT": 14, "MRI": 3}[modality] * rng.uniform(0.6, 1.6), a.shape)
    if modality == "CT":
        for row in rng.integers(0, SIZE, 3):
            a[row] += 40
    a = a * rng.uniform(0.65, 1.2) + rng.uniform(-20, 20)  # exposure
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)), where


RECIPE_HEAD = """\
# A generated world for `medloom cg`: modality, area and task visible in the pixels (examples/cg/make_world.py).
name: cg-world
loom: ./loom
sources:
"""


def source_name(modality: str, area: str, task: str) -> str:
    return f"{modality}-{area}-{task}".lower().replace("-ray", "ray").replace(" ", "-")


def class_folders(out: Path, triplet: tuple[str, str, str], labels: tuple[str, ...], n: int, rng) -> str:
    name = source_name(*triplet)
    for label in labels:
        folder = out / "data" / name / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            path = folder / f"{name}-{label}-{i:03d}.png"
            if not path.exists():
                render(triplet[0], triplet[1], label, rng)[0].save(path)
    m, a, t = triplet
    return (
        f"  - {{name: {name}, reader: imagefolder, path: data/{name}, modality: {m}, anatomy: {a}, task: {t}, "
        "license: CC0-1.0}\n"
    )


def detection_table(out: Path, n: int, rng) -> str:
    """CT brain images, half with an oedema patch, and `boxes.csv` (one row per box; a normal image's row has
    empty box cells): the csv reader's `box_columns`."""
    name = source_name(*DETECTION)
    folder = out / "data" / name
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for label in ("oedema", "normal"):
        for i in range(n):
            file = f"{name}-{i:03d}-{label[0]}.png"
            image, box = render(DETECTION[0], DETECTION[1], label, rng)
            if not (folder / "images" / file).exists():
                image.save(folder / "images" / file)
            rows.append([file, label, *(box or ["", "", "", ""])])
    with open(folder / "boxes.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["image", "label", "xmin", "ymin", "xmax", "ymax"], *rows])
    m, a, t = DETECTION
    return (
        f"  - {{name: {name}, reader: csv, path: data/{name}, csv: boxes.csv, image_column: image, "
        'image_template: "images/{value}", '
        f"label_column: label, box_columns: {{format: xyxy, xmin: xmin, ymin: ymin, xmax: xmax, ymax: ymax}}, "
        f"modality: {m}, anatomy: {a}, task: {t}, license: CC0-1.0}}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=30, help="images per label and source")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    sources = []
    for modality in MODALITIES:
        for area in AREAS:
            for task, labels in TASKS.items():
                sources.append(class_folders(args.out, (modality, area, task), labels, args.per_class, rng))
    for triplet in UNRELATED:
        sources.append(class_folders(args.out, triplet, FINDINGS[triplet[2]], args.per_class, rng))
    sources.append(detection_table(args.out, args.per_class, rng))
    (args.out / "recipe.yaml").write_text(RECIPE_HEAD + "".join(sources), encoding="utf-8")
    print(f"{len(sources)} sources, {len(sources) * 2 * args.per_class} images: {args.out / 'recipe.yaml'}")


if __name__ == "__main__":
    main()
