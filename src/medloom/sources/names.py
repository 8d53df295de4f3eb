"""Labels and facts from file names and paths: a regular expression with named groups, searched in each image
file's name (or its path from the root), for the datasets whose only annotation is how files are named.

Groups named in `labels` (default `label`) give the record's labels (through `label_map`; a group that took no
part in the match reads as "", which `label_map` may name: ACRIMA's `_g_` or nothing); `patient`, `study` and
`split` fill those fields; every other group is a fact kept in the record's `meta` (BreakHis' magnification).
"""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import ConfigDict, field_validator, model_validator

from ..records import quarantine_row
from ..vocab.splits import split_name
from .base import IMAGE_EXTENSIONS, Scan, check_label, decode_image_file, make_task, walk_entries
from .captions import CaptionOptions, Captions

FIELDS = ("patient", "study", "split")  # groups that fill a record field rather than its facts


class Options(CaptionOptions):
    """The pattern and what its groups give; `caption_files:` as imagefolder's (Shenzhen's ClinicalReadings)."""

    model_config = ConfigDict(extra="forbid")
    # e.g. "^CHNCXR_(?P<number>\d{4})_(?P<label>[01])\.png$" (searched: anchor it with ^ and $)
    pattern: str
    match: Literal["name", "path"] = "name"  # the file name, or the path from the root (`/`-separated)
    labels: list[str] | None = None  # the groups whose values are labels (default: the group `label`, if any)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a regular expression: {e} (in {v!r})") from None
        return v

    @model_validator(mode="after")
    def _label_groups_exist(self) -> Options:
        groups = re.compile(self.pattern).groupindex
        missing = [g for g in self.labels or [] if g not in groups]
        if missing:
            raise ValueError(
                f"labels {missing} are not named groups of the pattern (its groups: {sorted(groups) or 'none'}); "
                "name them with (?P<name>...)"
            )
        return self


decode = decode_image_file


def scan(source: dict) -> Scan:
    opts = Options(**source["options"])
    regex = re.compile(opts.pattern)
    label_groups = [g for g in opts.labels or ["label"] if g in regex.groupindex]
    fact_groups = [g for g in regex.groupindex if g not in label_groups and g not in FIELDS]
    if {"patient", "study"} & regex.groupindex.keys() and not source.get("raw_ids"):
        # the id is in the name or path the record id would be made of: that id is a keyed hash instead
        source = {**source, "pseudonymous_ids": True}
    out = Scan()
    root = str(source["root"])
    images, unmatched = 0, []
    captions = Captions(source, opts) if opts.caption_files else None
    for folder, name in walk_entries(root, out, source):
        if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
            out.filter("not an image file")
            continue
        inner = folder[len(root) :].strip(os.sep)
        rel = f"{inner.replace(os.sep, '/')}/{name}" if inner else name
        images += 1
        found = regex.search(name if opts.match == "name" else rel)
        if found is None:
            unmatched.append(rel)
            out.quarantine.append(
                quarantine_row(
                    source["name"],
                    rel,
                    "name_not_matched",
                    f"the {'file name' if opts.match == 'name' else 'path'} does not match the pattern {opts.pattern!r}; "
                    "rename the file, widen the pattern, or leave the file out with `exclude:`",
                )
            )
            continue
        groups = {k: v or "" for k, v in found.groupdict().items()}
        labels: list[str] = []
        for g in label_groups:
            label = source["label_map"].get(groups[g], groups[g])
            if label and label not in labels:
                labels.append(label)
        problem = next((p for p in (check_label(source, rel, "", x) for x in labels) if p), None)
        split = split_name(groups["split"]) if groups.get("split") else ""
        if problem is None and split is None:
            problem = quarantine_row(
                source["name"], rel, "unknown_split", f"{groups['split']!r} is not a split name (train, val, test, ...)"
            )
        if problem:
            problem["scope"] = "input"
            out.quarantine.append(problem)
            continue
        facts = {g: groups[g] for g in fact_groups if groups[g]}
        out.tasks.append(
            make_task(
                source,
                os.path.join(folder, name),
                uri=rel,
                split=split or "",
                labels=labels,
                patient_id=groups.get("patient", ""),
                study_id=groups.get("study", ""),
                extra={"meta": facts} if facts else None,
                caption=captions.read(out, rel) if captions else "",
            )
        )
    if images and len(unmatched) == images:
        raise ValueError(
            f"the pattern {opts.pattern!r} matches none of the {images} image file {opts.match}s under {root} "
            f"(e.g. {', '.join(repr(u) for u in unmatched[:3])}); check `pattern:` and `match: name | path`"
        )
    return out
