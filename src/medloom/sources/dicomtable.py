"""DICOM files labelled by a table (the dicom reader's `table:`): RSNA Pneumonia's boxes keyed by the file name
(`{patientId}.dcm`), SIIM-ACR's run-length masks keyed by SOP Instance UID, VinDr's boxes keyed by `image_id`,
CBIS-DDSM's paths written in the table.

The rows are read by the csv reader's row logic (`csv.scan_table`); only the join differs: a row names its DICOM
files by path or file name (`key: file`), or by a value read from each file's header at scan time, within a byte
budget and never past the header (`key: sop_instance_uid`, `key: patient_id`). The decode half (`frame_rois`)
places the row's boxes and masks once the frame's size is known.

Privacy: record ids stay pseudonyms (the table's key may be a patient id written in the file name), a patient
column goes through `patient_key` like the header's ids, and no table cell is copied into meta; a row that
matches no file is named by its table line, never by a header key's value.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Literal

from pydantic import Field, model_validator

from ..imaging import DecodeError
from ..records import quarantine_row
from . import csv as table_rows
from .base import Scan, inside, make_task, normalise_rois, source_roots
from .locate import table_parts
from .rle import rle_rois

# `key:` -> the header attribute whose value the table's image column holds
HEADER_KEYS = {"sop_instance_uid": "SOPInstanceUID", "patient_id": "PatientID"}

# a DICOM file's header attributes, read at scan time: path -> {keyword: value}; DecodeError when unreadable
HeaderReader = Callable[[str, list[str], int], dict[str, str]]


class TableOptions(table_rows.Options):
    """`table:` the csv reader's keys (csv, image_column, label_column, box_columns, rle_column, ...), and how a
    row names its DICOM files."""

    # file: image_column holds a path under the root or a file name (through image_template, e.g. "{value}.dcm");
    # sop_instance_uid / patient_id: it holds the file's SOP Instance UID / Patient ID, read from the header
    key: Literal["file", "sop_instance_uid", "patient_id"] = "file"
    # a DICOM file no row names: quarantine it (default: an image with no row is not known to be a negative, and
    # kept with no label it would read as one) or keep it unlabelled
    unmatched: Literal["quarantine", "keep"] = "quarantine"
    header_bytes: int = Field(65536, gt=0)  # bytes of each file read for a header key (group 0008/0010 comes early)

    @model_validator(mode="after")
    def _template_is_for_files(self) -> TableOptions:
        if self.image_template and self.key != "file":
            raise ValueError(f"image_template builds file names; with key: {self.key} the column holds the value itself")
        return self


def scan_with_table(source: dict, table: TableOptions, paths: list[str], out: Scan, read_header: HeaderReader) -> None:
    """Tasks for the DICOM files `paths` (found by the reader's walk) joined with the table's rows, appended to
    `out`; rows naming no file and files named by no row become quarantine rows (or unlabelled tasks)."""
    root = source["root"]
    if not os.path.isdir(root):
        raise ValueError(f"{root}: `table:` needs the dataset's folder as `path`, not one file")
    matched: set[str] = set()  # files a row names, and files whose header could not be read (quarantined)
    if table.key == "file":
        index: dict[str, list[str]] = {}
        for p in paths:
            index.setdefault(os.path.basename(p), []).append(p)
            index.setdefault(os.path.splitext(os.path.basename(p))[0], []).append(p)
        found = set(paths)
        files = table_rows.file_resolver(root, table, index)

        def resolve(value: str) -> tuple[list[str], str, str]:
            hits, reason, problem = files(value)
            hits = [os.path.normpath(h) for h in hits]
            if hits and hits[0] not in found:
                return [], "not_dicom", f"{os.path.relpath(hits[0], root)!r} is not one of the DICOM files found under the root"
            matched.update(hits)
            return hits, reason, problem

    else:
        keyword = HEADER_KEYS[table.key]
        by_value = header_index(source, table, paths, out, read_header, keyword, matched)

        def resolve(value: str) -> tuple[list[str], str, str]:
            hits = by_value.get(value, [])
            matched.update(hits)
            if hits:
                return hits, "", ""
            return [], "no_dicom_for_row", f"no DICOM file under the root has this {keyword} (column {table.image_column!r})"

    rows = table_rows.scan_table(source, table, resolve)
    assert not len(out.tasks), "the walk's tasks are made here"
    out.tasks = rows.tasks
    out.quarantine += rows.quarantine
    out.dropped.update(rows.dropped)
    name = " or ".join(os.path.basename(p.table) for p in table_parts(table.csv))
    for path in paths:
        if path in matched:
            continue
        if table.unmatched == "keep":
            out.tasks.append(make_task(source, path))
            continue
        out.quarantine.append(
            quarantine_row(
                source["name"],
                os.path.relpath(path, root),
                "no_table_row",
                f"no row of {name} names this file (key: {table.key}, column {table.image_column!r}); it is not known "
                "to be a negative, so it is left out: set `unmatched: keep` under `table:` to keep such files unlabelled",
            )
        )


def header_index(
    source: dict, table: TableOptions, paths: list[str], out: Scan, read_header: HeaderReader, keyword: str, unreadable: set[str]
) -> dict[str, list[str]]:
    """{header value: files}: each file's `keyword`, read from at most `header_bytes` of it; a file whose header
    cannot be read is quarantined (and added to `unreadable`)."""
    by_value: dict[str, list[str]] = {}
    roots, folders = source_roots(source), {}
    for path in paths:
        rel = os.path.relpath(path, source["root"])
        if not inside(path, roots, folders):  # a link out of the root: not read, not even its header
            out.quarantine.append(
                quarantine_row(
                    source["name"],
                    rel,
                    "outside_root",
                    f"a link to {os.path.realpath(path)}, outside the source's root; list its folder under "
                    "`allowed_roots:` in the recipe to read it",
                )
            )
            unreadable.add(path)
            continue
        try:
            value = read_header(path, [keyword], table.header_bytes).get(keyword, "")
        except DecodeError as e:
            out.quarantine.append(quarantine_row(source["name"], rel, e.reason, str(e)))
            unreadable.add(path)
            continue
        if value:
            by_value.setdefault(value, []).append(path)
    return by_value


def frame_rois(task: dict, source: dict, width: int, height: int) -> tuple[list[dict], dict, list[dict]]:
    """The table's boxes and masks of a DICOM file as ROIs of a width x height frame, the record fields they
    change (labels: a mask label only where its mask has a region; meta), and the quarantine rows of boxes and
    masks that do not fit the frame. Every frame of a multi-frame file gets the file's ROIs."""
    extra = json.loads(task["extra"]) if task["extra"] != "{}" else {}
    rois, problems = normalise_rois(task, source, width, height, extra.get("y_origin") == "bottom")
    fields: dict = {}
    if extra.get("rle"):
        found, labels, bad = rle_rois(task, source, height, width, extra["rle"])
        rois, problems = rois + found, problems + bad
        from_masks = {m["label"] for m in extra["rle"]}
        fields["labels"] = [lab for lab in task["labels"] if lab not in from_masks or lab in labels]
    if extra.get("meta"):
        fields["meta"] = extra["meta"]
    return rois, fields, problems
