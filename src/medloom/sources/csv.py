"""A label table: one row per image (single, multi-label or one-hot labels), or one row per box.

Paths in the image column are resolved relative to the source root; bare file names (or names whose
folders do not exist here) are matched by basename anywhere under the root.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from ..records import quarantine_row
from ..vocab.splits import split_name
from .base import (
    Scan,
    add_box,
    bad_box_row,
    basename_index,
    decode_image_file,
    make_task,
    parse_box,
    resolve_file,
    source_record_id,
)
from .captions import CaptionOptions, Captions
from .splitlists import SplitListOptions, SplitLists, uri_of
from .tables import TableOptions, load_label_table

TRUE_VALUES = frozenset({"1", "1.0", "true", "yes", "y", "t", "positive", "pos"})


class BoxColumns(BaseModel):
    model_config = ConfigDict(extra="forbid")
    xmin: str
    ymin: str
    xmax: str
    ymax: str
    normalized: bool = False


class Options(TableOptions, SplitListOptions, CaptionOptions):
    """The table's keys (format, delimiter, encoding, columns, header, sheet, join: `tables.TableOptions`), the
    official split lists and caption files (`splitlists.py`, `captions.py`) and how its columns make records."""

    model_config = ConfigDict(extra="forbid")
    csv: str  # the table (.csv, .tsv, .txt, .xlsx, .json, each possibly .gz/.zip), relative to the source root
    image_column: str
    # format for the image column's value, e.g. "images/{value}.png" or "BloodImage_{value:0>5}.jpg"
    image_template: str | None = None
    label_column: str | None = None
    label_separator: str | None = None  # multi-label: "|" (NIH), "," ...
    label_columns: list[str] | None = None  # one-hot: a column per class, truthy = present
    patient_column: str | None = None
    study_column: str | None = None
    caption_column: str | None = None  # free text about the image (a report sentence, a figure caption)
    split_column: str | None = None
    box_columns: BoxColumns | None = None  # one row per box: label_column names the box's class
    # a row with no label: quarantine it, or keep the image with no labels
    empty_labels: Literal["quarantine", "keep"] = "quarantine"

    @model_validator(mode="after")
    def _one_label_kind(self) -> Options:
        if self.label_column and self.label_columns:
            raise ValueError("give either label_column or label_columns (one-hot), not both")
        return self


decode = decode_image_file


def _labels(row: dict, opts: Options, label_map: dict) -> list[str]:
    if opts.label_columns:
        found = [c for c in opts.label_columns if str(row.get(c, "")).strip().lower() in TRUE_VALUES]
    elif opts.label_column:
        raw = str(row.get(opts.label_column) or "").strip().strip('"').strip()
        parts = raw.split(opts.label_separator) if opts.label_separator else [raw]
        found = [p.strip().strip('"').strip() for p in parts]
    else:
        return []
    out: list[str] = []
    for label in found:
        label = label_map.get(label, label)
        if label and label not in out:
            out.append(label)
    return out


def scan(source: dict) -> Scan:
    opts = Options(**source["options"])
    root = source["root"]
    out = Scan()
    needed = [
        opts.image_column,
        opts.label_column,
        opts.patient_column,
        opts.study_column,
        opts.split_column,
        opts.caption_column,
        *(opts.label_columns or []),
    ]
    if opts.box_columns:
        b = opts.box_columns
        needed += [b.xmin, b.ymin, b.xmax, b.ymax]
    table = load_label_table(source, opts, opts.csv, needed)
    out.quarantine += table.quarantine
    lists = SplitLists.load(source, opts)
    captions = Captions(source, opts) if opts.caption_files else None
    index: dict | None = None
    by_image: dict[str, dict] = {}
    unresolved: dict[str, list] = {}  # image name -> [first row, reason, message, rows]
    for row in table.rows:
        where = row.where
        value = str(row.get(opts.image_column) or "").strip()
        if not value:
            out.quarantine.append(
                quarantine_row(source["name"], where, "missing_image_name", f"column {opts.image_column!r} is empty")
            )
            continue
        name = opts.image_template.format(value=value) if opts.image_template else value
        path, problem = resolve_file(root, name, None)
        if problem:
            index = index if index is not None else basename_index(root)
            path, problem = resolve_file(root, name, index)
        if problem:
            reason = "ambiguous_basename" if problem.startswith("ambiguous") else "missing_file"
            unresolved.setdefault(name, [where, reason, problem, 0])[3] += 1
            continue
        labels = _labels(row, opts, source["label_map"])
        outside = [lab for lab in labels if source.get("classes") and lab not in source["classes"]]
        if outside and not opts.box_columns:
            out.quarantine.append(
                quarantine_row(
                    source["name"],
                    where,
                    "label_outside_space",
                    f"label(s) {outside} not in the declared classes {sorted(source['classes'])}",
                )
            )
            continue
        entry = by_image.get(path)
        if entry is None:
            split = split_name(str(row.get(opts.split_column, ""))) if opts.split_column else None
            entry = by_image[path] = {
                "labels": [],
                "rois": [],
                "where": where,
                "split": split or "",
                "patient": row.get(opts.patient_column, "") if opts.patient_column else "",
                "study": row.get(opts.study_column, "") if opts.study_column else "",
                "caption": str(row.get(opts.caption_column) or "").strip() if opts.caption_column else "",
            }
        elif not opts.box_columns:
            out.quarantine.append(
                quarantine_row(
                    source["name"],
                    where,
                    "duplicate_row",
                    f"{name!r} already listed at {entry['where']}; labels merged",
                    scope="warning",
                )
            )
        if opts.box_columns:
            b = opts.box_columns
            label = labels[0] if labels else "object"
            rid = source_record_id(source, os.path.relpath(path, root))
            values = [row.get(b.xmin), row.get(b.ymin), row.get(b.xmax), row.get(b.ymax)]
            box = parse_box(values)
            if box is None:
                out.quarantine.append(bad_box_row(source, where, rid, label, values))
                out.dropped[rid] = out.dropped.get(rid, 0) + 1
                continue
            add_box(out, source, where, rid, label, box, b.normalized, entry["rois"], entry["labels"])
            continue
        for lab in labels:
            if lab not in entry["labels"]:
                entry["labels"].append(lab)
    for where, reason, problem, n in unresolved.values():
        rows_note = f" ({n} rows)" if n > 1 else ""
        out.quarantine.append(quarantine_row(source["name"], where, reason, problem + rows_note))
    for path, entry in by_image.items():
        if lists is not None:  # the lists' split wins over split_column's
            entry["split"] = lists.assign(out, uri_of(path, root), entry["split"])
            if entry["split"] is None:
                continue
        if not entry["labels"] and not opts.box_columns and opts.empty_labels == "quarantine":
            out.quarantine.append(
                quarantine_row(
                    source["name"],
                    entry["where"],
                    "missing_label",
                    "the row has no label; set `empty_labels: keep` to keep unlabelled images",
                )
            )
            continue
        out.tasks.append(
            make_task(
                source,
                path,
                split=entry["split"],
                labels=entry["labels"],
                rois=entry["rois"],
                patient_id=entry["patient"],
                study_id=entry["study"],
                caption=entry["caption"] or (captions.read(out, uri_of(path, root)) if captions else ""),
            )
        )
    if lists is not None:
        lists.finish(out)
    return out
