"""Accepted ROI proposals beside a record's own ROIs: how every step that reads ROIs (annotate, the exports)
sees `medloom propose`'s output. A record's own ROIs stay in `rois`; the accepted proposals come as the column
`proposal_rois`, and `marked_rois` gives both as one list, each ROI with `roi_source` ("dataset" or "proposal")
and, for a proposal, its method, version and score. Proposals not accepted are never read here."""

from __future__ import annotations

ACCEPTED = (
    "SELECT id, flatten(list(rois ORDER BY method)) AS proposal_rois FROM proposals "
    "WHERE accepted AND status = 'proposed' GROUP BY id"
)


def proposal_join(con, alias: str = "prop") -> tuple[str, str]:
    """(column, join) that add `proposal_rois` to a query over `records` (empty strings when the loom has no
    proposals view)."""
    if "proposals" not in {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}:
        return "", ""
    return f", {alias}.proposal_rois AS proposal_rois", f" LEFT JOIN ({ACCEPTED}) AS {alias} USING (id)"


def marked_rois(row: dict) -> list[dict]:
    """The record's own ROIs (`roi_source: dataset`) then its accepted proposals (`roi_source: proposal`)."""
    own = [{**r, "roi_source": "dataset", "method": "", "version": "", "score": -1.0} for r in row.get("rois") or []]
    return own + [{**r, "roi_source": "proposal"} for r in row.get("proposal_rois") or []]
