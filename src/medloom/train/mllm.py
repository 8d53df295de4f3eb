"""`cg run --trainer hf-lora`: a local vision-language model fine-tuned with LoRA (transformers + peft) on an
experiment's multiple-choice items, as Med-MAT fine-tuned its MLLMs per experiment.

- **What it learns from**: the items of `mcq.experiment_items` (the experiment's `train.txt` only; Med-MAT's
  `Question-choice` prompt, the answer's letter), each with its image rendered as `eval vqa` renders it. A
  record of the target's test side never reaches training: the caller names them (`forbidden`) and a mix
  holding one is refused.
- **What it trains**: LoRA adapters (rank `rank`, scale `alpha / rank`) on the language model's attention and
  MLP projections (`TARGETS`: the modules under `language_model`, so the vision tower and the projector stay
  as they are), the rest frozen. The input is the model's chat template as `eval vqa --model hf:` asks it
  (`hf_vlm.chat_prompt`: the image, then the question, then the assistant's opening) followed by the answer as
  the template writes an assistant turn (the letter and its end-of-turn token); the loss counts the answer's
  tokens only.
- **How long**: `steps` optimiser steps of `batch_size` items each (gradients accumulated over single items, so
  images of any size mix), items drawn without replacement in an order the seed shuffles, reshuffled when the
  pool is used up: every experiment of a target trains the same number of steps on the same number of items,
  whatever the size of its mix. AdamW at `lr`, gradients clipped at norm 1. One seed gives one adapter.
- **Where**: the GPU when torch sees one (`device` auto; bfloat16 weights there where the GPU has it), else
  the CPU in float32.
- **What it writes** (`out`): the adapter as peft saves it (`adapter_config.json`, naming the base model's
  folder, and `adapter_model.safetensors`), the processor, and last `train.json` (settings, the training
  records as keyed hashes, items, steps, the loss per step, seconds, device): a folder without `train.json` is
  an interrupted run, which the caller clears and trains again. `--model hf:OUT` evaluates it (`hf_vlm`
  merges the adapter into its base) and refuses the records it was trained on.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import TrainError
from ..outputs import write_file

# the language model's linear layers, in every transformers VLM whose text model sits under `language_model`
# (LLaVA, Qwen2-VL and 2.5-VL, Llama-3.2-Vision, Idefics3, Gemma 3, ...)
TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass
class LoraSettings:
    model: str = ""  # hf:FOLDER, the base model
    steps: int = 100
    batch_size: int = 8
    lr: float = 2e-4
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    seed: int = 0
    device: str = "auto"  # auto (the GPU when there is one), cpu or cuda
    prompt_format: str = "medmat"
    experiment: str | None = None


def base_folder(spec: str) -> Path:
    """The local folder of `hf:FOLDER`."""
    kind, _, folder = spec.partition(":")
    if kind != "hf" or not folder:
        raise TrainError(f"--model {spec!r}: the hf-lora trainer fine-tunes a local model: give hf:FOLDER")
    return Path(folder).resolve()


def check(s: LoraSettings) -> None:
    if s.steps < 1 or s.batch_size < 1 or s.lr <= 0 or s.rank < 1 or s.alpha <= 0 or not 0 <= s.dropout < 1:
        raise TrainError(
            "--steps, --batch-size and --lora-rank must be at least 1, --lr and --lora-alpha positive, --lora-dropout in [0, 1)"
        )
    base_folder(s.model)


def schedule(items: int, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """Item indices per step: seeded permutations of the pool, one after the other."""
    rng = np.random.default_rng(seed)
    order: list[int] = []
    while len(order) < steps * batch_size:
        order += rng.permutation(items).tolist()
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(steps)]


def answer_suffix(processor, prompt_text: str, question: str, answer: str) -> str:
    """What follows the prompt in a conversation the chat template writes with the answer as the assistant's
    turn (the letter and the template's end of turn); the answer and the end-of-sequence token for a model
    without a template, or one whose template does not continue the prompt."""
    from ..models.hf_vlm import user_turn

    tokenizer = getattr(processor, "tokenizer", processor)
    if getattr(processor, "chat_template", None):
        turn = {"role": "assistant", "content": [{"type": "text", "text": answer}]}
        try:
            full = processor.apply_chat_template([*user_turn(1, question), turn])
        except Exception:  # noqa: BLE001 - a template's own error (jinja raise_exception): the plain form below
            full = ""
        if isinstance(full, str) and full.startswith(prompt_text) and answer in full[len(prompt_text) :]:
            return full[len(prompt_text) :]
    return answer + (tokenizer.eos_token or "")


def encode(processor, image, question: str, answer: str) -> dict:
    """One training example as tensors (a batch of one): the prompt exactly as `eval vqa` gives it
    (`hf_vlm.chat_prompt` through the processor), then the answer's tokens; `labels` is -100 on the prompt."""
    import torch

    from ..models.hf_vlm import chat_prompt

    text = chat_prompt(processor, 1, question)
    inputs = processor(images=[image], text=[text], return_tensors="pt")
    tokenizer = getattr(processor, "tokenizer", processor)
    answer_ids = tokenizer(answer_suffix(processor, text, question, answer), add_special_tokens=False, return_tensors="pt")[
        "input_ids"
    ]
    ids = inputs["input_ids"]
    out = {}
    for key, value in inputs.items():
        if key == "input_ids":
            out[key] = torch.cat([ids, answer_ids], 1)
        elif key == "attention_mask":
            out[key] = torch.cat([value, torch.ones_like(answer_ids)], 1)
        elif torch.is_tensor(value) and value.dim() == 2 and value.shape == ids.shape:  # per-token ids (token types)
            out[key] = torch.cat([value, torch.zeros_like(answer_ids)], 1)
        else:
            out[key] = value
    out["labels"] = torch.cat([torch.full_like(ids, -100), answer_ids], 1)
    return out


def train_lora(
    loom: Path,
    out: Path,
    s: LoraSettings,
    *,
    forbidden: set[str] | frozenset[str] = frozenset(),
    workers: int | None = None,
    quiet: bool = False,
    extra: dict | None = None,
) -> dict:
    """Fine-tune `s.model` on the experiment's items and write the adapter to `out` (see the module); returns
    what train.json holds."""
    from ..engine.progress import progress_bar
    from ..models.hf_vlm import load_parts, pick_device
    from .mcq import experiment_items, render_images
    from .projections import record_keys

    check(s)
    try:
        import torch
        from peft import LoraConfig, get_peft_model  # noqa: PLC0415 - optional back-end
        from PIL import Image
    except ImportError as e:
        raise TrainError(f"the hf-lora trainer needs transformers and peft (`pip install peft`): {e}") from None
    started = time.perf_counter()
    loom, out = Path(loom), Path(out)
    items, table = experiment_items(loom, Path(s.experiment), seed=s.seed, prompt_format=s.prompt_format)
    leaked = sorted({i["record_id"] for i in items} & set(forbidden))
    if leaked:
        raise TrainError(f"{s.experiment}: {len(leaked)} training record(s) are the target's test records (e.g. {leaked[0]!r})")
    if not items:
        raise TrainError(
            f"{s.experiment}: no multiple-choice question in its training records ({table.num_rows} asked about): "
            "records need a label from a label space of two or more classes"
        )
    images, unreadable = render_images(loom, table, workers)
    pool = [i for i in items if i["record_id"] in images]
    if not pool:
        raise TrainError(f"{s.experiment}: no readable image among its training records ({next(iter(unreadable.values()))})")
    steps = schedule(len(pool), s.steps, s.batch_size, s.seed)
    device = pick_device(s.device)
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    processor, model = load_parts(str(base_folder(s.model)), dtype=dtype)
    torch.manual_seed(s.seed)  # the adapters' initialisation and dropout
    config = LoraConfig(r=s.rank, lora_alpha=s.alpha, lora_dropout=s.dropout, target_modules=TARGETS)
    try:
        model = get_peft_model(model, config)
    except ValueError as e:
        raise TrainError(f"{s.model}: no language-model projection for LoRA ({TARGETS}): {e}") from None
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=0.0)
    losses: list[float] = []
    with progress_bar(f"hf-lora {Path(s.experiment).name}", len(steps), quiet) as advance:
        for n, batch in enumerate(steps, 1):
            total = 0.0
            for k in batch:
                item = pool[k]
                image = Image.open(io.BytesIO(images[item["record_id"]])).convert("RGB")
                inputs = {
                    key: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) if torch.is_tensor(v) else v
                    for key, v in encode(processor, image, item["prompt"], item["answer"]).items()
                }
                loss = model(**inputs).loss
                if not torch.isfinite(loss):
                    raise TrainError(f"{s.experiment}: the loss is not finite at step {n}; try a smaller --lr")
                (loss / len(batch)).backward()
                total += float(loss.detach())
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(round(total / len(batch), 6))
            advance(1)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    adapter = out / "adapter_config.json"
    config_json = json.loads(adapter.read_text(encoding="utf-8"))
    config_json["base_model_name_or_path"] = str(base_folder(s.model))  # an absolute folder: loads from anywhere
    write_file(adapter, json.dumps(config_json, indent=2).encode())
    used = sorted({pool[k]["record_id"] for batch in steps for k in batch})
    report = {
        "trainer": "hf-lora",
        "settings": asdict(s),
        "base_model": str(base_folder(s.model)),
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
        "items": len(pool),
        "records": len({i["record_id"] for i in pool}),
        "unreadable": len(unreadable),
        "examples_seen": sum(len(b) for b in steps),
        "record_keys": record_keys(loom, [{"id": i} for i in used]),
        "trainable_parameters": sum(p.numel() for p in params),
        "losses": losses,
        "seconds": round(time.perf_counter() - started, 3),
        **(extra or {}),
    }
    write_file(out / "train.json", json.dumps(report, indent=1).encode())
    return report
