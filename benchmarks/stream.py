"""Streaming read speed: `medloom.load` against `webdataset.WebDataset`, both decoding to PIL, same shards.

The shards are a medloom export (--max-side 256, JPEG quality 90) of the generated JPEG set
(images.py). Each contestant reads every sample and decodes the image and the JSON; best of 3 passes.
webdataset's "pil" decoder also converts each image to RGB (the images already are RGB).

Usage: python benchmarks/stream.py [--n 3000] [--data benchmarks/.data]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from export import MAX_SIDE
from images import image_set, ingest_folder, parse_args, where


def best_rate(read, n: int, passes: int = 3) -> float:
    best = 0.0
    for _ in range(passes):
        t = time.perf_counter()
        count = read()
        best = max(best, count / (time.perf_counter() - t))
        assert count == n, (count, n)
    return best


def main() -> int:
    import webdataset as wds

    import medloom
    from medloom.export import ExportOptions, export

    args = parse_args(__doc__, 3000)
    folder, _ = image_set(args.data, "JPEG 1024x768", args.n, args.stage)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        loom = ingest_folder(folder, tmp)
        out = tmp / "wds"
        export(loom, out, ExportOptions(max_side=MAX_SIDE, shard_size=500), workers=2, quiet=True)
        shards = sorted(str(p) for p in out.glob("*.tar"))

        def read_medloom() -> int:
            n = 0
            for sample in medloom.load(out, decode="pil"):
                n += sample["jpg"].width > 0 and bool(sample["json"])
            return n

        def read_webdataset() -> int:
            n = 0
            for sample in wds.WebDataset(shards, shardshuffle=False).decode("pil"):
                n += sample["jpg"].width > 0 and bool(sample["json"])
            return n

        ours = best_rate(read_medloom, args.n)
        theirs = best_rate(read_webdataset, args.n)
    print(where(args))
    print(f"{'shards':>6} {'samples':>8} {'webdataset/s':>13} {'medloom/s':>10} {'ratio':>7}")
    print(f"{len(shards):>6} {args.n:>8} {theirs:>13.0f} {ours:>10.0f} {ours / theirs:>6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
