"""Duplicate groups and train/test leakage over the whole catalog, across sources.

Nothing is deleted: `dedup` writes `LOOM/curation/dedup.parquet` (every record in a group, whether it is
kept, and which record it duplicates) and `leakage --mark` writes `LOOM/curation/leakage.parquet`; exports
leave out the records marked there unless asked to keep them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from .. import catalog, layout
from ..locks import writer
from ..outputs import write_file, write_parquet, written_by_medloom
from ..vocab.splits import record_split
from .neighbours import components, duplicate_groups, first_of

CURATION = layout.CURATION
DEFAULT_NEAR = 6  # bits of 64: precision 1.0 on benchmarks/dedup.py, recall 1.0 for re-encoded and resized copies
SPLIT_RANK = {"test": 0, "val": 1}  # kept first; train and the rest: 2
DEDUP_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("group", pa.int64()),
        ("keep", pa.bool_()),
        ("duplicate_of", pa.string()),
        ("reason", pa.string()),
        ("decided_by", pa.string()),
        ("decided_at", pa.string()),
    ]
)  # a curator's choice
CHOICES = "dedup_choices.json"  # the curators' choices of which copy to keep, re-applied by every dedup run
LEAKAGE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("split", pa.string()),
        ("leaks_into", pa.string()),
        ("leaks_into_source", pa.string()),
        ("leaks_into_split", pa.string()),
        ("reason", pa.string()),
        ("marked", pa.bool_()),
    ]
)


@dataclass
class DedupReport:
    records: int = 0
    groups: int = 0
    in_groups: int = 0
    marked: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    by_source: dict[str, int] = field(default_factory=dict)  # records marked out per source
    near: int | None = DEFAULT_NEAR
    embed_threshold: float | None = None
    out: str = ""

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.by_reason.items())) or "none"
        return (
            f"dedup: {self.records} records, {self.groups} groups holding {self.in_groups}; {self.marked} marked "
            f"as duplicates ({reasons}); groups and report in {self.out}"
        )


def _catalog_rows(loom: Path) -> dict[str, list]:
    con = catalog.connect(loom)
    cur = con.execute("SELECT id, source, source_split, pixel_hash, phash, width, height FROM records ORDER BY id")
    cols = [d[0] for d in cur.description]
    data = cur.fetchall()
    return {c: [r[i] for r in data] for i, c in enumerate(cols)}


def _embedding_pairs(loom: Path, ids: list[str], threshold: float) -> np.ndarray:
    """Pairs of records whose cached embeddings have cosine similarity >= threshold (blocked all-pairs)."""
    from .embed import read_embeddings

    found_ids, vectors = read_embeddings(loom)
    if vectors is None:
        raise FileNotFoundError(f"{loom}: no embeddings; run `medloom embed {loom}` before --embed-threshold")
    index = {rid: i for i, rid in enumerate(ids)}
    where = np.array([index[r] for r in found_ids if r in index], np.int64)
    vectors = vectors[[k for k, r in enumerate(found_ids) if r in index]]
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    out = []
    for start in range(0, len(vectors), 1024):
        sims = vectors[start : start + 1024] @ vectors.T
        i, j = np.nonzero(sims >= threshold)
        i = i + start
        keep = i < j
        out.append(np.stack([where[i[keep]], where[j[keep]]], axis=1))
    return np.concatenate(out) if out else np.empty((0, 2), np.int64)


def find_groups(
    loom: Path, near: int | None = DEFAULT_NEAR, embed_threshold: float | None = None
) -> tuple[dict[str, list], np.ndarray]:
    rows = _catalog_rows(loom)
    n = len(rows["id"])
    phash = np.array([p or 0 for p in rows["phash"]], np.uint64)
    groups = duplicate_groups([p or f"none-{i}" for i, p in enumerate(rows["pixel_hash"])], phash, near)
    if embed_threshold is not None and n:
        pairs = _embedding_pairs(loom, rows["id"], embed_threshold)
        groups = components(n, [np.stack([np.arange(n), first_of(groups)], axis=1), pairs])
    return rows, groups


def relation(rows: dict[str, list], i: int, j: int, near: int | None) -> str:
    """Why two records of a group are duplicates: the same pixels, close hashes, or only through others
    (a chain of near copies, or embedding neighbours)."""
    if rows["pixel_hash"][i] == rows["pixel_hash"][j]:
        return "exact"
    bits = int(np.bitwise_count(np.uint64(rows["phash"][i] or 0) ^ np.uint64(rows["phash"][j] or 0)))
    return "near" if near is not None and bits <= near else "linked"


def keeper_order(rows: dict[str, list], i: int) -> tuple:
    """Kept first: the test copy (so training loses its copy, not the test set), then validation, then the
    larger image, then the smaller id."""
    return (
        SPLIT_RANK.get(record_split(rows["source_split"][i]), 2),
        -(rows["width"][i] or 0) * (rows["height"][i] or 0),
        rows["id"][i],
    )


@writer
def dedup(
    loom: Path, *, near: int | None = DEFAULT_NEAR, embed_threshold: float | None = None
) -> tuple[DedupReport, list[list[str]], list[str]]:
    """Group duplicates, keep one per group, write the marks; returns (report, groups, kept ids)."""
    loom = Path(loom)
    rows, groups = find_groups(loom, near, embed_threshold)
    report = DedupReport(records=len(rows["id"]), near=near, embed_threshold=embed_threshold)
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(int(g), []).append(i)
    out, listed, kept = [], [], []
    for idx in sorted(members.values(), key=lambda m: rows["id"][min(m)]):
        if len(idx) < 2:
            continue
        idx = sorted(idx, key=lambda i: keeper_order(rows, i))
        keep = idx[0]
        listed.append([rows["id"][i] for i in sorted(idx, key=lambda i: rows["id"][i])])
        kept.append(rows["id"][keep])
        for i in idx:
            out.append(
                {
                    "id": rows["id"][i],
                    "group": len(listed) - 1,
                    "keep": i == keep,
                    "duplicate_of": "" if i == keep else rows["id"][keep],
                    "reason": "kept" if i == keep else relation(rows, i, keep, near),
                }
            )
    out = apply_choices(out, read_choices(loom))
    source = dict(zip(rows["id"], rows["source"]))
    kept = [r["id"] for r in out if r["keep"]]
    for r in out:
        if not r["keep"]:
            report.marked += 1
            report.by_reason[r["reason"]] = report.by_reason.get(r["reason"], 0) + 1
            report.by_source[source[r["id"]]] = report.by_source.get(source[r["id"]], 0) + 1
    report.groups, report.in_groups = len(listed), sum(len(x) for x in listed)
    folder = loom / CURATION
    write_parquet(folder / "dedup.parquet", pa.Table.from_pylist(out, DEDUP_SCHEMA))
    report.out = str(folder)
    write_file(folder / "dedup.json", json.dumps({"report": report.as_dict(), "groups": listed, "keep": kept}, indent=1).encode())
    return report, listed, kept


@dataclass
class LeakageReport:
    evaluation_records: int = 0  # test and validation records
    leaking: int = 0  # of those, with a copy in training
    training_copies: int = 0
    by_source_pair: dict[str, int] = field(default_factory=dict)  # "test source/split <- train source/split"
    marked: int = 0
    pairs: list[dict] = field(default_factory=list)
    out: str = ""

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self, marking: bool = False) -> str:
        pairs = "; ".join(f"{k}: {v}" for k, v in sorted(self.by_source_pair.items())) or "no leaks"
        return (
            f"leakage: {self.leaking} of {self.evaluation_records} test/validation records have "
            f"{self.training_copies} copies in training ({pairs})"
            + (f"; {self.marked} training copies marked" if marking else "")
        )


def read_choices(loom: Path) -> list[dict]:
    path = Path(loom) / CURATION / CHOICES
    return json.loads(path.read_text(encoding="utf-8")) if written_by_medloom(path) else []


def apply_choices(rows: list[dict], choices: list[dict]) -> list[dict]:
    """The dedup marks with the curators' choices applied, later choices last: in the group that now holds
    the chosen record, it is kept and the others are marked as its duplicates (reason `curator`). A choice
    whose record is in no group any more is skipped."""
    by_id = {r["id"]: r for r in rows}
    members: dict[int, list[dict]] = {}
    for r in rows:
        members.setdefault(r["group"], []).append(r)
    for choice in choices:
        chosen = by_id.get(choice["keep"])
        if chosen is None:
            continue
        for r in members[chosen["group"]]:
            was_kept = r["keep"]
            r["keep"] = r["id"] == chosen["id"]
            r["duplicate_of"] = "" if r["keep"] else chosen["id"]
            if r["keep"]:
                r["reason"] = "kept"
            elif was_kept:
                r["reason"] = "curator"
            r["decided_by"], r["decided_at"] = choice["by"], choice["at"]
    return rows


@writer
def leakage(loom: Path, *, near: int | None = DEFAULT_NEAR, mark: bool = False) -> LeakageReport:
    """Every test or validation record with an exact or near copy in a training split, per source pair."""
    loom = Path(loom)
    rows, groups = find_groups(loom, near)
    splits = [record_split(s) for s in rows["source_split"]]
    evaluation = [i for i, s in enumerate(splits) if SPLIT_RANK.get(s, 2) < 2]
    report = LeakageReport(evaluation_records=len(evaluation))
    by_group: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(int(g), []).append(i)
    out, leaking, copies = [], set(), set()
    for e in evaluation:
        for t in by_group[int(groups[e])]:
            if SPLIT_RANK.get(splits[t], 2) < 2:
                continue
            reason = relation(rows, t, e, near)
            key = f"{rows['source'][e]}/{splits[e]} <- {rows['source'][t]}/{splits[t]}"
            report.by_source_pair[key] = report.by_source_pair.get(key, 0) + 1
            leaking.add(e)
            copies.add(t)
            out.append(
                {
                    "id": rows["id"][t],
                    "source": rows["source"][t],
                    "split": splits[t],
                    "leaks_into": rows["id"][e],
                    "leaks_into_source": rows["source"][e],
                    "leaks_into_split": splits[e],
                    "reason": reason,
                    "marked": mark,
                }
            )
    report.leaking, report.training_copies = len(leaking), len(copies)
    report.pairs = [{k: r[k] for k in ("id", "leaks_into", "reason")} for r in out[:1000]]
    folder = loom / CURATION
    report.out = str(folder)
    if mark:
        write_parquet(folder / "leakage.parquet", pa.Table.from_pylist(out, LEAKAGE_SCHEMA))
        report.marked = len(copies)
    write_file(folder / "leakage.json", json.dumps(report.as_dict(), indent=1).encode())
    return report
