"""The multiple-choice items a vision-language model is fine-tuned on: an experiment's training records (its
`train.txt`, less the records `dedup` / `leakage --mark` marked out), each with its questions, and their images.

The questions are the ones `eval vqa` would ask of those records (`evaluate/vqa.py`): a record's own published
questions (a `medmat` source's Med-MAT records, a benchmark's) where it has multiple-choice ones, else the
annotation's, else the annotate step's rules with the seed; written in Med-MAT's `Question-choice` format by
default (the question, `A: option` lines, "Answer with the option's letter from the given choices directly."),
the answer its letter (`Answer-choice`). The images are rendered as `eval vqa` shows them to a model (the
export's render stage: JPEG, 512 px), so training and evaluation see the same pixels. Records of a detection or
segmentation subset (Med-MAT's Table 5: detection data as a training source) are asked grounding questions
instead, answered by the normalised box.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from .. import catalog
from ..errors import TrainError
from ..records import source_questions


def experiment_items(
    loom: Path, experiment: Path, *, seed: int = 0, prompt_format: str = "medmat"
) -> tuple[list[dict], pa.Table]:
    """(items, the records they ask about) of an experiment's training side, in record order. Each item has
    `record_id`, `patient`, `prompt`, `answer` (the letter; a grounding question's box), `options` (none for a
    grounding question) and `answer_label`. Records of the experiment's detection subsets (its manifest's
    `grounding`) are asked grounding questions (`grounding_items`), the others multiple-choice ones."""
    from ..evaluate.benchmark import build_source_items
    from ..evaluate.vqa import VQASettings, build_items, prompt_function
    from ..view.selection import Selection, experiment_grounding, select_records, selection_sql

    loom = Path(loom)
    con = catalog.connect(loom)
    try:
        joins, split, marks, _ = selection_sql(loom, Selection(experiment=str(experiment)))
    except OSError as e:
        raise TrainError(f"{experiment}: {e}") from None
    select_records(con, None, joins, split, marks, ["train"])
    table = con.sql("SELECT * FROM selection ORDER BY id").to_arrow_table()
    rows = table.to_pylist()
    boxes = experiment_grounding(Path(experiment))
    located = [r for r in rows if (r["modality"], r["anatomy"], r["task"]) in boxes]
    rows = [r for r in rows if (r["modality"], r["anatomy"], r["task"]) not in boxes]
    own = [r for r in rows if has_choices(r)]
    rest = [r for r in rows if not has_choices(r)]
    ask = prompt_function(prompt_format)
    found = [i for i in build_source_items(own, False, ask) if i["options"]]
    # a plan written with `--options N`: the same added distractors as the target's test questions get
    found += build_items(rest, VQASettings(seed=seed, prompt_format=prompt_format, experiment=str(experiment)))
    found += grounding_items(located)
    keep = ("record_id", "question", "patient", "prompt", "answer", "options", "answer_label", "modality", "anatomy", "task")
    items = sorted(({k: i[k] for k in keep} for i in found), key=lambda i: (i["record_id"], i["question"]))
    asked = {i["record_id"] for i in items}
    return items, table.filter(pa.array([rid in asked for rid in table.column("id").to_pylist()]))


def grounding_items(rows: list[dict]) -> list[dict]:
    """A detection (or segmentation) subset's records train as detection data: where each label it shows is,
    answered by the normalised box or boxes (`annotate.questions.detection_questions`); a negative image is asked
    where its subset's first finding is and answered that there is none."""
    from ..annotate.questions import detection_questions

    findings: dict[tuple, list[str]] = {}  # per subset: the labels its boxes carry, sorted
    for row in rows:
        key = (row["modality"], row["anatomy"], row["task"])
        findings.setdefault(key, [])
        findings[key] += [r["label"] for r in row.get("rois") or [] if r["label"] not in findings[key]]
    out = []
    for row in rows:
        subset = sorted(findings[row["modality"], row["anatomy"], row["task"]])
        for qi, q in enumerate(detection_questions(row, subset)):
            out.append(
                {
                    "record_id": row["id"],
                    "question": qi,
                    "patient": row["patient_id"] or "",
                    "prompt": q["question"],
                    "answer": q["answer"],
                    "options": [],
                    "answer_label": q["answer_label"],
                    "modality": row["modality"] or "",
                    "anatomy": row["anatomy"] or "",
                    "task": row["task"] or "",
                }
            )
    return out


def has_choices(row: dict) -> bool:
    """Whether a record has published multiple-choice questions (options and a letter)."""
    try:
        return any(q.get("options") and q.get("answer_letter") for q in source_questions(row.get("meta")))
    except (ValueError, AttributeError):
        return False


def render_images(loom: Path, table: pa.Table, workers: int | None) -> tuple[dict[str, bytes], dict[str, str]]:
    """({record id: JPEG bytes}, {record id: why it could not be read}) for the table's records, rendered as
    `eval vqa` renders them."""
    from ..engine import make_executor, stage_module
    from ..evaluate.vqa import RENDER
    from ..view.render import render_sources

    images: dict[str, bytes] = {}
    unreadable: dict[str, str] = {}
    if not table.num_rows:
        return images, unreadable
    settings = {"sources": render_sources(catalog.read_manifest(Path(loom))), **RENDER}
    with make_executor(workers, preload=[stage_module("view.render")]) as executor:
        for _, results in executor.map("view.render", table.to_batches(32), settings, ordered=True):
            for result in results:
                rid = result["row"]["id"]
                if "reason" in result:
                    unreadable[rid] = f"{result['reason']}: {result['message']}"
                else:
                    images[rid] = result["image"]
    return images, unreadable
