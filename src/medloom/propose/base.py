"""What every proposal method shares: the refusal a method raises for an image it does not suit, the region it
returns, and the small image operations the methods are made of (grey levels, Otsu, largest components).

A method is a module with `VERSION`, `LABELS`, `DEFAULTS` (its parameters), `suits(record)` (a reason it refuses,
from the catalog's facts alone, or None) and `propose(pixels, values, record, params)` (regions, or `Refused`
after looking at the pixels). `pixels` is the record as a person sees it (8-bit L or RGB); `values` the stored
values behind it (Hounsfield units for CT, the scanner's numbers for MR) where the reader keeps them, else None.
An expert model's adapter also has `prepare(params)`: run once before any record, it finds and checks the weights
(weights.py) and returns the parameters with their hash. An adapter that may work on whole volumes (nnunet's 3d
configurations) also has `by_volume(params)`: when it says True the step cuts its parts only between files, so a
volume's slices are processed together; and the stage gives its `propose` a `volume` argument, a function
returning the record's volume (`view.render.record_volume`: data, spacing, axis, frame, and a `memo` kept with
the volume for what the method computes from it once) or None for a record that is not a slice of one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..imaging import rle_positions


class Refused(Exception):
    """The image does not suit the method: `reason` a short code, the message says why in words."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Region:
    label: str
    mask: np.ndarray  # bool, the image's height x width
    score: float  # 0..1, the method's own confidence (documented per method)


def refuse_modality(record: dict, modalities: tuple[str, ...], what: str) -> str | None:
    """The refusal message for a record whose modality is not one of `modalities`."""
    modality = record.get("modality") or "unknown"
    if modality in modalities:
        return None
    return f"{what} needs {' or '.join(modalities)}; this record is {modality}"


def gray(pixels: np.ndarray) -> np.ndarray:
    """Luminance as float 0..255 (an L image is itself)."""
    if pixels.ndim == 2:
        return pixels.astype(np.float32)
    rgb = pixels[..., :3].astype(np.float32)
    return rgb @ np.array([0.299, 0.587, 0.114], np.float32)


def otsu(values: np.ndarray) -> float:
    from skimage.filters import threshold_otsu

    flat = values.ravel()
    if flat.size == 0 or float(flat.min()) == float(flat.max()):
        raise Refused("flat_image", "the image has one grey level: nothing to separate")
    return float(threshold_otsu(flat))


def separation(values: np.ndarray, mask: np.ndarray) -> float:
    """Otsu's criterion for a two-class split: between-class variance over total variance (0..1). A clear
    foreground on a clear background scores near 1; the methods use it as their score."""
    inside, outside = values[mask], values[~mask]
    if inside.size == 0 or outside.size == 0:
        return 0.0
    total = float(values.var())
    if total <= 0:
        return 0.0
    w1 = inside.size / values.size
    between = w1 * (1 - w1) * (float(inside.mean()) - float(outside.mean())) ** 2
    return round(min(1.0, between / total), 4)


def largest(mask: np.ndarray, n: int = 1, min_share: float = 0.0) -> np.ndarray:
    """The n largest connected components of a mask (each at least `min_share` of the image)."""
    from scipy import ndimage

    labels, count = ndimage.label(mask)
    if count == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(labels.ravel())[1:]
    keep = [i + 1 for i in np.argsort(sizes)[::-1][:n] if sizes[i] >= min_share * mask.size]
    return np.isin(labels, keep)


def filled(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_fill_holes(mask)


def disk(radius: int) -> np.ndarray:
    r = max(int(radius), 1)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return xx * xx + yy * yy <= r * r


def foreground(values: np.ndarray) -> tuple[np.ndarray, float]:
    """The side of an Otsu split that the image's border is not on (dark background or bright), as one filled
    component; and the split's separation score."""
    from scipy import ndimage

    t = otsu(values)
    border = np.concatenate([values[0], values[-1], values[:, 0], values[:, -1]])
    fg = values <= t if float(np.median(border)) > t else values > t
    fg = ndimage.binary_opening(fg, structure=disk(max(1, min(values.shape) // 200)))
    fg = filled(largest(fg))
    return fg, separation(values, fg)


def to_roi(region: Region, method: str, version: str) -> dict:
    """A region as a catalog ROI (normalised box, area share, column-major COCO RLE) with its provenance."""
    mask = region.mask.astype(bool)
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    bbox = [float(xs.min()) / w, float(ys.min()) / h, float(xs.max() + 1) / w, float(ys.max() + 1) / h]
    return {
        "label": region.label,
        "bbox": bbox,
        "area": float(mask.sum()) / mask.size,
        "rle": rle_positions(np.flatnonzero(mask.T.ravel()), mask.size),
        "score": float(region.score),
        "method": method,
        "version": version,
        "roi_source": "proposal",
    }
