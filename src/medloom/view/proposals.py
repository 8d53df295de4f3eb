"""Accepted ROI proposals beside a record's own ROIs: how every step that reads ROIs (annotate, the exports, the
browser, `medloom.load`) sees `medloom propose`'s output. A record's own ROIs stay in `rois`; the accepted
proposals come as the column `proposal_rois`, and `marked_rois` gives both as one list, each ROI with
`roi_source` ("dataset" or "proposal") and, for a proposal, its method, version and score. Proposals not accepted
are read only by the browser (`record_proposals`), which shows them apart, and never by an export."""

from __future__ import annotations

ACCEPTED = (
    "SELECT id, flatten(list(rois ORDER BY method)) AS proposal_rois FROM proposals "
    "WHERE accepted AND status = 'proposed' GROUP BY id"
)


def has_proposals(con) -> bool:
    return "proposals" in {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}


def proposal_join(con, alias: str = "prop") -> tuple[str, str]:
    """(column, join) that add `proposal_rois` to a query over `records` (empty strings when the loom has no
    proposals view)."""
    if not has_proposals(con):
        return "", ""
    return f", {alias}.proposal_rois AS proposal_rois", f" LEFT JOIN ({ACCEPTED}) AS {alias} USING (id)"


def marked_rois(row: dict) -> list[dict]:
    """The record's own ROIs (`roi_source: dataset`) then its accepted proposals (`roi_source: proposal`)."""
    own = [{**r, "roi_source": "dataset", "method": "", "version": "", "score": -1.0} for r in row.get("rois") or []]
    return own + [{**r, "roi_source": "proposal"} for r in row.get("proposal_rois") or []]


def exported_rois(row: dict, *, rle: bool = True) -> list[dict]:
    """`marked_rois` as an export writes them (plain JSON types; the mask's RLE only with `rle`): what every
    format that has a place for ROIs carries, so that a reader can always tell a proposal from the dataset's."""
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


def roi_counts(con, view: str = "selection") -> list[tuple[str, int, int, str]]:
    """Per source of `view` (a query over records joined by `proposal_join`): (source, the dataset's own ROIs,
    accepted proposals, the proposing methods with versions): the ROI counts an export's card states."""
    columns = {r[0] for r in con.execute(f"DESCRIBE {view}").fetchall()}
    proposals = "coalesce(len(proposal_rois), 0)" if "proposal_rois" in columns else "0"
    methods = (
        "string_agg(DISTINCT r.method || ' ' || r.version, ', ' ORDER BY r.method || ' ' || r.version)"
        if "proposal_rois" in columns
        else "''"
    )
    counts = con.execute(
        f"SELECT source, sum(coalesce(len(rois), 0)), sum({proposals}) FROM {view} GROUP BY 1 ORDER BY 1"
    ).fetchall()
    named = dict(
        con.execute(
            f"SELECT source, {methods} FROM (SELECT source, unnest(proposal_rois) AS r FROM {view}) GROUP BY 1"
        ).fetchall()
        if "proposal_rois" in columns
        else []
    )
    return [(s, int(d or 0), int(p or 0), named.get(s) or "") for s, d, p in counts]


def roi_summary(con, *, carried: bool, view: str = "selection") -> dict:
    """What an export says of its ROIs (in its manifest or card): the dataset's own, the accepted proposals it
    carries marked `roi_source: proposal`, or, for a format with no place for ROIs, the proposals it left out."""
    counts = roi_counts(con, view)
    proposals = sum(p for _, _, p, _ in counts)
    methods = sorted({m.strip() for *_, named in counts for m in named.split(",") if m.strip()})
    return {
        "dataset": sum(d for _, d, _, _ in counts),
        "proposals": proposals if carried else 0,
        "proposals_left_out": 0 if carried else proposals,
        "methods": methods,
        "note": (
            "accepted proposals carried beside the dataset's ROIs, each marked roi_source: proposal"
            if carried
            else "this format has no place for ROIs: accepted proposals left out (and the dataset's ROIs with them)"
        )
        if proposals
        else "no accepted proposals",
    }


ROI_CHOICES = ("all", "dataset", "proposal")


def chosen_rois(rois: list[dict] | None, which: str = "all") -> list[dict]:
    """An exported sample's ROIs, all or those of one `roi_source` (what `medloom.load(rois=...)` keeps); an ROI
    without `roi_source` (an export from before proposals) is the dataset's own."""
    marked = [r if r.get("roi_source") else {**r, "roi_source": "dataset"} for r in rois or []]
    return marked if which == "all" else [r for r in marked if r["roi_source"] == which]
