"""What one row of a label table says, apart from how the table is loaded (`csv.py`): a box in one of the
published conventions, a run-length mask, one-hot labels with an uncertain state.

Conventions are named in the recipe, never guessed: the same four numbers are a different box as x, y, width,
height (NIH, RSNA) and as two corners (VinDr), and a mask decoded in the wrong pixel order still looks like a
mask.
"""

from __future__ import annotations

import ast
import json
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .rle import parse_runs

# the columns each box format reads, in the order its numbers are taken
BOX_FORMATS: dict[str, tuple[str, ...]] = {
    "xyxy": ("xmin", "ymin", "xmax", "ymax"),  # two corners (VinDr-CXR, Pascal-like tables)
    "xywh": ("x", "y", "width", "height"),  # top-left corner and size (NIH BBox_List, RSNA pneumonia)
    "cxcywh": ("cx", "cy", "width", "height"),  # centre and size (YOLO-like)
    "circle": ("cx", "cy", "radius"),  # centre and radius (MIAS Info.txt), becomes its enclosing box
}
BOX_KEYS = tuple(dict.fromkeys(k for keys in BOX_FORMATS.values() for k in keys))


class BoxColumns(BaseModel):
    """`box_columns:` which columns hold a box, in which convention; one row per box."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["xyxy", "xywh", "cxcywh", "circle"] = "xyxy"
    xmin: str | None = None
    ymin: str | None = None
    xmax: str | None = None
    ymax: str | None = None
    x: str | None = None
    y: str | None = None
    cx: str | None = None
    cy: str | None = None
    width: str | None = None
    height: str | None = None
    radius: str | None = None
    normalized: bool = False  # numbers in [0, 1] of the image's width and height, else pixels
    # where y = 0 is: the top row (most tables) or the bottom row (MIAS: "coordinate system origin is the
    # bottom-left corner")
    y_origin: Literal["top", "bottom"] = "top"

    @model_validator(mode="after")
    def _keys_of_the_format(self) -> BoxColumns:
        wanted = BOX_FORMATS[self.format]
        missing = [k for k in wanted if getattr(self, k) is None]
        other = [k for k in BOX_KEYS if k not in wanted and getattr(self, k) is not None]
        if missing or other:
            raise ValueError(
                f"format {self.format} reads the columns {', '.join(wanted)}"
                + (f"; name {', '.join(missing)}" if missing else "")
                + (f"; {', '.join(other)} belong to another format" if other else "")
            )
        if self.format == "circle" and self.normalized:
            raise ValueError("a circle's radius is in pixels (a normalised radius differs along x and y); set normalized: false")
        return self

    def columns(self) -> list[str]:
        return [getattr(self, k) for k in BOX_FORMATS[self.format]]


class RleColumn(BaseModel):
    """`rle_column:` a column of run-length masks, one mask per row; several rows may name one image."""

    model_config = ConfigDict(extra="forbid")
    column: str
    order: Literal["column", "row"]  # column: top to bottom, then left to right (SIIM); row: UW-Madison
    form: Literal["absolute", "relative"]  # relative: each start counted from the end of the previous run (SIIM)
    start: Literal[0, 1]  # the number of the first pixel (SIIM: 0, UW-Madison: 1)
    label: str = "foreground"  # each mask's label when the table has no `label_column` (SIIM: pneumothorax)
    min_region_pixels: int = Field(1, ge=1)  # smaller connected regions are left out


def row_box(values: list[str | None], spec: BoxColumns) -> list[float] | None | str:
    """A row's box as (x0, y0, x1, y1) in the table's units, with y still from the spec's origin; "" when every
    box cell is empty (an image with no finding: RSNA's Target 0, VinDr's "No finding"); None when the cells
    are not numbers of a box."""
    cells = [str(v).strip() if v is not None else "" for v in values]
    if not any(cells):
        return ""
    try:
        nums = [float(c) for c in cells]
    except ValueError:
        return None
    if not all(math.isfinite(v) for v in nums):
        return None
    if spec.format == "xyxy":
        return nums
    if spec.format == "xywh":
        x, y, w, h = nums
        return [x, y, x + w, y + h]
    if spec.format == "cxcywh":
        cx, cy, w, h = nums
        return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    cx, cy, r = nums
    return [cx - r, cy - r, cx + r, cy + r]


def row_runs(cell: str | None, spec: RleColumn) -> list[int] | str:
    """A row's mask as absolute 0-based runs ([] for no mask: empty or -1), or why it is not one."""
    return parse_runs(str(cell or ""), spec.form, spec.start)


LIST_CELL_CHARS = 65536  # a label list longer than this is not read (literal_eval's work grows with its text)


def label_list(cell: object) -> list[str] | str:
    """A cell holding a list of labels written as text: Python's `['Mass', 'Suspicious Calcification']`
    (VinDr-Mammo's finding_categories) or JSON's `["A", "B"]`; [] for an empty cell or list. Read as a literal
    only (`json.loads`, else `ast.literal_eval`: never evaluated as code); anything but a list (or tuple) of
    strings is a message saying what it is."""
    text = str(cell or "").strip()
    if not text:
        return []
    if len(text) > LIST_CELL_CHARS:
        return f"a cell of {len(text)} characters, over {LIST_CELL_CHARS}: not read as a label list"
    try:
        value = json.loads(text)
    except ValueError:
        try:
            value = ast.literal_eval(text)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return f"{text[:60]!r} is not a list written as text (['A', 'B'] or [\"A\", \"B\"])"
    if not isinstance(value, (list, tuple)):
        return f"{text[:60]!r} is a {type(value).__name__}, not a list of labels"
    other = next((v for v in value if not isinstance(v, str)), None)
    if other is not None:
        return f"{text[:60]!r} holds {other!r}, a {type(other).__name__}; a label list holds strings only"
    return [v.strip() for v in value]


UNCERTAIN_POLICIES = ("positive", "negative", "ignore", "keep")


def onehot_cells(
    row: dict, columns: list[str], true_values: frozenset[str], uncertain_values: frozenset[str]
) -> tuple[list[str], list[str]]:
    """(columns marked present, columns marked uncertain) of a one-hot row; blank and other values are
    neither (CheXpert: 1.0 present, 0.0 absent, -1.0 uncertain, blank not mentioned)."""
    present, uncertain = [], []
    for c in columns:
        value = str(row.get(c) or "").strip().lower()
        if value in true_values:
            present.append(c)
        elif value in uncertain_values:
            uncertain.append(c)
    return present, uncertain


def apply_uncertain(labels: list[str], uncertain: list[str], policy: str, template: str) -> list[str]:
    """The record's labels under an uncertain-label policy: `positive` counts an uncertain finding as present
    (U-Ones), `negative` and `ignore` leave it out of the labels (the record's meta names it, so that `ignore`
    can be told from absent), `keep` adds it as a label of its own (`template`, e.g. "{label} (uncertain)")."""
    out = list(labels)
    extra = uncertain if policy == "positive" else [template.format(label=u) for u in uncertain] if policy == "keep" else []
    for label in extra:
        if label not in out:
            out.append(label)
    return out
