#!/usr/bin/env bash
# Fine-tune LLaVA (a clone of haotian-liu/LLaVA, run from its root) on a medloom LLaVA export.
# Usage: examples/train/llava.sh LOOM [OUT]
# llava-SPLIT.json is the list LLaVA's LazySupervisedDataset reads: id, image (relative to --image_folder),
# conversations of human/gpt turns with <image> in the first human turn.
set -euo pipefail
LOOM=${1:?give the loom}
OUT=${2:-$LOOM/exports/llava}

medloom export "$LOOM" --format llava --out "$OUT"

deepspeed llava/train/train_mem.py --deepspeed ./scripts/zero2.json \
    --model_name_or_path liuhaotian/llava-v1.5-7b --version v1 \
    --data_path "$OUT/llava-train.json" --image_folder "$OUT" \
    --vision_tower openai/clip-vit-large-patch14-336 --mm_projector_type mlp2x_gelu \
    --mm_vision_select_layer -2 --mm_use_im_start_end False --mm_use_im_patch_token False \
    --image_aspect_ratio pad --bf16 True --output_dir "$OUT.llava-run" --num_train_epochs 1 \
    --per_device_train_batch_size 4 --learning_rate 2e-5 --model_max_length 2048 --lazy_preprocess True
