"""Run by the Python of a venv with open_clip_torch[training] 3.3.0 (tests/test_trainers.py): open_clip_train's own
argument parser and data loaders (`get_data`: its WebDataset pipeline, sizes.json, worker split, batching) on an
`open_clip_train.main` command line from examples/train/open_clip.sh. Prints, as JSON, per epoch the batches
open_clip counted for training and those its data loader gave, and the validation samples read.

Only the model is left out: images become their size and texts their length, so nothing is downloaded or trained.
"""

from __future__ import annotations

import json
import sys

import torch
from open_clip_train.data import get_data
from open_clip_train.params import parse_args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    args.world_size, args.rank, args.distributed = 1, 0, False  # what main() sets for one process
    data = get_data(
        args,
        (lambda image: torch.tensor(image.size), lambda image: torch.tensor(image.size)),
        epoch=0,
        tokenizer=lambda text: [torch.tensor(len(text))],
    )
    epochs = []
    for epoch in range(3):  # a new shard order each epoch, so each worker gets other shards
        data["train"].set_epoch(epoch)
        sizes = [len(images) for images, _ in data["train"].dataloader]
        epochs.append({"counted": data["train"].dataloader.num_batches, "batches": len(sizes), "sizes": sizes})
    val = sum(len(images) for images, _ in data["val"].dataloader) if "val" in data else 0
    print(json.dumps({"epochs": epochs, "val_samples": val, "workers": args.workers, "batch_size": args.batch_size}))


if __name__ == "__main__":
    main(sys.argv[1:])
