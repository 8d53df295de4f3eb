"""Multigranular ROI descriptions (as MedTrinity-25M): a global part (modality, anatomy) and, per ROI,
where it is in words, how large, its shape, its brightness and texture against its surroundings, how many
of its kind there are (a structure whose mask falls into several regions is one, in parts: see
`structures.py`), whether people drew it or a method proposed it, how they relate (overlapping, adjacent,
above/below, left/right), and knowledge retrieved for the findings (ontology.py).

Pure functions of a record and, optionally, its 8-bit grey pixels; the result is structured fields plus a
text built from them (the wording is prose.py's).
"""

from __future__ import annotations

import ast
import math

import numpy as np

from ..imaging import rle_decode
from ..vocab.words import label_words
from .prose import description
from .structures import instance_words, objects

ORGAN_WORDS = frozenset(
    {
        "organ",
        "lung",
        "lungs",
        "liver",
        "kidney",
        "brain",
        "heart",
        "spleen",
        "pancreas",
        "prostate",
        "breast",
        "optic disc",
        "body",
        "skin",
    }
)


def patient_sides(record: dict, meta: dict) -> dict[str, str] | None:
    """Which patient side each image side shows, when the orientation is known (DICOM orientation, or a
    NIfTI slice in medloom's radiological display); None when only image-relative words are honest."""
    row_x = None
    iop = meta.get("ImageOrientationPatient")
    if isinstance(iop, list) and len(iop) == 6:
        row_x = iop[0]
    po = meta.get("PatientOrientation")
    if row_x is None and po:
        try:
            first = ast.literal_eval(po)[0] if po.startswith("[") else po.split("\\")[0]
        except (ValueError, SyntaxError, IndexError):
            first = ""
        row_x = {"L": 1.0, "R": -1.0}.get(str(first)[:1])
    if row_x is None and "radiological" in str(meta.get("orientation", "")) and meta.get("axis") != "sagittal":
        row_x = 1.0
    if row_x is None or abs(row_x) < 0.5:
        return None
    # the row direction points to the patient's left (+x in DICOM LPS): the image's left shows their right
    return {"left": "right", "right": "left"} if row_x > 0 else {"left": "left", "right": "right"}


def location_words(cx: float, cy: float, sides: dict[str, str] | None) -> str:
    """Where a centre lies, as a noun phrase that reads after "in the": in patient terms when the sides are
    known ("upper part of the patient's right side"), else relative to the image ("lower left of the image")."""
    vertical = "upper" if cy < 1 / 3 else ("lower" if cy > 2 / 3 else "middle")
    horizontal = "left" if cx < 1 / 3 else ("right" if cx > 2 / 3 else "central")
    if sides and horizontal != "central":
        part = {"upper": "upper part", "lower": "lower part", "middle": "middle"}[vertical]
        return f"{part} of the patient's {sides[horizontal]} side"
    if horizontal == "central":
        return "centre of the image" if vertical == "middle" else f"{vertical} centre of the image"
    return f"{vertical} {horizontal} of the image" if vertical != "middle" else f"{horizontal} side of the image"


def size_words(share: float) -> str:
    if share < 0.01:
        return "tiny"
    if share < 0.05:
        return "small"
    if share < 0.2:
        return "medium-sized"
    return "large"


def shape_words(mask: np.ndarray | None, box_w: float, box_h: float) -> str:
    """From the mask: fill of its box and elongation; from the box alone: elongation only."""
    ratio = max(box_w, box_h) / max(min(box_w, box_h), 1e-9)
    if mask is not None and mask.any():
        ys, xs = np.nonzero(mask)
        fill = len(xs) / ((np.ptp(xs) + 1) * (np.ptp(ys) + 1))
        if fill < 0.5:
            return "irregular"
        if ratio > 2:
            return "elongated"
        return "round" if fill > 0.7 and ratio < 1.3 else "oval"
    return "elongated" if ratio > 2 else ("roughly square" if ratio < 1.3 else "oblong")


def _ring(mask: np.ndarray, width: int) -> np.ndarray:
    from scipy.ndimage import binary_dilation

    return binary_dilation(mask, iterations=width) & ~mask


def intensity_words(gray: np.ndarray, mask: np.ndarray) -> tuple[str, str, float, float]:
    """(brightness, texture, mean difference, std ratio) of the region against a ring around it."""
    ring = _ring(mask, max(2, int(0.05 * max(mask.shape))))
    if not mask.any() or not ring.any():
        return "", "", 0.0, 1.0
    inside, outside = gray[mask].astype(np.float64), gray[ring].astype(np.float64)
    diff = float(inside.mean() - outside.mean())
    ratio = float((inside.std() + 1.0) / (outside.std() + 1.0))
    brightness = "brighter than" if diff > 12 else ("darker than" if diff < -12 else "similar in brightness to")
    texture = "more heterogeneous than" if ratio > 1.5 else ("more homogeneous than" if ratio < 0.67 else "of similar texture to")
    return brightness, texture, diff, ratio


def relation(a: dict, b: dict, sides: dict[str, str] | None = None) -> str | None:
    ax0, ay0, ax1, ay1 = a["bbox"]
    bx0, by0, bx1, by1 = b["bbox"]
    ix, iy = min(ax1, bx1) - max(ax0, bx0), min(ay1, by1) - max(ay0, by0)
    if ix > 0 and iy > 0:
        return "overlaps"
    gap = max(-ix, -iy, 0.0)
    if gap < 0.03:
        return "is adjacent to"
    acy, bcy, acx, bcx = (ay0 + ay1) / 2, (by0 + by1) / 2, (ax0 + ax1) / 2, (bx0 + bx1) / 2
    if abs(acy - bcy) >= abs(acx - bcx):
        return "is above" if acy < bcy else "is below"
    side = "left" if acx < bcx else "right"
    return f"is to the patient's {sides[side]} of" if sides else f"is to the {side} of"


def describe_regions(
    record: dict,
    gray: np.ndarray | None,
    *,
    knowledge: list[dict] | None = None,
    instances: frozenset[str] | None = None,
) -> dict:
    """Structured facts and text for every object of a record: an instance ROI, or a structure whose mask
    regions are its parts (see `structures.py`; `instances` as `instance_words` makes it). `knowledge`: the
    retrieved terms (ontology.py) the text ends with."""
    import json

    meta = json.loads(record["meta"]) if record.get("meta") else {}
    sides = patient_sides(record, meta)
    rois = record.get("rois") or []
    w, h = record["width"], record["height"]
    region_masks = [rle_decode(list(r["rle"]), h, w).astype(bool) if r.get("rle") else None for r in rois]
    words = instance_words(None) if instances is None else instances
    objs = objects(rois, words)
    masks = []
    for obj in objs:
        parts = [region_masks[i] for i in obj["members"]]
        masks.append(np.logical_or.reduce(parts) if all(m is not None for m in parts) else None)
    organ = next((m for o, m in zip(objs, masks) if m is not None and label_words(o["label"]).lower() in ORGAN_WORDS), None)
    if organ is not None:  # label-id masks cut lesions out of their organ: the organ is its filled outline
        from scipy.ndimage import binary_fill_holes

        organ = binary_fill_holes(organ)
    counts: dict[str, int] = {}
    for obj in objs:
        counts[obj["label"]] = counts.get(obj["label"], 0) + 1
    seen: dict[str, int] = {}
    out_rois = []
    for obj, mask in zip(objs, masks):
        x0, y0, x1, y1 = obj["bbox"]
        seen[obj["label"]] = seen.get(obj["label"], 0) + 1
        share = float(obj["area"] or (x1 - x0) * (y1 - y0))
        organ_share = None
        if (
            organ is not None and mask is not None and organ.any() and label_words(obj["label"]).lower() not in ORGAN_WORDS
        ):  # a lesion's share of its organ
            organ_share = float((mask & organ).sum() / organ.sum())
        region = mask
        if region is None:
            region = np.zeros((h, w), bool)
            region[int(y0 * h) : max(int(y1 * h), int(y0 * h) + 1), int(x0 * w) : max(int(x1 * w), int(x0 * w) + 1)] = True
        brightness, texture, diff, ratio = intensity_words(gray, region) if gray is not None else ("", "", 0.0, 1.0)
        out_rois.append(
            {
                "label": obj["label"],
                "index": seen[obj["label"]],
                "count": counts[obj["label"]],
                "parts": obj["parts"],
                "location": location_words((x0 + x1) / 2, (y0 + y1) / 2, sides),
                "side_frame": "patient" if sides else "image",
                "area_share": round(share, 4),
                "organ_share": round(organ_share, 4) if organ_share is not None else -1.0,
                "size": size_words(share),
                "shape": shape_words(mask, (x1 - x0) * w, (y1 - y0) * h),
                "brightness": brightness,
                "texture": texture,
                "mean_difference": round(diff, 2),
                "std_ratio": round(ratio, 3) if math.isfinite(ratio) else 1.0,
                "roi_source": "proposal" if obj["proposal"] else "dataset",
            }
        )
    relations = []
    for i in range(len(objs)):
        for j in range(i + 1, len(objs)):
            rel = relation(objs[i], objs[j], sides)
            if rel:
                relations.append({"a": i, "b": j, "relation": rel})
    return {
        "rois": out_rois,
        "relations": relations,
        "text": description(record, meta, out_rois, relations, counts, words, knowledge or []),
        # what the fact checks read: the knowledge sentences quote the ontology, not claims about this image
        "facts_text": description(record, meta, out_rois, relations, counts, words, []),
    }
