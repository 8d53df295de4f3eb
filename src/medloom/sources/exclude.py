"""`exclude:`, the globs of files a source never reads (ISIC 2018's `*_superpixels.png` beside its images), for
every reader: the shared walk (`base.walk_entries`) skips them, and ingest drops the tasks a table names."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from typing import Any


def exclusion(source: dict | None) -> Callable[[str], bool] | None:
    """The source's `exclude:` globs as one test on a file's path relative to the root (`/`-separated), or None.

    A glob without `/` matches the file name (`*_superpixels.png`), one with `/` the whole relative path
    (`ISIC2018_Task1-2_Training_Input/*_superpixels.png`; `*` crosses folders). Case-sensitive, as file names are.
    """
    globs = (source or {}).get("exclude") or []
    if not globs:
        return None
    names = [fnmatch.translate(g) for g in globs if "/" not in g]
    paths = [fnmatch.translate(g.lstrip("/")) for g in globs if "/" in g]
    name_re = re.compile("|".join(names)) if names else None
    path_re = re.compile("|".join(paths)) if paths else None

    def test(rel: str) -> bool:
        return bool(
            (name_re is not None and name_re.match(rel.rsplit("/", 1)[-1])) or (path_re is not None and path_re.match(rel))
        )

    return test


def drop_excluded(scan: Any, source: dict) -> None:  # a `base.Scan` (which imports this module)
    """Tasks whose file the `exclude:` globs name, left out and counted as filtered: the readers that find files
    through a table (csv, coco, voc) name them without walking, and the pixels are read only later, by decode."""
    test = exclusion(source)
    if test is None or not len(scan.tasks):
        return
    uris = scan.tasks.table().column("uri").to_pylist()
    kept = [not test(u) for u in uris]
    if not all(kept):
        scan.filter("excluded", kept.count(False))
        scan.tasks.keep(kept)
