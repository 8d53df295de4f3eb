"""The dataset card (`README.md` with a YAML header) every WebDataset and Parquet export carries.

The header is the Hugging Face dataset-card metadata: `configs` with `data_files` per split (so
`datasets.load_dataset(EXPORT_DIR)` loads every split in one call), `dataset_info.features` (the declared
types, so no split's empty list is guessed as null), licence, task categories, size category and source
datasets. The prose says what a reader of the data must know: the sources with their licences and counts,
how the texts were made, how the splits were made, and what was quarantined.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import yaml

from .. import catalog, layout
from ..view.proposals import roi_counts

TASK_CATEGORIES = (("segmentation", "image-segmentation"), ("detection", "object-detection"), ("caption", "image-to-text"))
SIZES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
)


def yaml_feature(feature: dict) -> dict:
    """An HF feature (its dict form, as `parquet.hf_feature` writes it) in the card's YAML form."""
    kind = feature.get("_type")
    if kind == "Value":
        return {"dtype": feature["dtype"]}
    if kind == "Image":
        return {"dtype": "image"}
    if kind == "List":
        inner = yaml_feature(feature["feature"])
        if list(inner) in (["dtype"], ["struct"]):
            inner = next(iter(inner.values()))
        return {"list": inner, **({"length": feature["length"]} if "length" in feature else {})}
    return {"struct": [{"name": name, **yaml_feature(sub)} for name, sub in feature.items()]}


def hf_license(text: str) -> str:
    """A licence as the Hub names it (cc-by-4.0, cc0-1.0, ...), else "other"."""
    t = text.lower().replace("_", " ")
    if "cc0" in t:
        return "cc0-1.0"
    m = re.search(r"cc[ -]by((?:[ -](?:nc|sa|nd))*)[ -]*(\d\.\d)?", t)
    if m:
        parts = "-".join(re.findall(r"nc|sa|nd", m.group(1)))
        return f"cc-by{'-' + parts if parts else ''}-{m.group(2) or '4.0'}"
    return "other"


def size_category(n: int) -> str:
    return next((name for limit, name in SIZES if n < limit), "n>1T")


def _features(manifest: dict, features: dict) -> list[dict]:
    return [{"name": name, **yaml_feature(f)} for name, f in features.items()]


def write_card(folder, loom: Path, con, state: dict, features: dict, file_ext: str) -> None:
    """`README.md` in the export folder, from the export's state and the `selection` view."""
    settings = state["settings"]
    splits = sorted(state["splits"])
    per_source = con.execute("SELECT source, any_value(license), count(*) FROM selection GROUP BY 1 ORDER BY 1").fetchall()
    tasks = [r[0] for r in con.execute("SELECT DISTINCT task FROM selection ORDER BY 1").fetchall()]
    total = sum(n for _, _, n in per_source)
    licenses = sorted({hf_license(lic or "") for _, lic, _ in per_source})
    categories = sorted(
        {cat for task in tasks for key, cat in TASK_CATEGORIES if key in (task or "")}
        | ({"image-classification"} if any(not any(k in (t or "") for k, _ in TASK_CATEGORIES) for t in tasks) else set())
        | ({"visual-question-answering"} if settings.get("annotation") else set())
    )
    header = {
        "configs": [{"config_name": "default", "data_files": [{"split": s, "path": f"{s}-*.{file_ext}"} for s in splits]}],
        "dataset_info": {"features": _features(catalog.read_manifest(loom), features)},
        "license": licenses[0] if len(licenses) == 1 else "other",
        "task_categories": categories,
        "size_categories": [size_category(total)],
        "source_datasets": [f"extended|{name}" for name, _, _ in per_source],
        "tags": ["medical", "medloom"],
    }
    manifest = catalog.read_manifest(loom)
    lines = [
        f"# {manifest.get('name') or Path(loom).name}",
        "",
        f"Exported by medloom from the loom `{Path(loom).name}`: {total} records in "
        + ", ".join(f"{s} {sum(sh['samples'] for sh in state['splits'][s]['shards'])}" for s in splits)
        + f" ({settings['format']}, images as {settings['image_format']}"
        + (f", longest side at most {settings['max_side']} px" if settings.get("max_side") else "")
        + ").",
        "",
        "## Sources",
        "",
        "| source | licence | records |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {lic or 'not stated'} | {n} |" for name, lic, n in per_source]
    lines += [
        "",
        "## ROIs",
        "",
        *_rois_prose(con, settings.get("proposals", "accepted")),
        "",
        "## Texts",
        "",
        _texts_prose(loom, settings),
        "",
        "## Splits",
        "",
        _splits_prose(loom, settings),
        "",
        "## Quarantine",
        "",
        _quarantine_prose(con),
        "",
    ]
    text = "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---\n\n" + "\n".join(lines)
    folder.write_bytes("README.md", text.encode())


def _rois_prose(con, which: str = "accepted") -> list[str]:
    """The ROIs per source, split by where they come from: the dataset's own, or machine proposals (accepted by a
    person with `medloom propose --accept`, and under `--proposals all` those not accepted too), which every
    sample marks `roi_source: proposal` and `accepted`."""
    counts = roi_counts(con)
    kept = {
        "accepted": "Proposals not accepted are not exported.",
        "all": "Proposals not yet accepted are exported too (`--proposals all`, for review), marked `accepted: false`.",
        "none": "No proposal is exported (`--proposals none`): the dataset's own ROIs only.",
    }[which]
    pending = which == "all"
    lines = [
        "Each ROI in a sample's `rois` has `roi_source`: `dataset` (the source's own box or mask) or `proposal` (a "
        "region a method made and a person accepted with `medloom propose --accept`, with its `method`, `version` "
        f"and `score`). {kept}",
        "",
        "| source | dataset ROIs | accepted proposals | " + ("proposals not accepted | " if pending else "") + "methods |",
        "|---|---|---|" + ("---|" if pending else "") + "---|",
    ]
    return lines + [
        f"| {source} | {own} | {accepted} | " + (f"{waiting} | " if pending else "") + f"{methods or '-'} |"
        for source, own, accepted, waiting, methods in counts
    ]


def _texts_prose(loom: Path, settings: dict) -> str:
    mode = settings.get("text", "auto")
    rule = {
        "auto": "the source's own caption when it has one, else the caption `medloom annotate` made, else a "
        "sentence built from the record's modality and anatomy",
        "source": "the source's own caption only",
        "annotation": "the caption `medloom annotate` made only",
        "both": "the source's own caption followed by the annotation's",
    }[mode]
    prose = f"Each sample's text (`text`, `.txt`) is {rule}; `text_source` says which."
    path = layout.annotations_dir(loom) / "manifest.json"
    if settings.get("annotation") and path.is_file():
        s = json.loads(path.read_text(encoding="utf-8")).get("settings", {})
        how = (
            f"rewritten by the LLM `{s['llm_model']}` (checked against the labels; failures kept the template)"
            if s.get("llm_url")
            else "made from templates (no LLM)"
        )
        prose += f" Annotation captions, ROI descriptions and questions were {how}, seed {s.get('seed', 0)}."
    return prose


def _splits_prose(loom: Path, settings: dict) -> str:
    if settings.get("experiment"):
        return f"Train and test are those of the experiment `{settings['experiment']}` (`medloom cg plan`)."
    path = layout.splits_dir(loom) / "split.json"
    if path.is_file():
        r = json.loads(path.read_text(encoding="utf-8"))
        return (
            f"Assigned by `medloom split --by {r.get('by')}` (seed {r.get('seed', 0)}): no {r.get('by')} is on two "
            f"sides; {r.get('duplicate_leaks', 0)} duplicate groups were found on two sides."
        )
    return "The sources' own splits (a source that defines none is `train`)."


def _quarantine_prose(con) -> str:
    rows = con.execute("SELECT reason, count(*) FROM quarantine WHERE scope = 'input' GROUP BY 1 ORDER BY 2 DESC, 1").fetchall()
    if not rows:
        return "No input was quarantined."
    return (
        f"{sum(n for _, n in rows)} inputs of the sources were quarantined and are not here: "
        + ", ".join(f"{reason} {n}" for reason, n in rows)
        + "."
    )


def webdataset_features(settings: dict, image_ext: str, with_txt: bool) -> dict:
    """The HF features of a WebDataset export's samples (what `hf_features` declares)."""
    from .parquet import hf_feature
    from .samples import ANNOTATION_JSON_TYPE, ARTICLE_JSON_TYPE, SAMPLE_JSON_TYPE

    json_type = SAMPLE_JSON_TYPE
    if settings.get("article"):
        json_type = pa.struct(list(json_type) + [("article", ARTICLE_JSON_TYPE)])
    if settings.get("annotation"):
        json_type = pa.struct(list(json_type) + [("annotation", ANNOTATION_JSON_TYPE)])
    features = {image_ext: {"_type": "Image"}, "json": hf_feature(json_type)}
    if with_txt:
        features["txt"] = {"dtype": "string", "_type": "Value"}
    features.update({k: {"dtype": "string", "_type": "Value"} for k in ("__key__", "__url__")})
    return features


def parquet_features() -> dict:
    from .parquet import EXPORT_SCHEMA, hf_feature

    features = {f.name: hf_feature(f.type) for f in EXPORT_SCHEMA}
    features["image"] = {"_type": "Image"}
    return features
