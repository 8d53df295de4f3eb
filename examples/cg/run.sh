#!/usr/bin/env bash
# Med-MAT's compositional-generalization experiment, end to end, on a generated world where modality, area and
# task are visible in the pixels (make_world.py): build it, ingest it, plan the experiments for the unseen
# target CT / brain / cancer, train one CLIP-style model per training mix and evaluate each on the target,
# then print Med-MAT's Tables 3 and 4 (RESULTS/report/ also holds them as Markdown, JSON and a bar chart).
# Usage: examples/cg/run.sh [OUT_DIR]   (about 2 minutes on 2 cores; run again: finished steps are skipped)
set -euo pipefail
OUT=${1:-cg-world}
PYTHON=${PYTHON:-python}
HERE=$(cd "$(dirname "$0")" && pwd)
"$PYTHON" "$HERE/make_world.py" "$OUT"
"$PYTHON" -m medloom.cli ingest "$OUT/recipe.yaml" -q
"$PYTHON" -m medloom.cli cg plan "$OUT/loom" --target "CT,brain,cancer"
"$PYTHON" -m medloom.cli cg run "$OUT/loom/experiments" --out "$OUT/results" -q
