"""Polygons drawn into masks once the image's size is known (csv's `findings:` polygons, ChestX-Det): each finding's
polygon is filled, boundary included, and each connected region of it becomes an ROI with box and RLE (as the
`masks` reader's regions do). Findings stay apart, not merged per label: ChestX-Det draws one polygon per nodule.

Vertices are pixel positions (x = column, y = row, from the top-left pixel): ChestX-Det's published boxes are its
polygons' extremes, pixels included. A vertex off the image is clipped, with a warning row: the part of the
finding inside the image is real (annotation tools let a stroke run past the border), and the row keeps the
clipping visible. A polygon with no pixel inside the image is quarantined, the image kept.

This module holds no recipe model (a worker imports it to decode, without pydantic).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ..imaging import mask_regions
from ..records import quarantine_row


def clip(points: list[list[float]], x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    """The polygon cut to the rectangle (Sutherland-Hodgman). Used with a rectangle around the image, it leaves the
    polygon's pixels in the image as they were and keeps the drawing's numbers small (PIL's fill wraps around on
    coordinates beyond 32 bits)."""
    out = points
    for axis, limit, sign in ((0, x0, 1), (0, x1, -1), (1, y0, 1), (1, y1, -1)):  # keep sign * (v - limit) >= 0
        if not out:
            break
        cut: list[list[float]] = []
        prev = out[-1]
        for p in out:
            p_in, prev_in = sign * (p[axis] - limit) >= 0, sign * (prev[axis] - limit) >= 0
            if p_in != prev_in:
                t = (limit - prev[axis]) / (p[axis] - prev[axis])
                cut.append([prev[0] + t * (p[0] - prev[0]), prev[1] + t * (p[1] - prev[1])])
            if p_in:
                cut.append(p)
            prev = p
        out = cut
    return out


def polygon_mask(points: list[list[float]], height: int, width: int) -> np.ndarray:
    """A boolean (height, width) mask of the polygon, filled and its outline drawn (as OpenCV's fillPoly and PIL
    draw it); the parts off the image left out."""
    if any(not (-width <= x <= 2 * width and -height <= y <= 2 * height) for x, y in points):
        points = clip(points, -width, -height, 2 * width, 2 * height)
    canvas = Image.new("1", (width, height), 0)
    if len(points) >= 2:
        ImageDraw.Draw(canvas).polygon([(x, y) for x, y in points], fill=1, outline=1)
    return np.asarray(canvas, dtype=bool)


def off_image(points: list[list[float]], height: int, width: int) -> list[list[float]]:
    """The vertices that fall on no pixel of the image."""
    return [[x, y] for x, y in points if not (-0.5 <= x < width - 0.5 and -0.5 <= y < height - 0.5)]


def polygon_rois(task: dict, source: dict, height: int, width: int, entries: list[dict]) -> tuple[list[dict], list[dict]]:
    """The ROIs of a task's polygons, and quarantine rows (at the table's line) for polygons clipped or off the
    image. Returns (ROIs, rows)."""
    rois: list[dict] = []
    problems = []

    def row(reason: str, scope: str, message: str, entry: dict) -> None:
        problems.append(
            quarantine_row(source["name"], entry["where"], reason, message, stage="decode", scope=scope, record_id=task["id"])
        )

    for entry in entries:
        shown = f"finding {entry['finding']} ({entry['label']!r}) of {task['uri']}"
        mask = polygon_mask(entry["points"], height, width)
        if not mask.any():
            row(
                "polygon_outside_image",
                "annotation",
                f"{shown}: its polygon has no pixel in the {width}x{height} image; the polygon is dropped, the label kept",
                entry,
            )
            continue
        outside = off_image(entry["points"], height, width)
        if outside:
            first = ", ".join(f"({x:g}, {y:g})" for x, y in outside[:3])
            row(
                "polygon_clipped",
                "warning",
                f"{shown}: {len(outside)} vertex/vertices off the {width}x{height} image ({first}); the polygon is "
                "clipped to the image",
                entry,
            )
        rois += mask_regions(mask.astype(np.uint8), {1: entry["label"]}, 0, 1)[0]
    return rois, problems
