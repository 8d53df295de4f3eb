"""Lung fields in CT by Hounsfield units: inside the body (tissue above -500 HU, holes filled), the air-filled
parenchyma (-1000 to -400 HU) that does not touch the air around the patient, smoothed, the two largest parts
kept when they hold at least 10% of the body (less is sinus or bowel gas; the first and last slices of a lung
are refused too). A record whose anatomy is known and out of the chest's reach is refused before its pixels are
read. Needs the stored values in HU (DICOM CT through its rescale slope and intercept, NIfTI CT as stored): the
rendered window of a PNG or JPEG is not HU, so such records are refused. Score: the share of the air inside the
body that the kept parts hold (bowel gas and the trachea lower it)."""

from __future__ import annotations

import numpy as np

from .base import Refused, Region, largest, refuse_modality
from .body import body_from_hu

VERSION = "1"
LABELS = ("lung",)
DEFAULTS = {"tissue_hu": -500.0, "air_low": -1024.0, "air_high": -400.0, "min_body_share": 0.02, "min_lung_share": 0.1}
# anatomy a CT slice with lungs in it may be catalogued as (a known other anatomy is refused before reading pixels)
CHEST = ("chest", "lung", "heart", "spine", "abdomen", "whole body", "bone", "unknown", "")


def suits(record: dict) -> str | None:
    wrong = refuse_modality(record, ("CT",), "lung fields by Hounsfield units")
    if wrong:
        return wrong
    anatomy = record.get("anatomy") or ""
    return None if anatomy in CHEST else f"lung fields need a CT of the chest; this record's anatomy is {anatomy}"


def propose(pixels: np.ndarray, values: np.ndarray | None, record: dict, params: dict) -> list[Region]:
    from scipy import ndimage

    if values is None:
        raise Refused(
            "no_hounsfield_units",
            "no Hounsfield units for this record: only DICOM and NIfTI CT keep them (a rendered image's grey levels are not HU)",
        )
    if float(values.min()) > -500:
        raise Refused("no_hounsfield_units", f"the lowest value is {float(values.min()):.0f}: these values are not HU")
    body = body_from_hu(values, params["tissue_hu"])
    if body.mean() < params["min_body_share"]:
        raise Refused("no_body", "no body in this slice (tissue above -500 HU covers almost nothing)")
    air = (values >= params["air_low"]) & (values <= params["air_high"]) & body
    air = ndimage.binary_opening(air, iterations=2)
    inside = air.sum()
    lungs = largest(air, 2, min_share=0.002)
    lungs = ndimage.binary_closing(lungs, iterations=3) & body
    lungs = ndimage.binary_fill_holes(lungs)  # vessels inside the lung are lung field
    if lungs.sum() < 0.01 * body.sum():
        raise Refused(
            "no_lung", f"air inside the body covers {air.sum() / max(body.sum(), 1):.1%} of it: no lung fields in this slice"
        )
    score = round(float(min(lungs.sum(), inside) / max(inside, 1)), 4)
    return [Region("lung", lungs, score)]
