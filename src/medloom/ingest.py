"""Ingest: scan each source, cut its tasks into content-addressed parts, decode the parts that are not
already in the catalog (in parallel), and commit the source's part list to the manifest.

Accounting per source: inputs = inputs that gave records + inputs quarantined + inputs filtered out.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from . import catalog
from .engine import make_executor
from .engine.progress import progress_bar
from .locks import hold
from .outputs import sha256_file
from .recipe import LoadedRecipe
from .records import QUARANTINE_SCHEMA, RECORD_SCHEMA, quarantine_row
from .sources import READERS, get_reader, worker_modules
from .sources.base import Scan, TaskList, display_name, inside, source_roots
from .sources.exclude import drop_excluded

READER_VERSION = "4"  # bump to invalidate every part when decoding changes


@dataclass
class SourceReport:
    name: str
    reader: str
    inputs: int = 0
    inputs_ok: int = 0
    records: int = 0
    quarantined_inputs: int = 0
    annotation_problems: int = 0
    warnings: int = 0
    filtered: dict[str, int] = field(default_factory=dict)
    parts: int = 0
    parts_decoded: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    error: str | None = None


# ---- planning (main process) ------------------------------------------------------------------------


def chunk_bounds(ids: Iterable[str], size: int) -> list[tuple[int, int]]:
    """Content-defined chunking: a part ends after a task whose id hashes to 0 mod `size` (or at 4x size).
    (start, length) of each part over the tasks sorted by id.

    Adding or removing one file changes only the part that holds it, so a re-run re-decodes one part,
    not every part after the insertion point.
    """
    bounds, start, n = [], 0, 0
    for i, rid in enumerate(ids):
        n = i + 1
        if xxhash.xxh64_intdigest(rid.encode()) % size == 0 or n - start >= 4 * size:
            bounds.append((start, n - start))
            start = n
    if start < n:
        bounds.append((start, n - start))
    return bounds


def part_key(source: dict, tasks: list[dict]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"v": READER_VERSION, "source": source}, sort_keys=True, default=str).encode())
    for task in tasks:
        h.update(json.dumps(task, sort_keys=True).encode())
    return h.hexdigest()[:32]


def sorted_tasks(scan: Scan, source: dict) -> tuple[pa.Table, pa.Array, pa.Array]:
    """(the scan's tasks, the order that sorts them by id with duplicates left out, the ids in that order).

    The sort is stable: of tasks giving one id the first found is kept, the others are `duplicate_id` rows.
    Nothing is copied and no id becomes a Python string: parts are taken from the table in this order, one at
    a time, when they are needed."""
    table = scan.tasks.table()
    order = pc.sort_indices(table, sort_keys=[("id", "ascending")])
    ids = table.column("id").take(order).combine_chunks()
    if len(ids) < 2:
        return table, order, ids
    same = pc.equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy(zero_copy_only=False)
    dup = np.flatnonzero(same) + 1
    if not len(dup):
        return table, order, ids
    uris = table.column("uri").take(order)
    for i in dup.tolist():
        first = i - 1
        while first > 0 and same[first - 1]:
            first -= 1
        scan.quarantine.append(
            quarantine_row(
                source["name"],
                uris[i].as_py(),
                "duplicate_id",
                f"gives the same record id {ids[i].as_py()!r} as {uris[first].as_py()!r}; rename one file",
            )
        )
    keep = np.ones(len(ids), bool)
    keep[dup] = False
    return table, order.filter(pa.array(keep)), ids.filter(pa.array(keep))


class Rows:
    """A table of many chunks (a scan's batches), its rows taken by position, touching only the chunks they are
    in: Arrow's take on a chunked table joins every chunk first, a copy of all the tasks for each part (slow,
    and most of the driver's memory peak on a large source)."""

    def __init__(self, table: pa.Table):
        self.schema = table.schema
        self.batches = table.to_batches()
        self.starts = np.cumsum([0, *(len(b) for b in self.batches)])

    def take(self, positions: np.ndarray) -> pa.Table:
        """The rows at `positions`, in that order, as a table of one chunk."""
        if not len(positions):
            return self.schema.empty_table()
        positions = np.asarray(positions, dtype=np.int64)  # sort_indices gives uint64: minus int64 is float
        chunk = np.searchsorted(self.starts, positions, side="right") - 1
        by_chunk = np.argsort(chunk, kind="stable")
        ordered, grouped = chunk[by_chunk], positions[by_chunk]
        pieces = [self.batches[c].take(pa.array(grouped[ordered == c] - self.starts[c])) for c in np.unique(ordered)]
        table = pa.Table.from_batches(pieces, self.schema)
        if len(pieces) > 1 or (by_chunk != np.arange(len(by_chunk))).any():
            table = table.take(pa.array(np.argsort(by_chunk))).combine_chunks()
        return table


def strings(array: pa.Array, step: int = 8192):
    """An Arrow string array's values, a slice at a time (never all as Python strings at once)."""
    for start in range(0, len(array), step):
        yield from array.slice(start, step).to_pylist()


def label_space(source: dict, tasks: pa.Table) -> list[str]:
    if source.get("classes"):
        return list(source["classes"])
    found = set(pc.unique(pc.list_flatten(tasks.column("labels"))).to_pylist())
    rois = pc.list_flatten(tasks.column("rois"))
    found |= set(pc.unique(pc.struct_field(rois, "label")).to_pylist()) if len(rois) else set()
    options = source["options"]
    named = [*(options.get("mask_labels") or {}).values(), *(options.get("palette") or {}).values()]
    named += [m["label"] for m in options.get("masks") or [] if m.get("label")]
    found |= {source["label_map"].get(v, v) for v in named}
    return sorted(x for x in found if x is not None)


# ---- checks on a scan (main process) ----------------------------------------------------------------------


def enforce_roots(scan: Scan, source: dict) -> None:
    """Tasks (and companion files such as masks) that resolve outside the source's roots become
    `outside_root` rows: an annotation file or a link cannot make medloom read elsewhere."""
    roots = source_roots(source)
    folders: dict[str, str] = {}
    kept = []
    for batch in scan.tasks.table().select(["path", "extra", "uri", "id"]).to_batches(8192):  # a slice at a time
        for i, (path, extra) in enumerate(zip(batch.column(0).to_pylist(), batch.column(1).to_pylist())):
            found = json.loads(extra) if extra != "{}" else {}
            paths = [path, *([found["mask"]] if found.get("mask") else []), *(m[0] for m in found.get("masks") or [])]
            outside = next((p for p in paths if not inside(p, roots, folders)), None)
            kept.append(outside is None)
            if outside is None:
                continue
            scan.quarantine.append(
                quarantine_row(
                    source["name"],
                    batch.column(2)[i].as_py(),
                    "outside_root",
                    f"{display_name(outside)} resolves to {display_name(os.path.realpath(outside))}, outside the "
                    f"source's root {source['root']}; list its folder under `allowed_roots:` in the recipe to read it",
                    record_id=batch.column(3)[i].as_py(),
                )
            )
    if not all(kept):
        scan.tasks.keep(kept)


def warn_dropped_boxes(scan: Scan, source: dict) -> None:
    """A record whose every box was dropped says so, instead of passing as an image with nothing in it."""
    if not scan.dropped:
        return
    table = scan.tasks.table().select(["id", "uri", "rois"])
    for task in table.to_pylist():
        n = scan.dropped.get(task["id"], 0)
        if n and not task["rois"]:
            scan.quarantine.append(
                quarantine_row(
                    source["name"],
                    task["uri"],
                    "all_boxes_dropped",
                    f"all {n} box(es) of this image were dropped (see its annotation rows); the image is kept with no ROI",
                    scope="warning",
                    record_id=task["id"],
                )
            )


# ---- the step ---------------------------------------------------------------------------------------


def ingest(
    loaded: LoadedRecipe,
    *,
    workers: int | None = None,
    quiet: bool = False,
    only: list[str] | None = None,
    wait: bool = False,
    retention: float = catalog.STALE_RETENTION_S,
) -> list[SourceReport]:
    """Build or update the catalog. One writer at a time (the loom's lock); parts that the manifest stops
    listing are deleted `retention` seconds later, by a later run, so a reader never loses a part it was
    about to read."""
    loom = loaded.loom
    with hold(loom, wait=wait):
        folder = catalog.open_catalog(loom)
        folder.ensure()
        salt = catalog.ensure_salt(loom, loaded.recipe.salt)
        manifest = catalog.read_manifest(loom)
        manifest["name"] = loaded.recipe.name
        reports = []
        with make_executor(workers, preload=worker_modules(s["reader"] for s in loaded.sources), pandas_free=True) as executor:
            executor.prestart()  # workers start while the sources are scanned
            for source in loaded.sources:
                if only and source["name"] not in only:
                    continue
                report = ingest_source(folder, {**source, "salt": salt}, executor, manifest, loaded.recipe.part_size, quiet)
                reports.append(report)
                catalog.write_manifest(folder, manifest)
        if not only:
            names = {s["name"] for s in loaded.sources}
            for gone in [n for n in manifest["sources"] if n not in names]:
                del manifest["sources"][gone]
        catalog.collect_stale(folder, manifest, retention)
        catalog.write_manifest(folder, manifest)
    return reports


def scan_source(source: dict, previous: dict | None) -> tuple[Scan, str | None]:
    """The reader's scan with the root and box checks applied; (scan, error) where error says why the scan
    failed or looks wrong, in which case the caller keeps the earlier run's parts."""
    try:
        scan = get_reader(source["reader"]).scan(source)
    except Exception as e:  # an unreadable annotation file or folder: report, keep the other sources
        return Scan(), f"{type(e).__name__}: {e}"
    drop_excluded(scan, source)
    enforce_roots(scan, source)
    warn_dropped_boxes(scan, source)
    had = sum(p["records"]["rows"] for p in (previous or {}).get("parts", []))
    if not scan.tasks and had:
        return scan, (
            f"the scan found no inputs under {source['root']}, where the last run found {had} records; the "
            "catalog keeps them (is a drive unmounted?). Remove the source from the recipe to drop them"
        )
    return scan, None


def ingest_source(folder, source: dict, executor, manifest: dict, part_size: int | None, quiet: bool) -> SourceReport:
    report = SourceReport(source["name"], source["reader"])
    loom = folder.path.parent
    rdir, qdir = catalog.source_rel(source["name"])
    previous_entry = manifest["sources"].get(source["name"])
    scan, error = scan_source(source, previous_entry)
    if error is not None:
        report.error = error
        row = quarantine_row(source["name"], ".", "source_unreadable", error)
        key = hashlib.sha256(error.encode()).hexdigest()[:32]
        error_entry = folder.write_table(f"{qdir}/error-{key}.parquet", pa.Table.from_pylist([row], QUARANTINE_SCHEMA))
        if previous_entry is not None:  # a failed scan never wipes an earlier run
            manifest["sources"][source["name"]] = {**previous_entry, "error": error, "error_quarantine": error_entry}
            summarise(report, manifest["sources"][source["name"]], loom)
            return report
        scan = Scan(quarantine=[])
    else:
        error_entry = None
    table, order, ids = sorted_tasks(scan, source)
    scan.tasks = TaskList()
    settings = {**source, "label_space": label_space(source, table)}
    bounds = chunk_bounds(strings(ids), part_size or READERS[source["reader"]].part_size)
    del ids

    rows, positions = Rows(table), order.to_numpy()
    del table, order

    def part(i: int) -> pa.Table:
        """A part's tasks, taken when needed (a copy: a sliced table would pickle its parent's buffers whole)."""
        start, length = bounds[i]
        return rows.take(positions[start : start + length])

    previous = {p["key"]: p for p in (previous_entry or {}).get("parts", [])}
    entries: dict[int, dict] = {}
    keys: dict[int, str] = {}
    todo: list[int] = []

    def to_decode(advance) -> Iterator[pa.Table]:
        """The tasks of each part not yet in the catalog, the largest parts first: parts are cut by content and
        run from a few inputs to 4x the mean, and one large part sent last kept 15 of 16 workers waiting for it
        (results are written by index, so order is free). Keys are made here, as the workers take parts, so the
        first part goes out without waiting for every key (0.3 s of serial time for 12,000 files)."""
        for i in sorted(range(len(bounds)), key=lambda i: -bounds[i][1]):
            tasks = part(i)
            key = keys[i] = part_key(settings, tasks.to_pylist())
            rfile, qfile = f"{rdir}/part-{key}.parquet", f"{qdir}/part-{key}.parquet"
            complete = all(folder.is_owned(f) and catalog.part_is_complete(folder.path / f) for f in (rfile, qfile))
            if key in previous and complete:
                entries[i] = previous[key]
            elif complete:  # written by a run that was killed
                entries[i] = entry_from_files(key, folder.path / rfile, folder.path / qfile, bounds[i][1])
            else:
                todo.append(i)
                yield tasks
                continue
            advance(0, skipped=bounds[i][1])

    with progress_bar(f"ingest {source['name']}", sum(n for _, n in bounds), quiet) as advance:
        for j, (records, problems, ok) in executor.map(
            "ingest.decode", to_decode(advance), settings, on_failure=lambda part, why: failed_part(part, why, source)
        ):
            i = todo[j]
            # the counts travel inside the part file too, so a part written by a killed run is adopted whole
            records = records.replace_schema_metadata({"medloom.inputs_ok": str(max(ok, 0)), "medloom.tasks": str(bounds[i][1])})
            # a part whose worker kept dying is listed under another name: the next run decodes it again
            name = "failed" if ok < 0 else "part"
            qentry = folder.write_table(f"{qdir}/{name}-{keys[i]}.parquet", problems)
            rentry = folder.write_table(f"{rdir}/{name}-{keys[i]}.parquet", records)
            entries[i] = {
                "key": keys[i],
                "tasks": bounds[i][1],
                "inputs_ok": max(ok, 0),
                "records": rentry,
                "quarantine": qentry,
                **({"failed": True} if ok < 0 else {}),
            }
            advance(bounds[i][1])
        if not todo:
            advance(0, note="unchanged, nothing to decode")
    report.parts, report.parts_decoded = len(bounds), len(todo)
    scan_table = pa.Table.from_pylist(scan.quarantine, QUARANTINE_SCHEMA)
    scan_key = hashlib.sha256(json.dumps(scan.quarantine, sort_keys=True).encode()).hexdigest()[:32]
    scan_entry = folder.write_table(f"{qdir}/scan-{scan_key}.parquet", scan_table)
    ordered = [entries[i] for i in range(len(bounds))]
    manifest["sources"][source["name"]] = {
        "reader": source["reader"],
        "root": source["root"],
        "max_pixels": source.get("max_pixels"),
        "max_voxels": source.get("max_voxels"),
        "max_file_bytes": source.get("max_file_bytes"),
        "pseudonymous_ids": bool(source.get("pseudonymous_ids")),
        # the labels as the source wrote them: `--format medmat` writes them (Med-MAT's `caption` and options)
        "label_map": source.get("label_map") or {},
        "parts": ordered,
        "scan_quarantine": scan_entry,
        "filtered": scan.filtered,
        "error": report.error,
        **({"error_quarantine": error_entry} if error_entry else {}),
    }
    summarise(report, manifest["sources"][source["name"]], loom)
    return report


def failed_part(part: pa.Table, why: str, source: dict) -> tuple[pa.Table, pa.Table, int]:
    """A part whose worker died on every try: no record, a quarantine row per input (-1: not done)."""
    rows = [
        quarantine_row(
            source["name"],
            t["uri"],
            "worker_died",
            f"the worker decoding this input's part died on every try: {why} (a decoder crash, or "
            "memory); the next `medloom ingest` tries this part again",
            stage="decode",
            record_id=t["id"],
        )
        for t in part.to_pylist()
    ]
    return pa.Table.from_pylist([], RECORD_SCHEMA), pa.Table.from_pylist(rows, QUARANTINE_SCHEMA), -1


def entry_from_files(key: str, rfile: Path, qfile: Path, n_tasks: int) -> dict:
    import pyarrow.parquet as pq

    def entry(path: Path) -> dict:
        return {
            "file": path.name,
            "rows": pq.read_metadata(path).num_rows,
            "bytes": path.stat().st_size,
            "sha256": sha256_file(path),
        }

    metadata = pq.read_schema(rfile).metadata or {}
    inputs_ok = int(metadata.get(b"medloom.inputs_ok", b"0"))
    return {"key": key, "tasks": n_tasks, "inputs_ok": inputs_ok, "records": entry(rfile), "quarantine": entry(qfile)}


def summarise(report: SourceReport, entry: dict, loom: Path) -> None:
    """Fill the report's counts from the committed parts (the same numbers `stats` shows)."""
    import pyarrow.parquet as pq

    rdir, qdir = catalog.source_dirs(loom, report.name)
    report.records = sum(p["records"]["rows"] for p in entry["parts"])
    report.inputs_ok = sum(p["inputs_ok"] for p in entry["parts"])
    report.filtered = dict(entry["filtered"])
    files = [qdir / p["quarantine"]["file"] for p in entry["parts"] if p["quarantine"]["rows"]]
    files += [qdir / entry[k]["file"] for k in ("scan_quarantine", "error_quarantine") if entry.get(k) and entry[k]["rows"]]
    for f in files:
        for row in pq.read_table(f, columns=["scope", "reason"]).to_pylist():
            if row["scope"] == "filtered":
                report.filtered[row["reason"]] = report.filtered.get(row["reason"], 0) + 1
                continue
            report.reasons[row["reason"]] = report.reasons.get(row["reason"], 0) + 1
            if row["scope"] == "input":
                report.quarantined_inputs += 1
            elif row["scope"] == "annotation":
                report.annotation_problems += 1
            else:
                report.warnings += 1
    report.inputs = report.inputs_ok + report.quarantined_inputs + sum(report.filtered.values())
