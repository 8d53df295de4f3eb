#!/usr/bin/env bash
# Train open_clip (pip install 'open_clip_torch[training]', tested with 3.3.0: the training extra brings the
# webdataset 0.2.x that open_clip_train needs; open_clip needs torchvision) on a medloom WebDataset export.
# Usage: examples/train/open_clip.sh LOOM [OUT]
#   PRETRAINED=/path/to/open_clip_pytorch_model.bin MODEL=ViT-B-32 examples/train/open_clip.sh LOOM
#   continues pretraining from that checkpoint (BIOMEDICA's continual pretraining), at a small learning rate.
#   WORKERS (data-loader workers, at most; default 4) and BATCH (batch size; default 64) can be set the same way.
# open_clip reads the images (.jpg/.png), the caption (.txt, never empty under the default --text auto) and the
# sample count (sizes.json beside the shards), so the shard pattern is the only data flag it needs.
# It deals whole shards to its workers: it refuses fewer train shards than workers, and a worker whose shards
# hold less than one batch yields none. So the export cuts each split into equal shards, a multiple of WORKERS
# (--balance-shards), and open_clip_workers.py takes from sizes.json the most workers that each get a batch.
set -euo pipefail
LOOM=${1:?give the loom}
OUT=${2:-$LOOM/exports/open_clip}
MODEL=${MODEL:-ViT-B-32}
WORKERS=${WORKERS:-4}
BATCH=${BATCH:-64}

medloom export "$LOOM" --format webdataset --out "$OUT" --balance-shards "$WORKERS"

workers=$(python "$(dirname "$0")/open_clip_workers.py" "$OUT/sizes.json" --workers "$WORKERS" --batch-size "$BATCH")
last=$(( $(ls "$OUT"/train-*.tar | wc -l) - 1 ))
train="$OUT/train-{000000..$(printf %06d "$last")}.tar"
val_args=()
if ls "$OUT"/val-*.tar >/dev/null 2>&1; then
    vlast=$(( $(ls "$OUT"/val-*.tar | wc -l) - 1 ))
    val_args=(--val-data "$OUT/val-{000000..$(printf %06d "$vlast")}.tar")
fi
model_args=(--model "$MODEL" --lr 5e-4 --warmup 500)
if [ -n "${PRETRAINED:-}" ]; then  # continual pretraining: start from the checkpoint, learn slowly
    model_args=(--model "$MODEL" --pretrained "$PRETRAINED" --lr 1e-5 --warmup 100 --wd 0.1)
fi
python -m open_clip_train.main --dataset-type webdataset --train-data "$train" "${val_args[@]}" \
    "${model_args[@]}" --batch-size "$BATCH" --epochs 1 --workers "$workers" --precision amp
