"""A preset's example tree written to disk: small images, masks, DICOM and NIfTI files and label tables in the
published layout, so that a test (and a user who wants to see a preset work before downloading) can ingest it.

A file is given by its kind:
  image [WxH] [gray|rgb]           a noise image in the format of the name's suffix (png, jpg, bmp, tif, gif)
  mask [WxH] [values=1,2]          0 outside, a filled rectangle per value (default one rectangle of 255)
  rgbmask [WxH] colors=#ff0000,..  black outside, a filled rectangle per colour
  dicom [ct|mr]                    pydicom's CT_small / MR_small with this file's own UIDs and patient id
  dicom-mask [ct|mr] [values=1]    the same file's size and ids, its pixels 0 with a rectangle per value
  nifti [WxHxD] / nifti-mask [WxHxD]  a float volume / a 0-1 volume with a cube of 1
or by its content: {text: ...}, {json: ...}, {xlsx: {sheet name: [[cells], ...]}}.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

SIZE = re.compile(r"^(\d+)x(\d+)(?:x(\d+))?$")


def _seed(rel: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(rel.encode()).digest()[:8], "little"))


def _size(words: list[str], default: tuple[int, ...]) -> tuple[int, ...]:
    for w in words:
        m = SIZE.match(w)
        if m:
            return tuple(int(g) for g in m.groups() if g)
    return default


def _option(words: list[str], key: str) -> list[str]:
    for w in words:
        if w.startswith(key + "="):
            return w[len(key) + 1 :].split(",")
    return []


def _save(array: np.ndarray, path: Path) -> None:
    im = Image.fromarray(array)
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        im.convert("RGB" if im.mode not in ("L", "RGB") else im.mode).save(path, quality=95)
    else:
        im.save(path)


def _rectangles(n: int, width: int, height: int) -> list[tuple[slice, slice]]:
    """n separate rectangles side by side, each a quarter of the height tall."""
    step, rows = width // (n + 1), slice(height // 3, height // 3 + max(2, height // 4))
    return [(rows, slice(step * i + step // 2, step * (i + 1))) for i in range(n)]


def write_file(root: Path, rel: str, spec: Any) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(spec, dict):
        (kind, value), *rest = spec.items()
        if rest:
            raise ValueError(f"{rel}: give one of text, json, xlsx")
        if kind == "text":
            path.write_text(str(value), encoding="utf-8")
        elif kind == "json":
            path.write_text(json.dumps(value, indent=1), encoding="utf-8")
        elif kind == "xlsx":
            _xlsx(path, value)
        else:
            raise ValueError(f"{rel}: unknown content {kind!r} (text, json, xlsx)")
        return
    words = str(spec).split()
    kind, rng = words[0], _seed(rel)
    if kind == "image":
        width, height = _size(words, (32, 32))
        shape = (height, width) if "gray" in words else (height, width, 3)
        _save(rng.integers(0, 256, shape, dtype=np.uint8), path)
    elif kind == "mask":
        width, height = _size(words, (32, 32))
        values = [int(v) for v in _option(words, "values")] or [255]
        mask = np.zeros((height, width), np.uint8)
        for value, (rows, cols) in zip(values, _rectangles(len(values), width, height)):
            mask[rows, cols] = value
        _save(mask, path)
    elif kind == "rgbmask":
        width, height = _size(words, (32, 32))
        colours = _option(words, "colors")
        mask = np.zeros((height, width, 3), np.uint8)
        for colour, (rows, cols) in zip(colours, _rectangles(len(colours), width, height)):
            mask[rows, cols] = [int(colour.lstrip("#")[i : i + 2], 16) for i in (0, 2, 4)]
        _save(mask, path)
    elif kind in ("dicom", "dicom-mask"):
        values = [int(v) for v in _option(words, "values")] or [1]
        _dicom(path, rel, "mr" if "mr" in words else "ct", values if kind == "dicom-mask" else None)
    elif kind in ("nifti", "nifti-mask"):
        _nifti(path, _size(words, (16, 16, 4)), kind == "nifti-mask", rng)
    else:
        raise ValueError(f"{rel}: unknown kind {kind!r} (image, mask, rgbmask, dicom, dicom-mask, nifti, nifti-mask)")


def write_example(root: Path, files: dict[str, Any]) -> None:
    """Every file of an example under root (created)."""
    for rel, spec in files.items():
        write_file(root, rel, spec)


def _xlsx(path: Path, sheets: dict[str, list[list[Any]]]) -> None:
    from openpyxl import Workbook

    book = Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    book.save(path)


def _dicom(path: Path, rel: str, kind: str, mask: list[int] | None = None) -> None:
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm" if kind == "mr" else "CT_small.dcm"))
    entropy = [rel]
    ds.SOPInstanceUID = generate_uid(entropy_srcs=entropy + ["sop"])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=entropy + ["study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=entropy + ["series"])
    ds.PatientID = hashlib.sha256(rel.encode()).hexdigest()[:12]
    ds.PatientName = "Example^Patient"
    if mask is not None:  # a mask slice: the stored values are labels
        pixels = np.zeros((int(ds.Rows), int(ds.Columns)), ds.pixel_array.dtype)
        for value, (rows, cols) in zip(mask, _rectangles(len(mask), int(ds.Columns), int(ds.Rows))):
            pixels[rows, cols] = value
        ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)


def _nifti(path: Path, size: tuple[int, ...], mask: bool, rng: np.random.Generator) -> None:
    import nibabel as nib

    shape = tuple(size) + (4,) * (3 - len(size))
    if mask:
        data = np.zeros(shape, np.uint8)
        data[shape[0] // 4 : shape[0] // 2, shape[1] // 4 : shape[1] // 2, :] = 1
    else:
        data = rng.normal(100, 20, shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
