"""What every reader shares: the task model, file discovery, box checks and 2-D image decoding.

A reader has two halves. `scan(source)` is cheap: it walks folders and parses annotation files into
one *task* per input file (labels, boxes in pixels or normalised units, patient ids) plus quarantine
rows for annotation problems. `decode(task, source)` is the expensive half that the executor runs in
parallel: it reads the pixels and returns zero or more records (a DICOM file or a NIfTI volume gives
one per frame or slice).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..imaging import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, DecodeError, file_facts
from ..records import NO_RENDER, quarantine_row, record_id

TASK_BOX = pa.struct([("label", pa.string()), ("bbox", pa.list_(pa.float64(), 4)), ("normalized", pa.bool_())])
TASK_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("uri", pa.string()),
        ("path", pa.string()),
        ("source_split", pa.string()),
        ("labels", pa.list_(pa.string())),
        ("rois", pa.list_(TASK_BOX)),
        ("patient_id", pa.string()),
        ("study_id", pa.string()),
        ("caption", pa.string()),
        ("fingerprint", pa.string()),
        ("extra", pa.string()),  # reader-specific JSON (paired mask path, ...)
    ]
)

SKIP_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})


@dataclass
class Scan:
    """The result of scanning one source: tasks to decode, problems found, inputs filtered out."""

    tasks: list[dict] = field(default_factory=list)
    quarantine: list[dict] = field(default_factory=list)
    filtered: dict[str, int] = field(default_factory=dict)

    def filter(self, reason: str, n: int = 1) -> None:
        self.filtered[reason] = self.filtered.get(reason, 0) + n


def fingerprint(path: str, *more: str) -> str:
    """Size and modification time: enough to notice a changed file without reading it."""
    st = os.stat(path)
    return ":".join([str(st.st_size), str(st.st_mtime_ns), *more])


def make_task(source: dict, path: str, *, uri: str | None = None, split: str = "", labels: Iterable[str] = (),
              rois: Iterable[dict] = (), patient_id: str = "", study_id: str = "", caption: str = "",
              extra: dict | None = None, fingerprint_extra: str = "") -> dict:
    """One task per input file. Annotations are part of the task (and so of its part key);
    `fingerprint_extra` covers companion files the task only names, such as a paired mask."""
    uri = uri or Path(path).relative_to(source["root"]).as_posix()
    extra_json = json.dumps(extra or {}, sort_keys=True)
    return {
        "id": record_id(source["name"], uri),
        "uri": uri,
        "path": path,
        "source_split": split or source.get("split") or "",
        "labels": list(labels),
        "rois": list(rois),
        "patient_id": str(patient_id or ""),
        "study_id": str(study_id or ""),
        "caption": caption,
        "fingerprint": fingerprint(path, fingerprint_extra),
        "extra": extra_json,
    }


def walk_files(root: str | Path) -> Iterator[Path]:
    """Every file under root, sorted, hidden entries skipped (stable order on every machine)."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower() not in SKIP_NAMES:
                yield Path(dirpath, name)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def basename_index(root: str | Path, suffixes: frozenset[str] = IMAGE_EXTENSIONS) -> dict[str, list[str]]:
    """Image files under root by basename and by stem, for annotations that name files loosely."""
    index: dict[str, list[str]] = {}
    for p in walk_files(root):
        if p.suffix.lower() in suffixes:
            index.setdefault(p.name, []).append(str(p))
            index.setdefault(p.stem, []).append(str(p))
    return index


def resolve_file(root: str, name: str, index: dict[str, list[str]] | None) -> tuple[str | None, str | None]:
    """Find the file an annotation names: as a path under root, else by basename anywhere under root.

    Returns (path, problem): problem is None when found, else a message (missing or ambiguous).
    """
    name = name.strip().replace("\\", "/")
    candidate = os.path.join(root, name.lstrip("/")) if not os.path.isabs(name) else name
    if os.path.isfile(candidate):
        return candidate, None
    if index is not None:
        base = name.rsplit("/", 1)[-1]
        hits = index.get(base, [])
        if len(hits) == 1:
            return hits[0], None
        if len(hits) > 1:
            rel = [os.path.relpath(h, root) for h in hits]
            return None, f"ambiguous: {base!r} matches {len(hits)} files: {', '.join(rel)}"
    return None, f"file not found: {name!r} (looked under {root}" + (" and by basename)" if index else ")")


def check_box(source: dict, path: str, rid: str, label: str, box: list[float]) -> dict | None:
    """A quarantine row for a degenerate box, else None."""
    x0, y0, x1, y1 = box
    if not (x1 > x0 and y1 > y0):
        return quarantine_row(source["name"], path, "zero_area_box",
                              f"box {label!r} {[round(v, 3) for v in box]} has no area (x0,y0,x1,y1)",
                              scope="annotation", record_id=rid)
    return None


def check_label(source: dict, path: str, rid: str, label: str) -> dict | None:
    classes = source.get("classes")
    if classes and label not in classes:
        return quarantine_row(source["name"], path, "label_outside_space",
                              f"label {label!r} is not in the declared classes {sorted(classes)}",
                              scope="annotation", record_id=rid)
    return None


def add_box(scan: Scan, source: dict, where: str, rid: str, label: str, box: list[float], normalized: bool,
            rois: list[dict], labels: list[str]) -> None:
    """Keep a box (and its label) if it has area and its label is in the space; else quarantine it."""
    problem = check_box(source, where, rid, label, box) or check_label(source, where, rid, label)
    if problem:
        scan.quarantine.append(problem)
        return
    rois.append({"label": label, "bbox": box, "normalized": normalized})
    if label not in labels:
        labels.append(label)


def normalise_rois(task: dict, source: dict, width: int, height: int) -> tuple[list[dict], list[dict]]:
    """Task boxes -> record ROIs in normalised units, clipped; boxes outside the image are quarantined."""
    rois, problems = [], []
    for roi in task["rois"]:
        x0, y0, x1, y1 = roi["bbox"]
        if not roi["normalized"]:
            x0, x1, y0, y1 = x0 / width, x1 / width, y0 / height, y1 / height
        cx0, cy0, cx1, cy1 = max(0.0, x0), max(0.0, y0), min(1.0, x1), min(1.0, y1)
        if cx1 <= cx0 or cy1 <= cy0:
            problems.append(quarantine_row(
                source["name"], task["uri"], "box_outside_image",
                f"box {roi['label']!r} {roi['bbox']} lies outside the {width}x{height} image",
                stage="decode", scope="annotation", record_id=task["id"]))
            continue
        rois.append({"label": roi["label"], "bbox": [cx0, cy0, cx1, cy1],
                     "area": (cx1 - cx0) * (cy1 - cy0), "rle": []})
    return rois, problems


def decode_image_file(task: dict, source: dict) -> tuple[list[dict], list[dict]]:
    """The decode half for readers of plain 2-D image files (one record per file)."""
    facts = file_facts(task["path"], source.get("max_pixels") or DEFAULT_MAX_PIXELS)
    rois, problems = normalise_rois(task, source, facts.width, facts.height)
    return [image_record(task, facts, rois=rois)], problems


def image_record(task: dict, facts: Any, *, frame: int = -1, rois: list[dict] | None = None,
                 render: dict | None = None, meta: dict | None = None, **fields: Any) -> dict:
    """The per-image part of a record; source-level fields are added by the ingest stage."""
    rec = {
        "id": task["id"] if frame < 0 else f"{task['id']}/{frame:05d}",
        "frame": frame,
        "width": facts.width,
        "height": facts.height,
        "channels": facts.channels,
        "pixel_hash": facts.pixel_hash,
        "phash": facts.phash,
        "rois": rois if rois is not None else [],
        "render": render or NO_RENDER,
        "meta": json.dumps(meta, sort_keys=True, default=str) if meta else None,
    }
    rec.update(fields)
    return rec


def decode_error_row(source: dict, task: dict, err: DecodeError) -> dict:
    return quarantine_row(source["name"], task["uri"], err.reason, str(err), stage="decode",
                          record_id=task["id"])
