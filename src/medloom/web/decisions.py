"""What a curator decides in the browser, written where the command-line steps read it.

- Cluster labels go to `LOOM/curation/labels/ANNOTATOR.yaml`, the label files `medloom concepts --apply` reads.
- A duplicate group's choice goes to `LOOM/curation/dedup_choices.json` and into the dedup marks.
- A verdict on a generated text (caption, ROI description, question) goes to `LOOM/annotations/reviews.json`
  and into the annotations.

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

from ..locks import writer
from ..outputs import ForeignFileError, write_file, write_parquet, written_by_medloom
from .index import BadRequest, NotFound

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
LABELS = Path("curation") / "labels"
MAX_TEXT = 4000


def check_name(name: str, what: str = "annotator") -> str:
    name = (name or "").strip()
    if not NAME.match(name):
        raise BadRequest(f"{what} name {name!r}: use 1-40 letters, digits, '.', '_' or '-' (starting with a letter "
                         "or digit)")
    return name


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def label_files(loom: Path) -> list[Path]:
    folder = Path(loom) / LABELS
    return sorted(p for p in folder.glob("*.yaml") if written_by_medloom(p)) if folder.is_dir() else []


@writer
def label_cluster(loom: Path, annotator: str, cluster: int, panel: str, global_concept: str, local: list[str],
                  taxonomy_path: Path | None = None) -> Path:
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
        raise ForeignFileError(f"{path} is not a cluster label file medloom wrote; it will not be overwritten: "
                               "move it away or use another annotator name")
    clusters = dict((current or {}).get("clusters") or {})
    clusters[int(cluster)] = {"panel": panel or "", "global": global_concept, "local": sorted(set(local))}
    data = {"annotator": annotator, "updated": now(), "clusters": dict(sorted(clusters.items()))}
    try:  # the same check `medloom concepts` makes, before anything is written
        parse_labels(data, taxonomy, path)
    except ConceptError as e:
        raise BadRequest(str(e)) from None
    return write_file(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode())


def agreement(loom: Path, taxonomy_path: Path | None = None) -> tuple[dict, dict[int, list[tuple[str, dict]]]]:
    """(`medloom concepts`' decision and agreement report, each cluster's votes by annotator)."""
    from ..curate.concepts import decide, load_taxonomy, read_labels

    taxonomy = load_taxonomy(taxonomy_path)
    labels = [read_labels(p, taxonomy) for p in label_files(loom)]
    _, report = decide(labels, taxonomy)
    votes: dict[int, list[tuple[str, dict]]] = {}
    for name, lab in labels:
        for c, v in lab.items():
            votes.setdefault(c, []).append((name, v))
    return report.as_dict(), votes


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
def review_text(loom: Path, record_id: str, field: str, decision: str, reviewer: str, text: str = "",
                seen: str = "") -> dict:
    """A verdict on one generated text of a record; `seen` is the text as the reviewer judged it (refused if it
    changed since)."""
    from ..annotate.reviews import DECISIONS, FIELDS, REVIEWS, apply_review, current_text, read_reviews
    from ..annotate.step import ANNOTATION_SCHEMA, ANNOTATIONS, FILE

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
    folder = Path(loom) / ANNOTATIONS
    if not written_by_medloom(folder / FILE):
        raise NotFound("no annotations in this loom: run `medloom annotate LOOM` first")
    rows = pq.read_table(folder / FILE).to_pylist()
    row = next((r for r in rows if r["id"] == record_id), None)
    if row is None:
        raise NotFound(f"no annotation for record {record_id!r}")
    if current_text(row, field, seen) != seen:
        raise BadRequest(f"the {field.replace('_', ' ')} changed since the page was loaded (another reviewer, or a "
                         "new annotate run); reload the page and judge the current text")
    review = {"id": record_id, "field": field, "decision": decision, "text": text if decision == "edited" else "",
              "by": reviewer, "at": now(), "previous": seen}
    apply_review(row, review)
    entry = write_parquet(folder / FILE, pa.Table.from_pylist(rows, ANNOTATION_SCHEMA))
    write_file(folder / REVIEWS, json.dumps(read_reviews(loom) + [review], indent=1).encode())
    manifest = folder / "manifest.json"
    if written_by_medloom(manifest):
        data = json.loads(manifest.read_text(encoding="utf-8"))
        data["file"] = entry
        write_file(manifest, json.dumps(data, indent=1).encode())
    return review
