#!/usr/bin/env bash
# Train open_clip (pip install open_clip_torch; it needs torchvision, so a machine where that builds, usually
# with a GPU) on a medloom WebDataset export.
# Usage: examples/train/open_clip.sh LOOM [OUT]
#   PRETRAINED=/path/to/open_clip_pytorch_model.bin MODEL=ViT-B-32 examples/train/open_clip.sh LOOM
#   continues pretraining from that checkpoint (BIOMEDICA's continual pretraining), at a small learning rate.
# open_clip reads the images (.jpg/.png), the caption (.txt, never empty under the default --text auto) and the
# sample count (sizes.json beside the shards), so the shard pattern is the only data flag it needs.
set -euo pipefail
LOOM=${1:?give the loom}
OUT=${2:-$LOOM/exports/open_clip}
MODEL=${MODEL:-ViT-B-32}

medloom export "$LOOM" --format webdataset --out "$OUT"

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
    "${model_args[@]}" --batch-size 64 --epochs 1 --workers 2 --precision amp
# open_clip 3.x can read the caption from the sample JSON instead: add  --json-text-key text
