"""The loom's overview: counts per MAT triplet, source, split, licence, label and quarantine reason, shared
by the app's first page and the static report."""

from __future__ import annotations

from pathlib import Path

from .. import catalog, layout
from ..outputs import written_by_medloom
from .charts import bar_chart
from .index import LoomIndex

SECTIONS = (
    ("mat", "MAT triplet (modality / anatomical area / task)"),
    ("source", "Source"),
    ("split", "Split"),
    ("license", "Licence"),
    ("label", "Label"),
    ("concept", "Concept"),
    ("duplicate", "Duplicates"),
    ("quarantine", "Quarantine reason"),
)


def overview(index: LoomIndex) -> dict:
    """Totals, and per section its counts and its chart (SVG)."""
    manifest = catalog.read_manifest(index.loom)
    quarantine, _ = index.quarantine(limit=0)
    counts = {"mat": [(f"{m} / {a} / {t}", n) for m, a, t, n in index.mat_counts()], "quarantine": quarantine}
    for key in ("source", "split", "license", "label", "concept", "duplicate"):
        counts[key] = index.counts(key)
    notes = {
        "split": ""
        if written_by_medloom(layout.split_file(index.loom))
        else "No split assigned yet (`medloom split`): the sources' own splits, (none) where a source has none; "
        "exports put those in train."
    }
    sections = []
    for key, title in SECTIONS:
        pairs = counts[key]
        if key in ("concept",) and all(v == "" for v, _ in pairs):
            continue
        sections.append(
            {
                "key": key,
                "title": title,
                "counts": pairs,
                "note": notes.get(key, ""),
                "chart": bar_chart(pairs, title) if pairs else "",
            }
        )
    with_records = {v for v, n in counts["source"] if n}
    return {
        "loom": str(Path(index.loom).resolve()),
        "name": manifest.get("name") or Path(index.loom).resolve().name,
        "records": index.total,
        "quarantined": sum(n for _, n in quarantine),
        "sources": len(with_records),
        "empty_sources": sorted(set(manifest.get("sources", {})) - with_records),
        "updated": manifest.get("updated", ""),
        "sections": sections,
    }
