"""Counts over a catalog: totals, per source, per MAT triplet, per label, quarantine per reason."""

from __future__ import annotations

from pathlib import Path

from . import catalog


def catalog_stats(loom: Path) -> dict:
    con = catalog.connect(loom)
    manifest = catalog.read_manifest(loom)

    def pairs(sql: str) -> dict:
        return {str(k): int(v) for k, v in con.execute(sql).fetchall()}

    by_source = pairs("SELECT source, count(*) FROM records GROUP BY 1 ORDER BY 1")
    quarantine_by_source = pairs("SELECT source, count(*) FROM quarantine WHERE scope = 'input' GROUP BY 1")
    # rows a reader left out on purpose (a licence filter) count as filtered, not as problems
    filtered_by_source = pairs("SELECT source, count(*) FROM quarantine WHERE scope = 'filtered' GROUP BY 1")
    sources = {}
    for name, entry in sorted(manifest["sources"].items()):
        ok = sum(p["inputs_ok"] for p in entry["parts"])
        filtered = sum(entry.get("filtered", {}).values()) + filtered_by_source.get(name, 0)
        q = quarantine_by_source.get(name, 0)
        sources[name] = {
            "reader": entry["reader"],
            "records": by_source.get(name, 0),
            "inputs": ok + q + filtered,
            "inputs_ok": ok,
            "quarantined": q,
            "filtered": filtered,
            "error": entry.get("error"),
        }
    return {
        "records": con.execute("SELECT count(*) FROM records").fetchall()[0][0],
        "quarantined": con.execute("SELECT count(*) FROM quarantine WHERE scope = 'input'").fetchall()[0][0],
        "annotation_problems": con.execute("SELECT count(*) FROM quarantine WHERE scope = 'annotation'").fetchall()[0][0],
        "warnings": con.execute("SELECT count(*) FROM quarantine WHERE scope = 'warning'").fetchall()[0][0],
        "by_source": by_source,
        "by_mat": pairs("SELECT modality || '|' || anatomy || '|' || task, count(*) FROM records GROUP BY 1 ORDER BY 2 DESC, 1"),
        "by_label": pairs(
            "SELECT label, count(*) FROM (SELECT unnest(labels) AS label FROM records) GROUP BY 1 ORDER BY 2 DESC, 1"
        ),
        "by_split": pairs("SELECT coalesce(nullif(source_split, ''), '(none)'), count(*) FROM records GROUP BY 1 ORDER BY 1"),
        "quarantine_reasons": pairs(
            "SELECT reason, count(*) FROM quarantine WHERE scope <> 'filtered' GROUP BY 1 ORDER BY 2 DESC, 1"
        ),
        "filtered_reasons": pairs(
            "SELECT reason, count(*) FROM quarantine WHERE scope = 'filtered' GROUP BY 1 ORDER BY 2 DESC, 1"
        ),
        "sources": sources,
        "catalog": str(catalog.catalog_dir(loom)),
    }
