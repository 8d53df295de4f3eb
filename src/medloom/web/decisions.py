"""What a curator decides in the browser, written where the command-line steps read it.

- Cluster labels go to `LOOM/curation/labels/ANNOTATOR.yaml`, the label files `medloom concepts --apply` reads.
- A duplicate group's choice goes to `LOOM/curation/dedup_choices.json` and into the dedup marks.
- A verdict on a generated text (caption, ROI description, question) goes to `LOOM/annotations/reviews.json`
  and into the annotations; undoing one restores the text and marks the verdict undone there.
- Applying the labels merges the label files with the votes the last apply propagated (`concepts.json`).

Each write holds the loom's lock, as every writer does; while another writer (an ingest, say) holds it, the
app answers that the loom is busy.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from .. import layout
from ..locks import writer
from ..outputs import ForeignFileError, write_file, write_parquet, written_by_medloom
from .query import BadRequest, NotFound

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
LABELS = Path(layout.CURATION) / "labels"
MAX_TEXT = 4000


def check_name(name: str, what: str = "annotator") -> str:
    name = (name or "").strip()
    if not NAME.match(name):
        raise BadRequest(f"{what} name {name!r}: use 1-40 letters, digits, '.', '_' or '-' (starting with a letter or digit)")
    return name


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def label_files(loom: Path) -> list[Path]:
    folder = Path(loom) / LABELS
    return sorted(p for p in folder.glob("*.yaml") if written_by_medloom(p)) if folder.is_dir() else []


@writer
def label_cluster(
    loom: Path, annotator: str, cluster: int, panel: str, global_concept: str, local: list[str], taxonomy_path: Path | None = None
) -> Path:
    """One annotator's label for one cluster, into their label file (other clusters' labels kept)."""
    from ..curate.concepts import ConceptError, load_taxonomy, parse_labels

    annotator = check_name(annotator)
    taxonomy = load_taxonomy(taxonomy_path)
    path = Path(loom) / LABELS / f"{annotator}.yaml"
    try:
        current = yaml.safe_load(path.read_text(encoding="utf-8")) if written_by_medloom(path) else None
    except yaml.YAMLError:
        current = "unreadable"
    if current is not None and not (isinstance(current, dict) and isinstance(current.get("clusters", {}), dict)):
        raise ForeignFileError(
            f"{path} is not a cluster label file medloom wrote; it will not be overwritten: "
            "move it away or use another annotator name"
        )
    clusters = dict((current or {}).get("clusters") or {})
    clusters[int(cluster)] = {"panel": panel or "", "global": global_concept, "local": sorted(set(local))}
    data = {"annotator": annotator, "updated": now(), "clusters": dict(sorted(clusters.items()))}
    try:  # the same check `medloom concepts` makes, before anything is written
        parse_labels(data, taxonomy, path)
    except ConceptError as e:
        raise BadRequest(str(e)) from None
    return write_file(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode())


class Labels:
    """Every annotator's votes as an apply would take them: those the last apply propagated (kept in
    `curation/concepts.json`, whether it ran here or as `medloom concepts --apply`), updated per cluster by the
    label files in `curation/labels/`. A file or vote the taxonomy does not know is left out, with a warning
    that names it."""

    def __init__(self, loom: Path, taxonomy_path: Path | None = None):
        from ..curate.concepts import ConceptError, applied_labels, load_taxonomy, parse_labels, read_labels

        self.taxonomy = load_taxonomy(taxonomy_path)
        self.warnings: list[str] = []
        self.files = label_files(loom)
        self.applied = applied_labels(loom)
        merged: dict[str, dict[int, dict]] = {}
        for name, lab in self.applied or []:
            try:
                parse_labels(
                    {"annotator": name, "clusters": lab},
                    self.taxonomy,
                    Path("curation/concepts.json") / f"(labels applied earlier by {name})",
                )
            except ConceptError as e:
                self.warnings.append(str(e))
                continue
            merged.setdefault(name, {}).update(lab)
        for path in self.files:
            try:
                name, lab = read_labels(path, self.taxonomy)
            except (ConceptError, yaml.YAMLError, AttributeError, TypeError, ValueError) as e:
                self.warnings.append(str(e) if isinstance(e, ConceptError) else f"{path}: not a label file ({e})")
                continue
            merged.setdefault(name, {}).update(lab)
        self.labels = [(name, dict(sorted(lab.items()))) for name, lab in sorted(merged.items())]

    def report(self) -> tuple[dict, dict[int, list[tuple[str, dict]]]]:
        """(`medloom concepts`' decisions and agreement report, each cluster's votes by annotator)."""
        from ..curate.concepts import decide

        _, report = decide(self.labels, self.taxonomy)
        votes: dict[int, list[tuple[str, dict]]] = {}
        for name, lab in self.labels:
            for c, v in lab.items():
                votes.setdefault(c, []).append((name, v))
        return report.as_dict(), votes

    def plan(self) -> str:
        """A fingerprint of what an apply would propagate (the preview's; an apply after a change is refused)."""
        import hashlib

        return hashlib.sha256(json.dumps([self.labels, self.warnings], sort_keys=True, default=str).encode()).hexdigest()[:16]


def agreement(loom: Path, taxonomy_path: Path | None = None) -> tuple[dict, dict[int, list[tuple[str, dict]]], list[str]]:
    """(decisions and agreement report, votes per cluster, warnings about label files left out)."""
    labels = Labels(loom, taxonomy_path)
    report, votes = labels.report()
    return report, votes, labels.warnings


@writer
def apply_concepts(loom: Path, plan: str, taxonomy_path: Path | None = None):
    """Propagate the merged labels, if they are still those of the preview the curator saw (`plan`)."""
    from ..curate.concepts import write_concepts

    labels = Labels(loom, taxonomy_path)
    if labels.plan() != plan:
        raise BadRequest(
            "the labels changed since the preview was shown (another annotator, a command): "
            "look at the changes again before applying"
        )
    if labels.warnings:
        raise BadRequest("some labels are not in the taxonomy; fix or move them first: " + "; ".join(labels.warnings))
    if not labels.labels:
        raise BadRequest("no cluster labels yet: label a cluster first")
    return write_concepts(
        loom,
        labels.labels,
        labels.taxonomy,
        [str(p) for p in labels.files] + (["curation/concepts.json"] if labels.applied else []),
    )


@writer
def keep_duplicate(loom: Path, group: int, keep: str, curator: str) -> dict:
    """The curator's copy to keep in a duplicate group; returns the choice as recorded."""
    from ..curate.dedup import CHOICES, CURATION, DEDUP_SCHEMA, apply_choices, read_choices

    curator = check_name(curator, "curator")
    path = Path(loom) / CURATION / "dedup.parquet"
    if not written_by_medloom(path):
        raise NotFound("no duplicate marks in this loom: run `medloom dedup LOOM` first")
    rows = pq.read_table(path).to_pylist()
    members = [r["id"] for r in rows if r["group"] == group]
    if not members:
        raise NotFound(f"no duplicate group {group}")
    if keep not in members:
        raise BadRequest(f"record {keep!r} is not in duplicate group {group}")
    choice = {"group": members, "keep": keep, "by": curator, "at": now()}
    choices = read_choices(loom) + [choice]
    for r in rows:
        r.setdefault("decided_by", None)
        r.setdefault("decided_at", None)
    write_parquet(path, pa.Table.from_pylist(apply_choices(rows, [choice]), DEDUP_SCHEMA))
    write_file(Path(loom) / CURATION / CHOICES, json.dumps(choices, indent=1).encode())
    return choice


@writer
def review_text(loom: Path, record_id: str, field: str, decision: str, reviewer: str, text: str = "", seen: str = "") -> dict:
    """A verdict on one generated text of a record; `seen` is the text as the reviewer judged it (refused if it
    changed since)."""
    from ..annotate.reviews import DECISIONS, FIELDS, apply_review, before, current_text

    reviewer = check_name(reviewer, "reviewer")
    if decision not in DECISIONS:
        raise BadRequest(f"decision {decision!r}: use one of {', '.join(DECISIONS)}")
    if field not in FIELDS:
        raise BadRequest(f"field {field!r}: use one of {', '.join(FIELDS)}")
    text = (text or "").strip()
    if decision == "edited" and not text:
        raise BadRequest("an edit needs the new text")
    if len(text) > MAX_TEXT:
        raise BadRequest(f"the text is longer than {MAX_TEXT} characters")
    rows, row = _annotation_rows(loom, record_id)
    if current_text(row, field, seen) != seen:
        raise BadRequest(
            f"the {field.replace('_', ' ')} changed since the page was loaded (another reviewer, or a "
            "new annotate run); reload the page and judge the current text"
        )
    review = {
        "id": record_id,
        "field": field,
        "decision": decision,
        "text": text if decision == "edited" else "",
        "by": reviewer,
        "at": now(),
        "previous": seen,
        "before": before(row, field, seen),
    }
    apply_review(row, review)
    from ..annotate.reviews import read_reviews

    _write_annotations(loom, rows, read_reviews(loom) + [review])
    return review


@writer
def undo_text(loom: Path, record_id: str, field: str, previous: str, by: str, at: str, reviewer: str) -> dict:
    """Undo a verdict (the latest on its text): the row gets back what the verdict changed, and the verdict
    stays in `reviews.json` marked undone (by whom, when), so annotate runs no longer apply it."""
    from ..annotate.reviews import read_reviews, undo_review

    reviewer = check_name(reviewer, "reviewer")
    reviews = read_reviews(loom)
    found = [
        i
        for i, r in enumerate(reviews)
        if not r.get("undone") and (r["id"], r["field"], r["previous"], r["by"], r["at"]) == (record_id, field, previous, by, at)
    ]
    if not found:
        raise NotFound(
            f"no verdict in effect on that {field.replace('_', ' ')} of record {record_id!r} by {by} at "
            f"{at} (undone already?); reload the page"
        )
    rows, row = _annotation_rows(loom, record_id)
    try:
        undo_review(row, reviews[found[-1]])
    except ValueError as e:
        raise BadRequest(str(e)) from None
    reviews[found[-1]] = dict(reviews[found[-1]], undone={"by": reviewer, "at": now()})
    _write_annotations(loom, rows, reviews)
    return reviews[found[-1]]


def _annotation_rows(loom: Path, record_id: str) -> tuple[list[dict], dict]:
    from ..annotate.step import ANNOTATIONS, FILE

    path = Path(loom) / ANNOTATIONS / FILE
    if not written_by_medloom(path):
        raise NotFound("no annotations in this loom: run `medloom annotate LOOM` first")
    rows = pq.read_table(path).to_pylist()
    row = next((r for r in rows if r["id"] == record_id), None)
    if row is None:
        raise NotFound(f"no annotation for record {record_id!r}")
    return rows, row


def _write_annotations(loom: Path, rows: list[dict], reviews: list[dict]) -> None:
    """The rows, the verdicts' list, and the manifest's entry for the rows (readers see the new file)."""
    from ..annotate.reviews import REVIEWS
    from ..annotate.step import ANNOTATION_SCHEMA, ANNOTATIONS, FILE

    folder = Path(loom) / ANNOTATIONS
    entry = write_parquet(folder / FILE, pa.Table.from_pylist(rows, ANNOTATION_SCHEMA))
    write_file(folder / REVIEWS, json.dumps(reviews, indent=1).encode())
    manifest = folder / "manifest.json"
    if written_by_medloom(manifest):
        data = json.loads(manifest.read_text(encoding="utf-8"))
        data["file"] = entry
        write_file(manifest, json.dumps(data, indent=1).encode())
