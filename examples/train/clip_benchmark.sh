#!/usr/bin/env bash
# Evaluate a CLIP model with clip_benchmark (pip install clip-benchmark) on a medloom clip-benchmark export:
# zero-shot classification per source (classification/SOURCE/) and image-text retrieval (retrieval/).
# Usage: examples/train/clip_benchmark.sh LOOM [OUT]
set -euo pipefail
LOOM=${1:?give the loom}
OUT=${2:-$LOOM/exports/clip-benchmark}

medloom export "$LOOM" --format clip-benchmark --out "$OUT"

datasets=()
for d in "$OUT"/classification/*/; do [ -d "$d" ] && datasets+=("wds/$(basename "$d")"); done
if [ ${#datasets[@]} -gt 0 ]; then
    clip_benchmark eval --dataset "${datasets[@]}" --dataset_root "$OUT/classification/{dataset}" \
        --task zeroshot_classification --split test --model ViT-B-32 --pretrained laion2b_s34b_b79k \
        --output "$OUT.{dataset}.classification.json"
fi
clip_benchmark eval --dataset wds/retrieval --dataset_root "$OUT/{dataset}" --task zeroshot_retrieval \
    --split test --model ViT-B-32 --pretrained laion2b_s34b_b79k --output "$OUT.retrieval.json"
