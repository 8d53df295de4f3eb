"""Export throughput against a hand-written WebDataset writer, with output quality measured.

On the same generated images (JPEG 1024x768 and PNG 512x512 sets, see images.py), in one run, all
writing JPEG quality 90 at --max-side 256:

  baseline   Pillow open + convert("RGB") + thumbnail((256, 256)) (box reduction, then bicubic),
             JPEG encode, webdataset.ShardWriter with the file name and label as JSON
  medloom    `medloom export --max-side 256` (JPEGs decoded at reduced scale in the DCT domain to at least
             twice the target, then Lanczos; PNGs box-reduced then Lanczos), 1 and 2 workers

Quality: PSNR (dB) of each contestant's decoded output against a reference made by resizing the
full-resolution image straight to the same size with Lanczos, over 100 images.

Then the training formats (llava, sharegpt, medmat, swift, and clip-benchmark), each written from the same
annotated loom with the same settings on 1 worker, against medloom's own WebDataset export measured in the
same run: images/s and the ratio (the target is at least 0.8x).

Usage: python benchmarks/export.py [--n 2000] [--sets jpg,png] [--data benchmarks/.data]
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from images import image_set, ingest_folder, parse_args, where
from PIL import Image

MAX_SIDE = 256
QUALITY = 90


def baseline(paths: list[Path], out: Path) -> tuple[float, dict[str, bytes]]:
    import webdataset as wds

    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, bytes] = {}
    t = time.perf_counter()
    with wds.ShardWriter(str(out / "train-%06d.tar"), maxcount=5000, verbose=0) as sink:
        for p in paths:
            im = Image.open(p).convert("RGB")
            im.thumbnail((MAX_SIDE, MAX_SIDE))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=QUALITY)
            key = f"{p.parent.name}_{p.stem}"
            sink.write({"__key__": key, "jpg": buf.getvalue(), "json": {"path": str(p), "label": p.parent.name}})
            written[str(p)] = buf.getvalue()
    return len(paths) / (time.perf_counter() - t), written


def medloom_export(loom: Path, out: Path, workers: int, n: int) -> tuple[float, dict[str, bytes]]:
    import tarfile

    from medloom.export import ExportOptions, export

    t = time.perf_counter()
    report = export(loom, out, ExportOptions(max_side=MAX_SIDE, quality=QUALITY), workers=workers, quiet=True)
    rate = n / (time.perf_counter() - t)
    assert report.exported == n, report
    written: dict[str, bytes] = {}
    root = Path(json_root(out))
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".jpg"):
                    _source, cls, stem = m.name[:-4].split("/")
                    written[str(root / cls / (stem.rsplit("_", 1)[0] + "." + stem.rsplit("_", 1)[1]))] = tar.extractfile(m).read()
    return rate, written


def training_export(loom: Path, out: Path, fmt: str, n: int) -> float:
    from medloom.export.clipbench import export_clip_benchmark
    from medloom.export.training import export_training

    t = time.perf_counter()
    if fmt == "clip-benchmark":
        report = export_clip_benchmark(loom, out, max_side=MAX_SIDE, quality=QUALITY, workers=1, quiet=True)
        assert sum(report.retrieval.values()) == n, report
    else:
        report = export_training(loom, out, fmt, max_side=MAX_SIDE, quality=QUALITY, workers=1, quiet=True)
        assert report.images == n, report
    return n / (time.perf_counter() - t)


def training_formats(loom: Path, tmp: Path, name: str, n: int, webdataset_rate: float) -> None:
    from medloom.annotate import AnnotateSettings, annotate

    annotate(loom, AnnotateSettings(), workers=2, quiet=True)
    for fmt in ("llava", "sharegpt", "medmat", "swift", "clip-benchmark"):
        rate = training_export(loom, tmp / fmt, fmt, n)
        print(
            f"  {name:<15} {fmt:<15} {rate:>8.0f}/s  {rate / webdataset_rate:>5.2f}x the WebDataset export "
            f"({webdataset_rate:.0f}/s)",
            flush=True,
        )


def json_root(out: Path) -> str:
    import json

    from medloom.catalog import read_manifest

    manifest = json.loads((out / "manifest.json").read_text())
    return read_manifest(Path(manifest["loom"]))["sources"]["bench"]["root"]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def quality(paths: list[Path], outputs: dict[str, bytes]) -> float:
    scores = []
    for p in paths[:100]:
        got = Image.open(io.BytesIO(outputs[str(p)])).convert("RGB")
        ref = Image.open(p).convert("RGB").resize(got.size, Image.Resampling.LANCZOS)
        scores.append(psnr(np.asarray(got), np.asarray(ref)))
    return float(np.mean(scores))


def main() -> int:
    args = parse_args(__doc__, 2000, sets=True)
    print(where(args))
    print(
        f"{'set':<15} {'n':>5} {'baseline/s':>10} {'medloom 1w/s':>13} {'2w/s':>7} {'1w/base':>8} {'2w/base':>8} "
        f"{'2w/1w':>6} {'PSNR base':>10} {'PSNR medloom':>13}"
    )
    for name in args.sets:
        folder, paths = image_set(args.data, name, args.n, args.stage)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            loom = ingest_folder(folder, tmp)
            base, base_out = baseline(paths, tmp / "baseline")
            m1, m1_out = medloom_export(loom, tmp / "m1", 1, args.n)
            m2, _ = medloom_export(loom, tmp / "m2", 2, args.n)
            q_base, q_m = quality(paths, base_out), quality(paths, m1_out)
            print(
                f"{name:<15} {args.n:>5} {base:>10.0f} {m1:>13.0f} {m2:>7.0f} {m1 / base:>7.2f}x "
                f"{m2 / base:>7.2f}x {m2 / m1:>5.2f}x {q_base:>9.2f} {q_m:>12.2f}",
                flush=True,
            )
            training_formats(loom, tmp / "training", name, args.n, m1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
