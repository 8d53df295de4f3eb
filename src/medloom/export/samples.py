"""The shard exports' stage (`export.render`): a part of records in, finished samples out. Each record is
rendered (`view.render`), then made into the sample itself, in the worker: for WebDataset the tar members (image,
`.json`, `.txt`), for Parquet the row, so the process writing the shards only writes bytes (it would otherwise
limit how far the workers scale). Also the sample JSON's fields and their declared types.
"""

from __future__ import annotations

import json

import pyarrow as pa

from ..records import ARTICLE_TYPE
from ..view.proposals import exported_rois
from ..view.render import render_row
from ..view.texts import annotation_metadata, choose_text
from .webdataset import tar_sample


def sample_part(table: pa.Table, settings: dict) -> list[dict]:
    """Stage `export.render`: per record {"row": id, source and uri, "tar": the sample's tar members} for
    WebDataset, {"row", "image", "metadata"} for Parquet, or {"row", "reason", "message"}."""
    cache: dict = {}
    spec = settings["sample"]
    out = []
    for row in table.to_pylist():
        result = render_row(row, settings, cache)
        out.append(
            result
            if "reason" in result
            else shard_sample(result["row"], result["image"], result["width"], result["height"], spec)
        )
    return out


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


def sample_metadata(
    row: dict,
    width: int,
    height: int,
    with_article: bool = False,
    text: tuple[str, str] = ("", ""),
    with_annotation: bool = False,
) -> dict:
    """The `.json` of a WebDataset sample and the columns of a Parquet row: every record field, with types
    that never change (docs/export.md's table of types).

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
    return (
        {
            "id": row["id"],
            "split": row["split"],
            "source": row["source"],
            "source_split": row["source_split"] or "",
            "uri": row["uri"],
            "frame": int(row["frame"]),
            "modality": row["modality"] or "",
            "anatomy": row["anatomy"] or "",
            "task": row["task"] or "",
            "labels": list(row["labels"] or []),
            "label_space": list(row["label_space"] or []),
            # the record's own ROIs, then the proposals `--proposals` chose (accepted ones by default), each
            # saying which it is: roi_source "dataset" or "proposal" (with its method, version, score, accepted)
            "rois": exported_rois(row),
            "patient_id": row["patient_id"] or "",
            "study_id": row["study_id"] or "",
            "width": int(row["width"]),
            "height": int(row["height"]),
            "channels": int(row["channels"] or 0),
            "image_width": width,
            "image_height": height,
            "pixel_hash": row["pixel_hash"] or "",
            "phash": f"{int(row['phash'] or 0):016x}",
            "file_hash": row.get("file_hash") or "",
            "license": row["license"] or "",
            "commercial_use": "unknown" if use is None else ("yes" if use else "no"),
            "description": row["description"] or "",
            "caption": row["caption"] or "",
            "render": render,
            "meta": row["meta"] or "",
            "text": text[0],
            "text_source": text[1],
        }
        | ({"article": article_metadata(row.get("article"))} if with_article else {})
        | ({"annotation": annotation_metadata(row)} if with_annotation else {})
    )


SAMPLE_JSON_TYPE = pa.struct(
    [(name, pa.string()) for name in ("id", "split", "source", "source_split", "uri")]
    + [("frame", pa.int64())]
    + [(name, pa.string()) for name in ("modality", "anatomy", "task")]
    + [
        ("labels", pa.list_(pa.string())),
        ("label_space", pa.list_(pa.string())),
        (
            "rois",
            pa.list_(
                pa.struct(
                    [
                        ("label", pa.string()),
                        ("bbox", pa.list_(pa.float64())),
                        ("area", pa.float64()),
                        ("rle", pa.list_(pa.int64())),
                        ("roi_source", pa.string()),
                        ("method", pa.string()),
                        ("version", pa.string()),
                        ("score", pa.float64()),
                        ("accepted", pa.bool_()),  # false only for a proposal no person accepted (--proposals all)
                    ]
                )
            ),
        ),
        ("patient_id", pa.string()),
        ("study_id", pa.string()),
    ]
    + [(name, pa.int64()) for name in ("width", "height", "channels", "image_width", "image_height")]
    + [
        (name, pa.string())
        for name in ("pixel_hash", "phash", "file_hash", "license", "commercial_use", "description", "caption")
    ]
    + [
        (
            "render",
            pa.struct(
                [
                    ("window_center", pa.float64()),
                    ("window_width", pa.float64()),
                    ("window_source", pa.string()),
                    ("invert", pa.bool_()),
                    ("axis", pa.int64()),
                    ("volume", pa.int64()),
                ]
            ),
        ),
        ("meta", pa.string()),
        ("text", pa.string()),
        ("text_source", pa.string()),
    ]
)  # the types of `sample_metadata`, for readers that want them declared rather than inferred
ANNOTATION_JSON_TYPE = pa.struct(
    [
        ("caption", pa.string()),
        ("caption_source", pa.string()),
        ("roi_text", pa.string()),
        (
            "questions",
            pa.list_(
                pa.struct(
                    [(n, pa.string()) for n in ("kind", "question")]
                    + [("options", pa.list_(pa.string()))]
                    + [(n, pa.string()) for n in ("answer", "answer_letter", "prompt")]
                    + [("box", pa.list_(pa.float64()))]
                )
            ),
        ),
    ]
)
