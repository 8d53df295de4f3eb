"""Scaling: the Ray executor against the local one, and memory that does not grow with the corpus.

In one run:

  1. `medloom ingest` and `medloom export --format webdataset --max-side 256` of the generated JPEG 1024x768
     set (images.py) at 1 and 2 workers, with the local executor, with `--executor ray` starting its own Ray
     instance (its start-up counted), and with `--executor ray --address auto` on a cluster `ray start` made
     beforehand (as on a real cluster): images per second of the whole command and Ray's share of local
     (the target: 0.9x); then the same between the step's first result and its last (the rate once the
     workers run, without the start of the interpreter, of Ray's connection and of the workers), and the
     seconds to the first result.
  2. Peak memory (resident set) of the driver and of the largest worker of `medloom ingest` (local executor,
     2 workers) over 10,000 and 100,000 generated 32x32 PNGs, parts of 256 inputs: the ratio of the large run
     to the small one (the target: at most 1.2, memory does not grow with the corpus).

Each command runs in a fresh interpreter; the driver's peak is its own `ru_maxrss`, a worker's the largest
`VmHWM` (peak resident set) among its descendants, sampled every 50 ms (the forkserver's workers).

Usage: python benchmarks/scale.py [--n 5000] [--memory 10000,100000] [--workers 1,2]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from images import image_set, parse_args, where
from PIL import Image

MEASURE = """
import os, resource, sys, threading, time
start = time.perf_counter()
from pathlib import Path
from medloom.cli import app
from medloom.arrowpool import use_system_pool
use_system_pool()  # as the ingest and export commands do before pyarrow loads; the imports below load it
from medloom.engine.local import LocalExecutor
from medloom.engine.ray import RayExecutor

stream = []  # when each result of the step's map came, from the interpreter's start

def timed(mapper):
    def map(self, *args, **kwargs):
        for result in mapper(self, *args, **kwargs):
            stream.append(time.perf_counter() - start)
            yield result
    return map

LocalExecutor.map, RayExecutor.map = timed(LocalExecutor.map), timed(RayExecutor.map)

peak = [0]

def hwm(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0

def watch():  # the largest peak resident set among this process's descendants (the workers)
    me = os.getpid()
    while True:
        parents = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    parents[int(entry.name)] = int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    pass
        for pid in parents:
            p = pid
            while p in parents and p != me and p > 1:
                p = parents[p]
            if p == me and pid != me:
                try:
                    peak[0] = max(peak[0], hwm(pid))
                except OSError:
                    pass
        time.sleep(0.05)

threading.Thread(target=watch, daemon=True).start()
code = 0
try:
    app(sys.argv[1:])
except SystemExit as e:  # typer's way to end; a failed command keeps its exit status
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
print("MAXRSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, peak[0], file=sys.stderr)
print("STREAM", len(stream), stream[0] if stream else 0, stream[-1] if stream else 0, file=sys.stderr)
sys.exit(code)
"""


class Run(NamedTuple):
    seconds: float  # the whole command, its interpreter's start included
    driver: int  # peak KiB
    worker: int  # the largest descendant's peak KiB
    results: int  # results of the step's map (parts, or batches of an export)
    first: float  # seconds from the start to the first result
    last: float  # and to the last

    def streaming(self, n: int) -> float:
        """Images per second between the first result and the last: the rate once the workers run (nan when a
        run of a few images gave one result)."""
        if self.results < 2 or self.last <= self.first:
            return float("nan")
        return n * (self.results - 1) / self.results / (self.last - self.first)


def medloom(*args: str) -> Run:
    """One command in a fresh interpreter, measured."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, *args], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    seconds = time.perf_counter() - started
    line = next((x for x in proc.stderr.splitlines() if x.startswith("MAXRSS")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"medloom {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    _, own, children = line.split()
    _, results, first, last = next(x for x in proc.stderr.splitlines() if x.startswith("STREAM")).split()
    return Run(seconds, int(own), int(children), int(results), float(first), float(last))


def recipe(folder: Path, data: Path, part_size: int | None = None) -> Path:
    path = folder / "recipe.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "name": "scale",
                "loom": "./loom",
                "salt": "x",
                **({"part_size": part_size} if part_size else {}),
                "sources": [
                    {
                        "name": "bench",
                        "reader": "imagefolder",
                        "path": str(data),
                        "modality": "fundus photography",
                        "anatomy": "eye",
                        "task": "disease",
                    }
                ],
            }
        )
    )
    return path


def executors(images: Path, n: int, tmp: Path, worker_counts: list[int]) -> None:
    """Local, Ray started by the command (`--executor ray`), and a running Ray cluster (`ray start`, then
    `--address auto`, as on a cluster)."""
    ray = str(Path(sys.executable).with_name("ray"))
    kinds = {"local": [], "ray (own)": ["--executor", "ray"], "ray cluster": ["--executor", "ray", "--address", "auto"]}
    rows = []
    for workers in worker_counts:
        runs = {}
        for kind, how in kinds.items():
            run = tmp / f"{kind.replace(' ', '-')}-{workers}"
            if kind == "ray cluster":
                started = subprocess.run(
                    [ray, "start", "--head", f"--num-cpus={workers}", "--include-dashboard=false"], capture_output=True, text=True
                )
                if started.returncode:
                    raise SystemExit(
                        f"`ray start --head` failed (is a Ray cluster running here? `ray stop` ends it):\n"
                        f"{started.stderr[-2000:]}"
                    )
            try:
                how = ["-w", str(workers), *how]
                runs["ingest", kind] = medloom("ingest", str(recipe(run, images)), "-q", *how)
                runs["export", kind] = medloom(
                    "export",
                    str(run / "loom"),
                    "--format",
                    "webdataset",
                    "--max-side",
                    "256",
                    "--out",
                    str(run / "wds"),
                    "-q",
                    *how,
                )
            finally:
                if kind == "ray cluster":
                    subprocess.run([ray, "stop", "--force"], capture_output=True)
        rows += [(step, workers, {k: runs[step, k] for k in kinds}) for step in ("ingest", "export")]
    for title, rate in (
        ("whole commands, images/s", lambda r: n / r.seconds),
        ("streaming, images/s between the first result and the last", lambda r: r.streaming(n)),
    ):
        print(f"\n{title}\n{'step':>8} {'workers':>7} " + " ".join(f"{k:>14}" for k in kinds) + "   share of local")
        for step, workers, by_kind in rows:
            local = rate(by_kind["local"])
            print(
                f"{step:>8} {workers:>7} "
                + " ".join(f"{rate(r):>14.1f}" for r in by_kind.values())
                + "   "
                + ", ".join(f"{rate(r) / local:.2f}x" for k, r in by_kind.items() if k != "local")
            )
    print("\nseconds from the interpreter's start to the first result")
    for step, workers, by_kind in rows:
        print(f"{step:>8} {workers:>7} " + " ".join(f"{r.first:>14.2f}" for r in by_kind.values()))


def tiny_set(folder: Path, n: int) -> Path:
    """n 32x32 PNGs in 10 class folders (made once, kept)."""
    if len(list(folder.rglob("*.png"))) == n:
        return folder
    rng = np.random.default_rng(0)
    for i in range(n):
        path = folder / f"c{i % 10}" / f"{i:06d}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    return folder


def memory(data: Path, sizes: list[int], tmp: Path) -> None:
    print(f"{'records':>8} {'seconds':>8} {'driver MiB':>11} {'worker MiB':>11}")
    peaks = []
    for n in sizes:
        images = tiny_set(data / f"png-32x32-{n}", n)
        run = medloom("ingest", str(recipe(tmp / f"mem-{n}", images, part_size=256)), "-q", "-w", "2")
        peaks.append((run.driver, run.worker))
        print(f"{n:>8} {run.seconds:>8.1f} {run.driver / 1024:>11.1f} {run.worker / 1024:>11.1f}")
    (d0, w0), (d1, w1) = peaks[0], peaks[-1]
    print(f"largest / smallest: driver {d1 / d0:.2f}x, worker {w1 / w0:.2f}x (target: at most 1.2)")


def main() -> int:
    def extra(ap) -> None:
        ap.add_argument("--memory", default="10000,100000", help="corpus sizes of the memory runs, comma-separated")
        ap.add_argument("--workers", default="1,2", help="worker counts of the executor runs, comma-separated")

    args = parse_args(__doc__, 5000, extra=extra)
    sizes = [int(x) for x in args.memory.split(",")]
    print(where(args))
    folder, _ = image_set(args.data, "JPEG 1024x768", args.n, args.stage)
    with tempfile.TemporaryDirectory() as tmp:
        executors(folder, args.n, Path(tmp), [int(x) for x in args.workers.split(",")])
        memory(args.data, sizes, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
