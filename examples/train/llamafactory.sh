#!/usr/bin/env bash
# Fine-tune a vision-language model with LLaMA-Factory (pip install llamafactory) on a medloom ShareGPT export.
# Usage: examples/train/llamafactory.sh LOOM [OUT] [MODEL]
# The export writes sharegpt-SPLIT.json, images/ and dataset_info.json with one entry per split, named after
# the recipe (NAME_train, NAME_val, NAME_test); image paths are relative to OUT, which is dataset_dir and
# media_dir. To merge the entries into another dataset_info.json, export with --absolute-paths (image paths and
# each entry's file_name absolute).
set -euo pipefail
LOOM=${1:?give the loom}
OUT=${2:-$LOOM/exports/sharegpt}
MODEL=${3:-Qwen/Qwen2.5-VL-3B-Instruct}

medloom export "$LOOM" --format sharegpt --out "$OUT"

NAME=$(python -c 'import json, sys; print(min(json.load(open(sys.argv[1]))).rsplit("_", 1)[0])' "$OUT/dataset_info.json")
cat > "$OUT.llamafactory.yaml" <<YAML
model_name_or_path: $MODEL
stage: sft
do_train: true
finetuning_type: lora
template: qwen2_vl
dataset_dir: $OUT
media_dir: $OUT
dataset: ${NAME}_train
eval_dataset: ${NAME}_val
cutoff_len: 2048
output_dir: $OUT.llamafactory-run
per_device_train_batch_size: 1
num_train_epochs: 1
YAML
llamafactory-cli train "$OUT.llamafactory.yaml"
