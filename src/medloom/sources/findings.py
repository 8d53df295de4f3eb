"""Findings written as parallel lists in one row of a label table: entry i of the label list, of the box list and of
the polygon list is one finding (ChestX-Det's `{"file_name", "syms", "boxes", "polygons"}`, ChestX-Det10's `syms`
and `boxes`). An empty label list is an image with no finding: a negative, kept.

A finding with a polygon becomes a mask, drawn once the image's size is known (`polygons.py`); its published box
is then left out (the mask's regions have their own boxes). A finding whose polygon is unusable keeps its box; one
with neither keeps its label. Problems are quarantine rows naming the table's line and the finding's number.
"""

from __future__ import annotations

import json
import math
import os
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ..records import quarantine_row
from .base import Scan, add_box, check_label, source_record_id


class FindingLists(BaseModel):
    """`findings:` the columns of one row's finding lists; entry i of each list is finding i."""

    model_config = ConfigDict(extra="forbid")
    labels: str  # the column of label lists (ChestX-Det: syms); [] = no finding
    boxes: str | None = None  # the column of box lists, [[x0, y0, x1, y1], ...] (ChestX-Det: boxes)
    polygons: str | None = None  # the column of polygon lists, [[[x, y], [x, y], ...], ...] (ChestX-Det: polygons)
    box_format: Literal["xyxy", "xywh", "cxcywh"] = "xyxy"
    normalized: bool = False  # boxes in [0, 1] of the image's size, else pixels (polygons are always pixels)

    def columns(self) -> list[str]:
        return [c for c in (self.labels, self.boxes, self.polygons) if c]


def cell_list(cell: object) -> list | str:
    """A cell holding a JSON list (a JSON table's list value, or its text in a CSV); [] for an empty cell; else
    a message saying what is wrong."""
    if isinstance(cell, list):
        return cell
    text = str(cell or "").strip()
    if not text:
        return []
    try:
        value = json.loads(text)
    except ValueError:
        return f"not a JSON list: {text[:40]!r}"
    return value if isinstance(value, list) else f"a JSON {type(value).__name__}, not a list: {text[:40]!r}"


def number(v: object) -> float | None:
    """A finite number (not a bool, not text), else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def finding_box(values: object, spec: FindingLists) -> list[float] | None:
    """A finding's box as (x0, y0, x1, y1) in the table's units, or None where it is not four finite numbers."""
    nums = [number(v) for v in values] if isinstance(values, list) else []
    if len(nums) != 4 or any(v is None for v in nums):
        return None
    a, b, c, d = (float(v) for v in nums)  # type: ignore[arg-type]
    if spec.box_format == "xywh":
        return [a, b, a + c, b + d]
    if spec.box_format == "cxcywh":
        return [a - c / 2, b - d / 2, a + c / 2, b + d / 2]
    return [a, b, c, d]


def polygon_points(values: object) -> list[list[float]] | str:
    """A polygon as [[x, y], ...] pixel vertices, or why it is not one (fewer than 3 points, not number pairs)."""
    if not isinstance(values, list):
        return f"a {type(values).__name__}, not a list of [x, y] points"
    points = []
    for p in values:
        xy = [number(v) for v in p] if isinstance(p, list) else []
        if len(xy) != 2 or None in xy:
            return f"point {p!r} is not two finite numbers [x, y]"
        points.append(xy)
    if len(points) < 3:
        return f"{len(points)} point(s); a polygon has at least 3"
    return points  # type: ignore[return-value]


def add_findings(out: Scan, source: dict, spec: FindingLists, row: dict, where: str, path: str, entry: dict) -> None:
    """A row's findings join its image's entry: labels, boxes (`entry["rois"]`) and polygons (`entry["polygons"]`,
    drawn at decode). Lists that cannot be paired (not lists, or of different lengths) quarantine the row."""
    rid = source_record_id(source, os.path.relpath(path, source["root"]))
    lists = {c: cell_list(row.get(c)) for c in spec.columns()}
    bad = {c: v for c, v in lists.items() if isinstance(v, str)}
    if bad:
        column, message = next(iter(bad.items()))
        out.quarantine.append(quarantine_row(source["name"], where, "bad_findings", f"column {column!r}: {message}"))
        return
    labels = lists[spec.labels]
    lengths = {c: len(v) for c, v in lists.items()}
    if len(set(lengths.values())) > 1:
        out.quarantine.append(
            quarantine_row(
                source["name"],
                where,
                "mismatched_findings",
                f"the finding lists differ in length ({', '.join(f'{c}: {n}' for c, n in lengths.items())}); entry i "
                "of each is finding i, so they cannot be paired: the row is skipped",
            )
        )
        return
    entry["listed"] = True  # the row was read: an empty list is a negative, kept
    label_map = source["label_map"]

    def problem(reason: str, message: str) -> None:
        out.quarantine.append(quarantine_row(source["name"], where, reason, message, scope="annotation", record_id=rid))

    for i, raw in enumerate(labels):
        label = str(raw).strip()
        label = label_map.get(label, label)
        if not label:
            problem("missing_label", f"finding {i + 1} has an empty label; the finding is dropped")
            continue
        outside = check_label(source, where, rid, label)
        if outside:
            out.quarantine.append(outside)
            continue
        shown = f"finding {i + 1} ({label!r})"
        if spec.polygons:
            points = polygon_points(lists[spec.polygons][i])
            if not isinstance(points, str):
                entry["polygons"].append({"label": label, "points": points, "where": where, "finding": i + 1})
                if label not in entry["labels"]:
                    entry["labels"].append(label)
                continue
            keeps = "its box is kept" if spec.boxes else "its label is kept"
            problem("bad_polygon", f"{shown}: polygon {points}; the polygon is dropped, {keeps}")
        if spec.boxes:
            values = lists[spec.boxes][i]
            box = finding_box(values, spec)
            if box is None:
                problem("bad_box", f"{shown}: box {values!r} is not four finite numbers ({spec.box_format}); dropped")
                out.dropped[rid] = out.dropped.get(rid, 0) + 1
            else:  # a box without area is quarantined there; the finding keeps its label
                add_box(out, source, where, rid, label, box, spec.normalized, entry["rois"], entry["labels"])
        if label not in entry["labels"]:
            entry["labels"].append(label)
