"""What the app's routes read from a request, checked: a required value, a number, a whole number; and the
colours ROI labels and proposals are drawn in."""

from __future__ import annotations

import numpy as np

from .query import BadRequest

IMAGE_SIDE = 1024  # the longest side of an image the app sends
PALETTE = ["#ff2d95", "#00c2ff", "#ffd400", "#37e05a", "#ff7a00", "#a66bff", "#00e0c6", "#ff4040"]


# machine proposals (`medloom propose`) in colours of their own, never one of a label's: white once a person
# accepted them, chartreuse (drawn dashed) while they wait
PROPOSAL_COLORS = {True: "#ffffff", False: "#b4ff00"}


def proposal_color(accepted: bool) -> str:
    return PROPOSAL_COLORS[bool(accepted)]


def label_colors(labels: list[str]) -> dict[str, str]:
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(sorted(set(labels)))}


def number(params, key: str) -> float | None:
    value = params.get(key)
    if value in (None, ""):
        return None
    try:
        out = float(value)
    except ValueError:
        raise BadRequest(f"{key}={value!r} is not a number") from None
    if not np.isfinite(out):
        raise BadRequest(f"{key}={value!r} is not a finite number")
    return out


def whole(value, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{what} {value!r} is not a whole number") from None


def required(params, key: str) -> str:
    value = params.get(key)
    if not value:
        raise BadRequest(f"`{key}` is missing")
    return value
