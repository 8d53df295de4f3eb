"""The readers' own cost per record: a label table, a regular expression over names, run-length masks in a table,
each against the plain class-folder reader on the same images, side by side in one run.

The images are the generated PNG 512x512 set (class folders); each contestant ingests all of them with one
worker (scan + decode + Parquet parts), in interleaved passes, the best of each kept:

  imagefolder   the baseline: labels from the class folders
  table         a CSV listing each image's relative path and label (`csv` reader)
  names         the label from a regular expression over the relative path (`names` reader)
  rle           a CSV of run-length masks, one per image (SIIM's relative form, column-major): the mask decoded
                and its region found (`csv` reader, `rle_column`)

Printed: records per second and each path's time per record over the baseline's (goal: at most 1.10x).

Usage: python benchmarks/readers.py [--n 2000] [--repeat 3] [--data benchmarks/.data] [--on-disk]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from images import image_set, parse_args, where

CLASS_FOLDERS = "    path: {root}\n    modality: fundus photography\n    anatomy: eye\n    task: disease\n"


def write_tables(root: Path, paths: list[Path], tables: Path) -> None:
    """The table and RLE CSVs for the images (labels from their class folders), written beside, not into, the set."""
    tables.mkdir(parents=True, exist_ok=True)
    rels = [p.relative_to(root).as_posix() for p in paths]
    with open(tables / "labels.csv", "w") as f:
        f.write("image,label\n")
        f.writelines(f"{rel},{rel.split('/')[0]}\n" for rel in rels)
    with open(tables / "rle.csv", "w") as f:  # a 20-pixel-tall run in each of 40 columns, from column 100 on
        runs = " ".join(["51300 20"] + ["492 20"] * 39)
        f.write("ImageId,EncodedPixels\n")
        f.writelines(f"{rel},{runs}\n" for rel in rels)


def source_block(kind: str, root: Path, tables: Path) -> str:
    head = f"  - name: {kind}\n"
    if kind == "imagefolder":
        return head + "    reader: imagefolder\n" + CLASS_FOLDERS.format(root=root)
    if kind == "names":
        return head + "    reader: names\n    match: path\n    pattern: '^(?P<label>[^/]+)/'\n" + CLASS_FOLDERS.format(root=root)
    if kind == "table":
        return (
            head + f"    reader: csv\n    csv: {tables / 'labels.csv'}\n    image_column: image\n    label_column: label\n"
            f"    allowed_roots: [{tables}]\n" + CLASS_FOLDERS.format(root=root)
        )
    return (
        head + f"    reader: csv\n    csv: {tables / 'rle.csv'}\n    image_column: ImageId\n"
        "    rle_column: {column: EncodedPixels, order: column, form: relative, start: 0, label: lesion}\n"
        f"    allowed_roots: [{tables}]\n" + CLASS_FOLDERS.format(root=root)
    )


def ingest_rate(kind: str, root: Path, tables: Path, n: int) -> float:
    from medloom.ingest import ingest
    from medloom.recipe import load_recipe

    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "recipe.yaml"
        recipe.write_text("name: bench\nloom: ./loom\nsalt: x\nsources:\n" + source_block(kind, root, tables))
        t = time.perf_counter()
        reports = ingest(load_recipe(recipe), workers=1, quiet=True)
        elapsed = time.perf_counter() - t
        report = reports[0]
        assert report.records == n and not report.quarantined_inputs, report
    return n / elapsed


def main() -> int:
    args = parse_args(
        __doc__,
        2000,
        repeat=True,
        extra=lambda ap: ap.add_argument("--paths", default="imagefolder,table,names,rle", help="which reader paths"),
    )
    root, paths = image_set(args.data, "PNG 512x512", args.n, args.stage)
    with tempfile.TemporaryDirectory() as tmp:
        tables = Path(tmp) / "tables"
        write_tables(root, paths, tables)
        kinds = [k for k in ["imagefolder", "table", "names", "rle"] if k in args.paths.split(",")]
        best = dict.fromkeys(kinds, 0.0)
        for _ in range(args.repeat):  # interleaved, so a slow spell of this shared machine hits all alike
            for kind in kinds:
                best[kind] = max(best[kind], ingest_rate(kind, root, tables, len(paths)))
    print(f"{where(args)}; {len(paths)} PNG 512x512 images, 1 worker, best of {args.repeat} interleaved passes")
    print(f"{'reader path':<12} {'records/s':>10} {'ms/record':>10} {'vs imagefolder':>15}")
    base = best["imagefolder"]
    for kind in kinds:
        print(f"{kind:<12} {best[kind]:>10.0f} {1000 / best[kind]:>10.3f} {base / best[kind]:>14.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
