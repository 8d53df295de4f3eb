#!/usr/bin/env bash
# Fine-tune a vision-language model with ms-swift (pip install ms-swift) on a medloom swift export.
# Usage: examples/train/swift.sh LOOM [OUT] [MODEL]
# swift-SPLIT.jsonl holds messages, images (relative to OUT: ROOT_IMAGE_DIR) and, for grounding questions,
# objects {ref, bbox, bbox_type: norm1} that ms-swift turns into the model's own grounding format.
set -euo pipefail
LOOM=${1:?give the loom}
OUT=${2:-$LOOM/exports/swift}
MODEL=${3:-Qwen/Qwen2.5-VL-3B-Instruct}

medloom export "$LOOM" --format swift --out "$OUT"

val_args=()
[ -f "$OUT/swift-val.jsonl" ] && val_args=(--val_dataset "$OUT/swift-val.jsonl")
ROOT_IMAGE_DIR="$OUT" swift sft --model "$MODEL" --train_type lora --dataset "$OUT/swift-train.jsonl" \
    "${val_args[@]}" --num_train_epochs 1 --per_device_train_batch_size 1 --output_dir "$OUT.swift-run"
