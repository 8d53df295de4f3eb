"""The catalog in a loom: Parquet parts per source, a manifest, and DuckDB views over them.

Parts are content-addressed: a part's file name is a hash of the reader settings and of the tasks in it
(file paths, sizes, modification times, annotations). A part whose file exists is complete (files are
written under a temporary name and renamed), so re-running skips it, and a run killed half-way resumes.
The views read only the parts the manifest lists, so a stale or half-finished part is never visible.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from . import layout
from .outputs import OutputFolder, write_atomic, written_by_medloom
from .records import QUARANTINE_SCHEMA, RECORD_SCHEMA

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
# a part that the manifest stopped listing is deleted only this long after (by a later ingest): a reader
# that read the previous manifest a moment before the swap can still read the parts it names
STALE_RETENTION_S = 120.0


def catalog_dir(loom: Path) -> Path:
    return layout.catalog_dir(loom)


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


def write_manifest(folder: OutputFolder, manifest: dict) -> None:
    manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    folder.write_bytes(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())


def source_dirs(loom: Path, source: str) -> tuple[Path, Path]:
    base = catalog_dir(loom)
    return base / "records" / source, base / "quarantine" / source


def source_rel(source: str) -> tuple[str, str]:
    """The folders of a source's record and quarantine parts, relative to the catalog."""
    return f"records/{source}", f"quarantine/{source}"


def manifest_files(manifest: dict) -> tuple[list[str], list[str]]:
    """Record and quarantine part files the manifest lists (relative to the catalog; empty parts included)."""
    records, quarantine = [], []
    for name, entry in sorted(manifest["sources"].items()):
        rdir, qdir = source_rel(name)
        records += [f"{rdir}/{p['records']['file']}" for p in entry["parts"]]
        quarantine += [f"{qdir}/{p['quarantine']['file']}" for p in entry["parts"]]
        quarantine += [f"{qdir}/{entry[k]['file']}" for k in ("scan_quarantine", "error_quarantine") if entry.get(k)]
    return records, quarantine


def open_catalog(loom: Path) -> OutputFolder:
    """The catalog folder with its written-files record (a catalog from before the record adopts the files
    its manifest lists)."""
    manifest = read_manifest(loom)
    records, quarantine = manifest_files(manifest)
    return OutputFolder(catalog_dir(loom), adopt=[MANIFEST, *records, *quarantine])


def collect_stale(folder: OutputFolder, manifest: dict, retention: float = STALE_RETENTION_S, now: float | None = None) -> int:
    """Retire part files the manifest no longer lists, and delete those retired at least `retention` seconds
    ago. Only files medloom wrote are candidates (the written-files record); temporary files of killed runs
    go at once. The caller writes the manifest afterwards (it holds the `retired` list)."""
    now = time.time() if now is None else now
    records, quarantine = manifest_files(manifest)
    listed = set(records) | set(quarantine)
    retired = manifest.setdefault("retired", {})
    folder.remove_temporary()
    due = []
    for rel in sorted(folder.owned):
        if not rel.startswith(("records/", "quarantine/")) or rel in listed:
            retired.pop(rel, None)
            continue
        since = retired.setdefault(rel, now)
        if now - since >= retention:
            due.append(rel)
    for rel in due:
        retired.pop(rel, None)
    return folder.remove_many(due)


def listed_files(loom: Path) -> tuple[list[str], list[str]]:
    """Record and quarantine part paths listed in the manifest (parts with rows only)."""
    manifest = read_manifest(loom)
    base = catalog_dir(loom)
    records, quarantine = [], []
    for name, entry in sorted(manifest["sources"].items()):
        rdir, qdir = source_dirs(loom, name)
        records += [str(rdir / p["records"]["file"]) for p in entry["parts"] if p["records"]["rows"]]
        quarantine += [str(qdir / p["quarantine"]["file"]) for p in entry["parts"] if p["quarantine"]["rows"]]
        for key in ("scan_quarantine", "error_quarantine"):
            scan_q = entry.get(key)
            if scan_q and scan_q["rows"]:
                quarantine.append(str(base / "quarantine" / name / scan_q["file"]))
    return records, quarantine


_DUCK_TYPES = {
    "string": "VARCHAR",
    "bool": "BOOLEAN",
    "int8": "TINYINT",
    "int16": "SMALLINT",
    "int32": "INTEGER",
    "int64": "BIGINT",
    "uint64": "UBIGINT",
    "float": "FLOAT",
    "double": "DOUBLE",
    "binary": "BLOB",
}


def duck_type(t: pa.DataType) -> str:
    """An Arrow type in DuckDB's SQL, as DuckDB reads it from Parquet. An empty view is declared this way:
    handing DuckDB an Arrow table imports pandas, half a second of every command's start."""
    if pa.types.is_struct(t):
        return "STRUCT(" + ", ".join(f'"{f.name}" {duck_type(f.type)}' for f in t) + ")"
    if pa.types.is_list(t) or pa.types.is_fixed_size_list(t):
        return duck_type(t.value_type) + "[]"
    return _DUCK_TYPES[str(t)]


def connect(loom: Path):
    """A DuckDB connection with the views `records` and `quarantine` over the listed parts, plus
    `annotations`, `dedup`, `leakage`, `clusters` and `concepts` once the steps that write them have run."""
    import duckdb

    loom = Path(loom)
    if not (catalog_dir(loom) / MANIFEST).is_file():
        raise FileNotFoundError(f"{loom}: no catalog here (run `medloom ingest RECIPE` first)")
    records, quarantine = listed_files(loom)
    con = duckdb.connect()
    # a name in the user's SQL is a view of the loom or nothing: never a Python object of the calling code
    con.execute("SET python_enable_replacements = false")
    for view, files, schema in (("records", records, RECORD_SCHEMA), ("quarantine", quarantine, QUARANTINE_SCHEMA)):
        if files:
            listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet([{listing}])")
        else:
            columns = ", ".join(f'NULL::{duck_type(f.type)} AS "{f.name}"' for f in schema)
            con.execute(f"CREATE VIEW {view} AS SELECT {columns} WHERE false")
    # written by `medloom annotate`, `dedup`, `leakage --mark`, `cluster` and `concepts`
    for view in layout.VIEWS:
        path = layout.view_file(loom, view)
        if written_by_medloom(path):
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet('" + str(path).replace("'", "''") + "')")
    return con


def ensure_salt(loom: Path, configured: str | None) -> str:
    """The secret used to hash patient ids: the recipe's, or a random one; kept in LOOM/.salt (mode 600) so that
    steps after ingest (the DICOM export's pseudonyms) use the same one."""
    path = Path(loom) / ".salt"
    current = path.read_text().strip() if path.is_file() else None
    salt = configured or current or secrets.token_hex(16)
    if salt != current:
        write_atomic(path, salt.encode())
        os.chmod(path, 0o600)
    return salt


def read_salt(loom: Path) -> str:
    path = Path(loom) / ".salt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no salt; run `medloom ingest` (it keeps the salt the ids were hashed with)")
    return path.read_text().strip()
