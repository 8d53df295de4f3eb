"""The generated image sets every benchmark uses: scikit-image's retina photograph with per-image
shifts, colour changes and noise, as JPEG 1024x768 (quality 90) and PNG 512x512 (zlib level 6)."""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

SETS = {"JPEG 1024x768": ("jpg", (1024, 768)), "PNG 512x512": ("png", (512, 512))}


def generate(folder: Path, n: int, size: tuple[int, int], fmt: str) -> list[Path]:
    """n images (made once, kept), by a process per core; image i depends on i alone."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = sorted(folder.glob(f"*/*.{fmt}"))
    if len(paths) >= n:
        return paths[:n]
    out = [folder / f"class{i % 4}" / f"img{i:05d}.{fmt}" for i in range(n)]
    for d in {p.parent for p in out}:
        d.mkdir(exist_ok=True)
    todo = [(i, p, size, fmt) for i, p in enumerate(out) if not p.exists()]
    if todo:
        with ProcessPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(make_one, todo, chunksize=64))
    return out


def make_one(job: tuple[int, Path, tuple[int, int], str]) -> None:
    i, path, size, fmt = job
    base = retina(size)
    rng = np.random.default_rng([0, i])
    dx, dy = rng.integers(0, 64, 2)
    img = base[dy : dy + size[1], dx : dx + size[0]] + rng.integers(-20, 20, 3) + rng.normal(0, 3, (size[1], size[0], 1))
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    im.save(path, quality=90) if fmt == "jpg" else im.save(path, compress_level=6)


@lru_cache(maxsize=2)
def retina(size: tuple[int, int]) -> np.ndarray:
    import skimage  # here, not at the top: a benchmark's workers run its main module again, and this one is slow

    return np.asarray(
        Image.open(Path(skimage.__file__).parent / "data" / "retina.jpg").convert("RGB").resize((size[0] + 64, size[1] + 64)),
        dtype=np.int16,
    )


def image_set(data: Path, name: str, n: int, stage: Path | None = None) -> tuple[Path, list[Path]]:
    """The set's folder and files; with `stage`, a copy there (see `parse_args`)."""
    fmt, size = SETS[name]
    folder = data / f"{fmt}-{size[0]}x{size[1]}-{n}"
    paths = generate(folder, n, size, fmt)
    if stage is not None:
        copy = stage / folder.name
        if not copy.is_dir():
            shutil.copytree(folder, copy)
        folder, paths = copy, sorted(copy.glob(f"*/*.{fmt}"))[:n]
    for p in paths[:200]:  # warm the page cache for every contestant alike
        p.read_bytes()
    return folder, paths


TMPFS = Path("/dev/shm")


def parse_args(doc: str, default_n: int, repeat: bool = False, extra=None, sets: bool = False) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=default_n, help="images per set")
    if extra:
        extra(ap)
    ap.add_argument("--data", type=Path, default=Path(__file__).parent / ".data", help="where generated images are kept")
    if sets:
        ap.add_argument("--sets", default="jpg,png", help="which image sets: jpg (JPEG 1024x768), png (PNG 512x512)")
    if repeat:
        ap.add_argument("--repeat", type=int, default=3, help="interleaved passes; the best of each contestant is shown")
    ap.add_argument(
        "--on-disk",
        action="store_true",
        help=f"read the images where --data keeps them instead of from a copy on {TMPFS} (tmpfs). "
        "The copy is the default because some kernels (DAMON reclaim on this VM) page file "
        "cache out within seconds, which turns every contestant's reads into disk reads",
    )
    args = ap.parse_args()
    chosen = {f.strip() for f in getattr(args, "sets", "jpg,png").split(",")}
    args.sets = [name for name, (fmt, _) in SETS.items() if fmt in chosen]
    if not args.sets:
        ap.error(f"--sets {','.join(sorted(chosen))}: choose from jpg, png")
    args.stage = None
    if not args.on_disk and TMPFS.is_dir() and os.access(TMPFS, os.W_OK) and shutil.disk_usage(TMPFS).free > 4 << 30:
        args.stage = TMPFS / f"medloom-bench-{os.getpid()}"
        atexit.register(shutil.rmtree, args.stage, ignore_errors=True)  # tmpfs is memory: give it back
    return args


def where(args: argparse.Namespace) -> str:
    return f"images read from {args.stage} (tmpfs copy)" if args.stage else f"images read from {args.data}"


def ingest_folder(folder: Path, tmp: Path, split: str | None = None) -> Path:
    """A loom of one class-folder source over `folder` (fundus photography of the eye), ingested in `tmp`."""
    from medloom.ingest import ingest
    from medloom.recipe import load_recipe

    recipe = tmp / "recipe.yaml"
    recipe.write_text(
        f"name: bench\nloom: ./loom\nsalt: x\nsources:\n  - name: bench\n    reader: imagefolder\n"
        f"    path: {folder}\n    modality: fundus photography\n    anatomy: eye\n    task: disease\n"
        + (f"    split: {split}\n" if split else "")
    )
    ingest(load_recipe(recipe), workers=2, quiet=True)
    return tmp / "loom"
