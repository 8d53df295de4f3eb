"""What evaluation does with a CLIP-family model (`models/clip.py`) on a loom: the image features of its
records (from `medloom embed`'s cache, the rest computed by the workers), the refusal of records the model was
trained on, and multiple-choice answers by image-text similarity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import EvalError
from ..models.clip import ClipModel


def image_features(loom: Path, table, tower: str, workers: int | None, quiet: bool) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Tower features of the table's records: from `medloom embed`'s cache where it has them, the rest
    computed in worker processes (decoded once, in batches). Returns ({id: features}, unreadable)."""
    import pyarrow as pa

    from .. import catalog
    from ..curate.embed import iter_embeddings
    from ..engine import capped, make_executor, stage_module
    from ..engine.progress import progress_bar
    from ..view.render import render_sources

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
        with (
            make_executor(capped(workers, 2), preload=[stage_module("curate.embed")]) as executor,
            progress_bar(f"image features ({tower})", missing.num_rows, quiet) as advance,
        ):
            for _, (part, unreadable) in executor.map("curate.embed", missing.to_batches(64), settings):
                if part.num_rows:
                    dim = part.schema.field("vector").type.list_size
                    vectors = part.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, dim)
                    found.update(zip(part.column("id").to_pylist(), vectors))
                problems += unreadable
                advance(part.num_rows + len(unreadable))
    return found, problems


def refuse_trained(loom: Path, con, spec: str, what: str) -> None:
    """An evaluation never scores a model on records it was trained on (a `medloom train` model, and an adapter
    `cg run --trainer hf-lora` wrote, list them as keyed hashes in train.json)."""
    from .. import catalog
    from ..records import salted_id

    trained = Path(spec.split(":", 1)[1]) / "train.json"
    if not spec.startswith(("medloom:", "hf:")) or not trained.is_file():  # hf: a `cg run --trainer hf-lora` adapter
        return
    keys = set(json.loads(trained.read_text(encoding="utf-8")).get("record_keys") or [])
    salt = catalog.read_salt(loom)
    seen = [r[0] for r in con.execute("SELECT id FROM selection").fetchall() if salted_id(salt, r[0]) in keys]
    if seen:
        raise EvalError(
            f"{len(seen)} record(s) of {what} were used to train {spec} (for example {seen[0]!r}); "
            "evaluate on records it never saw (another split, or an experiment's test side)"
        )


def answer_by_similarity(loom: Path, table, items: list[dict], model: ClipModel, workers: int | None, quiet: bool) -> None:
    """Each item's answer: the option whose class prompts (the record's modality and anatomy, as in training
    and zero-shot) are nearest its image. Items whose image cannot be read get an `error` instead."""
    from ..export.clipbench import templates
    from .answers import LETTERS

    features, unreadable = image_features(loom, table, model.image_tower, workers, quiet)
    reasons = {u["id"]: u["message"] for u in unreadable}
    ids = list(features)
    images = dict(zip(ids, model.project_images(np.stack([features[i] for i in ids])))) if ids else {}
    if model.neighbours is not None:
        return answer_by_neighbour(items, images, reasons, *model.neighbours)
    options: dict[tuple[str, str, str], np.ndarray] = {}  # (modality, anatomy, option) -> its text's vector
    for modality, anatomy in {(i["modality"], i["anatomy"]) for i in items}:
        names = sorted({o for i in items if (i["modality"], i["anatomy"]) == (modality, anatomy) for o in i["options"]})
        options.update(
            ((modality, anatomy, n), v) for n, v in zip(names, model.encode_names(names, templates(modality, anatomy)))
        )
    for item in items:
        image = images.get(item["record_id"])
        if image is None:
            item["error"] = f"image: {reasons.get(item['record_id'], 'unreadable')}"
            continue
        scores = np.stack([options[item["modality"], item["anatomy"], o] for o in item["options"]]) @ image
        best = int(np.argmax(scores))
        item.update(
            raw=LETTERS[best],
            parsed=LETTERS[best],
            rule="similarity",
            cached=False,
            latency_s=0.0,
            scores=[float(x) for x in scores],
        )


def answer_by_neighbour(
    items: list[dict], images: dict[str, np.ndarray], reasons: dict[str, str], features: np.ndarray, labels: list[str]
) -> None:
    """An nn-probe's answers: each option scores the similarity of the nearest training image carrying it, and the
    best wins (the option of the nearest training image among those carrying an option). A question none of whose
    options a training image carries is answered invalid: scored wrong, as a model that cannot answer is. Options
    and labels are compared as class names, ignoring case; a tie goes to the first option."""
    from ..vocab.words import class_name
    from .answers import LETTERS

    key = lambda text: class_name(text).casefold()  # noqa: E731  (a published option in its source's spelling)
    by_label: dict[str, list[int]] = {}
    for i, name in enumerate(labels):
        by_label.setdefault(key(name), []).append(i)
    for item in items:
        image = images.get(item["record_id"])
        if image is None:
            item["error"] = f"image: {reasons.get(item['record_id'], 'unreadable')}"
            continue
        options = [key(o) for o in item["options"]]
        if not any(o in by_label for o in options):  # no training image carries an option: no answer
            item.update(raw="", parsed="", rule="invalid", cached=False, latency_s=0.0, scores=[])
            continue
        near = features @ image
        scores = [float(near[by_label[o]].max()) if o in by_label else -2.0 for o in options]
        best = int(np.argmax(scores))
        item.update(raw=LETTERS[best], parsed=LETTERS[best], rule="nearest-neighbour", cached=False, latency_s=0.0, scores=scores)
