"""The catalog in a loom: Parquet parts per source, a manifest, and DuckDB views over them.

Parts are content-addressed: a part's file name is a hash of the reader settings and of the tasks in it
(file paths, sizes, modification times, annotations). A part whose file exists is complete (files are
written under a temporary name and renamed), so re-running skips it, and a run killed half-way resumes.
The views read only the parts the manifest lists, so a stale or half-finished part is never visible.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .records import QUARANTINE_SCHEMA, RECORD_SCHEMA

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def catalog_dir(loom: Path) -> Path:
    return Path(loom) / "catalog"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_table(table: pa.Table, path: Path) -> dict:
    """Write a Parquet file atomically; returns its manifest entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    # no dictionaries: a part holds a few hundred rows across ~60 leaf columns, where building
    # dictionaries costs more time than it saves bytes (measured: 23% faster, 10% smaller)
    pq.write_table(table, tmp, compression="zstd", use_dictionary=False)
    os.replace(tmp, path)
    return {"file": path.name, "rows": table.num_rows, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def part_is_complete(path: Path) -> bool:
    """A part file is usable when its Parquet footer reads (a torn file cannot exist after rename)."""
    try:
        pq.read_metadata(path)
        return True
    except (OSError, pa.ArrowInvalid):
        return False


def read_manifest(loom: Path) -> dict:
    path = catalog_dir(loom) / MANIFEST
    if not path.is_file():
        return {"format": FORMAT_VERSION, "sources": {}}
    return json.loads(path.read_text(encoding="utf-8"))


def write_manifest(loom: Path, manifest: dict) -> None:
    manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_atomic(catalog_dir(loom) / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())


def source_dirs(loom: Path, source: str) -> tuple[Path, Path]:
    base = catalog_dir(loom)
    return base / "records" / source, base / "quarantine" / source


def remove_stale(loom: Path, source: str, keep: set[str]) -> int:
    """Delete files of a source that the manifest no longer lists (old parts, temporary files)."""
    removed = 0
    for folder in source_dirs(loom, source):
        if folder.is_dir():
            for p in folder.iterdir():
                if p.name not in keep:
                    p.unlink()
                    removed += 1
    return removed


def listed_files(loom: Path) -> tuple[list[str], list[str]]:
    """Record and quarantine part paths listed in the manifest."""
    manifest = read_manifest(loom)
    records, quarantine = [], []
    for name, entry in sorted(manifest["sources"].items()):
        rdir, qdir = source_dirs(loom, name)
        records += [str(rdir / p["records"]["file"]) for p in entry["parts"] if p["records"]["rows"]]
        quarantine += [str(qdir / p["quarantine"]["file"]) for p in entry["parts"] if p["quarantine"]["rows"]]
        scan_q = entry.get("scan_quarantine")
        if scan_q and scan_q["rows"]:
            quarantine.append(str(qdir / scan_q["file"]))
    return records, quarantine


def connect(loom: Path):
    """A DuckDB connection with the views `records` and `quarantine` over the listed parts, plus
    `annotations`, `dedup`, `leakage`, `clusters` and `concepts` once the steps that write them have run."""
    import duckdb

    loom = Path(loom)
    if not (catalog_dir(loom) / MANIFEST).is_file():
        raise FileNotFoundError(f"{loom}: no catalog here (run `medloom ingest RECIPE` first)")
    records, quarantine = listed_files(loom)
    con = duckdb.connect()
    for view, files, schema in (("records", records, RECORD_SCHEMA), ("quarantine", quarantine, QUARANTINE_SCHEMA)):
        if files:
            listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet([{listing}])")
        else:
            con.register(f"_{view}_empty", schema.empty_table())
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM _{view}_empty")
    # written by `medloom annotate`, `dedup`, `leakage --mark`, `cluster` and `concepts`
    for view, path in (("annotations", loom / "annotations" / "annotations.parquet"),
                       ("dedup", loom / "curation" / "dedup.parquet"),
                       ("leakage", loom / "curation" / "leakage.parquet"),
                       ("clusters", loom / "curation" / "clusters.parquet"),
                       ("concepts", loom / "curation" / "concepts.parquet")):
        if path.is_file():
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet('" + str(path).replace("'", "''") + "')")
    return con


def ensure_salt(loom: Path, configured: str | None) -> str:
    """The secret used to hash patient ids: the recipe's, or a random one kept beside the catalog."""
    if configured:
        return configured
    path = Path(loom) / ".salt"
    if path.is_file():
        return path.read_text().strip()
    salt = secrets.token_hex(16)
    write_atomic(path, salt.encode())
    os.chmod(path, 0o600)
    return salt
