"""Class sub-folders (`root/CLASS/*.png`), optionally under split folders (`root/train/CLASS/...`)."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import ConfigDict

from ..records import quarantine_row
from ..vocab.splits import split_name
from .base import IMAGE_EXTENSIONS, Scan, check_label, decode_image_file, make_task, walk_entries
from .captions import CaptionOptions, Captions
from .splitlists import SplitListOptions, SplitLists


class Options(SplitListOptions, CaptionOptions):
    """`splits:`, and the official split lists and caption files (`splitlists.py`, `captions.py`)."""

    model_config = ConfigDict(extra="forbid")
    # auto: top-level folders named train/val/test (and their spellings) are splits, not classes
    splits: Literal["auto", "none"] = "auto"


decode = decode_image_file


def scan(source: dict) -> Scan:
    opts = Options(**source["options"])
    out = Scan()
    root = str(source["root"])
    lists = SplitLists.load(source, opts)
    captions = Captions(source, opts) if opts.caption_files else None
    for folder, name in walk_entries(root, out, source):  # strings, not Paths: this loop runs once per file
        if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
            out.filter("not an image file")
            continue
        inner = folder[len(root) :].strip(os.sep)
        parts = [*inner.split(os.sep), name] if inner else [name]
        rel = "/".join(parts)
        split = ""
        if opts.splits == "auto" and len(parts) > 2 and split_name(parts[0]):
            split, parts = split_name(parts[0]) or "", parts[1:]
        if lists is not None:
            split = lists.assign(out, rel, split)
            if split is None:
                continue
        if len(parts) < 2:
            out.quarantine.append(
                quarantine_row(
                    source["name"],
                    rel,
                    "no_class_folder",
                    "image is not inside a class folder; move it into ROOT/CLASS/ or remove it",
                )
            )
            continue
        label = source["label_map"].get(parts[0], parts[0])
        problem = check_label(source, rel, "", label)
        if problem:
            problem["scope"] = "input"
            out.quarantine.append(problem)
            continue
        caption = captions.read(out, rel) if captions else ""
        out.tasks.append(make_task(source, os.path.join(folder, name), uri=rel, split=split, labels=[label], caption=caption))
    if lists is not None:
        lists.finish(out)
    return out
