"""Body or foreground region, any modality: the side of an Otsu split that the border is not on, its largest
component with holes filled. CT with Hounsfield units uses them instead (tissue above -500 HU: the table and
the air around the patient stay out). Refuses an image with no background (a crop, a tissue tile) and a flat one.
Score: the split's separation (between-class over total variance)."""

from __future__ import annotations

import numpy as np

from .base import Refused, Region, filled, foreground, gray, largest, separation

VERSION = "1"
LABELS = ("body",)
DEFAULTS = {"min_share": 0.05, "max_share": 0.97, "tissue_hu": -500.0}


def suits(record: dict) -> str | None:
    return None  # any modality: the pixels decide


def body_from_hu(values: np.ndarray, tissue_hu: float) -> np.ndarray:
    from scipy import ndimage

    body = ndimage.binary_opening(values > tissue_hu, iterations=2)
    return filled(largest(body))


def propose(pixels: np.ndarray, values: np.ndarray | None, record: dict, params: dict) -> list[Region]:
    if values is not None and record.get("modality") == "CT":
        mask = body_from_hu(values, params["tissue_hu"])
        score = separation(np.clip(values, -1000, 1000), mask)
    else:
        mask, score = foreground(gray(pixels))
    share = float(mask.mean())
    if share < params["min_share"]:
        raise Refused("no_foreground", f"the largest foreground region covers {share:.1%} of the image: nothing to outline")
    if share > params["max_share"]:
        raise Refused(
            "no_background", f"the foreground covers {share:.1%} of the image: no background to tell it from (a crop or tile)"
        )
    return [Region("body", mask, score)]
