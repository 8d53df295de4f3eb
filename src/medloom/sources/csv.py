"""A label table: one row per image (single, multi-label or one-hot labels), or one row per box.

Paths in the image column are resolved relative to the source root; bare file names (or names whose
folders do not exist here) are matched by basename anywhere under the root.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from ..records import quarantine_row
from ..vocab.splits import split_name
from .base import (
    Scan,
    add_box,
    check_label,
    decode_image_file,
    make_task,
    source_record_id,
)
from .captions import CaptionOptions, Captions
from .findings import FindingLists, add_findings
from .locate import ImagePattern, Resolve, TablePart, table_parts
from .locate import file_resolver as locate_files
from .rows import (
    UNCERTAIN_POLICIES,
    BoxColumns,
    RleColumn,
    apply_uncertain,
    label_list,
    onehot_cells,
    row_box,
    row_runs,
)
from .splitlists import SplitListOptions, SplitLists, uri_of
from .tables import Row, TableOptions, load_label_table

# a table's rows, how their image cells are resolved, and the split the table gives them ("" for none)
Part = tuple[Iterable[Row], Resolve, str]

TRUE_VALUES = frozenset({"1", "1.0", "true", "yes", "y", "t", "positive", "pos"})


class ImageColumn(BaseModel):
    """One of several images a row names (ODIR-5K's `Left-Fundus` and `Right-Fundus`), with its own labels."""

    model_config = ConfigDict(extra="forbid")
    column: str
    label_column: str | None = None  # this image's labels (ODIR: `Left-Diagnostic Keywords`), split by label_separator


class Options(TableOptions, SplitListOptions, CaptionOptions):
    """The table's keys (format, delimiter, encoding, columns, header, sheet, join: `tables.TableOptions`), the
    official split lists and caption files (`splitlists.py`, `captions.py`) and how its columns make records."""

    model_config = ConfigDict(extra="forbid")
    # the table (.csv, .tsv, .txt, .xlsx, .json, each possibly .gz/.zip), relative to the source root; or several
    # tables of the same columns, each with its split and image folder: [{table, split, image_dir}] (RFMiD)
    csv: str | list[TablePart]
    image_column: str | None = None
    # several images per row, each with its own label column, sharing the row's patient, study, split, caption
    images: list[ImageColumn] | None = None
    # format for the image column's value, e.g. "images/{value}.png" or "BloodImage_{value:0>5}.jpg"
    image_template: str | None = None
    # an id that is not a file name: {match: regex with named groups, glob: path from them} (UW-Madison)
    image_pattern: ImagePattern | None = None
    label_column: str | None = None
    label_separator: str | None = None  # multi-label: "|" (NIH), "," ...
    # text: the cell is a label (or labels joined by label_separator); list: a list written as text, Python's
    # `['Mass', 'Suspicious Calcification']` (VinDr-Mammo) or JSON's `["A", "B"]`, of strings only
    label_format: Literal["text", "list"] = "text"
    label_columns: list[str] | None = None  # one-hot: a column per class, truthy = present
    patient_column: str | None = None
    study_column: str | None = None
    caption_column: str | None = None  # free text about the image (a report sentence, a figure caption)
    split_column: str | None = None
    box_columns: BoxColumns | None = None  # one row per box: label_column names the box's class
    rle_column: RleColumn | None = None  # one row per run-length mask: label_column names the mask's class
    # one row per image, its findings as parallel lists (labels, boxes, polygons): ChestX-Det's JSON
    findings: FindingLists | None = None
    # one-hot cells meaning "uncertain" (CheXpert's -1.0), and what they become: positive, negative, ignore
    # (neither: the record's meta names them) or keep (a label of its own, `uncertain_label`); required as
    # soon as a cell holds one of `uncertain_values`
    uncertain: Literal["positive", "negative", "ignore", "keep"] | None = None
    uncertain_values: list[str] = ["-1", "-1.0"]
    uncertain_label: str = "{label} (uncertain)"
    # a row with no label: quarantine it, or keep the image with no labels
    empty_labels: Literal["quarantine", "keep"] = "quarantine"

    @field_validator("csv", mode="before")
    @classmethod
    def _tables(cls, v: object) -> object:
        if isinstance(v, dict):
            return [v]
        if isinstance(v, list) and not v:
            raise ValueError("name at least one table")
        return v

    @model_validator(mode="after")
    def _one_label_kind(self) -> Options:
        if self.image_pattern and self.image_template:
            raise ValueError("give either image_template (the cell names the file) or image_pattern (it does not), not both")
        if self.label_format == "list" and self.label_separator:
            raise ValueError("`label_format: list` reads each cell as a list; label_separator does not apply")
        if self.label_format == "list" and not (self.label_column or any(i.label_column for i in self.images or [])):
            raise ValueError("`label_format: list` applies to label_column cells; name the label_column")
        if bool(self.image_column) == bool(self.images):
            raise ValueError("name the image column: `image_column:`, or `images:` for several images per row (not both)")
        if self.images and (self.label_column or self.label_columns or self.box_columns or self.rle_column or self.findings):
            raise ValueError(
                "with `images:` each image's labels come from its own `label_column`; a row's label_column, "
                "label_columns (one-hot), box_columns, rle_column or findings would give every image the row's labels "
                "(ODIR-5K's one-hot N, D, G, ... are the patient's, not each eye's): leave them out"
            )
        if self.label_column and self.label_columns:
            raise ValueError("give either label_column or label_columns (one-hot), not both")
        if self.box_columns and self.rle_column:
            raise ValueError("give either box_columns or rle_column, not both (one table, one kind of annotation)")
        if self.findings and (self.label_column or self.label_columns or self.box_columns or self.rle_column):
            raise ValueError(
                "`findings:` names the label, box and polygon lists of each row; leave out label_column, "
                "label_columns, box_columns and rle_column"
            )
        if self.uncertain and not self.label_columns:
            raise ValueError("`uncertain:` applies to one-hot label_columns; name them")
        return self


decode = decode_image_file


class BadCell(Exception):
    """A row's cell that cannot be read (a label list that is not a list of strings): its row is quarantined."""


def _labels(row: dict, opts: Options, label_map: dict, where: str, label_column: str | None) -> tuple[list[str], list[str]]:
    """A row's labels (or, with `images:`, one image's: `label_column`), and the one-hot classes it marks uncertain
    (already turned into labels or not by the `uncertain:` policy, and named in the record's meta)."""
    uncertain: list[str] = []
    if opts.label_columns:
        values = frozenset(v.strip().lower() for v in opts.uncertain_values)
        found, uncertain = onehot_cells(row, opts.label_columns, TRUE_VALUES, values)
        if uncertain and not opts.uncertain:
            raise ValueError(
                f"{where}: column {uncertain[0]!r} holds {row.get(uncertain[0])!r}, an uncertain label; say what "
                f"it becomes with `uncertain:` ({', '.join(UNCERTAIN_POLICIES)}) in the source"
            )
        uncertain = [label_map.get(u, u) for u in uncertain]
    elif label_column and opts.label_format == "list":
        parsed = label_list(row.get(label_column))
        if isinstance(parsed, str):
            raise BadCell(f"column {label_column!r}: {parsed}")
        found = parsed
    elif label_column:
        raw = str(row.get(label_column) or "").strip().strip('"').strip()
        parts = raw.split(opts.label_separator) if opts.label_separator else [raw]
        found = [p.strip().strip('"').strip() for p in parts]
    else:
        return [], []
    out: list[str] = []
    for label in found:
        label = label_map.get(label, label)
        if label and label not in out:
            out.append(label)
    if uncertain:
        out = apply_uncertain(out, uncertain, opts.uncertain or "", opts.uncertain_label)
    return out, uncertain


def scan(source: dict) -> Scan:
    return scan_table(source, Options(**source["options"]))


def scan_table(source: dict, opts: Options, resolve: Resolve | None = None) -> Scan:
    """The table's tasks, one per image, and its quarantine rows. `resolve` finds the images a row's image cell
    names (default: a file under the root, by path, else by basename); the dicom reader passes its own (a file
    among the DICOM files it found, or a SOP Instance UID or patient id read from their headers)."""
    root = source["root"]
    out = Scan()
    needed = [
        opts.image_column,
        *(c for i in opts.images or [] for c in (i.column, i.label_column)),
        opts.label_column,
        opts.patient_column,
        opts.study_column,
        opts.split_column,
        opts.caption_column,
        *(opts.label_columns or []),
    ]
    if opts.box_columns:
        needed += opts.box_columns.columns()
    if opts.rle_column:
        needed.append(opts.rle_column.column)
    if opts.findings:
        needed += opts.findings.columns()
    parts: list[Part] = []
    for part in table_parts(opts.csv):
        table = load_label_table(source, opts, part.table, needed)
        out.quarantine += table.quarantine
        if resolve is not None and part.image_dir:
            raise ValueError(f"{part.table}: image_dir is for the csv reader; this reader finds the files itself")
        found = resolve or locate_files(source, opts.image_template, opts.image_pattern, part.image_dir)
        parts.append((table.rows, found, part.split or ""))
    lists = SplitLists.load(source, opts)
    captions = Captions(source, opts) if opts.caption_files else None
    by_image = group_rows(out, source, opts, parts)
    for path, entry in by_image.items():
        if lists is not None:  # the lists' split wins over split_column's
            entry["split"] = lists.assign(out, uri_of(path, root), entry["split"])
            if entry["split"] is None:
                continue
        if captions is not None and not entry["caption"]:
            entry["caption"] = captions.read(out, uri_of(path, root))
        entry_task(out, source, opts, path, entry)
    if lists is not None:
        lists.finish(out)
    return out


def file_resolver(root: str, opts: Options, index: dict[str, list[str]] | None = None) -> Resolve:
    """Resolve an image cell as a file under root (`locate.file_resolver`), by basename in `index` when given."""
    return locate_files({"root": root}, opts.image_template, opts.image_pattern, None, index)


def group_rows(out: Scan, source: dict, opts: Options, parts: list[Part]) -> dict[str, dict]:
    """The tables' rows joined per image: {path: entry} with the image's labels, boxes, masks, split, patient,
    study and caption (see `entry_task`). Each table resolves its image cells its own way (its image folder) and
    gives its rows its split. Rows whose image is not found are quarantined once per table and image cell,
    naming the first row's line and how many rows named it."""
    by_image: dict[str, dict] = {}
    unresolved: dict[tuple[int, str], list] = {}  # (table, image cell) -> [first row, reason, message, rows]
    per_row = bool(opts.box_columns or opts.rle_column)  # one row per box or mask: several rows per image
    cells = [(i.column, i.label_column) for i in opts.images] if opts.images else [(opts.image_column, opts.label_column)]
    named = ((n, r, c, resolve, split) for n, (rows, resolve, split) in enumerate(parts) for r in rows for c in cells)
    for number, row, (column, label_column), resolve, table_split in named:  # each image a row names
        where = row.where
        value = str(row.get(column) or "").strip()
        if not value:
            out.quarantine.append(quarantine_row(source["name"], where, "missing_image_name", f"column {column!r} is empty"))
            continue
        paths, reason, problem = resolve(value)
        if not paths:
            unresolved.setdefault((number, value), [where, reason, problem, 0])[3] += 1
            continue
        try:
            labels, uncertain = _labels(row, opts, source["label_map"], where, label_column)
        except BadCell as e:
            out.quarantine.append(quarantine_row(source["name"], where, "bad_label_list", f"{e}; the row is skipped"))
            continue
        outside = [lab for lab in labels if source.get("classes") and lab not in source["classes"]]
        if outside and not per_row:
            out.quarantine.append(
                quarantine_row(
                    source["name"],
                    where,
                    "label_outside_space",
                    f"label(s) {outside} not in the declared classes {sorted(source['classes'])}",
                )
            )
            continue
        for path in paths:
            entry = by_image.get(path)
            if entry is None:
                split = split_name(str(row.get(opts.split_column, ""))) if opts.split_column else None
                entry = by_image[path] = {
                    "labels": [],
                    "rois": [],
                    "uncertain": [],
                    "rle": [],
                    "polygons": [],
                    "where": where,
                    "image_column": column if opts.images else "",
                    "split": split or table_split,
                    "patient": row.get(opts.patient_column, "") if opts.patient_column else "",
                    "study": row.get(opts.study_column, "") if opts.study_column else "",
                    "caption": str(row.get(opts.caption_column) or "").strip() if opts.caption_column else "",
                }
            elif not per_row:
                out.quarantine.append(
                    quarantine_row(
                        source["name"],
                        where,
                        "duplicate_row",
                        f"{os.path.relpath(path, source['root'])!r} already listed at {entry['where']}; labels merged",
                        scope="warning",
                    )
                )
            if per_row:
                _annotation_row(out, source, opts, row, where, path, labels, entry)
                continue
            if opts.findings:
                add_findings(out, source, opts.findings, row, where, path, entry)
                continue
            for lab in labels:
                if lab not in entry["labels"]:
                    entry["labels"].append(lab)
            entry["uncertain"] += [u for u in uncertain if u not in entry["uncertain"]]
    for where, reason, problem, n in unresolved.values():
        rows_note = f" ({n} rows)" if n > 1 else ""
        out.quarantine.append(quarantine_row(source["name"], where, reason, problem + rows_note))
    return by_image


def entry_task(out: Scan, source: dict, opts: Options, path: str, entry: dict) -> None:
    """The task of one image of the table (`group_rows`'s entry), or a quarantine row for an image whose row has
    no label (unless `empty_labels: keep`; a box or mask table's rows may say "no finding", and so may an empty
    `findings:` list). An image whose every `findings:` row was quarantined has no task."""
    if opts.findings and not entry.get("listed"):
        return
    per_row = bool(opts.box_columns or opts.rle_column or opts.findings)
    if not entry["labels"] and not entry["uncertain"] and not per_row and opts.empty_labels == "quarantine":
        out.quarantine.append(
            quarantine_row(
                source["name"],
                entry["where"],
                "missing_label",
                f"the row has no label{' for its ' + repr(entry['image_column']) if entry['image_column'] else ''}; "
                "set `empty_labels: keep` to keep unlabelled images",
            )
        )
        return
    out.tasks.append(
        make_task(
            source,
            path,
            split=entry["split"],
            labels=entry["labels"],
            rois=entry["rois"],
            patient_id=entry["patient"],
            study_id=entry["study"],
            caption=entry["caption"],
            extra=_task_extra(opts, entry),
        )
    )


def _task_extra(opts: Options, entry: dict) -> dict:
    """What the decode half needs beyond boxes and labels: the runs of masks (decoded once the image's size is
    known), where y = 0 is, and the record's meta (the uncertain classes and the policy applied to them)."""
    extra: dict = {}
    if opts.uncertain:
        extra["meta"] = {"uncertain": entry["uncertain"], "uncertain_policy": opts.uncertain}
    if entry["image_column"]:  # which of the row's images this is (ODIR: Left-Fundus or Right-Fundus)
        extra["meta"] = {"image_column": entry["image_column"]}
    if entry["rle"]:
        extra["rle"] = entry["rle"]
    if entry["polygons"]:
        extra["polygons"] = entry["polygons"]
    if opts.box_columns and opts.box_columns.y_origin == "bottom":
        extra["y_origin"] = "bottom"
    return extra


def _annotation_row(out: Scan, source: dict, opts: Options, row: dict, where: str, path: str, labels: list, entry: dict) -> None:
    """A row of a box or mask table: its box or mask joins the image's; a row whose box cells are all empty
    (RSNA's Target 0, VinDr's "No finding") keeps the image as a negative with the row's label, a row whose mask
    is empty or -1 keeps it as a negative without it (the label names what the mask would have shown)."""
    rid = source_record_id(source, os.path.relpath(path, source["root"]))

    def problem(reason: str, message: str) -> None:
        out.quarantine.append(quarantine_row(source["name"], where, reason, message, scope="annotation", record_id=rid))
        if reason == "bad_box":  # counted for `all_boxes_dropped` (masks are only decoded later)
            out.dropped[rid] = out.dropped.get(rid, 0) + 1

    if opts.rle_column:
        spec = opts.rle_column
        runs = row_runs(row.get(spec.column), spec)
        if isinstance(runs, str):
            problem("bad_rle", f"column {spec.column!r}: {runs}; the mask is dropped, the image kept")
            return
        if not runs:
            return
        for label in labels or [source["label_map"].get(spec.label, spec.label)]:  # a mask of two classes: both
            bad = check_label(source, where, rid, label)
            if bad:
                out.quarantine.append(bad)
                continue
            mask = {"label": label, "order": spec.order, "runs": runs, "where": where, "min_pixels": spec.min_region_pixels}
            entry["rle"].append(mask)
            if label not in entry["labels"]:
                entry["labels"].append(label)
        return
    b = opts.box_columns
    assert b is not None
    values = [row.get(c) for c in b.columns()]
    box = row_box(values, b)
    if box == "":
        for lab in labels:
            bad = check_label(source, where, rid, lab)
            if bad:
                out.quarantine.append(bad)
            elif lab not in entry["labels"]:
                entry["labels"].append(lab)
        return
    label = labels[0] if labels else "object"
    if box is None:
        problem(
            "bad_box",
            f"box {label!r} {values!r} is not {len(values)} finite numbers ({b.format}: {', '.join(b.columns())}); "
            "the box is dropped, the image kept",
        )
        return
    for label in labels or ["object"]:  # a box of two findings (VinDr-Mammo's ['Mass', 'Suspicious ...']): an ROI each
        add_box(out, source, where, rid, label, box, b.normalized, entry["rois"], entry["labels"])
