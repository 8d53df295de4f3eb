"""Nuclei in H&E (or haematoxylin-counterstained IHC) by colour deconvolution and watershed, no weights: the
haematoxylin channel of `skimage.color.rgb2hed`, smoothed and split by Otsu, small specks removed, touching
nuclei cut apart by a watershed on the distance transform from one marker per local maximum. Each nucleus is an
ROI (`nucleus`, counted one by one); at most `max_nuclei` of the largest are kept. Refuses other modalities,
grey images and tiles without haematoxylin. Score per nucleus: its solidity (area over convex area)."""

from __future__ import annotations

import numpy as np

from .base import Refused, Region, otsu, refuse_modality

VERSION = "1"
LABELS = ("nucleus",)
DEFAULTS = {"min_area": 20, "max_nuclei": 300, "min_distance": 4, "min_stain": 0.02}


def suits(record: dict) -> str | None:
    wrong = refuse_modality(record, ("pathology", "microscopy"), "nuclei by colour deconvolution")
    if wrong:
        return wrong
    if (record.get("channels") or 3) < 3:
        return "colour deconvolution needs a stained colour image; this record is grey"
    return None


def haematoxylin(pixels: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2hed

    return rgb2hed(pixels[..., :3])[..., 0]


def propose(pixels: np.ndarray, values: np.ndarray | None, record: dict, params: dict) -> list[Region]:
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.measure import regionprops
    from skimage.morphology import remove_small_objects
    from skimage.segmentation import watershed

    if pixels.ndim != 3:
        raise Refused("not_colour", "colour deconvolution needs a stained colour image; these pixels are grey")
    h = ndimage.gaussian_filter(haematoxylin(pixels), 1.0)
    spread = float(np.percentile(h, 99) - np.percentile(h, 1))
    if spread < params["min_stain"]:
        raise Refused("no_haematoxylin", f"the haematoxylin channel barely varies ({spread:.3f}): no stained nuclei")
    nuclei = ndimage.binary_opening(h > otsu(h), iterations=1)
    nuclei = ndimage.binary_fill_holes(remove_small_objects(nuclei, max_size=params["min_area"]))
    if not nuclei.any():
        raise Refused("no_nuclei", "no haematoxylin-stained region as large as a nucleus")
    distance = ndimage.distance_transform_edt(nuclei)
    seeds = ndimage.label(nuclei)[0]
    peaks = peak_local_max(distance, min_distance=params["min_distance"], labels=seeds, exclude_border=False)
    markers = np.zeros(nuclei.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-distance, markers, mask=nuclei)
    props = [p for p in regionprops(labels) if p.area >= params["min_area"]]
    props.sort(key=lambda p: -p.area)
    return [Region("nucleus", labels == p.label, round(float(p.solidity), 4)) for p in props[: params["max_nuclei"]]]
