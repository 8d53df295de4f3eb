#!/usr/bin/env bash
# Fine-tune a vision-language model with ms-swift (pip install ms-swift; 3.x or 4.x) on a medloom swift export.
# Usage: examples/train/swift.sh LOOM [OUT] [MODEL]
# swift-SPLIT.jsonl holds messages, images (relative to OUT: ROOT_IMAGE_DIR) and, for grounding questions,
# objects {ref, bbox, bbox_type: norm1} that ms-swift turns into the model's own grounding format.
# TUNER (default lora; full, ...) is the tuner: ms-swift 4 renamed --train_type to --tuner_type and rejects the
# old name, so the flag is taken from the installed version (run with the Python that has ms-swift).
set -euo pipefail
LOOM=${1:?give the loom}
OUT=${2:-$LOOM/exports/swift}
MODEL=${3:-Qwen/Qwen2.5-VL-3B-Instruct}
TUNER=${TUNER:-lora}

medloom export "$LOOM" --format swift --out "$OUT"

tuner_flag=$(python -c 'from importlib.metadata import version
print("--tuner_type" if int(version("ms-swift").split(".")[0]) >= 4 else "--train_type")')
val_args=()
[ -f "$OUT/swift-val.jsonl" ] && val_args=(--val_dataset "$OUT/swift-val.jsonl")
ROOT_IMAGE_DIR="$OUT" swift sft --model "$MODEL" "$tuner_flag" "$TUNER" --dataset "$OUT/swift-train.jsonl" \
    "${val_args[@]}" --num_train_epochs 1 --per_device_train_batch_size 1 --output_dir "$OUT.swift-run"
