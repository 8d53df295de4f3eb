"""Run-length encoded masks written in a table's cells (SIIM pneumothorax, UW-Madison GI tract, Kaggle's
`EncodedPixels`): parsed into absolute 0-based runs when the table is scanned, decoded into ROIs once the
image's size is known.

The conventions differ between datasets and a wrong one decodes into a plausible but wrong mask, so the
recipe names all three (see `docs/recipes-and-readers.md`, "Masks as run lengths in a table"):
- order: `column` (pixels numbered top to bottom, then left to right: SIIM, most Kaggle tables) or `row`
  (left to right, then top to bottom: UW-Madison's train.csv);
- form: `absolute` (start, length pairs) or `relative` (each start counted from the end of the previous run:
  SIIM's `EncodedPixels`);
- start: the number of the first pixel, 0 or 1 (in relative form it applies to the first run's start).

This module holds no recipe model (a worker imports it to decode, without pydantic).
"""

from __future__ import annotations

import numpy as np

from ..imaging import mask_regions
from ..records import quarantine_row

NO_MASK = frozenset({"", "-1"})  # cells that say "nothing to segment here": the image is kept as a negative


def parse_runs(cell: str, form: str, start: int) -> list[int] | str:
    """A cell's runs as absolute 0-based [start, length, start, length, ...] in the cell's own pixel order,
    or a message saying why the cell is not a run-length encoding. An empty cell or `-1` gives []."""
    text = cell.strip()
    if text in NO_MASK:
        return []
    try:
        values = [int(v) for v in text.split()]
    except ValueError:
        return f"not whole numbers separated by spaces: {text[:40]!r}"
    if len(values) % 2:
        return f"an odd count of numbers ({len(values)}); runs are start, length pairs"
    runs: list[int] = []
    end = 0  # relative form: where the previous run ended (0-based, exclusive)
    for i in range(0, len(values), 2):
        first, length = values[i], values[i + 1]
        if length <= 0:
            return f"run {i // 2 + 1} has length {length}; lengths are positive"
        # relative form: the first start counts from the first pixel, each later one from the previous run's end
        first = end + first if form == "relative" and i else first - start
        if first < 0:
            return f"run {i // 2 + 1} starts before the first pixel (the recipe says pixels are numbered from {start})"
        runs += [first, length]
        end = first + length
    return runs


def runs_mask(runs: list[int], order: str, height: int, width: int) -> np.ndarray | None:
    """A boolean (height, width) mask from absolute 0-based runs, or None where a run passes the last pixel."""
    total = height * width
    flat = np.zeros(total, dtype=bool)
    for i in range(0, len(runs), 2):
        first, length = runs[i], runs[i + 1]
        if first + length > total:
            return None
        flat[first : first + length] = True
    return flat.reshape(width, height).T if order == "column" else flat.reshape(height, width)


def rle_rois(task: dict, source: dict, height: int, width: int, entries: list[dict]) -> tuple[list[dict], list[str], list[dict]]:
    """The ROIs of a task's run-length masks: each connected region of each row's mask an ROI with its box and
    RLE (as the `masks` reader does). Rows stay apart, not joined per label: SIIM writes one row per
    pneumothorax, and its rows may overlap. Returns (ROIs, labels with at least one ROI, quarantine rows); a row
    whose runs pass the image's last pixel is a row of its own naming the table's line, the rest is kept."""
    rois: list[dict] = []
    problems = []
    for entry in entries:
        mask = runs_mask(entry["runs"], entry["order"], height, width)
        if mask is None:
            last = max(entry["runs"][i] + entry["runs"][i + 1] for i in range(0, len(entry["runs"]), 2))
            problems.append(
                quarantine_row(
                    source["name"],
                    entry["where"],
                    "rle_outside_image",
                    f"the {entry['label']!r} mask of {task['uri']} runs to pixel {last} (the first counted as 1), "
                    f"past the {width}x{height} image's {width * height}; the mask is dropped, the image kept",
                    stage="decode",
                    scope="annotation",
                    record_id=task["id"],
                )
            )
            continue
        found, _ = mask_regions(mask.astype(np.uint8), {1: entry["label"]}, 0, entry.get("min_pixels", 1))
        rois += found
    return rois, sorted({r["label"] for r in rois}), problems
