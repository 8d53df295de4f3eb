"""Stage `ingest.decode`, what ingest's workers run: a part's tasks -> records and quarantine rows.

Apart from `ingest.py` so that a worker imports only what decoding needs (the readers, imaging, the record
schemas), not the driver's recipe, catalog and progress modules: on a small machine the workers' start is
a visible share of a whole command.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import pyarrow as pa

from ..imaging import DecodeError
from ..records import QUARANTINE_SCHEMA, RECORD_SCHEMA, quarantine_row
from . import get_decoder


def complete_record(task: dict, rec: dict, source: dict) -> dict:
    """Join what the reader read from the pixels with the task's annotations and the source's metadata."""
    return {
        "id": rec["id"],
        "source": source["name"],
        "source_split": task["source_split"],
        "uri": rec.get("uri") or task["uri"],
        "frame": rec["frame"],
        "modality": source["modality"] or rec.get("modality") or "unknown",
        "anatomy": source["anatomy"] or rec.get("anatomy") or "unknown",
        "task": source["task"] or rec.get("task") or "unknown",
        "labels": rec.get("labels", task["labels"]),
        "label_space": source["label_space"],
        "rois": rec["rois"],
        "patient_id": rec.get("patient_id") or task["patient_id"],
        "study_id": rec.get("study_id") or task["study_id"],
        "width": rec["width"],
        "height": rec["height"],
        "channels": rec["channels"],
        "pixel_hash": rec["pixel_hash"],
        "phash": rec["phash"],
        "file_hash": rec.get("file_hash") or "",
        "license": rec["license"] if "license" in rec else source["license"],
        "commercial_use": rec["commercial_use"] if "license" in rec else source["commercial_use"],
        "description": source["description"],
        "caption": rec.get("caption") or task["caption"] or None,
        "render": rec["render"],
        "article": rec.get("article"),
        "meta": rec["meta"],
    }


def decode_part(tasks: pa.Table, source: dict) -> tuple[pa.Table, pa.Table, int]:
    """Stage `ingest.decode`: tasks -> (records, quarantine rows, inputs that gave records)."""
    decode = get_decoder(source["reader"])
    records, problems, ok = [], [], 0
    for task in tasks.to_pylist():
        try:
            result = decode(task, source)
        except DecodeError as e:
            problems.append(quarantine_row(source["name"], task["uri"], e.reason, str(e), stage="decode", record_id=task["id"]))
            continue
        except Exception as e:  # a reader bug or an input nobody foresaw: keep going, keep the evidence
            last = traceback.extract_tb(e.__traceback__)[-1]
            problems.append(
                quarantine_row(
                    source["name"],
                    task["uri"],
                    "unexpected_error",
                    f"{type(e).__name__}: {e} (at {Path(last.filename).name}:{last.lineno}); please report it",
                    stage="decode",
                    record_id=task["id"],
                )
            )
            continue
        recs, found = result[0], result[1]
        problems += found
        if len(result) == 3:  # the reader counts its own inputs (pmc: figure graphics)
            ok += result[2]
        elif recs:
            ok += 1
        elif not any(p["scope"] in ("input", "filtered") for p in found):
            problems.append(
                quarantine_row(
                    source["name"],
                    task["uri"],
                    "no_records",
                    "the input gave no records (no slice kept)",
                    stage="decode",
                    record_id=task["id"],
                )
            )
        records += [complete_record(task, r, source) for r in recs]
    return (pa.Table.from_pylist(records, RECORD_SCHEMA), pa.Table.from_pylist(problems, QUARANTINE_SCHEMA), ok)
