"""`hf:PATH`: a local Hugging Face vision-language model (LLaVA, Qwen-VL, Idefics, ... anything
`AutoModelForImageTextToText` loads with its processor), answering in-process on a GPU when there is one.

It speaks the chat client's interface (`answer(messages) -> (text, cached)`), so `eval vqa` feeds it exactly
what it sends a server: the prompt and the image rendered as a 512 px JPEG. Answers are greedy (no sampling)
and cached per request like the server client's, so a killed run asks nothing twice. One question is
generated at a time (the model holds the device); the images are still rendered ahead in worker processes.

The folder may also be a LoRA adapter (peft's `adapter_config.json`, as `cg run --trainer hf-lora`,
LLaMA-Factory and ms-swift write them): its base model (`base_model_name_or_path`) is loaded and the adapter
merged into it, with the adapter folder's processor where it holds one.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from pathlib import Path

from ..errors import ModelSpecError
from .chat import LLMClient, LLMError, LLMStats

PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")


def pick_device(device: str = "auto") -> str:
    """`auto`: the GPU when torch sees one, else the CPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelSpecError("--device cuda: torch sees no GPU here (use auto or cpu)")
    return device


def load_parts(folder: str, dtype=None):
    """(processor, model) of a model folder or of a LoRA adapter folder (merged into its base), offline."""
    from .embedders import hub_offline

    hub_offline()
    try:
        from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: PLC0415 - optional back-end
    except ImportError:
        raise ModelSpecError("hf: models need `pip install transformers` (with torch==2.13.0)") from None
    here = Path(folder)
    adapter = here / "adapter_config.json"
    base = here
    if not (here / "config.json").is_file() and adapter.is_file():
        try:
            base = Path(json.loads(adapter.read_text(encoding="utf-8"))["base_model_name_or_path"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelSpecError(f"--model hf:{folder}: unreadable adapter_config.json ({e})") from None
    if not (base / "config.json").is_file():
        raise ModelSpecError(
            f"--model hf:{folder}: no config.json there"
            + (f" (nor in its adapter's base model {base})" if base != here else "")
            + "; give a folder written by transformers' save_pretrained (model and processor), or a LoRA adapter "
            "folder whose base model is a local folder"
        )
    own = base != here and any((here / f).is_file() for f in PROCESSOR_FILES)
    try:
        processor = AutoProcessor.from_pretrained(here if own else base)
        model = AutoModelForImageTextToText.from_pretrained(base, **({"dtype": dtype} if dtype is not None else {}))
    except (OSError, ValueError, KeyError) as e:
        raise ModelSpecError(f"--model hf:{folder}: does not load as a vision-language model ({e})") from None
    if base != here:
        try:
            from peft import PeftModel  # noqa: PLC0415 - optional back-end
        except ImportError:
            raise ModelSpecError(f"--model hf:{folder} is a LoRA adapter: it needs `pip install peft`") from None
        try:
            model = PeftModel.from_pretrained(model, here).merge_and_unload()
        except (OSError, ValueError, KeyError) as e:
            raise ModelSpecError(f"--model hf:{folder}: the adapter does not apply to {base} ({e})") from None
    return processor, model


def load_vlm(folder: str, device: str = "auto"):
    """(processor, model, device), offline, ready to generate."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ModelSpecError("hf: models need `pip install transformers` (with torch==2.13.0)") from None
    processor, model = load_parts(folder)
    device = pick_device(device)
    return processor, model.eval().to(device), device


def images_and_text(messages: list[dict]) -> tuple[list, str]:
    """The PIL images and the text of the last user message (OpenAI content parts, images as data URLs)."""
    from PIL import Image

    content = messages[-1]["content"]
    if isinstance(content, str):
        return [], content
    images, texts = [], []
    for part in content:
        if part["type"] == "text":
            texts.append(part["text"])
        elif part["type"] == "image_url":
            data = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
            images.append(Image.open(io.BytesIO(data)).convert("RGB"))
    return images, "\n".join(texts)


def user_turn(images: int, text: str) -> list[dict]:
    return [{"role": "user", "content": [*({"type": "image"} for _ in range(images)), {"type": "text", "text": text}]}]


def chat_prompt(processor, images: int, text: str) -> str:
    """The text a model is given for one question: its chat template's user turn (the images first, then the
    question) and the assistant's opening; the bare question for a model without a template. Training
    (`train/mllm.py`) builds its inputs with this too, so a fine-tuned model is asked as it was taught."""
    if getattr(processor, "chat_template", None):
        return processor.apply_chat_template(user_turn(images, text), add_generation_prompt=True)
    return text


def generate(processor, model, device: str, images: list, text: str, max_new_tokens: int) -> str:
    """Greedy decoding of one chat turn: the images first, then the question, as the model's chat template
    lays them out."""
    import torch

    inputs = processor(images=images or None, text=[chat_prompt(processor, len(images), text)], return_tensors="pt")
    # pixels in the weights' dtype (a bfloat16 model on a GPU); ids and masks as they are
    inputs = {
        k: (v.to(device, model.dtype) if v.is_floating_point() else v.to(device)) if torch.is_tensor(v) else v
        for k, v in inputs.items()
    }
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


class HFVisionLanguageClient(LLMClient):
    """The chat client's cache and counters (`LLMClient.answer`) around a local model instead of an HTTP
    server."""

    def __init__(self, folder: str, cache_dir: Path, *, max_tokens: int = 64):
        self.url, self.model, self.cache_dir = f"hf:{folder}", str(folder), Path(cache_dir)
        self.temperature, self.max_tokens = 0.0, max_tokens
        self.stats, self._lock, self._device_lock = LLMStats(), threading.Lock(), threading.Lock()
        self.processor, self.net, self.device = load_vlm(folder)

    def request(self, body: dict, messages: list[dict]) -> str:
        """Generate instead of posting (the cache around it is the chat client's)."""
        images, text = images_and_text(messages)
        with self._device_lock:  # one generation at a time: the model holds the device
            self._count(requests=1)
            try:
                return generate(self.processor, self.net, self.device, images, text, self.max_tokens)
            except (RuntimeError, ValueError, TypeError) as e:
                self._count(failed=1)
                raise LLMError(f"{self.url}: {type(e).__name__}: {e}") from None
