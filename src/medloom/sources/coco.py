"""COCO detection JSON: boxes become ROIs. String or integer image ids; absolute or foreign
`file_name`s are matched by basename under the images folder."""

from __future__ import annotations

import json
import os
import re

from pydantic import BaseModel, ConfigDict

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
    read_text,
    resolve_file,
    source_record_id,
)


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # one file, a list, or {split: file}; relative to the source root
    annotations: str | list[str] | dict[str, str]
    images_dir: str = "."  # where the images are, relative to the source root
    encoding: str | None = None  # of the JSON files; default UTF-8 (a byte-order mark is recognised)


decode = decode_image_file


def _files(opts: Options) -> list[tuple[str, str]]:
    """(split, file) pairs; a split is guessed from the file name when not given."""
    if isinstance(opts.annotations, dict):
        return [(split_name(k) or k, v) for k, v in opts.annotations.items()]
    files = [opts.annotations] if isinstance(opts.annotations, str) else opts.annotations
    out = []
    for f in files:
        words = re.split(r"[^a-z]+", os.path.basename(f).lower())
        out.append((next((split_name(w) for w in words if split_name(w)), ""), f))
    return out


def scan(source: dict) -> Scan:
    opts = Options(**source["options"])
    root = source["root"]
    images_root = os.path.normpath(os.path.join(root, opts.images_dir))
    out = Scan()
    index: dict | None = None
    first_categories: tuple[str, dict] | None = None
    files = _files(opts)
    for split, name in files:
        path = name if os.path.isabs(name) else os.path.join(root, name)
        try:
            data = json.loads(read_text(path, opts.encoding))
            if not isinstance(data, dict):
                raise ValueError("the top level is not a JSON object")
            categories = {str(c["id"]): str(c["name"]) for c in data.get("categories", [])}
        except (OSError, ValueError, KeyError, TypeError) as e:
            if len(files) == 1:
                raise ValueError(f"{path}: not a readable COCO file: {e}") from None
            out.quarantine.append(
                quarantine_row(
                    source["name"],
                    name,
                    "bad_annotation",
                    f"not a readable COCO file ({type(e).__name__}: {e}); its images "
                    "are left out, the other annotation files are read",
                )
            )
            continue
        if first_categories is None:
            first_categories = (name, categories)
        elif categories != first_categories[1]:
            out.quarantine.append(
                quarantine_row(
                    source["name"],
                    name,
                    "class_list_conflict",
                    f"categories differ from {first_categories[0]}: {first_categories[1]} vs {categories}; "
                    "each file's annotations use that file's own categories",
                    scope="warning",
                )
            )
        boxes: dict[str, list] = {}
        for ann in data.get("annotations", []):
            if isinstance(ann, dict):
                boxes.setdefault(str(ann.get("image_id")), []).append(ann)
        images = {}
        for n, im in enumerate(data.get("images", [])):
            if not isinstance(im, dict) or "id" not in im or not im.get("file_name"):
                out.quarantine.append(
                    quarantine_row(
                        source["name"],
                        f"{name}:images[{n}]",
                        "bad_annotation",
                        f"image entry {str(im)[:200]} lacks `id` or `file_name`",
                    )
                )
                continue
            images[str(im["id"])] = im
        for image_id in sorted(set(boxes) - set(images)):
            out.quarantine.append(
                quarantine_row(
                    source["name"],
                    name,
                    "orphan_annotation",
                    f"{len(boxes[image_id])} annotation(s) refer to image id {image_id!r}, absent from `images`",
                    scope="annotation",
                )
            )
        for image_id, im in images.items():
            file_name = str(im.get("file_name", ""))
            found, problem = resolve_file(images_root, file_name, None)
            if problem:
                index = index if index is not None else basename_index(root)
                found, problem = resolve_file(images_root, file_name, index)
            anns = boxes.get(image_id, [])
            if problem:
                reason = "ambiguous_basename" if problem.startswith("ambiguous") else "missing_file"
                out.quarantine.append(
                    quarantine_row(
                        source["name"],
                        file_name,
                        reason,
                        f"{problem}; image id {image_id!r} with {len(anns)} annotation(s) in {name}",
                    )
                )
                continue
            rel = os.path.relpath(found, root)
            rid = source_record_id(source, rel)
            rois, labels = [], []
            for ann in anns:
                label = categories.get(str(ann.get("category_id")))
                if label is None:
                    out.quarantine.append(
                        quarantine_row(
                            source["name"],
                            rel,
                            "label_outside_space",
                            f"annotation {ann.get('id')} has category_id {ann.get('category_id')!r}, not in "
                            f"the categories of {name}",
                            scope="annotation",
                            record_id=rid,
                        )
                    )
                    continue
                label = source["label_map"].get(label, label)
                xywh = parse_box(ann.get("bbox") if isinstance(ann.get("bbox"), list) else [ann.get("bbox")])
                if xywh is None:
                    out.quarantine.append(bad_box_row(source, rel, rid, label, ann.get("bbox")))
                    out.dropped[rid] = out.dropped.get(rid, 0) + 1
                    continue
                x, y, w, h = xywh
                add_box(out, source, rel, rid, label, [x, y, x + w, y + h], False, rois, labels)
            out.tasks.append(make_task(source, found, split=split, labels=labels, rois=rois))
    return out
