"""Run by the Python of a venv with ms-swift (tests/test_trainers.py): the installed ms-swift's own argument parser
for `swift sft` (an HfArgumentParser of SftArguments in 4.x, TrainArguments in 3.x, built the way its `parse_args`
builds it) on the arguments examples/train/swift.sh passes. Prints, as JSON, the version, the arguments the parser
did not take (ms-swift's `_parse_args` raises `ValueError: remaining_argv` on any) and what it read.

Only the parse: ms-swift's argument classes load the model when constructed, which needs the hub.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version


def main(argv: list[str]) -> None:
    from transformers import HfArgumentParser

    installed = version("ms-swift")
    if int(installed.split(".")[0]) >= 4:
        from swift.arguments import SftArguments as Arguments
    else:
        from swift.llm import TrainArguments as Arguments
    from swift.utils.utils import _patch_get_type_hints

    with _patch_get_type_hints():
        parser = HfArgumentParser([Arguments])
    read, remaining = parser.parse_known_args(argv)
    print(
        json.dumps(
            {
                "version": installed,
                "remaining": remaining,
                "model": read.model,
                "dataset": read.dataset,
                "val_dataset": read.val_dataset,
                "tuner": getattr(read, "tuner_type", None) or getattr(read, "train_type", None),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
