"""Captions from the MAT triplet and labels (as UniMed does): several templates per task family, chosen by
a seed, filled grammatically. Users add templates per family in the recipe."""

from __future__ import annotations

import random

from ..vocab.words import (
    anatomy_phrase,
    counted,
    finding,
    join_words,
    label_words,
    modality_phrase,
    sentence,
    with_article,
)
from .structures import instance_words, object_counts

FAMILIES = ("classification", "multi-label", "grading", "detection", "segmentation")
TEMPLATES: dict[str, list[str]] = {
    "classification": [
        "{An_image} {of_anatomy} showing {finding}.",
        "This {image} {of_anatomy} shows {finding}.",
        "{Image} {of_anatomy}: {finding}.",
        "The {image} {of_anatomy} is consistent with {finding}.",
    ],
    "multi-label": [
        "{An_image} {of_anatomy} showing {findings}.",
        "Findings on this {image} {of_anatomy}: {findings}.",
        "This {image} {of_anatomy} shows {n_findings}: {findings}.",
    ],
    "grading": [
        "{An_image} {of_anatomy}, graded as {finding}.",
        "This {image} {of_anatomy} is graded {finding}.",
        "{Image} {of_anatomy} with a grade of {finding}.",
    ],
    "detection": [
        "{An_image} {of_anatomy} with {objects} marked by boxes.",
        "This {image} {of_anatomy} contains {objects}.",
        "{Objects} can be seen in this {image} {of_anatomy}.",
    ],
    "segmentation": [
        "{An_image} {of_anatomy} with {objects} outlined.",
        "This {image} {of_anatomy} shows {objects}, delineated by {masks}.",
        "Segmentation of {objects} on {an_image} {of_anatomy}.",
    ],
}


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
    """The template with the record's words; ROIs counted as objects (a structure in parts is one)."""
    image = modality_phrase(record["modality"])
    labels = list(record.get("labels") or [])
    kinds = object_counts(list(record.get("rois") or []), instance_words(None) if instances is None else instances)
    objects = join_words([counted(label_words(k), n) for k, n in kinds.items()])
    values = {
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
    for key in ("image", "an_image", "objects"):
        values[key[0].upper() + key[1:]] = values[key][:1].upper() + values[key][1:]
    return sentence(template.format(**values))


def make_caption(
    record: dict, rng: random.Random, extra: dict[str, list[str]] | None = None, instances: frozenset[str] | None = None
) -> tuple[str, str]:
    """(caption, family); ("", "") for a record with nothing to say."""
    family = task_family(record)
    if family is None:
        return "", ""
    templates = TEMPLATES[family] + list((extra or {}).get(family, []))
    return fill(rng.choice(templates), record, instances), family
