"""DICOM files or folders (extension-less files recognised by the DICM marker); one record per frame.

Pixels go through the modality LUT (rescale slope/intercept); the stored window comes from the recipe,
the file's window tags, its VOI LUT, or the 0.5-99.5 percentiles, in that order; MONOCHROME1 is marked
inverted. Enhanced multi-frame objects keep rescale, window, pixel spacing and plane position in their
functional groups: each frame is read through `frame_view` (the frame's own groups over the shared ones over
the top level). Patient and study ids are kept only as salted hashes.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..imaging import (
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_VOXELS,
    DecodeError,
    array_facts,
    file_hash,
    percentile_window,
    read_file,
    window_to_uint8,
)
from ..records import NO_RENDER, patient_key
from ..vocab import default_vocabulary
from .base import Scan, image_record, make_task, walk_files
from .dicomtable import TableOptions, frame_rois, scan_with_table
from .windows import recipe_window

DICOM_EXTENSIONS = frozenset({".dcm", ".dicom", ".dic", ".ima"})
NOT_IMAGES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT Structure Set Storage",
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR",
}


NUMERIC_TAGS = frozenset({"PixelSpacing", "ImagerPixelSpacing", "ImageOrientationPatient", "ImagePositionPatient"})
NUMBER = {"DS": (re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?"), 16), "IS": (re.compile(r"[+-]?\d+"), 12)}


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    window: str | tuple[float, float] | None = None  # a preset (lung, brain, bone, ...) or [center, width]
    frames: str = "all"  # all | first | middle
    # labels, boxes or masks in a table keyed by file name, SOP Instance UID or patient id (dicomtable.py)
    table: TableOptions | None = None


def has_dicm_marker(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def scan(source: dict) -> Scan:
    out = Scan()
    root = source["root"]
    table = Options(**source["options"]).table
    paths = [root] if os.path.isfile(root) else [str(p) for p in walk_files(root, out, source)]
    found = []
    for path in paths:
        suffix = os.path.splitext(path)[1].lower()
        if suffix in DICOM_EXTENSIONS or has_dicm_marker(path):
            found.append(path)
        else:
            out.filter("not a DICOM file")
    if table is not None:
        scan_with_table(source, table, found, out, read_header)
        return out
    for path in found:
        uri = os.path.basename(path) if path == root else None
        out.tasks.append(make_task(source, path, uri=uri))
    return out


def read_header(path: str, keywords: list[str], max_bytes: int) -> dict[str, str]:
    """Attributes of a file's header, from at most its first `max_bytes` and never its pixels (a table keyed by
    SOP Instance UID or Patient ID is joined at scan time, before any file is decoded)."""
    import pydicom

    try:
        with open(path, "rb") as f:
            head = f.read(max_bytes)
    except OSError as e:
        raise DecodeError("unreadable", f"cannot read the file: {e.strerror or e}") from None
    try:
        with quiet_values():
            ds = pydicom.dcmread(io.BytesIO(head), force=True, stop_before_pixels=True, specific_tags=keywords)
    except Exception as e:  # pydicom raises many kinds on damaged headers
        raise DecodeError("unreadable", f"not a readable DICOM header: {type(e).__name__}") from None
    return {k: str(ds.get(k) or "").strip() for k in keywords}


def read_dicom(path: str, max_bytes: int = DEFAULT_MAX_FILE_BYTES):
    """(dataset, hash of the file's bytes): the file is read once, after its size is checked."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    data = read_file(path, max_bytes)
    try:
        return pydicom.dcmread(io.BytesIO(data), force=True), file_hash(data)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError) as e:
        raise DecodeError("unreadable", f"not a readable DICOM file: {type(e).__name__}: {e}") from None


@contextlib.contextmanager
def quiet_values():
    """pydicom keeps invalid values as read, without its warnings: they would print the values (a name typed
    into a number, say) on the console and into logs."""
    from pydicom import config

    before = config.settings.reading_validation_mode
    config.settings.reading_validation_mode = config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        config.settings.reading_validation_mode = before


def values_of(elem) -> list[str]:
    """An attribute's values as the strings the file holds."""
    value = elem.value
    if value is None or value == "":
        return []
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, str):
        return [value.strip()]
    try:
        return [str(v).strip() for v in value]
    except TypeError:
        return [str(value).strip()]


def is_number(vr: str, text: str) -> bool:
    pattern, longest = NUMBER[vr]
    return pattern.fullmatch(text) is not None and len(text) <= longest


def drop_non_numbers(ds) -> None:
    """DS and IS attributes holding anything but numbers are dropped (in sequences too), as if absent: a file
    with text in a window, a rescale or a spacing decodes with the defaults instead of failing."""
    for elem in list(ds):
        if elem.VR == "SQ":
            for item in elem.value:
                drop_non_numbers(item)
        elif elem.VR in NUMBER and not all(is_number(elem.VR, v) for v in values_of(elem)):
            del ds[elem.tag]


def check_budget(ds, max_values: int) -> None:
    """The decoded size the header announces, checked before any pixel is decoded (a small compressed file
    can announce gigabytes)."""
    try:
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError) as e:
        raise DecodeError("unreadable", f"image size tags are not numbers: {e}") from None
    values = rows * cols * frames * samples
    if values > max_values:
        raise DecodeError(
            "over_budget",
            f"{cols}x{rows} x {frames} frame(s) x {samples} sample(s) = {values} values, "
            f"over the limit of {max_values}; raise `max_voxels` in the source if the "
            "file is genuine",
        )


def decoded_pixels(ds) -> np.ndarray:
    if not any(t in ds for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DecodeError(
            "no_pixel_data",
            f"no pixel data in this DICOM file ({len(ds)} elements read); "
            "it may lack its file meta header or be a non-image object",
        )
    sop = str(ds.get("SOPClassUID", ""))
    if sop in NOT_IMAGES:
        raise DecodeError("not_an_image", f"SOP class {NOT_IMAGES[sop]} holds no viewable image")
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        return ds.pixel_array
    except (RuntimeError, NotImplementedError) as e:
        name = getattr(ts, "name", str(ts))
        raise DecodeError(
            "no_decoder",
            f"transfer syntax {name} ({ts}) needs a decoder that is not "
            f"installed: pip install 'medloom[dicom-codecs]' ({str(e).splitlines()[0]})",
        ) from None
    except (ValueError, EOFError, OSError) as e:
        text = str(e)
        reason = "truncated" if "less than expected" in text or "truncat" in text else "unreadable"
        raise DecodeError(reason, text.splitlines()[0]) from None
    except AttributeError as e:
        raise DecodeError("unreadable", f"missing pixel description tags: {e}") from None


def _meta(ds) -> dict:
    meta = {}
    for tag in (
        "Modality",
        "BodyPartExamined",
        "SOPClassUID",
        "PhotometricInterpretation",
        "BitsStored",
        "PixelSpacing",
        "ImagerPixelSpacing",
        "ImageOrientationPatient",
        "ImagePositionPatient",
        "ViewPosition",
        "Laterality",
        "ImageLaterality",
        "PatientOrientation",
        "SliceThickness",
        "Manufacturer",
    ):
        value = ds.get(tag)
        if value is not None and value != "":
            meta[tag] = [float(v) for v in value] if tag in NUMERIC_TAGS else str(value)
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts:
        meta["TransferSyntaxUID"] = str(ts)
    return meta


FUNCTIONAL_GROUPS = ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")


def frame_view(ds, index: int):
    """The attributes that render and place frame `index`: the top level, overlaid by the shared functional
    groups, overlaid by the frame's own (Pixel Value Transformation, Frame VOI LUT, Pixel Measures, Plane
    Orientation and Position, ...). A file without functional groups is its own view."""
    from pydicom.dataset import Dataset

    shared = ds.get("SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not shared and not per_frame:
        return ds
    view = Dataset()
    view.file_meta = getattr(ds, "file_meta", Dataset())
    for elem in ds:
        if elem.keyword not in FUNCTIONAL_GROUPS and elem.tag != 0x7FE00010:
            view.add(elem)
    groups = [shared[0]] if shared else []
    if per_frame and index < len(per_frame):
        groups.append(per_frame[index])
    for group in groups:
        for macro in group:  # each functional group macro is a sequence of one item
            if macro.VR == "SQ" and len(macro.value) == 1:
                for elem in macro.value[0]:
                    view.add(elem)
    return view


def body_part(ds) -> str:
    """Body Part Examined, else the coded Anatomic Region (an enhanced object's Frame Anatomy says "Brain"
    where it has no Body Part Examined)."""
    part = str(ds.get("BodyPartExamined", "") or "").strip()
    if part:
        return part
    region = ds.get("AnatomicRegionSequence")
    return str(region[0].get("CodeMeaning", "") or "") if region else ""


def _first(value) -> float:
    return float(value[0]) if hasattr(value, "__len__") and not isinstance(value, str) else float(value)


def _frames(n: int, mode: str) -> list[int]:
    return {"first": [0], "middle": [n // 2]}.get(mode, list(range(n)))


def display_frame(
    ds, raw: np.ndarray, *, window: tuple[float, float, str] | None = None, stored: dict | None = None, index: int = 0
) -> tuple[np.ndarray, dict]:
    """Frame `index` (its pixels `raw`) as 8-bit pixels a person would see, and the render settings that
    produced it.

    At ingest the window is chosen (recipe, tags, VOI LUT, percentiles); at export the `stored` render
    settings of the record are applied again, so the exported image is the one that was hashed.
    """
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    ds = frame_view(ds, index)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(raw, ds)
        if rgb.dtype != np.uint8:  # 16-bit entries; some writers put 8-bit values in them (all under 256)
            rgb = rgb >> 8 if rgb.max() > 255 else rgb
        rendered = rgb.astype(np.uint8)
        return rendered, {**NO_RENDER, "window_source": "palette"}
    if int(ds.get("SamplesPerPixel", 1) or 1) == 3:
        rendered = raw if raw.dtype == np.uint8 else (raw >> (int(ds.BitsStored) - 8)).astype(np.uint8)
        return rendered, dict(NO_RENDER)
    values = apply_modality_lut(raw, ds)
    if stored is not None:
        center, width, wsource = stored["window_center"], stored["window_width"], stored["window_source"]
        if wsource == "voi_lut":
            values = apply_voi_lut(values, ds)
    elif window:
        center, width, wsource = window
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        center, width, wsource = _first(ds.WindowCenter), _first(ds.WindowWidth), "tags"
    elif "VOILUTSequence" in ds:
        values = apply_voi_lut(values, ds)
        center, width = float(values.min() + values.max()) / 2, float(max(values.max() - values.min(), 1))
        wsource = "voi_lut"
    else:
        (center, width), wsource = percentile_window(values), "percentiles"
    invert = photometric == "MONOCHROME1"
    return window_to_uint8(values, center, width, invert), {
        "window_center": center,
        "window_width": width,
        "window_source": wsource,
        "invert": invert,
        "axis": -1,
        "volume": -1,
    }


def render(record: dict, path: str, cache: dict, budget: dict | None = None) -> np.ndarray:
    """The record's frame with its stored window (the export half of `decode`)."""
    ds, raw, index = cached_frame(record, path, cache, budget or {})
    with quiet_values():
        return display_frame(ds, raw, stored=record["render"], index=index)[0]


def values(record: dict, path: str, cache: dict, budget: dict | None = None) -> np.ndarray | None:
    """The record's frame through the modality LUT (rescale slope and intercept, per frame in an enhanced
    object): Hounsfield units for CT, what a window is applied to. None for colour frames (no such values)."""
    from pydicom.pixels import apply_modality_lut

    ds, raw, index = cached_frame(record, path, cache, budget or {})
    with quiet_values():
        view = frame_view(ds, index)
        if raw.ndim != 2 or str(view.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
            return None
        return np.asarray(apply_modality_lut(raw, view), dtype=np.float32)


def cached_frame(record: dict, path: str, cache: dict, budget: dict):
    """(dataset, raw frame, frame index) of a record, the file read once per part (`cache`) and checked against
    the hash taken at ingest."""
    with quiet_values():
        if cache.get("path") != path:
            cache.clear()
            ds, digest = read_dicom(path, budget.get("max_file_bytes") or DEFAULT_MAX_FILE_BYTES)
            cache.update(path=path, digest=digest)
            if record.get("file_hash") and digest != record["file_hash"]:
                raise DecodeError(
                    "changed_since_ingest",
                    "the file's content changed since ingest; run `medloom ingest` again to pick the change up",
                )
            check_budget(ds, budget.get("max_voxels") or DEFAULT_MAX_VOXELS)
            drop_non_numbers(ds)
            arr = decoded_pixels(ds)
            cache.update(ds=ds, arr=arr if int(ds.get("NumberOfFrames", 1) or 1) > 1 else arr[None])
        if record.get("file_hash") and cache["digest"] != record["file_hash"]:
            raise DecodeError(
                "changed_since_ingest",
                "the file's content changed since ingest; run `medloom ingest` again to pick the change up",
            )
        ds, arr = cache["ds"], cache["arr"]
        index = max(record["frame"], 0)
        if index >= len(arr):
            raise DecodeError("missing_frame", f"frame {index} requested, the file now has {len(arr)}")
        return ds, arr[index], index


def header_fields(ds, source: dict) -> dict:
    """A record's fields from the file's header: patient and study ids as salted hashes, modality and body part
    through the vocabulary (the dicom and dicom_masks readers)."""
    vocab = default_vocabulary()
    return {
        "patient_id": patient_key(source, ds.get("PatientID")),
        "study_id": patient_key(source, ds.get("StudyInstanceUID")),
        "modality": vocab.normalise("modality", str(ds.get("Modality", "")), strict=False),
        "anatomy": vocab.normalise("anatomy", body_part(frame_view(ds, 0)), strict=False),
    }


def decode(task: dict, source: dict) -> tuple[list[dict], list[dict]]:
    with quiet_values():
        return _decode(task, source)


def _decode(task: dict, source: dict) -> tuple[list[dict], list[dict]]:
    opts = Options(**source["options"])
    ds, digest = read_dicom(task["path"], source.get("max_file_bytes") or DEFAULT_MAX_FILE_BYTES)
    check_budget(ds, source.get("max_voxels") or DEFAULT_MAX_VOXELS)
    drop_non_numbers(ds)
    arr = decoded_pixels(ds)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if n_frames == 1:
        arr = arr[None]
    fields = header_fields(ds, source)
    fixed = recipe_window(opts.window)
    rois, table_fields, problems = frame_rois(task, source, arr.shape[2], arr.shape[1]) if opts.table else ([], {}, [])
    table_meta = table_fields.pop("meta", {})
    records = []
    for index in _frames(n_frames, opts.frames):
        raw = arr[index]
        frame = index if n_frames > 1 else -1
        rendered, render = display_frame(ds, raw, window=fixed, index=index)
        facts = array_facts(raw, rendered)
        meta = {**_meta(frame_view(ds, index)), **table_meta}
        records.append(
            image_record(
                task, facts, frame=frame, render=render, meta=meta, rois=rois, file_hash=digest, **fields, **table_fields
            )
        )
    return records, problems
