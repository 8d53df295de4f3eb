"""The stage `propose.part` (runs in workers): a part of records in, one proposal row per record out. A method's
refusal (from the catalog's facts, then from the pixels) is a row with its reason, never an exception; an image
that cannot be read, or a method that fails on it, is a `failed` row with the error, so one odd file never ends
the step."""

from __future__ import annotations

import json
import time

import numpy as np
import pyarrow as pa

from ..imaging import DecodeError
from ..records import PROPOSAL_SCHEMA
from ..view.render import record_image, record_values, record_volume
from . import get_method
from .base import Refused, to_roi


def propose_record(row: dict, module, name: str, params: dict, settings: dict, cache: dict) -> dict:
    started = time.perf_counter()
    out = {
        "id": row["id"],
        "method": name,
        "version": module.VERSION,
        "params": json.dumps(params, sort_keys=True),
        "fingerprint": settings["fingerprint"],
        "status": "proposed",
        "reason": "",
        "message": "",
        "rois": [],
        "accepted": False,
        "accepted_by": "",
        "accepted_at": "",
    }
    try:
        why = module.suits(row)
        if why:
            raise Refused("not_suited", why)
        pixels = np.asarray(record_image(row, {"sources": settings["sources"]}, cache))
        values = record_values(row, {"sources": settings["sources"]}, cache)
        sources = {"sources": settings["sources"]}
        extra = {"volume": lambda: record_volume(row, sources, cache)} if hasattr(module, "by_volume") else {}
        regions = [r for r in module.propose(pixels, values, row, params, **extra) if r.mask.any()]
        out["rois"] = [to_roi(r, name, module.VERSION) for r in regions]
        if not regions:
            raise Refused("nothing_found", "the method found no region")
    except Refused as e:
        out.update(status="refused", reason=e.reason, message=str(e), rois=[])
    except DecodeError as e:
        out.update(status="failed", reason=e.reason, message=str(e), rois=[])
    except Exception as e:  # a method's bug or an odd image: recorded on the row, the step goes on
        out.update(status="failed", reason="method_failed", message=f"{type(e).__name__}: {e}", rois=[])
    out["seconds"] = time.perf_counter() - started
    return out


def propose_part(table: pa.Table, settings: dict) -> pa.Table:
    """Stage `propose.part`: records -> proposal rows (`records.PROPOSAL_SCHEMA`)."""
    name = settings["method"]
    module = get_method(name)
    cache: dict = {}  # the last DICOM file or NIfTI volume (and what a method computed from it, its `memo`)
    rows = [propose_record(row, module, name, settings["params"], settings, cache) for row in table.to_pylist()]
    return pa.Table.from_pylist(rows, PROPOSAL_SCHEMA)
