"""Scaling on one machine: `medloom ingest` and `medloom export --format webdataset --max-side 256` of the
generated JPEG 1024x768 set (images.py) at 1, 2, 4, ... workers, against plain loops run in as many
processes (a `multiprocessing` pool, without medloom's planning, parts or writing):

  decode   Pillow's open + load
  facts    medloom's own per-image ingest work (`file_facts`: read, hash the file, decode, hash the pixels,
           perceptual hash)
  resize   Pillow's open, RGB, `thumbnail` to 256 and JPEG encode, as an export does

The plain loops show what the machine allows (memory bandwidth, shared caches, clocks that fall as more
cores run); where medloom scales less than they do, medloom itself loses.

Each step is timed alone, in this process, as in `benchmarks/ingest.py`: from the call to its return, the
scan, planning, the workers' start and every file written included, the interpreter's start not. The
driver's CPU seconds (this process: the scan, planning, writing parts and shards) are printed beside.

With `--commands`, the same two steps are also run as a user runs them, `python -m medloom ingest` and
`python -m medloom export`, at the largest worker count: a fresh process each, its interpreter's start, its
imports and its workers' start included.

Usage: python benchmarks/cores.py [--n 12000] [--workers 1,2,4,8,16] [--baseline-n 4000] [--commands]
                                  [--json out.json]
"""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from images import image_set, parse_args, where
from PIL import Image

MAX_SIDE = 256


def decode(path: Path) -> None:
    with Image.open(path) as im:
        im.load()


def resize_encode(path: Path) -> None:
    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((MAX_SIDE, MAX_SIDE))
        im.save(io.BytesIO(), "JPEG", quality=90)


def facts(path: Path) -> None:
    """medloom's own per-image work in ingest (read, hash the file, decode, hash the pixels, perceptual hash),
    without its planning, parts and workers."""
    from medloom.imaging import file_facts

    file_facts(str(path))


def plain(fn, paths: list[Path], workers: int) -> float:
    """Images per second of `fn` over `paths` in `workers` processes."""
    started = time.perf_counter()
    if workers == 1:
        for p in paths:
            fn(p)
    else:
        with mp.get_context("fork").Pool(workers) as pool:
            for _ in pool.imap_unordered(fn, paths, chunksize=16):
                pass
    return len(paths) / (time.perf_counter() - started)


PLAIN = {"decode": decode, "facts": facts, "resize": resize_encode}


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def medloom(folder: Path, n: int, workers: int, tmp: Path) -> dict:
    """Ingest, then export, on a fresh loom: images per second and the driver's CPU seconds of each."""
    from medloom.export import ExportOptions, export
    from medloom.ingest import ingest
    from medloom.recipe import load_recipe

    run = tmp / f"w{workers}"
    recipe = recipe_for(folder, run)
    out: dict = {}
    c, t = cpu(), time.perf_counter()
    marks.clear()
    reports = ingest(load_recipe(recipe), workers=workers, quiet=True)
    out["ingest"], out["ingest_cpu"] = n / (time.perf_counter() - t), cpu() - c
    assert reports[0].records == n, reports[0]
    out["ingest_phases"] = {k: round(v - t, 2) for k, v in marks.items()}
    c, t = cpu(), time.perf_counter()
    marks.clear()
    report = export(run / "loom", run / "wds", ExportOptions(max_side=MAX_SIDE), workers=workers, quiet=True)
    out["export"], out["export_cpu"] = n / (time.perf_counter() - t), cpu() - c
    assert report.exported == n, report
    out["export_phases"] = {k: round(v - t, 2) for k, v in marks.items()}
    shutil.rmtree(run)
    return out


def recipe_for(folder: Path, run: Path) -> Path:
    run.mkdir()
    recipe = run / "recipe.yaml"
    recipe.write_text(
        json.dumps(
            {
                "name": "cores",
                "loom": "./loom",
                "salt": "x",
                "sources": [
                    {
                        "name": "bench",
                        "reader": "imagefolder",
                        "path": str(folder),
                        "modality": "fundus photography",
                        "anatomy": "eye",
                        "task": "disease",
                    }
                ],
            }
        )
    )
    return recipe


def commands(folder: Path, n: int, workers: int, tmp: Path) -> dict:
    """`python -m medloom ingest`, then `export`, each a fresh process: images per second of each."""
    run = tmp / f"cli{workers}"
    recipe = recipe_for(folder, run)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    out = {}
    for step, args in (
        ("ingest", [str(recipe)]),
        ("export", [str(run / "loom"), "-o", str(run / "wds"), "-f", "webdataset", "--max-side", str(MAX_SIDE)]),
    ):
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "medloom", step, *args, "-w", str(workers), "-q"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        out[step] = n / (time.perf_counter() - t)
    shutil.rmtree(run)
    return out


marks: dict[str, float] = {}


def trace() -> None:
    """Note when ingest's scan ends, and for each step when its workers are ready (started, the stages imported),
    when its first part is sent, when the first and the last results come: what before the first result is
    serial shows here, and what after the last is the driver's."""
    import medloom.ingest as ingest
    from medloom.engine import local

    scan = ingest.scan_source

    def scan_source(*a, **k):
        result = scan(*a, **k)
        marks["scanned"] = time.perf_counter()
        return result

    mapper = local.LocalExecutor.map

    def mapped(self, stage, *a, **k):
        if stage not in ("ingest.decode", "export.render") or "first part sent" in marks:  # once per step
            yield from mapper(self, stage, *a, **k)
            return
        marks["first part sent"] = time.perf_counter()
        for x in mapper(self, stage, *a, **k):
            marks.setdefault("first result", time.perf_counter())
            yield x
        marks["last result"] = time.perf_counter()

    def start_workers(pool, n):
        """The pool's prestart, noting when every worker has run a task (started, stages imported)."""
        from concurrent.futures import wait

        try:
            wait([pool.submit(os.getpid) for _ in range(n)])
        except RuntimeError:
            return
        marks["workers ready"] = time.perf_counter()

    ingest.scan_source, local.LocalExecutor.map, local.start_workers = scan_source, mapped, start_workers


def machine() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    cores = {line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("core id")}
    return f"{os.cpu_count()} logical CPUs ({len(cores) or '?'} distinct core ids), {model}"


def main() -> int:
    def extra(ap):
        ap.add_argument("--workers", default="", help="worker counts, comma-separated (default: 1, 2, 4, ... cores)")
        ap.add_argument("--baseline-n", type=int, default=4000, help="images per plain-loop run (a rate: fewer do)")
        ap.add_argument("--json", type=Path, help="also write the numbers here")
        ap.add_argument(
            "--commands",
            action="store_true",
            help="also time `python -m medloom ingest` and `export` at the largest worker count",
        )

    args = parse_args(__doc__, 12000, extra=extra)
    trace()
    counts = (
        [int(x) for x in args.workers.split(",")]
        if args.workers
        else [w for w in (1, 2, 4, 8, 16, 32, 64) if w <= (os.cpu_count() or 1)]
    )
    print(machine())
    print(where(args), flush=True)
    started = time.perf_counter()
    folder, paths = image_set(args.data, "JPEG 1024x768", args.n, args.stage)
    print(f"{args.n} images ready in {time.perf_counter() - started:.0f} s", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.stage.parent if args.stage else None) as tmp:
        for w in counts:
            row = {
                "workers": w,
                **{name: plain(fn, paths[: args.baseline_n], w) for name, fn in PLAIN.items()},
                **medloom(folder, args.n, w, Path(tmp)),
            }
            rows.append(row)
            print(" ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
        whole = commands(folder, args.n, max(counts), Path(tmp)) if args.commands else None
    one = rows[0]
    print(
        f"\n{'workers':>7} {'ingest/s':>9} {'x':>6} {'export/s':>9} {'x':>6} {'decode/s':>9} {'x':>6} {'facts/s':>9} "
        f"{'x':>6} {'resize/s':>9} {'x':>6} {'driver CPU s':>13}"
    )
    for r in rows:
        cells = " ".join(f"{r[k]:>9.0f} {r[k] / one[k]:>5.2f}x" for k in ("ingest", "export", *PLAIN))
        print(f"{r['workers']:>7} {cells} {r['ingest_cpu']:>6.1f}, {r['export_cpu']:.1f}")
    for step in ("ingest", "export"):
        print(f"{step}'s moments (s from its start; it ends at n / rate), by workers:")
        for r in rows:
            print(
                f"{r['workers']:>7} "
                + ", ".join(f"{k} {v:.2f}" for k, v in r[f"{step}_phases"].items())
                + f", end {args.n / r[step]:.2f}"
            )
    if whole:
        one = next((r for r in rows if r["workers"] == 1), None)
        print(
            f"whole commands at {max(counts)} workers (a fresh process each): "
            + ", ".join(
                f"{k} {v:.0f}/s" + (f" ({v / one[k]:.2f}x the call on 1 worker)" if one else "") for k, v in whole.items()
            )
        )
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "n": args.n, "rows": rows, "commands": whole}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
