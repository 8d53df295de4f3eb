"""`cg run PLAN --trainer llamafactory|swift --emit-configs --model MODEL --out OUT`: each experiment's training
run for LLaMA-Factory or ms-swift, written and not run, on the same items `--trainer hf-lora` trains on.

- **Items**: the experiment's multiple-choice items (`train/mcq.py`: its `train.txt` only, Med-MAT's
  `Question-choice` prompt, the answer's letter), in the layouts medloom's exports write for these trainers
  (`export/training.py`: `sharegpt` for LLaMA-Factory, with a `dataset_info.json` entry; `swift` JSONL), one
  user turn `<image>` + prompt and one assistant turn, the letter. The images are rendered once as `eval vqa`
  shows them (JPEG, 512 px) into `OUT/images/`, and named relative to OUT (LLaMA-Factory's `dataset_dir` and
  `media_dir`; ms-swift's `ROOT_IMAGE_DIR`).
- **Runs**: per experiment and seed (`--seeds`; one seed: `seed-0`) `OUT/TARGET/NAME/seed-S/llamafactory.yaml`
  (LoRA SFT, `max_steps` steps of `batch_size` examples: one per device and step, accumulated, so every
  experiment of a target trains the same number of steps and examples, as hf-lora does) or `swift-args.json`
  (the `swift sft` arguments), beside that seed's items; the adapter goes to `OUT/TARGET/NAME/seed-S/adapter`.
  An experiment the plan left untrained (`short`) gets `skipped.json` (n/a in the tables) and no config.
  `OUT/run.sh` trains each one, asks it the target's test records with `medloom eval vqa --model hf:ADAPTER
  --prompt-format medmat` into `OUT/TARGET/NAME/seed-S/mc` (and the base model, when it is a local folder,
  once into `.../baseline/seed-S/mc`, S the first seed), then `medloom cg report PLAN --results OUT` prints the
  tables.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from pathlib import Path

import pyarrow as pa

from ..errors import PlanError
from ..outputs import OutputFolder
from ..train.mllm import LoraSettings
from .plan import find_experiments, slug

# LLaMA-Factory's chat template for a model's `model_type` (its config.json)
TEMPLATES = {
    "qwen2_vl": "qwen2_vl",
    "qwen2_5_vl": "qwen2_vl",
    "qwen3_vl": "qwen3_vl",
    "llava": "llava",
    "llava_next": "llava_next",
    "mllama": "mllama",
    "gemma3": "gemma3",
    "paligemma": "paligemma",
    "idefics3": "idefics3",
    "internvl": "intern_vl",
}


def model_path(spec: str) -> tuple[str, Path | None]:
    """(what the trainer is given, the local folder or None): hf:FOLDER, or hf:ORG/NAME, a hub id."""
    kind, _, rest = spec.partition(":")
    if kind != "hf" or not rest:
        raise PlanError(f"--model {spec!r}: give hf:FOLDER (a local model) or hf:ORG/NAME (a hub id the trainer downloads)")
    folder = Path(rest)
    if (folder / "config.json").is_file():
        return str(folder.resolve()), folder.resolve()
    return rest, None


def chat_template(folder: Path | None, given: str | None) -> str:
    if given:
        return given
    model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type") if folder else None
    if model_type in TEMPLATES:
        return TEMPLATES[model_type]
    raise PlanError(
        "--template: LLaMA-Factory needs the model's chat template"
        + (f" (no known one for model_type {model_type!r})" if model_type else " (the model is not a local folder)")
        + f"; known: {', '.join(sorted(set(TEMPLATES.values())))}"
    )


def conversation(item: dict) -> list[dict]:
    """The item as one exchange: the image and the prompt, then the letter."""
    return [{"role": "user", "content": "<image>" + item["prompt"]}, {"role": "assistant", "content": item["answer"]}]


def emit_configs(
    plan: Path,
    out: Path,
    trainer: str,
    lora: LoraSettings,
    *,
    template: str | None = None,
    loom: Path | None = None,
    seeds: list[int] | None = None,
    workers=None,
    progress=print,
) -> dict:
    """Write every experiment's dataset and config and OUT/run.sh; returns what was written."""
    from ..export.training import image_name
    from ..train.mcq import experiment_items, render_images
    from .run import plan_loom

    if trainer not in ("llamafactory", "swift"):
        raise PlanError(f"--trainer {trainer!r}: --emit-configs writes llamafactory or swift configs")
    experiments = find_experiments(plan)
    loom = plan_loom(experiments, loom)
    model, folder = model_path(lora.model)
    tpl = chat_template(folder, template) if trainer == "llamafactory" else None
    out = Path(out).resolve()
    results = OutputFolder(out)
    results.require_only_own("cg results")
    results.ensure()
    rendered: set[str] = set()
    info: dict[str, dict] = {}
    written, script = (
        [],
        ["#!/usr/bin/env bash", f"# {trainer}: every experiment of {plan}, then medloom's tables", "set -euo pipefail"],
    )
    script += ['cd "$(dirname "$0")"', 'export ROOT_IMAGE_DIR="$PWD"'] if trainer == "swift" else ['cd "$(dirname "$0")"']
    if trainer == "swift":
        script += [
            "tuner_flag=$(python -c 'from importlib.metadata import version",
            'print("--tuner_type" if int(version("ms-swift").split(".")[0]) >= 4 else "--train_type")\')',
        ]
    seed_list = seeds or [lora.seed]
    for target in sorted({e["target"] for e in experiments}):
        group = [e for e in experiments if e["target"] == target]
        test_side = group[0]["folder"]
        if folder is not None:  # the model as it is: once per target, in the first seed's folder
            script.append(
                eval_line(loom, test_side, f"hf:{folder}", f"{slug(target)}/baseline/seed-{seed_list[0]}/mc", seed_list[0])
            )
        for e, seed in ((e, seed) for e in group for seed in seed_list):
            rel = f"{slug(target)}/{e['name']}/seed-{seed}"
            progress(f"cg run --emit-configs: {target} / {e['name']} / seed {seed}")
            if e.get("short"):  # the plan drew no training record: n/a in the tables, with why
                results.write_bytes(f"{rel}/skipped.json", json.dumps({"why": e["short"]}, indent=1).encode())
                script.append(f"# {rel}: {e['short']}")
                continue
            items, table = experiment_items(loom, Path(e["folder"]), seed=seed, prompt_format=lora.prompt_format)
            if not items:
                script.append(f"# {rel}: no multiple-choice question in its training records: nothing to train")
                continue
            todo = table.filter(pa.array([rid not in rendered for rid in table.column("id").to_pylist()]))
            images, unreadable = render_images(loom, todo, workers)
            for rid, data in images.items():
                results.write_bytes(image_name(rid, "jpg"), data)
            rendered |= set(images)
            items = [i for i in items if i["record_id"] in rendered]
            rows = [
                {"id": i["record_id"], "messages": conversation(i), "images": [image_name(i["record_id"], "jpg")]} for i in items
            ]
            settings = replace(lora, seed=seed, experiment=e["folder"])
            if trainer == "llamafactory":
                name = rel.replace("/", "__")
                results.write_bytes(f"{rel}/data.json", json.dumps(rows, ensure_ascii=False, indent=1).encode())
                info[name] = {
                    "file_name": f"{rel}/data.json",
                    "formatting": "sharegpt",
                    "columns": {"messages": "messages", "images": "images"},
                    "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
                }
                config = llamafactory_config(model, tpl, name, out, f"{rel}/adapter", settings)
                results.write_bytes(f"{rel}/llamafactory.yaml", yaml_text(config).encode())
                script.append(f"llamafactory-cli train {shlex.quote(rel + '/llamafactory.yaml')}")
            else:
                results.write_bytes(
                    f"{rel}/train.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
                )
                args = swift_args(model, f"{rel}/train.jsonl", f"{rel}/adapter", settings)
                results.write_bytes(f"{rel}/swift-args.json", json.dumps(args, indent=1).encode())
                script.append("swift sft " + " ".join(map(shlex.quote, args)).replace("--tuner_type", '"$tuner_flag"'))
            adapter = f"{rel}/adapter" + (f"/checkpoint-{lora.steps}" if trainer == "swift" else "")
            script.append(eval_line(loom, test_side, f"hf:{adapter}", f"{rel}/mc", seed_list[0]))
            written.append(
                {"target": target, "name": e["name"], "seed": seed, "items": len(items), "unreadable": len(unreadable)}
            )
    if trainer == "llamafactory":
        results.write_bytes("dataset_info.json", json.dumps(info, indent=1).encode())
    script.append(f'medloom cg report {shlex.quote(str(Path(plan).resolve()))} --results "$PWD" --out report')
    results.write_bytes("run.sh", ("\n".join(script) + "\n").encode())
    (out / "run.sh").chmod(0o755)
    return {
        "trainer": trainer,
        "model": model,
        "template": tpl,
        "out": str(out),
        "script": str(out / "run.sh"),
        "experiments": written,
    }


def eval_line(loom: Path, test_side: str, spec: str, run: str, seed: int) -> str:
    """`medloom eval vqa` of a model on the target's test records, asked as hf-lora's models are (the questions
    of the first seed, as `cg run` asks every seed's)."""
    return (
        f"medloom eval vqa {shlex.quote(str(Path(loom).resolve()))} --experiment {shlex.quote(str(Path(test_side).resolve()))} "
        f"--seed {seed} --model {shlex.quote(spec)} --prompt-format medmat --out {shlex.quote(run)} -q"
    )


def llamafactory_config(model: str, template: str, dataset: str, out: Path, adapter: str, s: LoraSettings) -> dict:
    """LLaMA-Factory's LoRA SFT config (its `llamafactory-cli train` YAML keys)."""
    return {
        "model_name_or_path": model,
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_rank": s.rank,
        "lora_alpha": s.alpha,
        "lora_dropout": s.dropout,
        "lora_target": "all",
        "dataset": dataset,
        "dataset_dir": str(out),
        "media_dir": str(out),
        "template": template,
        "cutoff_len": 2048,
        "output_dir": str(out / adapter),
        "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": s.batch_size,
        "max_steps": s.steps,
        "learning_rate": s.lr,
        "lr_scheduler_type": "constant",
        "max_grad_norm": 1.0,
        "seed": s.seed,
        "logging_steps": 10,
        "save_strategy": "no",
        "report_to": "none",
    }


def swift_args(model: str, dataset: str, adapter: str, s: LoraSettings) -> list[str]:
    """`swift sft`'s arguments (ms-swift 4's `--tuner_type`; run.sh swaps in 3.x's `--train_type`)."""
    return [
        "--model", model,
        "--tuner_type", "lora",
        "--dataset", dataset,
        "--split_dataset_ratio", "0",
        "--lora_rank", str(s.rank),
        "--lora_alpha", str(s.alpha),
        "--lora_dropout", str(s.dropout),
        "--target_modules", "all-linear",
        "--max_steps", str(s.steps),
        "--per_device_train_batch_size", "1",
        "--gradient_accumulation_steps", str(s.batch_size),
        "--learning_rate", str(s.lr),
        "--lr_scheduler_type", "constant",
        "--max_grad_norm", "1.0",
        "--seed", str(s.seed),
        "--add_version", "false",
        "--save_strategy", "steps",
        "--save_steps", str(s.steps),
        "--output_dir", adapter,
    ]  # fmt: skip


def yaml_text(config: dict) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False)
