"""How many data-loader workers open_clip can train with on a medloom WebDataset export: the most, up to
--workers, that each get at least one full batch. Prints that number; exits 1 saying why when not even one
worker gets a batch. Used by open_clip.sh; reads only sizes.json (the standard library, any Python).

The rules, from open_clip_train 3.3.0 (open_clip_train/data.py, get_wds_dataset, with webdataset 0.2.x):
- without --dataset-resampled it asserts `number of shards must be >= total workers`;
- the shuffled shard list is dealt to the workers (wds.split_by_worker: worker i reads shards i, i+W, ...), so
  some worker gets only len(shards) // W shards, and in some epoch the smallest ones;
- training batches are whole (`wds.batched(batch_size, partial=False)`) and each worker runs for a fixed
  number of batches (`with_epoch`, which repeats the worker's pipeline up to sys.maxsize times until it has
  them, webdataset 0.2.86 pipeline.py): a worker whose shards hold less than one batch never gets one, and the
  run hangs (seen with shards of 1, 2, 1 and 2 samples, 4 workers, batches of 2).

Usage: python open_clip_workers.py EXPORT/sizes.json --workers 4 --batch-size 64 [--split train]
"""

from __future__ import annotations

import argparse
import json
import sys


def least_dealt(sizes: list[int], workers: int) -> int:
    """The fewest samples a worker can be dealt: len(sizes) // workers shards, the smallest ones at worst."""
    return sum(sorted(sizes)[: len(sizes) // workers])


def choose_workers(sizes: list[int], most: int, batch_size: int) -> int:
    """The most workers, up to `most`, that each get a full batch whatever the shard order; 0 when none does."""
    for workers in range(min(most, len(sizes)), 0, -1):
        if least_dealt(sizes, workers) >= batch_size:
            return workers
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", help="the export's sizes.json (samples per shard)")
    parser.add_argument("--workers", type=int, required=True, help="the most data-loader workers to use")
    parser.add_argument("--batch-size", type=int, required=True, help="open_clip's --batch-size")
    parser.add_argument("--split", default="train", help="the split trained on (its shards are SPLIT-*.tar)")
    args = parser.parse_args(argv)
    with open(args.sizes, encoding="utf-8") as f:
        sizes = [int(n) for name, n in json.load(f).items() if name.startswith(f"{args.split}-")]
    workers = choose_workers(sizes, max(args.workers, 1), args.batch_size)
    if not workers:
        print(
            f"{args.sizes}: the {args.split} shards hold {sum(sizes)} samples in all, less than one batch of "
            f"{args.batch_size}: lower the batch size (BATCH=...) or export more records",
            file=sys.stderr,
        )
        return 1
    print(workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
