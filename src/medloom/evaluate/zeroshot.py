"""`medloom eval zeroshot` and `medloom eval retrieval` with a CLIP-family model (`clip.py`).

Zero-shot classification is done per source whose records carry one label from a label space of at least two
classes (one task per source: its classes are its label space). Each class's name (`class_name`: the label
as words, "normal" stays "normal"; results.json lists both as `classes` and `class_names`) goes through prompt
templates (the source's modality and anatomy in words, as the clip-benchmark export writes them, or the
user's `--templates` file with `{c}`); a class's text embedding is the mean of its prompts', normalised. A
record's prediction is the class whose embedding is nearest its image's. Reported per task and pooled: top-1
with its 95% Wilson and patient-bootstrap intervals, top-5, the mean per-class recall, and AUROC for two-class
tasks.

Retrieval ranks, for each image, every distinct text of the selection (image to text) and, for each distinct
text, every image (text to image); a query's positives are the texts (images) equal to its own (several records
can share one caption). Recall@1, 5 and 10 both ways; a negative scored equal to the best positive ranks before
it, so copies of one image under different captions are not counted as found.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..locks import hold
from ..view.selection import experiment_options
from .metrics import as_question, metrics, units
from .vqa import EvalError, RunSelection, open_run, run_settings, select

ZEROSHOT_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("task", pa.string()),
        ("source", pa.string()),
        ("modality", pa.string()),
        ("anatomy", pa.string()),
        ("patient", pa.string()),
        ("label", pa.string()),
        ("predicted", pa.string()),
        ("rank", pa.int32()),
        ("correct", pa.bool_()),
        ("top5", pa.bool_()),
        ("scores", pa.list_(pa.float32())),
        ("model", pa.string()),
    ]
)


@dataclass
class ClipEvalSettings(RunSelection):
    templates: list[str] | None = None  # prompts with {c}; default: from each source's modality and anatomy
    seed: int = 0


def widen_classes(classes: list[str], extra: list[str], fewest: int) -> list[str]:
    """The classes and, in sorted order, distractor labels (`cg plan`'s) that are not a class or a synonym of
    one, up to `fewest` classes (the extra classes count as wrong predictions)."""
    from ..annotate.knowledge import load_knowledge, term_key
    from ..vocab.words import label_words

    kb = load_knowledge(None)
    names = lambda label: {term_key(n) for n in kb.synonyms(label) + [label_words(label)]}  # noqa: E731
    taken = set().union(*(names(c) for c in classes))
    out = list(classes)
    for label in extra:
        if len(out) >= fewest:
            break
        if not names(label) & taken:
            out.append(label)
            taken |= names(label)
    return sorted(out)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half)."""
    from scipy.stats import rankdata

    pos, n_pos = positive.astype(bool), int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@contextmanager
def clip_run(loom: Path, out: Path, s: ClipEvalSettings):
    """(model, run folder, connection with the selection, its fingerprint, the selection in words), under the
    locks: the loom shared, the run folder exclusive."""
    from ..models.clip import load_clip
    from .similarity import refuse_trained

    model = load_clip(s.model)
    if model.neighbours is not None:
        raise EvalError(f"{s.model} is a nearest-neighbour probe: it answers multiple-choice questions only (eval vqa)")
    loom, out = Path(loom), Path(out)
    folder = open_run(loom, out)
    with hold(loom, shared=True), hold(out, what="evaluation run"):
        con, fingerprint, what = select(loom, s)
        refuse_trained(loom, con, s.model, what)
        yield model, folder, con, fingerprint, what


def evaluate_zeroshot(loom: Path, out: Path, s: ClipEvalSettings, *, quiet: bool = False, workers: int | None = None) -> dict:
    started = time.perf_counter()
    with clip_run(loom, out, s) as (model, folder, con, fingerprint, what):
        table = con.sql(
            "SELECT * FROM selection WHERE len(labels) = 1 AND list_contains(label_space, labels[1]) "
            "AND len(label_space) >= 2 ORDER BY id"
        ).to_arrow_table()
        if not table.num_rows:
            raise EvalError(
                f"{loom}: no record in {what} carries one label from a label space of two classes or more: nothing to classify"
            )
        from ..vocab.words import class_name
        from .similarity import image_features

        features, unreadable = image_features(loom, table, model.image_tower, workers, quiet)
        extra, fewest = experiment_options(Path(s.experiment)) if s.experiment else ([], 0)
        rows = [r for r in table.to_pylist() if r["id"] in features]
        predictions = []
        tasks: dict[str, dict] = {}
        for source in sorted({r["source"] for r in rows}):
            group = [r for r in rows if r["source"] == source]
            classes = sorted(set().union(*(r["label_space"] for r in group)))
            if len(classes) < fewest:  # a `cg plan` target with two labels: classes of other tasks beside them
                classes = widen_classes(classes, extra, fewest)
            if s.templates:
                prompts = list(s.templates)
            else:
                from ..export.clipbench import templates

                prompts = templates(group[0]["modality"], group[0]["anatomy"])
            names = [class_name(c) for c in classes]
            text = model.encode_names(names, prompts)
            images = model.project_images(np.stack([features[r["id"]] for r in group]))
            scores = model.logit_scale * images @ text.T
            truth = np.array([classes.index(r["labels"][0]) for r in group])
            order = np.argsort(-scores, axis=1, kind="stable")
            ranks = np.argmax(order == truth[:, None], axis=1) + 1
            for r, score, rank, best in zip(group, scores, ranks, order[:, 0]):
                predictions.append(
                    {
                        "record_id": r["id"],
                        "task": source,
                        "source": source,
                        "modality": r["modality"],
                        "anatomy": r["anatomy"],
                        "patient": r["patient_id"] or "",
                        "label": r["labels"][0],
                        "predicted": classes[best],
                        "rank": int(rank),
                        "correct": bool(rank == 1),
                        "top5": bool(rank <= 5),
                        "scores": [float(x) for x in score],
                        "model": s.model,
                    }
                )
            tasks[source] = {
                "classes": classes,
                "class_names": names,
                "prompts": prompts,
                "auroc": auroc(scores[:, 1] - scores[:, 0], truth == 1) if len(classes) == 2 else None,
            }
        table_out = pa.Table.from_pylist(predictions, ZEROSHOT_SCHEMA)
        folder.write_table("predictions.parquet", table_out)
        results = {
            "settings": run_settings(loom, s, what, fingerprint, [p["record_id"] for p in predictions]),
            "unreadable": unreadable,
            "seconds": round(time.perf_counter() - started, 3),
            **summarise_zeroshot(predictions, tasks, s.seed),
        }
        folder.write_bytes("results.json", json.dumps(results, indent=1).encode())
        return results


def summarise_zeroshot(predictions: list[dict], tasks: dict[str, dict], seed: int) -> dict:
    out = {"tasks": {}, "overall": {}}
    for name, info in tasks.items():
        group = [p for p in predictions if p["task"] == name]
        m = metrics(units([as_question(p) for p in group], False), seed)
        m.pop("invalid"), m.pop("invalid_rate")
        out["tasks"][name] = {
            **m,
            "top5": sum(p["top5"] for p in group) / len(group),
            "classes": info["classes"],
            "class_names": info["class_names"],
            "auroc": info["auroc"],
            "prompts": info["prompts"],
        }
    overall = metrics(units([as_question(p) for p in predictions], False), seed)
    overall.pop("invalid"), overall.pop("invalid_rate")
    out["overall"] = {**overall, "top5": sum(p["top5"] for p in predictions) / len(predictions)}
    return out


def recall_at(sim: np.ndarray, positive: np.ndarray, ks=(1, 5, 10)) -> dict[str, float]:
    """Share of queries (rows) with a positive among their k best-scored candidates (columns). A negative that
    ties with the best positive ranks before it (a copy of an image under another caption earns nothing)."""
    best_positive = np.where(positive, sim, -np.inf).max(axis=1)
    rank = ((sim >= best_positive[:, None]) & ~positive).sum(axis=1) + 1
    return {f"R@{k}": float((rank <= k).mean()) for k in ks}


def evaluate_retrieval(loom: Path, out: Path, s: ClipEvalSettings, *, quiet: bool = False, workers: int | None = None) -> dict:
    from ..view.texts import choose_text
    from .similarity import image_features

    started = time.perf_counter()
    with clip_run(loom, out, s) as (model, folder, con, fingerprint, what):
        table = con.sql("SELECT * FROM selection ORDER BY id").to_arrow_table()
        features, unreadable = image_features(loom, table, model.image_tower, workers, quiet)
        extra, fewest = experiment_options(Path(s.experiment)) if s.experiment else ([], 0)
        rows = [r for r in table.to_pylist() if r["id"] in features]
        texts = [" ".join(choose_text(r, "auto")[0].split()) for r in rows]
        if len(rows) < 2:
            raise EvalError(f"{loom}: {len(rows)} readable record(s) in {what}: retrieval needs two or more")
        distinct = sorted(set(texts))
        index = {t: i for i, t in enumerate(distinct)}
        own = np.array([index[t] for t in texts])
        images = model.project_images(np.stack([features[r["id"]] for r in rows]))
        text_emb = model.encode_texts(distinct)
        sim = images @ text_emb.T  # images x distinct texts
        positive = own[:, None] == np.arange(len(distinct))[None, :]
        results = {
            "settings": run_settings(loom, s, what, fingerprint, [r["id"] for r in rows]),
            "images": len(rows),
            "texts": len(distinct),
            "unreadable": unreadable,
            "image_to_text": recall_at(sim, positive),
            "text_to_image": recall_at(sim.T, positive.T),
            "seconds": round(time.perf_counter() - started, 3),
        }
        ranks = [
            {"record_id": r["id"], "text": t, "text_rank": int((sim[i] >= sim[i, own[i]]).sum()), "model": s.model}
            for i, (r, t) in enumerate(zip(rows, texts))
        ]
        folder.write_table("predictions.parquet", pa.Table.from_pylist(ranks))
        folder.write_bytes("results.json", json.dumps(results, indent=1).encode())
        return results
