"""What a source's folder holds, in a few lines: shown beside the expected layout when a source gives no record,
so that a user sees at once that the download sits one folder deeper, or under other names."""

from __future__ import annotations

import os

from .base import display_name


def listing(root: str, limit: int = 12, depth: int = 2) -> list[str]:
    """The first entries under root, folders first, two levels deep, links not followed; one line each."""
    if not os.path.isdir(root):
        return [f"{root}: no such folder" if not os.path.exists(root) else f"{root}: a file, not a folder"]
    lines: list[str] = []
    more = 0

    def visit(folder: str, level: int) -> None:
        nonlocal more
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: (not e.is_dir(follow_symlinks=False), e.name))
        except OSError as e:
            lines.append(f"{'  ' * level}(cannot list: {e.strerror})")
            return
        for entry in entries:
            if len(lines) >= limit:
                more += 1
                continue
            is_dir = entry.is_dir(follow_symlinks=False)
            lines.append(f"{'  ' * level}{display_name(entry.name)}{'/' if is_dir else ''}")
            if is_dir and level + 1 < depth:
                visit(entry.path, level + 1)

    visit(root, 0)
    if not lines:
        return ["(empty)"]
    return lines + ([f"... and {more} more entries"] if more else [])
