"""nnU-Net 3d configurations (every TotalSegmentator task) on the volume a slice record belongs to.

A NIfTI source is sliced into one record per kept slice; a 3d network needs the whole volume. The volume is
read once per part through the NIfTI reader (`view.render.record_volume`: its `max_voxels` budget, RAS+
canonical orientation, scaled values: Hounsfield units for CT) and predicted once: the prediction is kept in the
volume's `memo`, which the part's cache drops with the volume, and the propose step cuts its parts between
volumes, so each slice record of the volume takes its slice of the one label volume.

The prediction: the RAS+ volume transposed to nnU-Net's axis order (z, y, x: what SimpleITK, and nnU-Net's
`NibabelIOWithReorient`, make of a RAS+ file; TotalSegmentator reorients to the closest canonical orientation
before its nnU-Net runs, so its models see volumes this way), normalised by the plans' scheme
(`sliding.normalise`), resampled to the plans' spacing when the header gives a voxel spacing
(`scipy.ndimage.zoom`, order 1), the Gaussian-weighted sliding window of the plans' patch at half-patch steps
(`sliding.sliding_window`), softmax, argmax; the labels and their probability go back to the volume's grid with
order 0 (nearest), then back to RAS+, and each record gets `display(np.take(labels, frame, axis))`: its slice in
exactly the orientation of its rendered image.

Cost: one prediction per volume and part (the step keeps a volume's slices in one part, however many); the
memory of the softmax, outputs x voxels on the plans' grid x 4 bytes (26 outputs, as one of TotalSegmentator's
part models, on a 300^3 grid: about 2.8 GB), plus the labels and their probability on the volume's grid (5 bytes a voxel) until
the part ends. Differences from nnU-Net: the z-score is taken over the whole volume (nnU-Net's over the box of
its non-zero voxels, or its mask with `use_mask_for_norm`), no test-time mirroring, one fold.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from .base import Refused
from .sliding import normalise, sliding_window

# volumes predicted in this process, by (path, volume index, file hash): what shows that a volume's slices
# share one prediction (the tests read it; a worker process keeps its own)
predictions: Counter = Counter()


def needs_volume(record: dict) -> Refused:
    """The refusal for a record that is not a slice of a volume."""
    return Refused(
        "no_volume",
        f"a 3d configuration needs a volume: record {record.get('id', '')} is one 2D image (a plain image file or a "
        "DICOM frame; DICOM series are not assembled into volumes); ingest the volume as NIfTI (reader nifti) or "
        "give a 2d configuration's folder (TRAINER__PLANS__2d)",
    )


def volume_input(volume: dict, info: dict) -> np.ndarray:
    """(channels, z, y, x): the volume normalised by the plans' scheme, in nnU-Net's axis order."""
    n = len(info["channels"])
    if n != 1:
        raise Refused(
            "channels",
            f"the model takes {n} channels ({', '.join(map(str, info['channels']))}); this record's volume is one",
        )
    scheme = (info["schemes"] or ["ZScoreNormalization"])[0]
    data = np.asarray(volume["data"], np.float32).transpose(2, 1, 0)
    return normalise(data, scheme, info["intensity"].get("0", {}))[None]


def to_shape(array: np.ndarray, shape: tuple[int, ...], order: int) -> np.ndarray:
    """`array` (spatial axes last) zoomed to exactly `shape` (scipy's rounding may leave a voxel more or less:
    cropped, or padded with the edge)."""
    from scipy import ndimage

    lead = array.ndim - len(shape)
    factors = (1,) * lead + tuple(t / s for t, s in zip(shape, array.shape[lead:]))
    out = ndimage.zoom(array, factors, order=order)
    out = out[(Ellipsis, *(slice(0, t) for t in shape))]
    pads = [(0, 0)] * lead + [(0, t - s) for t, s in zip(shape, out.shape[lead:])]
    return np.pad(out, pads, mode="edge") if any(p for _, p in pads) else out


def target_shape(shape: tuple[int, ...], spacing: list[float], plans_spacing: list[float] | None) -> tuple[int, ...]:
    """The grid of the plans' spacing (same extent in mm); `shape` itself when either spacing is unknown."""
    if not plans_spacing or len(plans_spacing) != len(shape):
        return shape
    if not all(np.isfinite(s) and s > 0 for s in [*spacing, *plans_spacing]):
        return shape
    return tuple(max(1, int(round(n * s / p))) for n, s, p in zip(shape, spacing, plans_spacing))


def predict(network, volume: dict, info: dict) -> dict:
    """The label volume (RAS+, the volume's grid) and the probability of each voxel's label."""
    x = volume_input(volume, info)
    shape = x.shape[1:]
    spacing = list(volume["spacing"])[::-1]  # RAS+ (x, y, z) -> nnU-Net's (z, y, x)
    grid = target_shape(shape, spacing, info["spacing"])
    if grid != shape:
        x = to_shape(x, grid, order=1)
    prob, windows = sliding_window(network, x.astype(np.float32), info["patch"], len(info["labels"]))
    labels = prob.argmax(0).astype(np.uint8 if len(info["labels"]) <= 256 else np.int32)
    confidence = prob.max(0)
    del prob
    if grid != shape:
        labels, confidence = to_shape(labels, shape, order=0), to_shape(confidence, shape, order=0)
    predictions[volume["key"]] += 1
    return {
        "labels": labels.transpose(2, 1, 0),
        "confidence": confidence.transpose(2, 1, 0),
        "windows": windows,
        "grid": grid,
    }


def slice_labels(network, volume: dict, info: dict, model_key: tuple) -> tuple[np.ndarray, np.ndarray]:
    """The record's slice of the volume's labels and their probabilities, oriented as its rendered image; the
    volume is predicted on the first of its slices and kept in its memo for the others."""
    from ..sources.nifti import display

    memo = volume["memo"]
    if model_key not in memo:
        memo[model_key] = predict(network, volume, info)
    pred, axis, frame = memo[model_key], volume["axis"], volume["frame"]
    return display(np.take(pred["labels"], frame, axis=axis)), display(np.take(pred["confidence"], frame, axis=axis))
