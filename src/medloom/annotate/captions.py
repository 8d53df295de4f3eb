"""Captions from the MAT triplet and labels (as UniMed does): several templates per task family, chosen by
a seed, filled grammatically, worded as a radiologist's global sentence (prose.py: "Chest radiograph showing
pneumonia", "Axial slice of a brain MRI with a whole-brain mask"). Users add templates per family in the
recipe."""

from __future__ import annotations

import json
import random

from ..vocab.words import (
    NORMAL,
    anatomy_phrase,
    counted,
    finding,
    join_words,
    label_words,
    modality_phrase,
    sentence,
    with_article,
)
from .prose import objects_phrase, study
from .structures import instance_words, object_counts

FAMILIES = ("classification", "multi-label", "grading", "detection", "segmentation")
# a radiologist's global sentence: the study once, then the finding (prose.py says how each part reads)
TEMPLATES: dict[str, list[str]] = {
    "classification": [
        "{Study} showing {finding}.",
        "{Study} demonstrating {finding}.",
        "{Study}: findings consistent with {finding}.",
        "Findings of {finding} on {a_study}.",
    ],
    "multi-label": [
        "{Study} showing {findings}.",
        "{Study} with {n_findings}: {findings}.",
        "Findings on this {study}: {findings}.",
    ],
    "grading": [
        "{Study}, graded as {finding}.",
        "{Study}; severity: {finding}.",
        "Grading of this {study}: {finding}.",
    ],
    "detection": [
        "{Study} with {objects}.",
        "{A_study} with {objects}.",
        "This {study} has {objects}.",
    ],
    "segmentation": [
        "{Study} with {objects}.",
        "{A_study} with {objects}.",
        "This {study} has {objects}.",
    ],
}
# a normal class is the absence of a finding: "Normal chest radiograph", not "showing normal findings" in every form
NORMAL_TEMPLATES = ["Normal {study}.", "{Study} with normal findings.", "{Study} within normal limits: normal findings."]


def task_family(record: dict) -> str | None:
    """The template family for a record, or None when it has nothing to caption from (no labels, no ROIs)."""
    task = (record.get("task") or "").lower()
    rois = record.get("rois") or []
    if rois:
        return "segmentation" if "segmentation" in task or any(r.get("rle") for r in rois) else "detection"
    labels = record.get("labels") or []
    if not labels:
        return None
    if len(labels) > 1:
        return "multi-label"
    return "grading" if task in ("level",) else "classification"


def fill(template: str, record: dict, instances: frozenset[str] | None = None) -> str:
    """The template with the record's words; ROIs as objects (a structure in parts is one, never counted;
    lesions counted; proposals as candidate regions: prose.py)."""
    image = modality_phrase(record["modality"])
    labels = list(record.get("labels") or [])
    words = instance_words(None) if instances is None else instances
    kinds = object_counts(list(record.get("rois") or []), words)
    objects = objects_phrase(record, kinds, words)
    the_study = study(record, json.loads(record["meta"]) if record.get("meta") else None)
    values = {
        "study": the_study,
        "a_study": with_article(the_study),
        "image": image,
        "an_image": with_article(image),
        "of_anatomy": anatomy_phrase(record["anatomy"]),
        "modality": record["modality"],
        "anatomy": record["anatomy"],
        "finding": finding(labels[0]) if labels else "",
        "findings": join_words([finding(x) for x in labels]),
        "n_findings": counted("finding", len(labels)),
        "objects": objects,
        "masks": "a mask" if sum(kinds.values()) == 1 else "masks",
    }
    for key in ("image", "an_image", "objects", "study", "a_study"):
        values[key[0].upper() + key[1:]] = values[key][:1].upper() + values[key][1:]
    return sentence(template.format(**values))


def make_caption(
    record: dict, rng: random.Random, extra: dict[str, list[str]] | None = None, instances: frozenset[str] | None = None
) -> tuple[str, str]:
    """(caption, family); ("", "") for a record with nothing to say."""
    family = task_family(record)
    if family is None:
        return "", ""
    labels = list(record.get("labels") or [])
    normal = family == "classification" and label_words(labels[0]).lower() in NORMAL
    templates = (NORMAL_TEMPLATES if normal else TEMPLATES[family]) + list((extra or {}).get(family, []))
    return fill(rng.choice(templates), record, instances), family
