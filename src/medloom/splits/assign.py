"""Group-aware train/val/test splits: every record of a patient (or study) lands on the same side.

Groups are shuffled by a hash of (seed, group), then filled into test and validation until each holds its
share of records, the rest going to training; with `stratify`, this happens within each label so every
split sees every label. The result (`LOOM/splits/split.parquet`, view `assigned_split`) is what exports use
from then on. It is checked against the duplicate groups: a duplicate group on two sides is a leak and is
reported.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from .. import catalog, layout
from ..errors import SplitError
from ..locks import writer
from ..outputs import write_file, write_parquet
from ..vocab.splits import record_split

SPLITS = layout.SPLITS
BY = ("patient", "study", "record", "source")


@dataclass
class SplitReport:
    by: str
    records: int = 0
    groups: int = 0
    sizes: dict[str, int] = field(default_factory=dict)
    groups_per_split: dict[str, int] = field(default_factory=dict)
    groups_on_two_sides: int = 0  # with --keep-source: patients the sources put on two sides
    duplicate_leaks: int = 0  # duplicate groups found on two sides
    leak_examples: list[list[str]] = field(default_factory=list)
    per_label: dict[str, dict[str, int]] = field(default_factory=dict)
    seed: int = 0
    out: str = ""

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        sizes = ", ".join(f"{k} {v}" for k, v in sorted(self.sizes.items()))
        return (
            f"split by {self.by}: {self.records} records in {self.groups} groups: {sizes}; "
            f"{self.groups_on_two_sides} {self.by}s on two sides, {self.duplicate_leaks} duplicate groups on two "
            f"sides; {self.out}"
        )


def _order(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def assign_groups(groups: dict[str, int], val: float, test: float, seed: int) -> dict[str, str]:
    """group -> split, filling test then validation to their share of records (groups in seeded order)."""
    total = sum(groups.values())
    out, filled = {}, {"test": 0, "val": 0}
    for g in sorted(groups, key=lambda g: _order(seed, g)):
        for split, share in (("test", test), ("val", val)):
            if filled[split] + groups[g] / 2 <= share * total and filled[split] < share * total:
                out[g] = split
                filled[split] += groups[g]
                break
        else:
            out[g] = "train"
    return out


def group_key(by: str, row: dict) -> str:
    """The group a record belongs to; records without a patient (or study) id are their own group."""
    if by == "record":
        return row["id"]
    if by == "source":
        return row["source"]
    value = row["patient_id"] if by == "patient" else row["study_id"]
    return f"{row['source']}:{value}" if value else f"record:{row['id']}"


@writer
def make_split(
    loom: Path,
    *,
    by: str = "patient",
    val: float = 0.1,
    test: float = 0.1,
    seed: int = 0,
    stratify: str | None = None,
    keep_source: bool = False,
) -> SplitReport:
    if by not in BY:
        raise SplitError(f"--by {by!r}: choose one of {', '.join(BY)}")
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise SplitError(f"--val {val} and --test {test}: each in [0, 1) and together below 1")
    if stratify not in (None, "label"):
        raise SplitError(f"--stratify {stratify!r}: only `label` is supported")
    loom = Path(loom)
    con = catalog.connect(loom)
    cur = con.execute("SELECT id, source, source_split, patient_id, study_id, labels FROM records ORDER BY id")
    cols = [d[0] for d in cur.description]
    rows = [dict(zip(cols, r)) for r in cur.fetchall()]
    report = SplitReport(by=by, records=len(rows), seed=seed)
    keys = [group_key(by, r) for r in rows]
    split_of: dict[str, str] = {}
    if keep_source:
        for r in rows:
            split_of[r["id"]] = record_split(r["source_split"])
        sides: dict[str, set] = {}
        for r, k in zip(rows, keys):
            sides.setdefault(k, set()).add(split_of[r["id"]])
        report.groups_on_two_sides = sum(len(s) > 1 for s in sides.values()) if by in ("patient", "study") else 0
    else:
        sizes = Counter(keys)
        votes: dict[str, Counter] = {}
        for r, k in zip(rows, keys):  # a group's stratum: the first label most of its records carry
            votes.setdefault(k, Counter())[min(r["labels"]) if stratify and r["labels"] else ""] += 1
        strata: dict[str, dict[str, int]] = {}
        for k, n in sizes.items():
            stratum = sorted(votes[k].items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
            strata.setdefault(stratum, {})[k] = n
        group_split = {}
        for stratum in sorted(strata):
            group_split.update(assign_groups(strata[stratum], val, test, seed))
        split_of = {r["id"]: group_split[k] for r, k in zip(rows, keys)}
    report.groups = len(set(keys))
    for r in rows:
        s = split_of[r["id"]]
        report.sizes[s] = report.sizes.get(s, 0) + 1
        for label in r["labels"] or ["(none)"]:
            report.per_label.setdefault(label, {}).setdefault(s, 0)
            report.per_label[label][s] += 1
    group_sides = {}
    for r, k in zip(rows, keys):
        group_sides.setdefault(split_of[r["id"]], set()).add(k)
    report.groups_per_split = {s: len(g) for s, g in sorted(group_sides.items())}
    report.duplicate_leaks, report.leak_examples = duplicate_leaks(loom, split_of)
    folder = loom / SPLITS
    write_parquet(folder / "split.parquet", pa.table({"id": [r["id"] for r in rows], "split": [split_of[r["id"]] for r in rows]}))
    report.out = str(folder)
    write_file(folder / "split.json", json.dumps(report.as_dict(), indent=1).encode())
    return report


def duplicate_leaks(loom: Path, split_of: dict[str, str]) -> tuple[int, list[list[str]]]:
    """Duplicate groups (exact or near copies) whose records sit on two sides of the split."""
    from ..curate.dedup import DEFAULT_NEAR, find_groups

    rows, groups = find_groups(loom, DEFAULT_NEAR)
    members: dict[int, list[str]] = {}
    for rid, g in zip(rows["id"], np.asarray(groups)):
        members.setdefault(int(g), []).append(rid)
    leaks = [sorted(ids) for ids in members.values() if len({split_of.get(i) for i in ids}) > 1]
    return len(leaks), sorted(leaks)[:20]
