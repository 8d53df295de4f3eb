"""The export stage: a part of records in, rendered samples (image bytes + metadata) out.

Runs in worker processes. Plain image files are decoded (JPEGs at reduced scale when the export is
resized), DICOM frames and NIfTI slices are rendered with the window stored at ingest, then the image
is shrunk and encoded. With `--image-format keep`, an 8-bit file already in the export's format and
small enough is copied byte for byte.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pyarrow as pa
from PIL import Image

from ..imaging import (
    DEFAULT_MAX_FILE_BYTES,
    DecodeError,
    decode_errors,
    display_image,
    encode,
    file_hash,
    fit,
    open_image,
    read_file,
    rle_decode,
    rle_positions,
)
from ..records import ARTICLE_TYPE
from ..sources import get_reader
from .metadata import MetadataError
from .metadata import strip as strip_metadata
from .texts import annotation_metadata, choose_text
from .webdataset import tar_sample

RENDERED_READERS = frozenset({"dicom", "nifti"})  # readers whose records need their own render()
PASSTHROUGH_FORMATS = {"jpg": "JPEG", "png": "PNG"}


def source_file(base: str, uri: str) -> str:
    return os.path.join(base, uri)


CHANGED = ("the file's content changed since ingest (its hash differs from the catalog's); run `medloom ingest` "
           "again to pick the change up")


def source_bytes(row: dict, source: dict, cache: dict) -> bytes:
    """A plain image record's file (or package member) as bytes, checked against the hash taken at ingest:
    a file that changed since is never exported as if it were the one catalogued."""
    path = source_file(source["base"], row["uri"])
    if source["reader"] == "pmc":  # a figure may be a member of an article package
        blob = get_reader("pmc").image_source(row, path, cache, source.get("max_file_bytes") or DEFAULT_MAX_FILE_BYTES)
        data = blob.getvalue() if isinstance(blob, io.BytesIO) else read_file(blob, source.get("max_file_bytes")
                                                                               or DEFAULT_MAX_FILE_BYTES)
    else:
        data = read_file(path, source.get("max_file_bytes") or DEFAULT_MAX_FILE_BYTES)
    if row.get("file_hash") and file_hash(data) != row["file_hash"]:
        raise DecodeError("changed_since_ingest", CHANGED)
    return data


def _passthrough(data: bytes, row: dict, settings: dict) -> bytes | None:
    """The file's own bytes, when it is already what the export would write."""
    fmt = PASSTHROUGH_FORMATS[settings["image_format"]]
    max_side = settings["max_side"]
    if max_side and max(row["width"], row["height"]) > max_side:
        return None
    with decode_errors(), Image.open(io.BytesIO(data)) as im:
        if im.format != fmt or im.mode not in ("L", "RGB") or getattr(im, "n_frames", 1) > 1:
            return None
    return data


def record_image(row: dict, settings: dict, cache: dict, max_side: int | None = None) -> Image.Image:
    """A record's pixels as an 8-bit L or RGB image (DICOM and NIfTI rendered with the stored window)."""
    source = settings["sources"][row["source"]]
    if source["reader"] in RENDERED_READERS:
        path = source_file(source["base"], row["uri"])
        with decode_errors():
            return Image.fromarray(get_reader(source["reader"]).render(row, path, cache, source))
    data = source_bytes(row, source, cache)
    im = display_image(open_image(io.BytesIO(data), source["max_pixels"], max_side, frame=max(row["frame"], 0)))
    if (im.width, im.height) != (row["width"], row["height"]) and not max_side:
        raise DecodeError("changed_since_ingest", f"the file is now {im.width}x{im.height}; the catalog has "
                                                  f"{row['width']}x{row['height']}: run `medloom ingest` again")
    return im


def render_image(row: dict, settings: dict, cache: dict) -> tuple[bytes, int, int]:
    """Encoded image bytes and their width and height for one record."""
    source = settings["sources"][row["source"]]
    keep = settings.get("keep_metadata", False)
    if settings["keep_bytes"] and source["reader"] not in RENDERED_READERS and row["frame"] < 0:
        data = _passthrough(source_bytes(row, source, cache), row, settings)
        if data is not None:
            try:
                return (data if keep else strip_metadata(data)), row["width"], row["height"]
            except MetadataError:
                pass  # a structure that cannot be walked: re-encoded below, which writes no metadata
    im = fit(record_image(row, settings, cache, settings["max_side"]), settings["max_side"])
    return encode(im, settings["image_format"], settings["quality"], keep), im.width, im.height


def rescale_rle(counts: list[int], height: int, width: int, new_height: int, new_width: int) -> list[int]:
    """A mask's COCO RLE at another image size: each exported pixel is in the mask when at least half of the
    source pixels it covers are (a box filter, so thin structures do not vanish the way nearest-neighbour
    sampling drops them)."""
    mask = Image.fromarray(rle_decode(counts, height, width).astype(np.uint8) * 255)
    small = np.asarray(mask.resize((new_width, new_height), Image.Resampling.BOX)) >= 128
    return rle_positions(np.flatnonzero(small.T.ravel()), new_width * new_height)


def exported_rois(row: dict, width: int, height: int) -> list[dict]:
    """The record's ROIs for an image exported at width x height: boxes are normalised (size-free), masks are
    re-encoded at the exported size, so every RLE matches the image beside it."""
    if (width, height) == (row["width"], row["height"]):
        return row["rois"]
    return [{**r, "rle": rescale_rle(r["rle"], row["height"], row["width"], height, width) if r.get("rle") else
             r.get("rle")} for r in row["rois"] or []]


def render_part(table: pa.Table, settings: dict) -> list[dict]:
    """One result per record: {"row", "image", "width", "height"} or {"row", "reason", "message"}; the row's
    ROI masks are at the exported image's size.

    With `settings["sample"]` (a shard export), the worker also makes the sample itself: {"row": id, source and
    uri, "tar": the sample's tar members} for WebDataset, {"row", "image", "metadata"} for Parquet, so the
    process writing the shards only writes bytes (it would otherwise limit how far the workers scale)."""
    cache: dict = {}  # the last DICOM file or NIfTI volume: a part holds a volume's slices together
    spec = settings.get("sample")
    out = []
    for row in table.to_pylist():
        source = settings["sources"][row["source"]]
        try:
            image, width, height = render_image(row, settings, cache)
            row["rois"] = exported_rois(row, width, height)
            hide_path(row, source)
            out.append(shard_sample(row, image, width, height, spec) if spec else
                       {"row": row, "image": image, "width": width, "height": height})
        except DecodeError as e:
            out.append({"row": row, "reason": e.reason, "message": hide_path(row, source, str(e))})
        except Exception as e:  # a bug or an odd file must not end the export; it is quarantined and counted
            out.append({"row": row, "reason": "render_failed",
                        "message": hide_path(row, source, f"{type(e).__name__}: {e}")})
    return out


def hide_path(row: dict, source: dict, message: str = "") -> str:
    """For a source with pseudonymous ids, the record's path stays in the loom: its `uri` leaves empty, and a
    message naming the file names the record id instead. Returns the message."""
    if not source.get("pseudonymous_ids") or not row.get("uri"):
        return message
    message = without_path(message, source, row["uri"], row["id"])
    row["uri"] = ""
    return message


def without_path(message: str, source: dict, uri: str, rid: str) -> str:
    """A message about a file of a pseudonymous source with the file's path replaced by the record's id."""
    if not source.get("pseudonymous_ids"):
        return message
    for path in (source_file(source["base"], uri), uri):
        message = message.replace(path, f"(record {rid})")
    return message


def shard_sample(row: dict, image: bytes, width: int, height: int, spec: dict) -> dict:
    """A rendered record as a shard export's sample: the text `spec["text"]` chooses, the sample JSON, and for
    WebDataset the tar members (image, `.json`, `.txt` when the export has text)."""
    text = choose_text(row, spec["text"], spec["citing"])
    metadata = sample_metadata(row, width, height, spec["article"], text, spec["annotation"])
    slim = {"id": row["id"], "source": row["source"], "uri": row["uri"]}
    if spec["format"] == "parquet":
        return {"row": slim, "image": image, "metadata": metadata}
    files = {spec["ext"]: image, "json": json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode()}
    if spec["txt"]:
        files["txt"] = text[0].encode()
    return {"row": slim, "tar": tar_sample(row["id"], files)}


def article_metadata(article: dict | None) -> dict:
    """A figure's article facts with the no-null rule: "" for text, [] for lists, -1 for numbers."""
    article = article or {}
    out = {}
    for f in ARTICLE_TYPE:
        value = article.get(f.name)
        if pa.types.is_list(f.type):
            out[f.name] = list(value or [])
        elif pa.types.is_integer(f.type):
            out[f.name] = -1 if value is None else int(value)
        else:
            out[f.name] = value or ""
    return out


ARTICLE_LISTS = tuple(f.name for f in ARTICLE_TYPE if pa.types.is_list(f.type))
ARTICLE_JSON_TYPE = pa.struct([(f.name, pa.int64() if pa.types.is_integer(f.type) else f.type) for f in ARTICLE_TYPE])


def sample_metadata(row: dict, width: int, height: int, with_article: bool = False, text: tuple[str, str] = ("", ""),
                    with_annotation: bool = False) -> dict:
    """The `.json` of a WebDataset sample and the columns of a Parquet row: every record field, with types
    that never change (the README's table of types).

    Readers infer field types from the first samples (HF `datasets` from five), so no field is ever
    null: missing text is "", a missing number is -1 (or 0.0 for an absent window, whose
    `window_source` is "none"), `commercial_use` is "yes", "no" or "unknown", the perceptual hash is 16
    hex digits and `meta` stays a JSON string (its keys differ between readers).
    """
    render = dict(row["render"] or {})
    for key in ("window_center", "window_width"):
        render[key] = float(render.get(key) or 0.0)
    render["window_source"] = render.get("window_source") or "none"
    render["invert"] = bool(render.get("invert"))
    for key in ("axis", "volume"):
        render[key] = int(render[key]) if render.get(key) is not None else -1
    use = row.get("commercial_use")
    return {
        "id": row["id"], "split": row["split"], "source": row["source"], "source_split": row["source_split"] or "",
        "uri": row["uri"], "frame": int(row["frame"]),
        "modality": row["modality"] or "", "anatomy": row["anatomy"] or "", "task": row["task"] or "",
        "labels": list(row["labels"] or []), "label_space": list(row["label_space"] or []),
        "rois": [{"label": r["label"] or "", "bbox": [float(v) for v in r["bbox"]], "area": float(r["area"] or 0.0),
                  "rle": list(r["rle"] or [])} for r in row["rois"] or []],
        "patient_id": row["patient_id"] or "", "study_id": row["study_id"] or "",
        "width": int(row["width"]), "height": int(row["height"]), "channels": int(row["channels"] or 0),
        "image_width": width, "image_height": height,
        "pixel_hash": row["pixel_hash"] or "", "phash": f"{int(row['phash'] or 0):016x}",
        "file_hash": row.get("file_hash") or "",
        "license": row["license"] or "", "commercial_use": "unknown" if use is None else ("yes" if use else "no"),
        "description": row["description"] or "", "caption": row["caption"] or "",
        "render": render, "meta": row["meta"] or "",
        "text": text[0], "text_source": text[1],
    } | ({"article": article_metadata(row.get("article"))} if with_article else {}) \
      | ({"annotation": annotation_metadata(row)} if with_annotation else {})


SAMPLE_JSON_TYPE = pa.struct(
    [(name, pa.string()) for name in ("id", "split", "source", "source_split", "uri")] + [("frame", pa.int64())]
    + [(name, pa.string()) for name in ("modality", "anatomy", "task")]
    + [("labels", pa.list_(pa.string())), ("label_space", pa.list_(pa.string())),
       ("rois", pa.list_(pa.struct([("label", pa.string()), ("bbox", pa.list_(pa.float64())), ("area", pa.float64()),
                                    ("rle", pa.list_(pa.int64()))]))),
       ("patient_id", pa.string()), ("study_id", pa.string())]
    + [(name, pa.int64()) for name in ("width", "height", "channels", "image_width", "image_height")]
    + [(name, pa.string()) for name in ("pixel_hash", "phash", "file_hash", "license", "commercial_use", "description",
                                        "caption")]
    + [("render", pa.struct([("window_center", pa.float64()), ("window_width", pa.float64()),
                             ("window_source", pa.string()), ("invert", pa.bool_()), ("axis", pa.int64()),
                             ("volume", pa.int64())])),
       ("meta", pa.string()), ("text", pa.string()), ("text_source", pa.string())]
)  # the types of `sample_metadata`, for readers that want them declared rather than inferred
ANNOTATION_JSON_TYPE = pa.struct(
    [("caption", pa.string()), ("caption_source", pa.string()), ("roi_text", pa.string()),
     ("questions", pa.list_(pa.struct([(n, pa.string()) for n in ("kind", "question")]
                                      + [("options", pa.list_(pa.string()))]
                                      + [(n, pa.string()) for n in ("answer", "answer_letter", "prompt")]
                                      + [("box", pa.list_(pa.float64()))])))])
