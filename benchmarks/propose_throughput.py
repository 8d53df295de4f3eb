"""`medloom propose` at scale: N generated images (benchmarks/images.py's PNG 512x512 fundus photographs,
ingested as one class-folder source) proposed through the executor, local workers and Ray, against a named
baseline: the same method run in a plain loop in one process (read, decode, propose, the row built: what a
script calling the method would do), timed on the first `--baseline-n` records and given as images/s. Each
executor's run starts from no proposals; a second run with nothing changed shows the resume (0 parts
computed, its time the cost of finding every part done).

Usage: python benchmarks/propose_throughput.py [--n 10000] [--method body] [--workers 2] [--executors local,ray]
       [--baseline-n 500] [--data DIR] [--on-disk]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from images import image_set, ingest_folder, parse_args, where  # noqa: E402


def extra(ap) -> None:
    ap.add_argument("--method", default="body", help="the propose method (default body: any modality)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes (local) or Ray workers")
    ap.add_argument("--executors", default="local,ray", help="which executors: local, ray (comma-separated)")
    ap.add_argument("--baseline-n", type=int, default=500, help="records the plain loop is timed on")


def plain_loop(loom: Path, method: str, n: int) -> float:
    """The baseline: the method over the first n records in one process, one record after another."""
    from medloom import catalog
    from medloom.propose import get_method
    from medloom.propose.stage import propose_record
    from medloom.propose.step import checked_params, fingerprint
    from medloom.view.render import render_sources

    module = get_method(method)
    params = checked_params(module, None)
    settings = {
        "fingerprint": fingerprint(method, module.VERSION, params),
        "sources": render_sources(catalog.read_manifest(loom)),
    }
    rows = catalog.connect(loom).sql(f"SELECT * FROM records ORDER BY id LIMIT {n}").to_arrow_table().to_pylist()
    started = time.perf_counter()
    cache: dict = {}
    statuses = [propose_record(row, module, method, params, settings, cache)["status"] for row in rows]
    seconds = time.perf_counter() - started
    assert statuses.count("proposed") == len(rows), f"the baseline's method refused or failed: {set(statuses)}"
    return len(rows) / seconds


def main() -> None:
    args = parse_args(__doc__, 10000, extra=extra)
    from medloom import layout
    from medloom.engine import ExecutorSpec
    from medloom.propose.step import propose

    executors = [e.strip() for e in args.executors.split(",") if e.strip()]
    folder, _ = image_set(args.data, "PNG 512x512", args.n, args.stage)
    with tempfile.TemporaryDirectory(prefix="medloom-propose-") as tmp:
        started = time.perf_counter()
        loom = ingest_folder(folder, Path(tmp))
        print(f"{args.n} PNG 512x512 images ingested in {time.perf_counter() - started:.1f} s ({where(args)})")
        base = plain_loop(loom, args.method, min(args.baseline_n, args.n))
        print(f"baseline: {args.method} in a plain loop, one process: {base:.1f} images/s (first {min(args.baseline_n, args.n)})")
        print(f"{'executor':28s} {'seconds':>8s} {'images/s':>9s} {'vs loop':>8s} | resume: parts computed, seconds")
        for kind in executors:
            shutil.rmtree(layout.proposals_dir(loom), ignore_errors=True)
            spec = ExecutorSpec("ray", args.workers, None) if kind == "ray" else args.workers
            first = propose(loom, args.method, workers=spec, quiet=True)
            again = propose(loom, args.method, workers=spec, quiet=True)
            assert first.proposed == args.n, first.lines()
            rate = args.n / first.seconds
            name = f"{kind} ({args.workers} workers)"
            print(
                f"{name:28s} {first.seconds:8.1f} {rate:9.1f} {rate / base:7.2f}x | "
                f"{again.parts - again.parts_done_before} of {again.parts}, {again.seconds:.1f} s"
            )


if __name__ == "__main__":
    main()
