"""`hf:PATH`: a local Hugging Face vision-language model (LLaVA, Qwen-VL, Idefics, ... anything
`AutoModelForImageTextToText` loads with its processor), answering in-process on a GPU when there is one.

It speaks the chat client's interface (`answer(messages) -> (text, cached)`), so `eval vqa` feeds it exactly
what it sends a server: the prompt and the image rendered as a 512 px JPEG. Answers are greedy (no sampling)
and cached per request like the server client's, so a killed run asks nothing twice. One question is
generated at a time (the model holds the device); the images are still rendered ahead in worker processes.
"""

from __future__ import annotations

import base64
import io
import threading
from pathlib import Path

from ..errors import ModelSpecError
from .chat import LLMClient, LLMError, LLMStats


def load_vlm(folder: str):
    """(processor, model, device), offline."""
    from .embedders import hub_offline

    hub_offline()
    try:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: PLC0415 - optional back-end
    except ImportError:
        raise ModelSpecError("hf: models need `pip install transformers` (with torch==2.13.0)") from None
    if not (Path(folder) / "config.json").is_file():
        raise ModelSpecError(
            f"--model hf:{folder}: no config.json there; give a folder written by transformers' "
            "save_pretrained (model and processor)"
        )
    try:
        processor = AutoProcessor.from_pretrained(folder)
        model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    except (OSError, ValueError, KeyError) as e:
        raise ModelSpecError(f"--model hf:{folder}: does not load as a vision-language model ({e})") from None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return processor, model.to(device), device


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


def generate(processor, model, device: str, images: list, text: str, max_new_tokens: int) -> str:
    """Greedy decoding of one chat turn: the images first, then the question, as the model's chat template
    lays them out."""
    import torch

    chat = [{"role": "user", "content": [*({"type": "image"} for _ in images), {"type": "text", "text": text}]}]
    prompt = (
        processor.apply_chat_template(chat, add_generation_prompt=True) if getattr(processor, "chat_template", None) else text
    )
    inputs = processor(images=images or None, text=[prompt], return_tensors="pt").to(device)
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
