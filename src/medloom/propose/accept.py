"""Accepting proposals: a person's decision, recorded and reversible. `decisions.json` is an append-only log of
accept and unaccept entries (method, which proposals by record id and fingerprint, the filter used, who, when);
the `accepted` column of the `proposals` view is that log replayed. An acceptance names the proposal's
fingerprint (method, version, parameters): proposals remade with other parameters are not accepted until a
person accepts them again. Accepted proposals are read beside a record's own ROIs (view/proposals.py), each
marked `roi_source: proposal`; the catalog's records are never changed."""

from __future__ import annotations

import getpass
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from .. import catalog, layout
from ..errors import ProposeError
from ..locks import writer
from ..outputs import OutputFolder
from ..records import PROPOSAL_SCHEMA
from .store import FILE, read_parts

DECISIONS = "decisions.json"


def read_decisions(loom: Path) -> list[dict]:
    path = layout.proposals_dir(loom) / DECISIONS
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []


def accepted_state(decisions: list[dict]) -> dict[tuple[str, str, str], tuple[str, str]]:
    """(record id, method, fingerprint) -> (by, at) for every proposal accepted now."""
    state: dict[tuple[str, str, str], tuple[str, str]] = {}
    for d in decisions:
        for rid, fp in d["proposals"]:
            key = (rid, d["method"], fp)
            if d["action"] == "accept":
                state[key] = (d["by"], d["at"])
            else:
                state.pop(key, None)
    return state


def gather(loom: Path) -> dict:
    """Write the `proposals` view: every method's latest rows with their acceptance replayed."""
    table = read_parts(loom)
    state = accepted_state(read_decisions(loom))
    rows = table.to_pylist()
    for row in rows:
        by_at = state.get((row["id"], row["method"], row["fingerprint"])) if row["status"] == "proposed" else None
        row["accepted"] = by_at is not None
        row["accepted_by"], row["accepted_at"] = by_at or ("", "")
    return OutputFolder(layout.proposals_dir(loom)).write_table(FILE, pa.Table.from_pylist(rows, PROPOSAL_SCHEMA))


@dataclass
class AcceptReport:
    action: str
    method: str
    changed: int
    accepted_now: int
    by: str

    def as_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        verb = "accepted" if self.action == "accept" else "unaccepted"
        return [
            f"{verb} {self.changed} {self.method} proposal(s) (by {self.by}); {self.accepted_now} accepted in all; "
            f"undo with --{'unaccept' if self.action == 'accept' else 'accept'} and the same filter"
        ]

    def warnings(self) -> list[tuple[str, str]]:
        return []


@writer
def decide(loom: Path, method: str, action: str, *, where: str | None = None, by: str | None = None) -> AcceptReport:
    """Accept (or take back) the method's proposals for the records matching `where` (all when None)."""
    import duckdb

    loom = Path(loom)
    con = catalog.connect(loom)
    if "proposals" not in {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}:
        raise ProposeError(f"{loom}: no proposals yet; run `medloom propose {loom} --method {method}` first")
    want = action == "accept"
    sql = "SELECT id, fingerprint FROM proposals WHERE method = ? AND status = 'proposed' AND accepted = ?"
    if where:
        sql += f" AND id IN (SELECT id FROM records WHERE ({where}))"
    try:
        chosen = con.execute(sql + " ORDER BY id", [method, not want]).fetchall()
    except duckdb.Error as e:
        raise ProposeError(f"--where {where!r} is not a valid filter on the records view: {e}") from None
    by = by or user_name()
    if chosen:
        decisions = read_decisions(loom)
        decisions.append(
            {
                "action": action,
                "method": method,
                "where": where or "",
                "by": by,
                "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "proposals": [list(c) for c in chosen],
            }
        )
        OutputFolder(layout.proposals_dir(loom)).write_bytes(DECISIONS, json.dumps(decisions, indent=1).encode())
        gather(loom)
    con = catalog.connect(loom)
    accepted = con.execute("SELECT count(*) FROM proposals WHERE method = ? AND accepted", [method]).fetchall()[0][0]
    return AcceptReport(action, method, len(chosen), accepted, by)


def user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in this environment
        return "unknown"
