"""Serving a large loom: grid pages of `medloom serve` on a 100,000-record loom, and its thumbnails.

In one run:

  1. Thumbnails: `medloom serve`'s thumbnail step (the executor, 2 workers) over every record, against a plain
     Pillow loop in one process (open, shrink to 192 px, save as JPEG) on a sample; records per second and the
     ratio.
  2. Grid pages: a real `medloom serve` (uvicorn) answers a seeded mix of grid requests (first pages, deep
     pages, a facet, a facet and a page, a WHERE condition), one at a time over HTTP; the 50th and 95th
     percentile latencies (the target: 95th under 300 ms). The baseline is the plain way: each request opens
     DuckDB over the catalog's parts and runs the same count, page and facet queries (on 30 of the requests:
     each takes seconds).

The images are 32x32 PNGs in 10 class folders (benchmarks/.data, made once), read from a tmpfs copy.

Usage: python benchmarks/serve.py [--n 100000] [--requests 300]
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
from images import ingest_folder, parse_args
from PIL import Image
from scale import tiny_set

FACETS = ("modality", "anatomy", "task", "source", "license", "label")


def requests_mix(n: int, records: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    pages = max(1, records // 60)
    out = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            out.append({})
        elif kind == 1:
            out.append({"page": rng.randrange(pages)})
        elif kind == 2:
            out.append({"label": f"c{rng.randrange(10)}"})
        elif kind == 3:
            out.append({"label": f"c{rng.randrange(10)}", "page": rng.randrange(max(1, pages // 10))})
        else:
            out.append({"where": f"id > 'bench/c{rng.randrange(10)}'"})
    return out


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.array(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def plain_duckdb(loom: Path, params: dict) -> None:
    """What an app without medloom's index does per grid request: DuckDB over the listed parts."""
    from medloom import catalog

    con = catalog.connect(loom)
    conds, args = [], []
    if "label" in params:
        conds.append("list_contains(labels, ?)")
        args.append(params["label"])
    if "where" in params:
        conds.append(f"({params['where']})")
    where = (" WHERE " + " AND ".join(conds)) if conds else ""
    con.execute(f"SELECT count(*) FROM records{where}", args).fetchall()
    con.execute(
        f"SELECT id, source, modality, anatomy, task, labels, width, height, pixel_hash FROM records{where} "
        f"ORDER BY id LIMIT 60 OFFSET {int(params.get('page', 0)) * 60}",
        args,
    ).fetchall()
    for f in FACETS:
        value = "unnest(labels)" if f == "label" else f
        con.execute(f"SELECT {value} AS v, count(*) FROM records{where} GROUP BY v ORDER BY 2 DESC LIMIT 40", args).fetchall()


def pillow_thumbs(files: list[Path], out: Path) -> float:
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for i, f in enumerate(files):
        with Image.open(f) as im:
            im = im.convert("RGB")
            im.thumbnail((192, 192))
            im.save(out / f"{i}.jpg", quality=80)
    return len(files) / (time.perf_counter() - started)


def main() -> int:
    args = parse_args(
        __doc__,
        100_000,
        extra=lambda ap: ap.add_argument("--requests", type=int, default=300, help="grid requests per contestant"),
    )
    from medloom import catalog
    from medloom.view.render import render_sources
    from medloom.web.thumbs import build_thumbnails

    images = tiny_set(args.data / f"png-32x32-{args.n}", args.n)
    if args.stage:  # both contestants read from a tmpfs copy (see images.py)
        shutil.copytree(images, args.stage / images.name)
        images = args.stage / images.name
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        loom = ingest_folder(images, tmp)
        print(f"loom of {args.n:,} records ingested in {time.perf_counter() - started:.0f} s")

        started = time.perf_counter()
        made = build_thumbnails(loom, catalog.connect(loom), render_sources(catalog.read_manifest(loom)), workers=2, quiet=True)
        rate = made["made"] / (time.perf_counter() - started)
        sample = sorted(images.rglob("*.png"))[:2000]
        plain = max(pillow_thumbs(sample, tmp / "plain"), pillow_thumbs(sample, tmp / "plain"))  # warm, best of 2
        print(
            f"thumbnails: medloom (2 workers) {rate:,.0f} records/s, plain Pillow loop (1 process) {plain:,.0f}/s: "
            f"{rate / plain:.2f}x ({made['made']:,} made, {made['failed']} failed)"
        )

        proc = subprocess.Popen(
            [sys.executable, "-m", "medloom.cli", "serve", str(loom), "--port", "0", "-q"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        try:
            line = ""
            while "medloom serve: http" not in line:
                line = proc.stdout.readline()
                if not line and proc.poll() is not None:
                    raise SystemExit(proc.stderr.read())
            url = line.split()[2]
            import httpx

            mix = requests_mix(args.requests, args.n)
            with httpx.Client(timeout=60) as client:
                started = time.perf_counter()
                assert client.get(url + "grid").status_code == 200
                first = time.perf_counter() - started
                served = []
                for params in mix:
                    started = time.perf_counter()
                    r = client.get(url + "grid?" + urlencode(params))
                    served.append(time.perf_counter() - started)
                    assert r.status_code == 200, r.text[:500]
            baseline = []
            for params in mix[:: max(1, len(mix) // 30)]:  # every 10th: each takes seconds at 100,000 records
                started = time.perf_counter()
                plain_duckdb(loom, params)
                baseline.append(time.perf_counter() - started)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        p50, p95 = percentiles(served)
        b50, b95 = percentiles(baseline)
        print(f"first grid page after start (builds the index): {first * 1000:.0f} ms")
        print(
            f"grid pages over HTTP, {len(mix)} requests: medloom serve p50 {p50:.0f} ms, p95 {p95:.0f} ms (target: p95 < 300 ms)"
        )
        print(
            f"plain DuckDB over the parts per request (no HTTP, {len(baseline)} of the requests): p50 {b50:.0f} ms, "
            f"p95 {b95:.0f} ms; "
            f"medloom {b95 / p95:.1f}x faster at p95"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
