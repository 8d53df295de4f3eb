"""Official split lists: text files naming a split's images, one a line (NIH's `train_val_list.txt` and
`test_list.txt`, COVID-CT's `trainCT_COVID.txt` ...), shared by the readers that take `split_lists:`.

A list's split wins over a split folder or column: the lists are the dataset's own word. A name listed in two
splits leaves its image out (it would leak across them); a listed name with no image and an image in no list
are rows too, so that a partial download or a stale list shows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

from ..imaging import DEFAULT_MAX_FILE_BYTES, DecodeError, read_file
from ..records import quarantine_row
from ..vocab.splits import split_name
from .base import Scan, decode_text
from .tables import table_path


class SplitListOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # split -> a list file (or several): {train: train_val_list.txt, test: test_list.txt}; names are matched
    # with the image's path under the root, else its file name
    split_lists: dict[str, list[str]] | None = None
    # an image in no list: keep it (with a warning row, its split from its folder/column/source) or drop it
    unlisted: Literal["keep", "drop"] = "keep"

    @field_validator("split_lists", mode="before")
    @classmethod
    def _split_names(cls, v: object) -> object:
        if not isinstance(v, dict):
            return v
        out: dict[str, list] = {}
        for key, files in v.items():
            name = split_name(str(key))
            if name is None:
                raise ValueError(f"split_lists: {key!r} is not a split name; use train, val or test (or their spellings)")
            out.setdefault(name, []).extend(files if isinstance(files, list) else [files])
        return out


@dataclass
class Entry:
    name: str  # as listed, with / for folders
    split: str
    where: str  # list file and line
    used: bool = False


@dataclass
class SplitLists:
    """The names of a source's split lists, looked up as its images are found."""

    source: dict
    unlisted: str = "keep"
    by_path: dict[str, list[Entry]] = field(default_factory=dict)
    by_base: dict[str, list[Entry]] = field(default_factory=dict)

    @classmethod
    def load(cls, source: dict, opts: SplitListOptions) -> SplitLists | None:
        """The lists the recipe names (None without `split_lists:`); an error naming the file if one is unreadable."""
        if not opts.split_lists:
            return None
        lists = cls(source, opts.unlisted)
        budget = source.get("max_file_bytes") or DEFAULT_MAX_FILE_BYTES
        for split, files in opts.split_lists.items():
            for name in files:
                path, shown = table_path(source, name)
                try:
                    text = decode_text(read_file(path, budget), shown)
                except DecodeError as e:
                    raise ValueError(f"{shown}: {e}") from None
                for number, line in enumerate(text.splitlines(), start=1):
                    listed = line.strip().replace("\\", "/").removeprefix("./")
                    if listed and not listed.startswith("#"):
                        entry = Entry(listed, split, f"{shown}:{number}")
                        lists.by_path.setdefault(listed, []).append(entry)
                        lists.by_base.setdefault(listed.rsplit("/", 1)[-1], []).append(entry)
        return lists

    def assign(self, scan: Scan, uri: str, fallback: str = "") -> str | None:
        """The split of the image at `uri` (its path under the root): its list's, else (`unlisted: keep`, with a
        warning row) `fallback`. None: leave the image out (a row or a filter count says why)."""
        entries = self.by_path.get(uri) or [
            e for e in self.by_base.get(uri.rsplit("/", 1)[-1], []) if "/" not in e.name or uri.endswith("/" + e.name)
        ]
        for entry in entries:
            entry.used = True
        splits = sorted({e.split for e in entries})
        if len(splits) == 1:
            return splits[0]
        if len(splits) > 1:
            where = ", ".join(f"{e.split} ({e.where})" for e in entries)
            scan.quarantine.append(
                quarantine_row(
                    self.source["name"],
                    entries[-1].where,
                    "split_conflict",
                    f"{uri!r} is listed in {len(splits)} splits: {where}; the image is left out (it would be in both)",
                )
            )
            return None
        if self.unlisted == "drop":
            scan.filter("not in the split lists")
            return None
        scan.quarantine.append(
            quarantine_row(
                self.source["name"],
                uri,
                "not_in_split_lists",
                "the image is in none of the split lists; kept"
                + (f" in split {fallback!r}" if fallback else " with no split")
                + " (`unlisted: drop` leaves such images out)",
                scope="warning",
            )
        )
        return fallback

    def finish(self, scan: Scan) -> None:
        """A warning row for each listed name no image matched (each list line once)."""
        seen: set[int] = set()
        for entries in self.by_path.values():
            for entry in entries:
                if not entry.used and id(entry) not in seen:
                    seen.add(id(entry))
                    scan.quarantine.append(
                        quarantine_row(
                            self.source["name"],
                            entry.where,
                            "listed_image_missing",
                            f"{entry.name!r} is listed for {entry.split} but the source has no such image",
                            scope="warning",
                        )
                    )


def uri_of(path: str, root: str) -> str:
    """A file's path under the root, with / between folders: what split lists and caption files are matched on."""
    return os.path.relpath(path, root).replace(os.sep, "/")
