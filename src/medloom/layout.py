"""Where everything lives inside a loom, said once: steps, readers, the web app and the CLI ask here instead
of spelling folder names.

    LOOM/recipe.yaml
    LOOM/catalog/        parts, quarantine, manifest.json (ingest)
    LOOM/annotations/    annotations.parquet, manifest.json, reviews.json (annotate, serve's audit)
    LOOM/proposals/      proposals.parquet, manifest.json, decisions.json, parts/METHOD/ (propose)
    LOOM/curation/       dedup, leakage, clusters, concepts, subsets, labels (curate, serve)
    LOOM/subsets/        NAME.parquet, NAME.json (subset)
    LOOM/splits/         split.parquet, split.json (split)
    LOOM/embeddings/     one folder per model, and text/ (embed, train)
    LOOM/experiments/    cg plan's folders (default)
    LOOM/exports/        FORMAT/ (default export folders), staged/ (exports on their way to a URL)
    LOOM/cache/          llm/ (annotate's answers), thumbs/ (serve)
    LOOM/reports/
"""

from __future__ import annotations

from pathlib import Path

CATALOG = "catalog"
ANNOTATIONS = "annotations"
CURATION = "curation"
PROPOSALS = "proposals"
SUBSETS = "subsets"
SPLITS = "splits"
EMBEDDINGS = "embeddings"
EXPERIMENTS = "experiments"
EXPORTS = "exports"
CACHE = "cache"
REPORTS = "reports"


def catalog_dir(loom: Path) -> Path:
    return Path(loom) / CATALOG


def annotations_dir(loom: Path) -> Path:
    return Path(loom) / ANNOTATIONS


def annotations_file(loom: Path) -> Path:
    return annotations_dir(loom) / "annotations.parquet"


def proposals_dir(loom: Path) -> Path:
    return Path(loom) / PROPOSALS


def curation_dir(loom: Path) -> Path:
    return Path(loom) / CURATION


def curation_file(loom: Path, name: str) -> Path:
    """`dedup.parquet`, `leakage.parquet`, `clusters.parquet`, `concepts.parquet`, ..."""
    return curation_dir(loom) / name


def subsets_dir(loom: Path) -> Path:
    return Path(loom) / SUBSETS


def splits_dir(loom: Path) -> Path:
    return Path(loom) / SPLITS


def split_file(loom: Path) -> Path:
    """The split `medloom split` assigned: id -> train | val | test."""
    return splits_dir(loom) / "split.parquet"


def embeddings_dir(loom: Path) -> Path:
    return Path(loom) / EMBEDDINGS


def experiments_dir(loom: Path) -> Path:
    return Path(loom) / EXPERIMENTS


def export_dir(loom: Path, name: str) -> Path:
    """The default folder of an export format (`exports/webdataset`), or `exports/staged/NAME`."""
    return Path(loom) / EXPORTS / name


def cache_dir(loom: Path, what: str) -> Path:
    return Path(loom) / CACHE / what


# the DuckDB views that later steps add to `records` and `quarantine` (catalog.connect)
VIEWS = {
    "annotations": (ANNOTATIONS, "annotations.parquet"),
    "proposals": (PROPOSALS, "proposals.parquet"),
    "dedup": (CURATION, "dedup.parquet"),
    "leakage": (CURATION, "leakage.parquet"),
    "clusters": (CURATION, "clusters.parquet"),
    "concepts": (CURATION, "concepts.parquet"),
}


def view_file(loom: Path, view: str) -> Path:
    folder, name = VIEWS[view]
    return Path(loom) / folder / name
