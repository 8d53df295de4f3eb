"""Where the propose step keeps its work in the loom (`LOOM/proposals/`): the manifest naming each method's parts,
oldest run first, and the rows those parts hold, the latest run's row winning for a record."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .. import catalog, layout
from ..records import PROPOSAL_SCHEMA

MANIFEST = "manifest.json"
FILE = "proposals.parquet"


def read_manifest(loom: Path) -> dict:
    path = layout.proposals_dir(loom) / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"methods": {}}


def read_parts(loom: Path) -> pa.Table:
    """Every method's rows, the latest run's row winning for a record, only records still in the catalog."""
    folder = layout.proposals_dir(loom)
    manifest = read_manifest(loom)
    ids = {r[0] for r in catalog.connect(loom).execute("SELECT id FROM records").fetchall()}
    rows: dict[tuple[str, str], dict] = {}
    for method, entry in sorted(manifest["methods"].items()):
        for rel in entry["parts"]:
            path = folder / rel
            if not path.is_file():
                continue
            for row in pq.read_table(path).to_pylist():
                if row["id"] in ids:
                    rows[(row["id"], method)] = row
    return pa.Table.from_pylist([rows[k] for k in sorted(rows)], PROPOSAL_SCHEMA)
