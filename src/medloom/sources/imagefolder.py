"""Class sub-folders (`root/CLASS/*.png`), optionally under split folders (`root/train/CLASS/...`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from ..records import quarantine_row
from .base import Scan, check_label, decode_image_file, is_image_file, make_task, walk_files
from .splits import split_name


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # auto: top-level folders named train/val/test (and their spellings) are splits, not classes
    splits: Literal["auto", "none"] = "auto"


decode = decode_image_file


def scan(source: dict) -> Scan:
    opts = Options(**source["options"])
    out = Scan()
    for path in walk_files(source["root"], out, source):
        relative = path.relative_to(source["root"])
        parts = relative.parts
        if not is_image_file(path):
            out.filter("not an image file")
            continue
        split = ""
        if opts.splits == "auto" and len(parts) > 2 and split_name(parts[0]):
            split, parts = split_name(parts[0]) or "", parts[1:]
        rel = relative.as_posix()
        if len(parts) < 2:
            out.quarantine.append(quarantine_row(
                source["name"], rel, "no_class_folder",
                "image is not inside a class folder; move it into ROOT/CLASS/ or remove it"))
            continue
        label = source["label_map"].get(parts[0], parts[0])
        problem = check_label(source, rel, "", label)
        if problem:
            problem["scope"] = "input"
            out.quarantine.append(problem)
            continue
        out.tasks.append(make_task(source, str(path), uri=rel, split=split, labels=[label]))
    return out
