"""The stage registry: names -> "module:function". Resolved by import, so workers need no shared state."""

from __future__ import annotations

import importlib
from typing import Any

STAGES = {
    "ingest.decode": "medloom.sources.stage:decode_part",
    "view.render": "medloom.view.render:render_part",
    "export.render": "medloom.export.samples:sample_part",
    "annotate.part": "medloom.annotate.step:annotate_part",
    "propose.part": "medloom.propose.stage:propose_part",
    "curate.embed": "medloom.curate.embed:embed_part",
    "web.thumbs": "medloom.web.thumbs:thumbs_part",
}


def stage_module(name: str) -> str:
    """The module a stage lives in: what its workers import before they take a part."""
    return STAGES[name].partition(":")[0]


def run_stage(name: str, part: Any, settings: dict) -> Any:
    module, _, func = STAGES[name].partition(":")
    return getattr(importlib.import_module(module), func)(part, settings)
