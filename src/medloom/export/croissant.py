"""`croissant.json`: the export described in Croissant 1.1 (JSON-LD), with the Responsible-AI fields the
catalog can fill. Written by hand (no dependency); the tests validate it with `mlcroissant` and read the
Parquet export's records through it. For a WebDataset export the record set's fields point into the
samples' JSON members inside the tar shards (valid Croissant; mlcroissant 1.1.1 validates it but does not
read JSON members out of tar archives)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .. import catalog, layout
from ..version import __version__
from ..view.proposals import roi_summary
from .card import hf_license

CONTEXT = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "sc": "https://schema.org/",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "dct": "http://purl.org/dc/terms/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
    "equivalentProperty": "cr:equivalentProperty",
    "samplingRate": "cr:samplingRate",
}
LICENSE_URLS = {"cc0-1.0": "https://creativecommons.org/publicdomain/zero/1.0/"}
# the fields every sample has, as Croissant types: (name, dataType)
FIELDS = (
    ("id", "sc:Text"),
    ("split", "sc:Text"),
    ("source", "sc:Text"),
    ("modality", "sc:Text"),
    ("anatomy", "sc:Text"),
    ("task", "sc:Text"),
    ("text", "sc:Text"),
    ("text_source", "sc:Text"),
    ("width", "sc:Integer"),
    ("height", "sc:Integer"),
    ("image_width", "sc:Integer"),
    ("image_height", "sc:Integer"),
    ("license", "sc:Text"),
)


def license_url(name: str) -> str:
    hf = hf_license(name)
    if hf in LICENSE_URLS:
        return LICENSE_URLS[hf]
    if hf.startswith("cc-by"):
        kind, version = hf.rsplit("-", 1)
        return f"https://creativecommons.org/licenses/{kind[3:]}/{version}/"
    return name or "not stated"


def write_croissant(folder, loom: Path, con, state: dict, file_ext: str) -> None:
    settings = state["settings"]
    manifest = catalog.read_manifest(loom)
    name = manifest.get("name") or Path(loom).name
    sources = con.execute("SELECT source, any_value(license), count(*) FROM selection GROUP BY 1 ORDER BY 1").fetchall()
    licenses = sorted({license_url(lic or "") for _, lic, _ in sources})
    quarantined = con.execute(
        "SELECT reason, count(*) FROM quarantine WHERE scope = 'input' GROUP BY 1 ORDER BY 2 DESC"
    ).fetchall()
    shards = "tar-shards" if settings["format"] == "webdataset" else "parquet-shards"
    distribution = [
        {
            "@type": "cr:FileSet",
            "@id": shards,
            "name": shards,
            "encodingFormat": "application/x-tar" if file_ext == "tar" else "application/x-parquet",
            "includes": f"*.{file_ext}",
        }
    ]
    if settings["format"] == "webdataset":  # the samples' JSON members, inside the shards
        distribution.append(
            {
                "@type": "cr:FileSet",
                "@id": "sample-json",
                "name": "sample-json",
                "containedIn": {"@id": shards},
                "encodingFormat": "application/json",
                "includes": "*.json",
            }
        )

    def field(column: str, dtype: str) -> dict:
        extract = {"column": column} if settings["format"] == "parquet" else {"jsonPath": f"$.{column}"}
        file_set = shards if settings["format"] == "parquet" else "sample-json"
        return {
            "@type": "cr:Field",
            "@id": f"samples/{column}",
            "name": column,
            "dataType": dtype,
            "source": {"fileSet": {"@id": file_set}, "extract": extract},
        }

    manifest = layout.annotations_dir(loom) / "manifest.json"
    annotation = json.loads(manifest.read_text(encoding="utf-8")) if settings.get("annotation") and manifest.is_file() else None
    llm = (annotation or {}).get("settings", {}).get("llm_model")
    # the samples' `rois` carry the proposals `--proposals` chose (accepted by default), marked
    rois = roi_summary(con, carried=True, which=settings.get("proposals", "accepted"))
    waiting = rois["not_accepted"]["written"]
    doc = {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "name": name,
        "description": f"{name}: medical images and their texts, exported by medloom {__version__} as "
        f"{settings['format']} shards, one set per split.",
        "conformsTo": "http://mlcommons.org/croissant/1.1",
        "citeAs": f"{name} (built with medloom {__version__})",
        "datePublished": time.strftime("%Y-%m-%d"),
        "version": "1.0.0",
        "url": "https://example.org/local-export",
        "license": licenses[0] if len(licenses) == 1 else licenses,
        "rai:dataCollection": "Merged from public datasets the user downloaded, read by medloom's readers: "
        + "; ".join(f"{s} ({n} records, licence {lic or 'not stated'})" for s, lic, n in sources),
        "rai:dataCollectionMissingData": "Inputs that could not be read are not here; quarantined at ingest: "
        + (", ".join(f"{r} {n}" for r, n in quarantined) or "none")
        + ".",
        "rai:dataPreprocessingProtocol": [
            "Each image decoded once; DICOM and NIfTI rendered with the stored window; 16-bit data windowed.",
            f"Images written as {settings['image_format']}"
            + (f", longest side at most {settings['max_side']} px" if settings.get("max_side") else "")
            + ".",
            "Exact and near duplicates marked by `medloom dedup` left out"
            if not settings.get("include_duplicates")
            else "Duplicates kept (--include-duplicates).",
            "Embedded image metadata (EXIF, XMP, comments, PNG text) removed."
            if not settings.get("keep_metadata")
            else "Embedded image metadata kept (--keep-metadata).",
        ],
        "rai:dataAnnotationProtocol": [
            "Labels, boxes and masks are the source datasets' own annotations"
            + (
                f" ({rois['dataset']} ROIs, roi_source: dataset); {rois['accepted']['written']} ROIs are machine "
                f"proposals a person accepted (medloom propose --accept; {', '.join(rois['methods'])}), each marked "
                "roi_source: proposal with its method, version and score; "
                + (
                    f"{waiting} more are proposals no person accepted yet, marked accepted: false (--proposals all)."
                    if waiting
                    else "proposals not accepted are not exported."
                )
                if rois["proposals"]
                else "."
            ),
            f"Texts follow the rule `--text {settings.get('text', 'auto')}`: the source's caption, the caption "
            "medloom annotate made, or a sentence from the modality and anatomy (see README.md).",
        ],
        "rai:machineAnnotationTools": [f"medloom {__version__} (templates)"]
        + ([f"LLM {llm}"] if llm else [])
        + [
            f"medloom propose {m} (ROI proposals, " + ("some not accepted yet)" if waiting else "accepted by a person)")
            for m in rois["methods"]
        ],
        "rai:personalSensitiveInformation": [
            "Patient and study ids are salted hashes; raw ids are never exported unless the recipe asked for them.",
            "Images may still show burned-in text; DICOM exports exclude files flagged for it.",
        ],
        "rai:dataLimitations": [
            "Template captions state only the modality, anatomy and labels.",
            "Labels are as the source datasets give them; they were not re-read.",
        ],
        "distribution": distribution,
        "recordSet": [
            {
                "@type": "cr:RecordSet",
                "@id": "samples",
                "name": "samples",
                "key": {"@id": "samples/id"},
                "field": [field(column, dtype) for column, dtype in FIELDS],
            }
        ],
    }
    folder.write_bytes("croissant.json", json.dumps(doc, indent=1, ensure_ascii=False).encode())
