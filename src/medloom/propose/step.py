"""The propose step: one method over the selected records, through the executor (`propose.part`), each part
written as it finishes under a content-addressed name (method, version, parameters and the records' ids and
file hashes), so a killed run resumes where it stopped and a re-run with nothing changed does no work. The parts
of every run are then gathered into `LOOM/proposals/proposals.parquet`, the `proposals` view, with each row's
acceptance replayed from `decisions.json` (accept.py)."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .. import catalog, layout
from ..engine import make_executor, stage_module
from ..engine.progress import progress_bar
from ..errors import ProposeError
from ..locks import writer
from ..outputs import OutputFolder
from . import get_method
from .accept import gather
from .store import FILE, MANIFEST, read_manifest

PART = 64  # records per part: the unit of work and of resumption


@dataclass
class ProposeReport:
    method: str = ""
    version: str = ""
    records: int = 0
    proposed: int = 0
    refused: int = 0
    failed: int = 0
    rois: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # refused and failed rows by reason
    examples: dict[str, str] = field(default_factory=dict)  # one message per reason
    parts: int = 0
    parts_done_before: int = 0  # found complete (a resumed or repeated run)
    seconds: float = 0.0
    out: str = ""

    def as_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        out = [
            f"propose {self.method} (version {self.version}): {self.records} records: {self.proposed} with proposals "
            f"({self.rois} ROIs), {self.refused} refused, {self.failed} failed; "
            f"{self.parts - self.parts_done_before} of {self.parts} parts computed now"
        ]
        out += [f"  {reason}: {n} (e.g. {self.examples.get(reason, '')})" for reason, n in sorted(self.reasons.items())]
        return out + [f"proposals: {self.out} (view `proposals`; accept with --accept)"]

    def warnings(self) -> list[tuple[str, str]]:
        return [("failed", f"{self.failed} record(s) could not be read or the method failed")] if self.failed else []


def parts_of(table: pa.Table, by_volume: bool) -> list[pa.Table]:
    """The records in parts of PART. For a method that works on whole volumes (`by_volume`) parts are cut only
    between files (the records sorted by source, uri and id, so a file's slices are together even where ids are
    pseudonymous), so each volume is read and predicted once: a volume of more than PART slices is a part alone."""
    if not by_volume or not table.num_rows:
        return [table.slice(i, PART) for i in range(0, table.num_rows, PART)]
    table = table.sort_by([("source", "ascending"), ("uri", "ascending"), ("id", "ascending")])
    keys = list(zip(table.column("source").to_pylist(), table.column("uri").to_pylist()))
    starts = [i for i in range(len(keys)) if i == 0 or keys[i] != keys[i - 1]]
    cuts = [0]
    for start, end in zip(starts, [*starts[1:], len(keys)]):
        if end - cuts[-1] > PART and start > cuts[-1]:  # this file would overfill the part: it starts the next
            cuts.append(start)
    return [table.slice(a, b - a) for a, b in zip(cuts, [*cuts[1:], len(keys)])]


def checked_params(module, given: dict | None) -> dict:
    """The method's defaults overlaid by `given`, each value of its default's type."""
    params = dict(module.DEFAULTS)
    for key, value in (given or {}).items():
        if key not in params:
            raise ProposeError(f"unknown parameter {key!r}; this method takes: {', '.join(sorted(params)) or 'none'}")
        kind = type(params[key])
        try:
            params[key] = json.loads(value) if isinstance(value, str) and kind is list else kind(value)
        except (TypeError, ValueError):
            raise ProposeError(f"parameter {key}={value!r}: expected {kind.__name__}") from None
    return params


def fingerprint(method: str, version: str, params: dict) -> str:
    text = json.dumps([method, version, params], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def part_key(fp: str, table: pa.Table) -> str:
    h = hashlib.sha256(fp.encode())
    for rid, fh, ph in zip(*(table.column(c).to_pylist() for c in ("id", "file_hash", "pixel_hash"))):
        h.update(f"{rid}\0{fh or ''}\0{ph or ''}\n".encode())
    return h.hexdigest()[:24]


@writer
def propose(
    loom: Path,
    method: str,
    *,
    where: str | None = None,
    params: dict | None = None,
    workers=None,
    quiet: bool = False,
) -> ProposeReport:
    import duckdb

    from ..view.render import render_sources

    started = time.perf_counter()
    loom = Path(loom)
    module = get_method(method)
    params = checked_params(module, params)
    if hasattr(module, "prepare"):  # an expert model's adapter: its weights are found and checked before any record
        params = module.prepare(params)
    fp = fingerprint(method, module.VERSION, params)
    con = catalog.connect(loom)
    query = "SELECT * FROM records" + (f" WHERE ({where})" if where else "") + " ORDER BY id"
    try:
        table = con.sql(query).to_arrow_table()
    except duckdb.Error as e:
        raise ProposeError(f"--where {where!r} is not a valid filter on the records view: {e}") from None
    folder = OutputFolder(layout.proposals_dir(loom))
    folder.remove_temporary()
    slices = parts_of(table, hasattr(module, "by_volume") and module.by_volume(params))
    rels = [f"parts/{method}/{part_key(fp, s)}.parquet" for s in slices]
    done = [folder.is_owned(r) and catalog.part_is_complete(folder.path / r) for r in rels]
    report = ProposeReport(method=method, version=module.VERSION, records=table.num_rows, parts=len(rels))
    report.parts_done_before = sum(done)
    todo = [i for i, d in enumerate(done) if not d]
    settings = {"method": method, "params": params, "fingerprint": fp, "sources": render_sources(catalog.read_manifest(loom))}
    with progress_bar(f"propose {method}", table.num_rows, quiet) as advance:
        advance(0, skipped=sum(slices[i].num_rows for i, d in enumerate(done) if d))
        if todo:
            with make_executor(workers, preload=[stage_module("propose.part")]) as executor:
                for k, result in executor.map("propose.part", (slices[i] for i in todo), settings):
                    folder.write_table(rels[todo[k]], result)  # written as it finishes: what a resumed run skips
                    advance(result.num_rows)
    manifest = read_manifest(loom)
    entry = manifest["methods"].get(method, {})
    kept = [r for r in entry.get("parts", []) if r not in rels]  # earlier runs' parts, outranked by this run's
    manifest["methods"][method] = {
        "version": module.VERSION,
        "params": params,
        "fingerprint": fp,
        "where": where or "",
        "parts": kept + rels,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    folder.write_bytes(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
    gather(loom)
    for part in (pq.read_table(folder.path / r) for r in rels):
        for row in part.select(["status", "reason", "message", "rois"]).to_pylist():
            setattr(report, row["status"], getattr(report, row["status"]) + 1)
            report.rois += len(row["rois"] or [])
            if row["reason"]:
                report.reasons[row["reason"]] = report.reasons.get(row["reason"], 0) + 1
                report.examples.setdefault(row["reason"], row["message"])
    report.seconds = time.perf_counter() - started
    report.out = str(folder.path / FILE)
    return report
