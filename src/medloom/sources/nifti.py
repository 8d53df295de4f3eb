"""NIfTI volumes sliced along a chosen axis; one record per kept slice.

Volumes are reoriented to the closest RAS+ canonical orientation first, so `axis: axial` means the same
thing for every file. Slices are laid out radiologically: superior (or anterior, for axial) up and the
patient's right on the image's left. A paired mask must match its image in shape and affine; one that
does not is quarantined, never resampled or guessed.
"""

from __future__ import annotations

import json
import os

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..imaging import DEFAULT_MAX_VOXELS, DecodeError, array_facts, hash_file, mask_regions, percentile_window, window_to_uint8
from ..records import quarantine_row
from .base import Scan, fingerprint, image_record, make_task, walk_files
from .masks import Options as MaskOptions
from .masks import mask_names
from .windows import recipe_window

AXES = {"sagittal": 0, "coronal": 1, "axial": 2, 0: 0, 1: 1, 2: 2}


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    axis: str | int = "axial"  # axial | coronal | sagittal, or 0/1/2 in RAS+ order
    stride: int = 1  # keep every n-th slice
    volume: int = 0  # for 4-D files: which volume
    masks_dir: str | None = None  # folder of paired masks (same file name), relative to the source root
    mask_pattern: str | None = None  # mask name from the image stem, e.g. "{stem}_seg.nii.gz"
    only_mask_slices: bool = False  # keep only slices where the mask has content
    mask_labels: dict[int, str] | None = None
    mask_label: str = "foreground"
    window: str | tuple[float, float] | None = None  # preset or [center, width]; default: volume percentiles


def is_nifti(name: str) -> bool:
    return name.lower().endswith((".nii", ".nii.gz"))


def nifti_stem(name: str) -> str:
    base = os.path.basename(name)
    return base[:-7] if base.lower().endswith(".nii.gz") else base[:-4]


def _mask_for(path: str, root: str, opts: Options) -> str | None:
    folder = os.path.join(root, opts.masks_dir) if opts.masks_dir else os.path.dirname(path)
    name = opts.mask_pattern.format(stem=nifti_stem(path)) if opts.mask_pattern else os.path.basename(path)
    candidate = os.path.join(folder, name)
    return candidate if os.path.isfile(candidate) and os.path.abspath(candidate) != os.path.abspath(path) else None


def scan(source: dict) -> Scan:
    opts = Options(**source["options"])
    if opts.axis not in AXES:
        raise ValueError(f"axis {opts.axis!r}: use axial, coronal, sagittal or 0/1/2")
    root = source["root"]
    out = Scan()
    files = [root] if os.path.isfile(root) else [str(p) for p in walk_files(root, out, source)]
    masks_root = os.path.abspath(os.path.join(root, opts.masks_dir)) if opts.masks_dir else None
    mask_files = set()
    for path in files:
        if is_nifti(path) and (opts.masks_dir or opts.mask_pattern):
            found = _mask_for(path, root if os.path.isdir(root) else os.path.dirname(root), opts)
            if found:
                mask_files.add(os.path.abspath(found))
    for path in files:
        absolute = os.path.abspath(path)
        if not is_nifti(path):
            out.filter("not a NIfTI file")
            continue
        if absolute in mask_files or (masks_root and absolute.startswith(masks_root + os.sep)):
            continue  # a mask, read with its image
        base = root if os.path.isdir(root) else os.path.dirname(root)
        mask = _mask_for(path, base, opts) if (opts.masks_dir or opts.mask_pattern) else None
        if (opts.masks_dir or opts.mask_pattern) and mask is None and opts.only_mask_slices:
            out.quarantine.append(
                quarantine_row(
                    source["name"],
                    os.path.relpath(path, base),
                    "missing_mask",
                    "only_mask_slices is set but no paired mask was found",
                )
            )
            continue
        out.tasks.append(
            make_task(
                source,
                path,
                uri=os.path.relpath(path, base),
                extra={"mask": mask} if mask else {},
                fingerprint_extra=fingerprint(mask) if mask else "",
            )
        )
    return out


def _load(path: str):
    import nibabel as nib

    try:
        return nib.load(path)
    except Exception as e:  # nibabel raises many types for bad files
        raise DecodeError("unreadable", f"not a readable NIfTI file: {type(e).__name__}: {e}") from None


def display(slice2d: np.ndarray) -> np.ndarray:
    """RAS+ slice -> radiological display orientation (see module docstring)."""
    return np.ascontiguousarray(slice2d.T[::-1, ::-1])


def check_budget(img, max_voxels: int) -> None:
    """The voxels one volume holds, from the header, before any is read (a few MB of .nii.gz can unpack to GB)."""
    shape = tuple(int(n) for n in img.shape)
    if len(shape) not in (3, 4):
        raise DecodeError("unsupported", f"expected a 3-D or 4-D volume, got shape {shape}")
    voxels = shape[0] * shape[1] * shape[2]
    if voxels > max_voxels:
        raise DecodeError(
            "over_budget",
            f"a volume of {'x'.join(map(str, shape[:3]))} = {voxels} voxels is over the "
            f"limit of {max_voxels}; raise `max_voxels` in the source if it is genuine",
        )


WINDOW_SAMPLE = 1 << 23  # voxels the percentile window is computed from, at most


def volume_window(data: np.ndarray) -> tuple[float, float]:
    """The percentile window of a volume's non-zero voxels; a large volume is sampled on a regular grid first
    (every k-th voxel along each axis), so the window costs no copy of the volume."""
    k = 1
    while data.size / k**3 > WINDOW_SAMPLE:
        k += 1
    sample = data[::k, ::k, ::k]
    nonzero = sample[sample != 0]
    return percentile_window(nonzero if nonzero.size else sample)


def canonical_volume(img, volume: int, max_voxels: int = DEFAULT_MAX_VOXELS, dtype=np.float32) -> np.ndarray:
    """One 3-D volume in RAS+ canonical orientation; of a 4-D file only the chosen volume is read."""
    import nibabel as nib

    check_budget(img, max_voxels)
    if len(img.shape) == 4 and not 0 <= volume < img.shape[3]:
        raise DecodeError("no_such_volume", f"volume {volume} requested, file has {img.shape[3]}")
    try:
        data = np.asarray(img.dataobj[..., volume] if len(img.shape) == 4 else img.dataobj, dtype=dtype)
        return np.asarray(nib.as_closest_canonical(nib.Nifti1Image(data, img.affine)).dataobj, dtype=dtype)
    except DecodeError:
        raise
    except Exception as e:
        raise DecodeError("truncated" if "size" in str(e) or "EOF" in str(e) else "unreadable", str(e)) from None


def render(record: dict, path: str, cache: dict, budget: dict | None = None) -> np.ndarray:
    """The record's slice with its stored window (the export half of `decode`); the volume is cached."""
    settings = record["render"]
    budget = budget or {}
    if cache.get("path") != (path, settings["volume"]):
        cache.clear()
        digest = hash_file(path)
        cache.update(path=(path, settings["volume"]), digest=digest)
        if record.get("file_hash") and digest != record["file_hash"]:
            raise DecodeError(
                "changed_since_ingest",
                "the file's content changed since ingest; run `medloom ingest` again to pick the change up",
            )
        cache["data"] = canonical_volume(_load(path), max(settings["volume"], 0), budget.get("max_voxels") or DEFAULT_MAX_VOXELS)
    if record.get("file_hash") and cache["digest"] != record["file_hash"]:
        raise DecodeError(
            "changed_since_ingest", "the file's content changed since ingest; run `medloom ingest` again to pick the change up"
        )
    data, axis = cache["data"], settings["axis"]
    if not 0 <= record["frame"] < data.shape[axis]:
        raise DecodeError("missing_frame", f"slice {record['frame']} requested, the volume now has {data.shape[axis]}")
    raw = display(np.take(data, record["frame"], axis=axis))
    return window_to_uint8(raw, settings["window_center"], settings["window_width"])


def values(record: dict, path: str, cache: dict, budget: dict | None = None) -> np.ndarray:
    """The record's slice as stored (scaled by the header's slope and intercept: Hounsfield units for CT), in
    the orientation `render` shows it."""
    render(record, path, cache, budget)  # reads and checks the volume once per part
    data, axis = cache["data"], record["render"]["axis"]
    return np.asarray(display(np.take(data, record["frame"], axis=axis)), dtype=np.float32)


def canonical_spacing(img) -> tuple[float, float, float]:
    """The voxel size (mm) along the axes of `canonical_volume` (the header's zooms in RAS+ order), read from
    the header alone."""
    import nibabel as nib

    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    order = nib.orientations.io_orientation(img.affine)[:, 0]
    spacing = [0.0, 0.0, 0.0]
    for axis, target in enumerate(order):
        spacing[int(target)] = zooms[axis]
    return spacing[0], spacing[1], spacing[2]


def volume(record: dict, path: str, cache: dict, budget: dict | None = None) -> dict:
    """The whole volume a slice record belongs to, for a method that works on volumes (nnU-Net's 3d models):
    `data` as `canonical_volume` reads it (RAS+, scaled values: Hounsfield units for CT; read and checked once per
    part, as `render` reads it), `spacing` its voxel size in mm along those axes, `axis` and `frame` where the
    record's slice lies (the record's image is `display(np.take(data, frame, axis))`), `key` the volume's identity
    (path, volume index, file hash), and `memo`: a dict dropped with the volume, where a method keeps what it
    computed from it, so it computes it once for all the volume's slices of a part."""
    render(record, path, cache, budget)
    if "spacing" not in cache:
        cache["spacing"] = canonical_spacing(_load(path))
    return {
        "data": cache["data"],
        "spacing": cache["spacing"],
        "axis": record["render"]["axis"],
        "frame": record["frame"],
        "key": (*cache["path"], cache["digest"]),
        "memo": cache.setdefault("memo", {}),
    }


def decode(task: dict, source: dict) -> tuple[list[dict], list[dict]]:

    opts = Options(**source["options"])
    axis = AXES[opts.axis]
    img = _load(task["path"])
    digest = hash_file(task["path"])
    mask_path = json.loads(task["extra"]).get("mask")
    mask_img = _load(mask_path) if mask_path else None
    if mask_img is not None:
        if mask_img.shape[:3] != img.shape[:3] or not np.allclose(mask_img.affine, img.affine, atol=1e-3):
            raise DecodeError(
                "mask_mismatch",
                f"mask {os.path.basename(mask_path)} has shape {mask_img.shape} and affine "
                f"{np.round(mask_img.affine, 3).tolist()}; image has {img.shape} and "
                f"{np.round(img.affine, 3).tolist()}",
            )
    max_voxels = source.get("max_voxels") or DEFAULT_MAX_VOXELS
    data = canonical_volume(img, opts.volume, max_voxels)
    mask = canonical_volume(mask_img, 0, max_voxels, np.int32) if mask_img is not None else None
    fixed = recipe_window(opts.window)
    center, width, wsource = fixed or (*volume_window(data), "percentiles")
    names = None
    if mask is not None:
        values = [int(v) for v in np.unique(mask) if v != 0]
        names = {
            v: source["label_map"].get(n, n)
            for v, n in mask_names(MaskOptions(mask_labels=opts.mask_labels, mask_label=opts.mask_label), values).items()
        }
    render = {
        "window_center": center,
        "window_width": width,
        "window_source": wsource,
        "invert": False,
        "axis": axis,
        "volume": opts.volume if img.ndim == 4 else -1,
    }
    meta = {
        "shape": list(img.shape),
        "zooms": [float(z) for z in img.header.get_zooms()],
        "axis": ["sagittal", "coronal", "axial"][axis],
        "orientation": "RAS+ canonical, radiological display",
    }
    records, problems = [], []
    for index in range(0, data.shape[axis], max(1, opts.stride)):
        mask2d = display(np.take(mask, index, axis=axis)) if mask is not None else None
        if opts.only_mask_slices and (mask2d is None or not mask2d.any()):
            continue
        raw = display(np.take(data, index, axis=axis))
        rois, labels = [], []
        if mask2d is not None and names is not None:
            rois, _unknown = mask_regions(mask2d, names)
            labels = sorted({r["label"] for r in rois})
        facts = array_facts(raw, window_to_uint8(raw, center, width))
        records.append(
            image_record(
                task,
                facts,
                frame=index,
                rois=rois,
                render=render,
                meta=meta,
                file_hash=digest,
                **({"labels": labels} if mask is not None else {}),
            )
        )
    return records, problems
