"""Brain in MRI (T1- or T2-weighted slices), no weights: the head is the foreground (Otsu, filled); the brain is
the tissue inside it once the scalp is cut away: an Otsu split of the head's grey levels, eroded so that the
thin bridges to the scalp break, the component nearest the head's centre kept, grown back and filled. Refuses
other modalities and records whose anatomy is known and not the brain. Score: the brain's contrast against the
ring around it."""

from __future__ import annotations

import numpy as np

from .base import Refused, Region, disk, filled, foreground, gray, largest, otsu, refuse_modality, separation

VERSION = "1"
LABELS = ("brain",)
DEFAULTS = {"erode": 0.03, "min_share": 0.02}
BRAIN_ANATOMY = ("brain", "head and neck", "unknown", "")


def suits(record: dict) -> str | None:
    wrong = refuse_modality(record, ("MRI",), "brain extraction")
    if wrong:
        return wrong
    anatomy = record.get("anatomy") or ""
    if anatomy not in BRAIN_ANATOMY:
        return f"brain extraction needs a head; this record's anatomy is {anatomy}"
    return None


def propose(pixels: np.ndarray, values: np.ndarray | None, record: dict, params: dict) -> list[Region]:
    from scipy import ndimage

    g = gray(pixels) if values is None else values.astype(np.float32)
    head, _ = foreground(g)
    if head.mean() < params["min_share"]:
        raise Refused("no_head", f"the head covers {head.mean():.1%} of the image: no head to strip")
    t = otsu(g[head])
    tissue = head & (g > t * 0.6)
    radius = max(1, int(params["erode"] * np.sqrt(head.sum())))
    core = ndimage.binary_erosion(tissue, structure=disk(radius))
    labels, count = ndimage.label(core)
    if count == 0:
        raise Refused("no_brain", "no tissue is left once the scalp is cut away")
    cy, cx = ndimage.center_of_mass(head)
    centres = ndimage.center_of_mass(core, labels, range(1, count + 1))
    sizes = ndimage.sum(core, labels, range(1, count + 1))
    best = max(range(count), key=lambda i: sizes[i] / (1.0 + np.hypot(centres[i][0] - cy, centres[i][1] - cx) / radius))
    brain = ndimage.binary_dilation(labels == best + 1, structure=disk(radius)) & head
    brain = filled(largest(brain))
    if brain.sum() < 0.1 * head.sum():
        raise Refused("no_brain", f"the brain candidate holds {brain.sum() / head.sum():.0%} of the head: not a brain slice")
    ring = ndimage.binary_dilation(brain, structure=disk(radius)) & ~brain
    return [Region("brain", brain, separation(g[brain | ring], brain[brain | ring]))]
