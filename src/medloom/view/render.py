"""A record's pixels as a person sees them, and the stage that renders parts of records (`view.render`):
what exports, training, evaluation and the web app read a record's image through.

Runs in worker processes. Plain image files are decoded (JPEGs at reduced scale when the export is
resized), DICOM frames and NIfTI slices are rendered with the window stored at ingest, then the image
is shrunk and encoded. With `--image-format keep`, an 8-bit file already in the export's format and
small enough is copied byte for byte.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pyarrow as pa
from PIL import Image

from ..engine import make_executor, stage_module
from ..engine.progress import progress_bar
from ..imaging import (
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_VOXELS,
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
from ..sources import EMBEDDED_READERS, RENDERED_READERS, get_reader
from .metadata import MetadataError
from .metadata import strip as strip_metadata

PASSTHROUGH_FORMATS = {"jpg": "JPEG", "png": "PNG"}


def source_file(base: str, uri: str) -> str:
    return os.path.join(base, uri)


CHANGED = (
    "the file's content changed since ingest (its hash differs from the catalog's); run `medloom ingest` "
    "again to pick the change up"
)


def source_bytes(row: dict, source: dict, cache: dict) -> bytes:
    """A plain image record's file (or package member) as bytes, checked against the hash taken at ingest:
    a file that changed since is never exported as if it were the one catalogued."""
    path = source_file(source["base"], row["uri"])
    if source["reader"] == "pmc":  # a figure may be a member of an article package
        blob = get_reader("pmc").image_source(row, path, cache, source.get("max_file_bytes") or DEFAULT_MAX_FILE_BYTES)
        data = (
            blob.getvalue()
            if isinstance(blob, io.BytesIO)
            else read_file(blob, source.get("max_file_bytes") or DEFAULT_MAX_FILE_BYTES)
        )
    elif source["reader"] in EMBEDDED_READERS:  # an image stored in a table's row (a TSV, a Parquet file)
        data = get_reader(source["reader"]).image_bytes(row, path, cache, source.get("max_file_bytes") or DEFAULT_MAX_FILE_BYTES)
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
        raise DecodeError(
            "changed_since_ingest",
            f"the file is now {im.width}x{im.height}; the catalog has {row['width']}x{row['height']}: run `medloom ingest` again",
        )
    return im


def record_values(row: dict, settings: dict, cache: dict) -> np.ndarray | None:
    """The stored values behind a record's pixels, where its reader keeps them (DICOM frames through their
    modality LUT, NIfTI slices as scaled: Hounsfield units for CT); None for plain image files, whose grey
    levels are all there is. Use the same `cache` as `record_image` for the same record."""
    source = settings["sources"][row["source"]]
    reader = get_reader(source["reader"]) if source["reader"] in RENDERED_READERS else None
    if reader is None or not hasattr(reader, "values"):
        return None
    with decode_errors():
        return reader.values(row, source_file(source["base"], row["uri"]), cache, source)


def record_volume(row: dict, settings: dict, cache: dict) -> dict | None:
    """The whole volume a record is a slice of, where its reader slices volumes (NIfTI: `sources/nifti.py`
    `volume`, with the data, spacing, axis, frame and a memo dropped with the volume); None for plain images and
    DICOM frames (a DICOM series is not assembled into a volume). Use the same `cache` as `record_image`."""
    source = settings["sources"][row["source"]]
    reader = get_reader(source["reader"]) if source["reader"] in RENDERED_READERS else None
    if reader is None or not hasattr(reader, "volume"):
        return None
    with decode_errors():
        return reader.volume(row, source_file(source["base"], row["uri"]), cache, source)


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
    return [
        {**r, "rle": rescale_rle(r["rle"], row["height"], row["width"], height, width) if r.get("rle") else r.get("rle")}
        for r in row["rois"] or []
    ]


def render_part(table: pa.Table, settings: dict) -> list[dict]:
    """Stage `view.render`: one result per record, {"row", "image", "width", "height"} or {"row", "reason",
    "message"}; the row's ROI masks are at the exported image's size."""
    cache: dict = {}  # the last DICOM file or NIfTI volume: a part holds a volume's slices together
    return [render_row(row, settings, cache) for row in table.to_pylist()]


def render_row(row: dict, settings: dict, cache: dict) -> dict:
    """One record rendered as `render_part` says, its failures caught: a bug or an odd file must not end the
    step; it is quarantined and counted."""
    source = settings["sources"][row["source"]]
    try:
        image, width, height = render_image(row, settings, cache)
        row["rois"] = exported_rois(row, width, height)
        if row.get("proposal_rois"):  # accepted ROI proposals (view/proposals.py), at the same size
            row["proposal_rois"] = exported_rois({**row, "rois": row["proposal_rois"]}, width, height)
        hide_path(row, source)
        return {"row": row, "image": image, "width": width, "height": height}
    except DecodeError as e:
        return {"row": row, "reason": e.reason, "message": hide_path(row, source, str(e))}
    except Exception as e:
        return {"row": row, "reason": "render_failed", "message": hide_path(row, source, f"{type(e).__name__}: {e}")}


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


def render_sources(manifest: dict) -> dict[str, dict]:
    """Per source what the render stage needs to find and open its files."""
    out = {}
    for name, entry in manifest["sources"].items():
        root = entry["root"]
        out[name] = {
            "reader": entry["reader"],
            "base": root if os.path.isdir(root) else os.path.dirname(root),
            "max_pixels": entry.get("max_pixels") or DEFAULT_MAX_PIXELS,
            "max_voxels": entry.get("max_voxels") or DEFAULT_MAX_VOXELS,
            "max_file_bytes": entry.get("max_file_bytes") or DEFAULT_MAX_FILE_BYTES,
            # its paths stay in the loom: exports name its records by their pseudonymous ids only
            "pseudonymous_ids": bool(entry.get("pseudonymous_ids")),
        }
    return out


def rendered(query, settings: dict, workers: int | None, quiet: bool, label: str, total: int, quarantined: list[dict]):
    """The records of a DuckDB relation rendered by the workers (`view.render`), a batch at a time in query
    order; those that could not be rendered go to `quarantined` (id, reason, message) instead."""
    batches = (pa.Table.from_batches([b]) for b in query.to_arrow_reader(256))
    with (
        make_executor(workers, preload=[stage_module("view.render")], pandas_free=True) as executor,
        progress_bar(label, total, quiet) as advance,
    ):
        for _, results in executor.map("view.render", batches, settings, ordered=True):
            good = []
            for result in results:
                if "reason" in result:
                    row = result["row"]
                    quarantined.append({"id": row["id"], "reason": result["reason"], "message": result["message"]})
                else:
                    good.append(result)
            yield good
            advance(len(results))


def image_ext(con, image_format: str, sources: dict[str, dict]) -> str:
    """`keep` means: JPEG when every selected record is a JPEG file, PNG (lossless) otherwise."""
    if image_format != "keep":
        return image_format
    rendered = [n for n, s in sources.items() if s["reader"] in RENDERED_READERS] or [""]
    marks = ", ".join("?" * len(rendered))
    file = "coalesce(nullif(article.file, ''), uri)"  # an article package's member, else the file
    others = con.execute(
        f"SELECT count(*) FROM selection WHERE NOT regexp_matches(lower({file}), '\\.jpe?g$') OR source IN ({marks})", rendered
    ).fetchall()[0][0]
    return "jpg" if others == 0 else "png"
