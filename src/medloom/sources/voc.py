"""Pascal VOC: one XML per image (`Annotations/`), images in `JPEGImages/`, splits from
`ImageSets/Main/{train,val,test}.txt` when present."""

from __future__ import annotations

import os

from lxml import etree
from pydantic import BaseModel, ConfigDict

from ..records import quarantine_row
from ..vocab.splits import split_name
from .base import (
    Scan,
    add_box,
    bad_box_row,
    basename_index,
    decode_image_file,
    display_name,
    is_valid_name,
    make_task,
    parse_box,
    resolve_file,
    source_record_id,
)


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    annotations_dir: str = "Annotations"
    images_dir: str = "JPEGImages"
    imagesets_dir: str = "ImageSets/Main"
    include_difficult: bool = True


decode = decode_image_file


def _splits(folder: str) -> dict[str, str]:
    """Image stem -> split, from ImageSets/Main/{split}.txt (class-specific lists are ignored)."""
    out: dict[str, str] = {}
    if not os.path.isdir(folder):
        return out
    for name in sorted(os.listdir(folder)):
        split = split_name(name.removesuffix(".txt"))
        if split and name.endswith(".txt"):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        out.setdefault(line.split()[0], split)
    return out


def _text(node, path: str, default: str = "") -> str:
    found = node.find(path)
    return found.text.strip() if found is not None and found.text else default


def scan(source: dict) -> Scan:
    opts = Options(**source["options"])
    root = source["root"]
    ann_dir = os.path.join(root, opts.annotations_dir)
    img_dir = os.path.join(root, opts.images_dir)
    splits = _splits(os.path.join(root, opts.imagesets_dir))
    out = Scan()
    index: dict | None = None
    for name in sorted(os.listdir(ann_dir)):
        rel_xml = os.path.join(opts.annotations_dir, display_name(name))
        if not is_valid_name(name):
            out.quarantine.append(
                quarantine_row(
                    source["name"], rel_xml, "bad_filename", "the file name is not valid UTF-8; rename the file to read it"
                )
            )
            continue
        if not name.endswith(".xml"):
            out.filter("not an XML annotation")
            continue
        try:
            # entities are never resolved and no network is read (a hostile XML cannot read other files)
            tree = etree.parse(
                os.path.join(ann_dir, name),
                etree.XMLParser(recover=False, resolve_entities=False, no_network=True, huge_tree=False),
            )
        except (etree.XMLSyntaxError, OSError) as e:
            out.quarantine.append(quarantine_row(source["name"], rel_xml, "bad_annotation", f"XML error: {e}"))
            continue
        node = tree.getroot()
        file_name = _text(node, "filename") or name[:-4] + ".jpg"
        found, problem = resolve_file(img_dir, file_name, None)
        if problem:
            index = index if index is not None else basename_index(root)
            found, problem = resolve_file(img_dir, file_name, index)
            if problem and not problem.startswith("ambiguous"):
                found, problem = resolve_file(img_dir, name[:-4], index)
        if problem:
            reason = "ambiguous_basename" if problem.startswith("ambiguous") else "missing_file"
            out.quarantine.append(quarantine_row(source["name"], rel_xml, reason, problem))
            continue
        rel = os.path.relpath(found, root)
        rid = source_record_id(source, rel)
        rois, labels = [], []
        for obj in node.iter("object"):
            label = _text(obj, "name", "object")
            label = source["label_map"].get(label, label)
            if not opts.include_difficult and _text(obj, "difficult", "0") == "1":
                continue
            values = [_text(obj, f"bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax")]
            box = parse_box(values)
            if box is None:
                out.quarantine.append(bad_box_row(source, rel_xml, rid, label, values))
                out.dropped[rid] = out.dropped.get(rid, 0) + 1
                continue
            add_box(out, source, rel_xml, rid, label, box, False, rois, labels)
        stem = os.path.splitext(os.path.basename(found))[0]
        out.tasks.append(make_task(source, found, split=splits.get(stem, ""), labels=labels, rois=rois))
    return out
