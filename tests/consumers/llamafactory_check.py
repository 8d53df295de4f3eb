"""Run with LLaMA-Factory importable (tests/test_cg_mllm.py): an emitted `llamafactory.yaml` read by LLaMA-Factory's
own code: its argument parser (`llamafactory.hparams.get_train_args`, as `llamafactory-cli train` reads the YAML:
unknown keys are refused), its `dataset_info.json` reader (`data.parser.get_dataset_list`) and its sharegpt
converter (`data.converter`), which aligns the turns and finds each image under `media_dir`. Prints, as JSON, the
version, what it read and the converted examples' prompts, responses and images.

Only data and arguments: nothing is trained and no model is loaded. The multimodal plugin imports torchaudio at
import time, which the project's venv lacks; it is stubbed when absent (no audio is read here)."""

from __future__ import annotations

import json
import sys
import types


def main(path: str) -> None:
    import peft  # noqa: F401 - imported first: transformers then sees torchaudio as absent, as it is
    import transformers  # noqa: F401
    import yaml

    try:
        import torchaudio  # noqa: F401
    except ImportError:
        sys.modules["torchaudio"] = types.ModuleType("torchaudio")
    import datasets
    from llamafactory.data.converter import get_dataset_converter
    from llamafactory.data.parser import get_dataset_list
    from llamafactory.extras.env import VERSION
    from llamafactory.hparams import get_train_args

    config = yaml.safe_load(open(path))
    model_args, data_args, training_args, finetuning_args, _ = get_train_args(config)
    attrs = get_dataset_list(data_args.dataset, data_args.dataset_dir)
    examples = []
    for attr in attrs:
        loaded = datasets.load_dataset("json", data_files=f"{data_args.dataset_dir}/{attr.dataset_name}", split="train")
        convert = get_dataset_converter(attr.formatting, attr, data_args)
        examples += [convert(row) for row in loaded]
    print(
        json.dumps(
            {
                "version": VERSION,
                "model": model_args.model_name_or_path,
                "finetuning_type": finetuning_args.finetuning_type,
                "lora_rank": finetuning_args.lora_rank,
                "max_steps": training_args.max_steps,
                "accumulation": training_args.gradient_accumulation_steps,
                "template": data_args.template,
                "formatting": [a.formatting for a in attrs],
                "examples": [{k: e[k] for k in ("_prompt", "_response", "_images")} for e in examples],
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
