"""Where a label table's rows find their images: several tables per source, each beside its own image folder
(RFMiD's `Training_Set/RFMiD_Training_Labels.csv` beside `Training_Set/Training/`), and ids that are not file
names, mapped to a file by a regex and a glob (UW-Madison GI Tract's `case123_day20_slice_0001` is
`train/case123/case123_day20/scans/slice_0001_266_266_1.50_1.50.png`, the suffix varying per slice).

A glob is resolved inside its folder only: the template cannot be absolute or climb with `..`, and the id's parts
it takes cannot hold a folder separator or glob characters; links out of the root are refused later, as for every
task (`ingest.enforce_roots`).
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
import string
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from ..vocab.splits import split_name
from .base import basename_index, inside, resolve_file, source_roots

# an image cell -> (the image files it names, and when none: a quarantine reason and message)
Resolve = Callable[[str], tuple[list[str], str, str]]


class TablePart(BaseModel):
    """One of several tables of a source (`csv:` as a list): its split, and the folder its image cells are
    resolved in (a bare `1.png` is in each of RFMiD's three folders)."""

    model_config = ConfigDict(extra="forbid")
    table: str  # relative to the source root
    split: str | None = None  # the split of its rows (a split column or split list still wins)
    image_dir: str | None = None  # its images' folder under the root (default: the root)

    @field_validator("split")
    @classmethod
    def _split_name(cls, v: str | None) -> str | None:
        if v is None:
            return v
        name = split_name(v)
        if name is None:
            raise ValueError(f"split {v!r} is not a split name; use train, val or test (or their spellings)")
        return name

    @field_validator("image_dir")
    @classmethod
    def _relative(cls, v: str | None) -> str | None:
        if v is not None and (os.path.isabs(v) or ".." in v.replace("\\", "/").split("/")):
            raise ValueError(f"image_dir {v!r} must be a folder under the source root (relative, without `..`)")
        return v


def table_parts(csv: str | list[TablePart]) -> list[TablePart]:
    """`csv:` as a list of parts (a single table is one part with no split or folder of its own)."""
    return [TablePart(table=csv)] if isinstance(csv, str) else csv


class ImagePattern(BaseModel):
    """`image_pattern:` an id that is not a file name: `match` (a regex with named groups, matched with the whole
    cell) and `glob` (a path under the table's image folder built from the groups, `*` for the parts the id
    does not hold), which must find exactly one file."""

    model_config = ConfigDict(extra="forbid")
    match: str
    glob: str

    @model_validator(mode="after")
    def _groups_and_glob(self) -> ImagePattern:
        try:
            groups = set(re.compile(self.match).groupindex)
        except re.error as e:
            raise ValueError(f"image_pattern.match is not a regex: {e}") from None
        fields = {f for _, f, _, _ in string.Formatter().parse(self.glob) if f is not None}
        unknown = sorted(fields - groups)
        if unknown:
            raise ValueError(
                f"image_pattern.glob uses {{{'}, {'.join(unknown)}}}, not named groups of match (its groups: "
                f"{sorted(groups) or 'none; name them with (?P<name>...)'})"
            )
        parts = self.glob.replace("\\", "/").split("/")
        if os.path.isabs(self.glob) or ".." in parts or "" in parts:
            raise ValueError(f"image_pattern.glob {self.glob!r} must be a relative path under the folder, without `..`")
        return self


def glob_files(folder: str, pattern: str, listings: dict[str, list[str]]) -> list[str]:
    """The files under `folder` whose relative path matches `pattern` (fnmatch per path component; hidden names
    only where the component starts with a dot), listing each folder once (`listings` keeps them)."""
    current = [folder]
    parts = pattern.split("/")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        found = []
        for d in current:
            names = listings.get(d)
            if names is None:
                try:
                    names = listings[d] = sorted(os.listdir(d))
                except OSError:
                    names = listings[d] = []
            if glob.has_magic(part):
                hits = [n for n in fnmatch.filter(names, part) if part.startswith(".") or not n.startswith(".")]
            else:
                hits = [part] if part in names else []
            for name in hits:
                path = os.path.join(d, name)
                if os.path.isfile(path) if last else os.path.isdir(path):
                    found.append(path)
        current = found
    return current


def pattern_resolver(folder: str, spec: ImagePattern) -> Resolve:
    """Resolve an id through `image_pattern`: no match of the regex, no file or several files are problems."""
    regex = re.compile(spec.match)
    listings: dict[str, list[str]] = {}

    def resolve(value: str) -> tuple[list[str], str, str]:
        m = regex.fullmatch(value)
        if m is None:
            return [], "id_not_matched", f"{value!r} does not match image_pattern.match {spec.match!r}"
        groups = {k: v or "" for k, v in m.groupdict().items()}
        bad = next((k for k, v in groups.items() if "/" in v or "\\" in v or v in (".", "..")), None)
        if bad is not None:
            return [], "id_not_matched", f"{value!r}: group {bad!r} is {groups[bad]!r}, which is not a file name part"
        pattern = spec.glob.format(**{k: glob.escape(v) for k, v in groups.items()})
        hits = glob_files(folder, pattern, listings)
        if not hits:
            return [], "missing_file", f"no file matches {pattern!r} (image_pattern.glob for {value!r}) under {folder}"
        if len(hits) > 1:
            shown = ", ".join(os.path.relpath(h, folder) for h in hits[:5])
            return [], "ambiguous_file", f"{len(hits)} files match {pattern!r} for {value!r}: {shown}; refine image_pattern.glob"
        return hits, "", ""

    return resolve


def file_resolver(
    source: dict,
    template: str | None,
    pattern: ImagePattern | None = None,
    image_dir: str | None = None,
    index: dict[str, list[str]] | None = None,
) -> Resolve:
    """Resolve an image cell as a file under the root (or the table's `image_dir`): through `image_pattern`, or
    the cell through `template`, as a path, else by its basename in `index` (default: the image files under the
    folder, listed on first need)."""
    folder = os.path.join(source["root"], image_dir) if image_dir else source["root"]
    if image_dir:
        if not inside(folder, source_roots(source)):
            raise ValueError(f"image_dir {image_dir!r} resolves outside the source's root {source['root']}")
        if not os.path.isdir(folder):
            raise ValueError(f"image_dir {image_dir!r}: no such folder under {source['root']}")
    if pattern is not None:
        return pattern_resolver(folder, pattern)

    def resolve(value: str) -> tuple[list[str], str, str]:
        nonlocal index
        name = template.format(value=value) if template else value
        path, problem = resolve_file(folder, name, index)
        if problem and index is None:
            index = basename_index(folder)
            path, problem = resolve_file(folder, name, index)
        if problem or path is None:
            reason = "ambiguous_basename" if str(problem).startswith("ambiguous") else "missing_file"
            return [], reason, str(problem)
        return [path], "", ""

    return resolve
