"""Optic disc and retinal vessels in colour fundus photographs, no weights. The field of view is where the red
channel rises above the dark surround. The disc is the brightest blob of the smoothed luminance inside it: the
pixels above the 99th percentile in a window around the maximum, grown to a disc of their own extent. Vessels
are dark ridges of the green channel (Frangi's vesselness on the contrast-stretched green), thresholded by
Otsu inside the field of view, small specks removed. Refuses other modalities and grey images. Scores: the
disc's brightness above the field's median (0..1); the vessels' mean vesselness over the field's."""

from __future__ import annotations

import numpy as np

from .base import Refused, Region, disk, filled, largest, otsu, refuse_modality

VERSION = "1"
LABELS = ("optic disc", "retinal vessels")
DEFAULTS = {"disc_percentile": 97.0, "vessel_sigmas": [1.0, 2.0, 3.0], "min_vessel_share": 0.0005, "work_side": 512}
FUNDUS_ANATOMY = ("eye", "fundus", "retina", "unknown", "")


def suits(record: dict) -> str | None:
    wrong = refuse_modality(record, ("fundus photography",), "optic disc and vessels")
    if wrong:
        return wrong
    if (record.get("channels") or 3) < 3:
        return "a colour fundus photograph is needed (red and green channels); this record is grey"
    return None


def field_of_view(red: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    fov = red > max(otsu(red) * 0.5, 10.0)
    return filled(largest(ndimage.binary_opening(fov, iterations=2)))


def propose(pixels: np.ndarray, values: np.ndarray | None, record: dict, params: dict) -> list[Region]:
    from scipy import ndimage
    from skimage.exposure import equalize_adapthist
    from skimage.filters import frangi
    from skimage.morphology import remove_small_objects
    from skimage.transform import resize

    if pixels.ndim != 3:
        raise Refused("not_colour", "a colour fundus photograph is needed; these pixels are grey")
    h, w = pixels.shape[:2]
    scale = min(1.0, params["work_side"] / max(h, w))
    small = resize(pixels[..., :3], (max(1, round(h * scale)), max(1, round(w * scale))), anti_aliasing=True, preserve_range=True)
    red, green = small[..., 0], small[..., 1]
    fov = field_of_view(red)
    if fov.mean() < 0.2:
        raise Refused("no_field_of_view", f"the lit field covers {fov.mean():.0%} of the image: not a fundus photograph")
    inner = ndimage.binary_erosion(fov, structure=disk(max(2, int(0.02 * np.sqrt(fov.sum())))))
    diameter = 2 * np.sqrt(fov.sum() / np.pi)
    lum = ndimage.gaussian_filter(small[..., :3].mean(axis=2), sigma=max(1.0, diameter / 60))
    lum_in = np.where(inner, lum, 0)
    y, x = np.unravel_index(np.argmax(lum_in), lum.shape)
    r = int(diameter / 8)  # the disc is about a sixth of the field across; look within twice that
    window = np.zeros_like(inner)
    window[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1] = True
    med = float(np.median(lum[inner]))
    # the disc: the bright blob around the maximum, cut halfway between its peak and the field's median
    bright = (lum_in >= max((lum[y, x] + med) / 2, np.percentile(lum[inner], params["disc_percentile"]))) & window
    labels, _ = ndimage.label(bright)
    disc = filled(labels == labels[y, x])
    disc_score = round(float(np.clip((lum[disc].mean() - med) / max(255.0 - med, 1.0), 0, 1)), 4)
    g = equalize_adapthist(np.clip(green / 255.0, 0, 1))
    ridges = frangi(g, sigmas=params["vessel_sigmas"], black_ridges=True)
    ridges[~inner | disc] = 0
    if not ridges.any():
        raise Refused("no_vessels", "no dark ridges inside the field of view")
    t = otsu(ridges[inner & (ridges > 0)])
    vessels = remove_small_objects(ridges > t, max_size=max(4, int(0.0005 * fov.sum())))
    if vessels.mean() < params["min_vessel_share"]:
        raise Refused("no_vessels", f"vessels would cover {vessels.mean():.2%} of the image: none found")
    vessel_score = round(float(np.clip(ridges[vessels].mean() / (ridges[inner].mean() * 10 + 1e-12), 0, 1)), 4)
    out = []
    for label, mask, score in (("optic disc", disc, disc_score), ("retinal vessels", vessels, vessel_score)):
        full = resize(mask.astype(np.float32), (h, w), order=0) > 0.5 if scale < 1 else mask
        out.append(Region(label, full, score))
    return out
