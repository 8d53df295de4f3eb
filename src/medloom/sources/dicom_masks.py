"""DICOM images paired with DICOM masks, slice by slice (Duke Liver Dataset:
`Segmentation/<patient>/<series>/images/<slice>.dicom` beside `.../masks/<slice>.dicom`): the `masks` reader's
pairing and labelling, the `dicom` reader's decoding and privacy.

Images are read as the `dicom` reader reads them (modality LUT, the stored window, MONOCHROME1 inverted) and
render the same way at export; a mask's stored pixel values are its labels (no rescale, no window), named by
`mask_labels` / `mask_label` or read through `binarize` / `snap` as for image masks. Record ids are pseudonyms
and patient and study ids salted hashes, as for `dicom`: folders named after patients never reach an id.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from pydantic import model_validator

from ..imaging import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_VOXELS, DecodeError, array_facts
from .base import Scan, image_record
from .dicom import (
    DICOM_EXTENSIONS,
    check_budget,
    decoded_pixels,
    display_frame,
    drop_non_numbers,
    has_dicm_marker,
    header_fields,
    quiet_values,
    read_dicom,
)
from .dicom import render as render_frame
from .masks import Options as MaskOptions
from .masks import merge, pair, problem_rows, regions, value_layers
from .windows import recipe_window


class Options(MaskOptions):
    window: str | tuple[float, float] | None = None  # the images' window: a preset or [center, width]
    images_dir: str = "."
    masks_dir: str = "."

    @model_validator(mode="after")
    def _no_palette(self) -> Options:
        if self.palette is not None:
            raise ValueError("`palette` is for RGB image masks; a DICOM mask's stored values are its labels")
        recipe_window(self.window)
        return self


def is_dicom(path: Path) -> bool:
    return path.suffix.lower() in DICOM_EXTENSIONS or has_dicm_marker(str(path))


def scan(source: dict) -> Scan:
    return pair(source, Options(**source["options"]), is_dicom)


def read_frames(path: str, source: dict):
    """(dataset, its frames as one array frames x rows x columns, hash of the file's bytes), within the source's
    budgets."""
    ds, digest = read_dicom(path, source.get("max_file_bytes") or DEFAULT_MAX_FILE_BYTES)
    check_budget(ds, source.get("max_voxels") or DEFAULT_MAX_VOXELS)
    drop_non_numbers(ds)
    arr = decoded_pixels(ds)
    return ds, arr if int(ds.get("NumberOfFrames", 1) or 1) > 1 else arr[None], digest


def mask_frames(path: str, source: dict, shape: tuple[int, ...]) -> np.ndarray:
    """A DICOM mask's stored values, frame by frame, with its image's frames and size; else a DecodeError."""
    rel = os.path.relpath(path, source["root"])
    try:
        _, arr, _ = read_frames(path, source)
    except DecodeError as e:
        raise DecodeError(f"mask_{e.reason}", f"mask {rel}: {e}") from None
    if arr.ndim != 3 or arr.shape != shape:
        said = "x".join(str(v) for v in arr.shape[1:][::-1])
        raise DecodeError(
            "mask_mismatch",
            f"mask {rel} is {said} x {arr.shape[0]} frame(s), image is {shape[2]}x{shape[1]} x {shape[0]} frame(s)",
        )
    return arr.astype(np.int64)


def decode(task: dict, source: dict) -> tuple[list[dict], list[dict]]:
    with quiet_values():
        return decode_quietly(task, source)


def decode_quietly(task: dict, source: dict) -> tuple[list[dict], list[dict]]:
    opts = Options(**source["options"])
    ds, arr, digest = read_frames(task["path"], source)
    if arr.ndim != 3:
        raise DecodeError("unreadable", f"the image has {arr.ndim - 1} dimensions per frame; a grey image is read")
    found = json.loads(task["extra"])["masks"]
    masks = [mask_frames(path, source, arr.shape) for path, _, _ in found]
    fields = header_fields(ds, source)
    fixed = recipe_window(opts.window)
    records, problems = [], []
    for index in range(arr.shape[0]):
        layers: dict[str, np.ndarray] = {}
        for (path, label, values), mask in zip(found, masks):
            more, bad = value_layers(mask[index], label, values, opts, source["label_map"])
            merge(layers, more)
            problems += problem_rows(task, source, path, bad)
        rois, labels = regions(layers, task, opts)
        rendered, render = display_frame(ds, arr[index], window=fixed, index=index)
        frame = index if arr.shape[0] > 1 else -1
        facts = array_facts(arr[index], rendered)
        fields.update(rois=rois, labels=labels, file_hash=digest)
        records.append(image_record(task, facts, frame=frame, render=render, **fields))
    return records, problems


render = render_frame  # the export half: the image's frame with its stored window, as the `dicom` reader does
