"""Model specs for `medloom eval`: which back-end answers, parsed from one string.

- `openai:http://HOST:PORT/v1#MODEL`: an OpenAI-compatible chat completions server (vLLM, Ollama, LMDeploy,
  OpenAI), asked through the annotate step's client: bounded concurrency, retries with back-off, a request
  cache (so a killed run, started again, asks nothing twice), capped replies; images go as data URLs.
- `medloom:PATH`: a CLIP-style model folder (`medloom train clip`, or any folder with medloom-clip.json and
  projection.npz). It answers a multiple-choice question by image-text similarity: each option goes through
  the class prompts of the record's modality and anatomy, and the option whose text is nearest the image wins
  (rule `similarity`; it never fails to answer, so it has no invalid answers).
- `hf-clip:PATH`: a local transformers CLIP-style model (CLIP, SigLIP), answering the same way.
- `hf:PATH`: a local transformers vision-language model with its processor (`hf_vlm.py`), asked in-process
  like a server (same prompt, same image, same cache), on a GPU when there is one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelSpecError


@dataclass(frozen=True)
class ChatSpec:
    url: str
    model: str

    @property
    def text(self) -> str:
        return f"openai:{self.url}#{self.model}"


@dataclass(frozen=True)
class ClipSpec:
    text: str


@dataclass(frozen=True)
class HFSpec:
    folder: str

    @property
    def text(self) -> str:
        return f"hf:{self.folder}"


def parse_spec(spec: str) -> ChatSpec | ClipSpec | HFSpec:
    kind, _, rest = spec.partition(":")
    if kind in ("medloom", "hf-clip") and rest:
        return ClipSpec(spec)
    if kind == "hf" and rest:
        return HFSpec(rest)
    if kind == "openai":
        url, _, model = rest.partition("#")
        if not url.startswith(("http://", "https://")) or not model:
            raise ModelSpecError(
                f"--model {spec!r}: write openai:http://HOST:PORT/v1#MODEL (the server's URL, then "
                "# and the model name it serves)"
            )
        return ChatSpec(url, model)
    raise ModelSpecError(
        f"--model {spec!r}: use openai:http://HOST:PORT/v1#MODEL (an OpenAI-compatible server: "
        "vLLM, Ollama, LMDeploy, OpenAI), hf:PATH (a local transformers vision-language model), "
        "medloom:PATH "
        "(a CLIP-style model folder) or hf-clip:PATH (a local transformers CLIP model); the "
        "last two answer by image-text similarity"
    )


def chat_client(
    spec: ChatSpec | HFSpec,
    cache: Path,
    *,
    concurrency: int,
    retries: int,
    timeout: float,
    max_wait: float,
    allow_insecure_key: bool,
    max_tokens: int = 2048,
):
    """`max_tokens`: the longest reply asked for; a reasoning model needs room before it names its letter."""
    from .chat import LLMClient

    if isinstance(spec, HFSpec):
        from .hf_vlm import HFVisionLanguageClient

        return HFVisionLanguageClient(spec.folder, cache, max_tokens=64)  # not yet --max-tokens: see evaluate.md
    return LLMClient(
        spec.url,
        spec.model,
        cache,
        concurrency=concurrency,
        retries=retries,
        timeout=timeout,
        max_wait=max_wait,
        allow_insecure_key=allow_insecure_key,
        max_tokens=max_tokens,
        answer_deadline=timeout,
    )
