"""ROI proposals beside a record's own ROIs: how every step that reads ROIs (annotate, the exports, the browser,
`medloom.load`) sees `medloom propose`'s output. A record's own ROIs stay in `rois`; the proposals a step takes
come as the column `proposal_rois`, and `marked_rois` gives both as one list, each ROI with `roi_source`
("dataset" or "proposal") and `accepted`, and for a proposal its method, version and score.

Which proposals a step takes is one choice, made here (`PROPOSAL_CHOICES`): `accepted` (what annotate and the
exports take by default), `all` (an export for review elsewhere: those not accepted too, marked `accepted:
false`) or `none` (the dataset's own ROIs only). The browser reads every proposal apart (`record_proposals`)."""

from __future__ import annotations

PROPOSAL_CHOICES = ("accepted", "all", "none")
# a record's state in the browser grid's facet (`state_join`)
PROPOSAL_STATES = ("accepted", "not accepted", "none")


def check_choice(which: str, option: str = "--proposals") -> str:
    """`which` if it is one of PROPOSAL_CHOICES; else an error naming them."""
    if which not in PROPOSAL_CHOICES:
        raise ValueError(
            f"{option} {which!r}: choose accepted (proposals a person accepted: the default), all (those not yet "
            "accepted too, marked accepted: false) or none (the dataset's own ROIs only)"
        )
    return which


def chosen_sql(which: str = "accepted") -> str:
    """Per record id, its proposals' ROIs under the choice, each with the proposal's `accepted`."""
    only = "accepted AND " if check_choice(which) == "accepted" else ""
    return (
        "SELECT id, flatten(list([struct_insert(r, accepted := accepted) FOR r IN rois] ORDER BY method)) "
        f"AS proposal_rois FROM proposals WHERE {only}status = 'proposed' GROUP BY id"
    )


def proposal_settings(loom, which: str) -> dict:
    """What an export's plan holds of its proposals: the choice and, when it carries any, a hash of the proposals
    view's file, so that a proposal accepted (or remade) since the last run makes a new export, not "up to date"."""
    from ..layout import view_file
    from ..outputs import sha256_file

    path = view_file(loom, "proposals")
    return {"proposals": check_choice(which)} | (
        {"proposals_file": sha256_file(path)} if which != "none" and path.is_file() else {}
    )


def has_proposals(con) -> bool:
    return "proposals" in {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}


def proposal_join(con, alias: str = "prop", which: str = "accepted") -> tuple[str, str]:
    """(column, join) that add `proposal_rois` (the proposals `which` chooses) to a query over `records`; empty
    strings when the loom has no proposals view or the choice is `none`."""
    if check_choice(which) == "none" or not has_proposals(con):
        return "", ""
    return f", {alias}.proposal_rois AS proposal_rois", f" LEFT JOIN ({chosen_sql(which)}) AS {alias} USING (id)"


def state_join(con, alias: str = "pstate") -> tuple[str, str]:
    """(column, join) that add `proposals` to a query over `records`: `accepted` (at least one accepted proposal
    with ROIs), `not accepted` (proposed ROIs, none accepted) or `none` (never proposed, or refused or failed
    only): the browser grid's facet, one pass over the proposals view."""
    if not has_proposals(con):
        return ", 'none' AS proposals", ""
    return (
        f", coalesce({alias}.state, 'none') AS proposals",
        f" LEFT JOIN (SELECT id, CASE WHEN bool_or(accepted) THEN 'accepted' ELSE 'not accepted' END AS state "
        f"FROM proposals WHERE status = 'proposed' AND len(rois) > 0 GROUP BY id) AS {alias} USING (id)",
    )


def marked_rois(row: dict) -> list[dict]:
    """The record's own ROIs (`roi_source: dataset`) then the proposals chosen (`roi_source: proposal`), each with
    `accepted`: false only for a proposal no person accepted (the dataset's own have nothing to accept)."""
    own = [
        {**r, "roi_source": "dataset", "method": "", "version": "", "score": -1.0, "accepted": True}
        for r in row.get("rois") or []
    ]
    return own + [
        {**r, "roi_source": "proposal", "accepted": bool(r.get("accepted", True))} for r in row.get("proposal_rois") or []
    ]


def exported_rois(row: dict, *, rle: bool = True) -> list[dict]:
    """`marked_rois` as an export writes them (plain JSON types; the mask's RLE only with `rle`): what every
    format that has a place for ROIs carries, so that a reader can always tell a proposal from the dataset's, and
    one waiting for a person (`accepted: false`, only under `--proposals all`) from one accepted."""
    out = []
    for r in marked_rois(row):
        roi = {
            "label": r["label"] or "",
            "bbox": [float(v) for v in r["bbox"] or []],
            "area": float(r.get("area") or 0.0),
            **({"rle": list(r.get("rle") or [])} if rle else {}),
            "roi_source": r["roi_source"],
            "method": r.get("method") or "",
            "version": r.get("version") or "",
            "score": float(r["score"] if r.get("score") is not None else -1.0),
            "accepted": r["accepted"],
        }
        out.append(roi)
    return out


def record_proposals(con, record_id: str) -> list[dict]:
    """Every ROI a method proposed for one record, accepted or not, each with its method, version, score and
    acceptance (who, when): what the browser draws apart from the dataset's ROIs."""
    if not has_proposals(con):
        return []
    found = con.execute(
        "SELECT method, accepted, accepted_by, accepted_at, rois FROM proposals WHERE id = ? AND status = 'proposed' "
        "ORDER BY method",
        [record_id],
    ).fetchall()
    return [
        {**r, "roi_source": "proposal", "accepted": bool(accepted), "accepted_by": by or "", "accepted_at": at or ""}
        for _, accepted, by, at, rois in found
        for r in rois or []
    ]


def roi_counts(con, view: str = "selection") -> list[tuple[str, int, int, int, str]]:
    """Per source of `view` (a query over records joined by `proposal_join`): (source, the dataset's own ROIs,
    accepted proposals, proposals not accepted, the proposing methods with versions): what an export's card
    states of the ROIs it carries."""
    columns = {r[0] for r in con.execute(f"DESCRIBE {view}").fetchall()}
    if "proposal_rois" not in columns:
        found = con.execute(f"SELECT source, sum(coalesce(len(rois), 0)) FROM {view} GROUP BY 1 ORDER BY 1").fetchall()
        return [(s, int(d or 0), 0, 0, "") for s, d in found]
    counts = con.execute(
        f"SELECT source, sum(coalesce(len(rois), 0)), "
        "sum(coalesce(len([r FOR r IN proposal_rois IF r.accepted]), 0)), "
        f"sum(coalesce(len([r FOR r IN proposal_rois IF NOT r.accepted]), 0)) FROM {view} GROUP BY 1 ORDER BY 1"
    ).fetchall()
    named = dict(
        con.execute(
            "SELECT source, string_agg(DISTINCT r.method || ' ' || r.version, ', ' ORDER BY r.method || ' ' || r.version) "
            f"FROM (SELECT source, unnest(proposal_rois) AS r FROM {view}) GROUP BY 1"
        ).fetchall()
    )
    return [(s, int(d or 0), int(a or 0), int(n or 0), named.get(s) or "") for s, d, a, n in counts]


def _available(con, view: str) -> dict[bool, int]:
    """Proposed ROIs of the records of `view`, accepted or not, whatever the choice: what was left out is these
    less what was written."""
    if not has_proposals(con):
        return {True: 0, False: 0}
    found = dict(
        con.execute(
            f"SELECT accepted, sum(len(rois)) FROM proposals WHERE status = 'proposed' AND id IN (SELECT id FROM {view}) "
            "GROUP BY 1"
        ).fetchall()
    )
    return {True: int(found.get(True) or 0), False: int(found.get(False) or 0)}


def roi_summary(con, *, carried: bool, which: str = "accepted", view: str = "selection") -> dict:
    """What an export says of its ROIs (in its manifest or card): the `--proposals` choice, the dataset's own
    ROIs, the proposals it carries marked `roi_source: proposal` (accepted and not accepted, written or left out),
    or, for a format with no place for ROIs, the proposals it left out. `proposals_left_out` counts the accepted
    ones left out (those not accepted are left out unless asked for, and counted under `not_accepted`)."""
    counts = roi_counts(con, view)
    taken = {True: sum(c[2] for c in counts), False: sum(c[3] for c in counts)}
    written = taken if carried else {True: 0, False: 0}
    available = _available(con, view)
    methods = sorted({m.strip() for *_, named in counts for m in named.split(",") if m.strip()})
    if written[True] or written[False]:
        note = (
            f"{written[True]} accepted proposal(s)"
            + (f" and {written[False]} not accepted (accepted: false)" if written[False] else "")
            + " carried beside the dataset's ROIs, each marked roi_source: proposal"
        )
    elif taken[True] or taken[False]:
        note = (
            "this format has no place for ROIs: "
            + ("accepted proposals left out" if not taken[False] else "proposals left out, accepted and not")
            + " (and the dataset's ROIs with them)"
        )
    elif which == "none" and (available[True] or available[False]):
        note = "--proposals none: the dataset's own ROIs only, every proposal left out"
    else:
        note = "no accepted proposals" if which == "accepted" else "no proposals"
    return {
        "choice": which,
        "dataset": sum(c[1] for c in counts),
        "proposals": written[True] + written[False],
        "proposals_left_out": available[True] - written[True],
        "accepted": {"written": written[True], "left_out": available[True] - written[True]},
        "not_accepted": {"written": written[False], "left_out": available[False] - written[False]},
        "methods": methods,
        "note": note,
    }


ROI_CHOICES = ("all", "dataset", "proposal")


def chosen_rois(rois: list[dict] | None, which: str = "all") -> list[dict]:
    """An exported sample's ROIs, all or those of one `roi_source` (what `medloom.load(rois=...)` keeps); an ROI
    without `roi_source` (an export from before proposals) is the dataset's own."""
    marked = [r if r.get("roi_source") else {**r, "roi_source": "dataset"} for r in rois or []]
    return marked if which == "all" else [r for r in marked if r["roi_source"] == which]
