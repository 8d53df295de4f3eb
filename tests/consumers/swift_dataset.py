"""Run by the Python of a venv with ms-swift (tests/test_cg_mllm.py): ms-swift's own dataset loader
(`swift.dataset.load_dataset`, what `swift sft --dataset FILE` calls: HF datasets' json builder, then its
preprocessor, which checks messages and roles and drops the columns it does not know) on an emitted JSONL, with
ROOT_IMAGE_DIR from the environment as `run.sh` sets it. Prints, as JSON, the version, the rows it kept and each
row's messages and image paths."""

from __future__ import annotations

import json
import sys
from importlib.metadata import version


def main(path: str) -> None:
    from swift.dataset import load_dataset

    train, _ = load_dataset([path], split_dataset_ratio=0.0, num_proc=1)
    rows = [{"messages": r["messages"], "images": [i["path"] for i in r["images"]]} for r in train]
    print(json.dumps({"version": version("ms-swift"), "columns": train.column_names, "rows": rows}))


if __name__ == "__main__":
    main(sys.argv[1])
