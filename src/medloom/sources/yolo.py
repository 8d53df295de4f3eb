"""YOLO: `images/` and `labels/` folders (one `.txt` per image, `class cx cy w h` normalised, or a
polygon), class names from `data.yaml` and/or `classes.txt`."""

from __future__ import annotations

import os

import yaml
from pydantic import BaseModel, ConfigDict

from ..records import quarantine_row
from ..vocab.splits import split_name
from .base import Scan, add_box, decode_image_file, is_image_file, make_task, read_text, source_record_id, walk_files


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data: str | None = None  # data.yaml (default: ROOT/data.yaml when present)
    classes: str | None = None  # classes.txt, one name per line (default: ROOT/classes.txt when present)
    images_dir: str = "images"  # used when there is no data.yaml


decode = decode_image_file


def _names(value) -> list[str]:
    if isinstance(value, dict):
        return [str(value[k]) for k in sorted(value, key=int)]
    return [str(v) for v in value or []]


def _label_file(image: str) -> str:
    head, sep, tail = image.rpartition(f"{os.sep}images{os.sep}")
    base = (
        f"{head}{os.sep}labels{os.sep}{tail}" if sep else os.path.join(os.path.dirname(image), "labels", os.path.basename(image))
    )
    return os.path.splitext(base)[0] + ".txt"


def _image_lists(root: str, data: dict, data_dir: str, images_dir: str, scan: Scan, source: dict) -> list[tuple[str, str]]:
    """(split, image path) for every image the dataset lists."""
    out: list[tuple[str, str]] = []
    if data:
        base = os.path.normpath(os.path.join(data_dir, str(data.get("path") or ".")))
        if not os.path.isdir(base):
            base = data_dir
        for key in ("train", "val", "test"):
            entries = data.get(key) or []
            for entry in [entries] if isinstance(entries, str) else entries:
                where = os.path.normpath(os.path.join(base, entry))
                if os.path.isfile(where) and where.endswith(".txt"):
                    for line in read_text(where).splitlines():
                        if line.strip():
                            out.append((key, os.path.normpath(os.path.join(base, line.strip()))))
                elif os.path.isdir(where):
                    out += [(key, str(p)) for p in walk_files(where, scan, source) if is_image_file(p)]
        return out
    folder = os.path.join(root, images_dir)
    for p in walk_files(folder, scan, source):
        if is_image_file(p):
            first = p.relative_to(folder).parts[0]
            out.append((split_name(first) or "", str(p)))
    return out


def scan(source: dict) -> Scan:
    opts = Options(**source["options"])
    root = source["root"]
    out = Scan()
    data_path = os.path.join(root, opts.data or "data.yaml")
    classes_path = os.path.join(root, opts.classes or "classes.txt")
    data = {}
    if os.path.isfile(data_path):
        with open(data_path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    elif opts.data:
        raise FileNotFoundError(f"data.yaml not found: {data_path}")
    names = _names(data.get("names"))
    if os.path.isfile(classes_path):
        with open(classes_path, encoding="utf-8") as f:
            listed = [line.strip() for line in f if line.strip()]
        if names and listed != names:
            out.quarantine.append(
                quarantine_row(
                    source["name"],
                    os.path.relpath(classes_path, root),
                    "class_list_conflict",
                    f"classes.txt lists {listed} but {os.path.basename(data_path)} names {names}; using the latter",
                    scope="warning",
                )
            )
        names = names or listed
    if not names:
        raise ValueError(
            f"no class names for YOLO source {source['name']!r}: add `names:` to data.yaml or a classes.txt beside it"
        )
    for split, image in _image_lists(root, data, os.path.dirname(data_path), opts.images_dir, out, source):
        rel = os.path.relpath(image, root)
        if not os.path.isfile(image):
            out.quarantine.append(quarantine_row(source["name"], rel, "missing_file", f"listed image not found: {image}"))
            continue
        rid = source_record_id(source, rel)
        label_file = _label_file(image)
        rois, labels = [], []
        try:
            lines = read_text(label_file).splitlines() if os.path.isfile(label_file) else []
        except (OSError, ValueError) as e:
            out.quarantine.append(
                quarantine_row(
                    source["name"],
                    os.path.relpath(label_file, root),
                    "bad_annotation",
                    f"label file unreadable, so its image is left out: {e}",
                    record_id=rid,
                )
            )
            continue
        for n, line in enumerate(lines, start=1):
            fields = line.split()
            if not fields:
                continue
            where = f"{os.path.relpath(label_file, root)}:{n}"
            try:
                cls, coords = int(float(fields[0])), [float(v) for v in fields[1:]]
            except (ValueError, OverflowError):
                out.quarantine.append(
                    quarantine_row(
                        source["name"], where, "bad_box", f"unparsable line {line!r}", scope="annotation", record_id=rid
                    )
                )
                out.dropped[rid] = out.dropped.get(rid, 0) + 1
                continue
            if len(coords) == 4:
                cx, cy, w, h = coords
                box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
            elif len(coords) >= 6 and len(coords) % 2 == 0:
                xs, ys = coords[0::2], coords[1::2]
                box = [min(xs), min(ys), max(xs), max(ys)]
            else:
                out.quarantine.append(
                    quarantine_row(
                        source["name"],
                        where,
                        "bad_box",
                        f"expected 4 box values or a polygon, got {len(coords)}",
                        scope="annotation",
                        record_id=rid,
                    )
                )
                out.dropped[rid] = out.dropped.get(rid, 0) + 1
                continue
            if not 0 <= cls < len(names):
                out.quarantine.append(
                    quarantine_row(
                        source["name"],
                        where,
                        "label_outside_space",
                        f"class id {cls} is outside the {len(names)} class names",
                        scope="annotation",
                        record_id=rid,
                    )
                )
                out.dropped[rid] = out.dropped.get(rid, 0) + 1
                continue
            label = source["label_map"].get(names[cls], names[cls])
            add_box(out, source, where, rid, label, box, True, rois, labels)
        out.tasks.append(make_task(source, image, uri=rel, split=split, labels=labels, rois=rois))
    return out
