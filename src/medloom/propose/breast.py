"""Breast region in mammograms, no weights: the foreground of an Otsu split (the side the border is not on),
its largest component with holes filled, so that labels and markers burned into the corners stay out. The
pectoral muscle of an MLO view is inside the region (it is tissue against the background; said in the docs).
Refuses other modalities. Score: the split's separation."""

from __future__ import annotations

import numpy as np

from .base import Refused, Region, foreground, gray, refuse_modality

VERSION = "1"
LABELS = ("breast",)
DEFAULTS = {"min_share": 0.05, "max_share": 0.95}


def suits(record: dict) -> str | None:
    return refuse_modality(record, ("mammography",), "the breast region")


def propose(pixels: np.ndarray, values: np.ndarray | None, record: dict, params: dict) -> list[Region]:
    mask, score = foreground(gray(pixels))
    share = float(mask.mean())
    if not params["min_share"] <= share <= params["max_share"]:
        raise Refused("no_breast", f"the foreground covers {share:.1%} of the image: no breast against a background")
    return [Region("breast", mask, score)]
