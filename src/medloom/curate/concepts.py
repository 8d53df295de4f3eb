"""Cluster labels from annotators become concepts on every record.

Label files (YAML), one per annotator:

    annotator: alice
    clusters:
      0: {panel: single, global: clinical imaging, local: [X-ray]}
      1: {panel: multi-panel, global: plots and charts, local: [bar chart, line plot]}

Per cluster the majority decides the panel type and the global concept (ties go to the taxonomy's order)
and a local concept is kept when more than half of the cluster's annotators named it; agreement is
reported per cluster, overall, and as Fleiss' kappa on the global concept. The result is propagated to
every record of the cluster (`LOOM/curation/concepts.parquet`); the report, with the files read and every
annotator's votes, goes to `LOOM/curation/concepts.json`, so a later apply (`medloom serve`'s) can merge new
labels with these instead of dropping them.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from ..errors import ConceptError
from ..locks import writer
from ..outputs import write_file, write_parquet
from .dedup import CURATION

CONCEPTS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("cluster", pa.int32()),
        ("panel", pa.string()),
        ("global_concept", pa.string()),
        ("local_concepts", pa.list_(pa.string())),
    ]
)


@dataclass
class Taxonomy:
    panel_types: list[str]
    global_concepts: dict[str, list[str]]

    def order(self, concept: str) -> int:
        names = list(self.global_concepts)
        return names.index(concept) if concept in names else len(names)


def load_taxonomy(path: str | Path | None = None) -> Taxonomy:
    text = (
        Path(path).read_text(encoding="utf-8")
        if path
        else resources.files(__package__).joinpath("taxonomy.yaml").read_text(encoding="utf-8")
    )
    data = yaml.safe_load(text) or {}
    if not isinstance(data.get("global"), dict):
        raise ConceptError(f"{path or 'taxonomy'}: needs `global:` mapping each global concept to its local ones")
    return Taxonomy(list(data.get("panel_types") or []), {k: list(v or []) for k, v in data["global"].items()})


@dataclass
class ConceptReport:
    annotators: list[str] = field(default_factory=list)
    clusters_labelled: int = 0
    records: int = 0
    agreement: dict[str, float] = field(default_factory=dict)  # cluster -> share agreeing with the majority
    mean_agreement: float = 0.0
    fleiss_kappa: float | None = None
    ties: list[int] = field(default_factory=list)
    decisions: dict[str, dict] = field(default_factory=dict)
    per_concept: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)  # the label files read
    labels: list[dict] = field(default_factory=list)  # {annotator, clusters: {cluster: vote}} as applied

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        kappa = f", Fleiss' kappa {self.fleiss_kappa:.2f}" if self.fleiss_kappa is not None else ""
        return (
            f"concepts: {self.clusters_labelled} clusters labelled by {len(self.annotators)} annotator(s), mean "
            f"agreement {self.mean_agreement:.2f}{kappa}; {self.records} records: "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.per_concept.items()))
        )


def read_labels(path: Path, taxonomy: Taxonomy) -> tuple[str, dict[int, dict]]:
    return parse_labels(yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}, taxonomy, Path(path))


def parse_labels(data: dict, taxonomy: Taxonomy, path: Path) -> tuple[str, dict[int, dict]]:
    """One annotator's labels, checked against the taxonomy (errors name the file `path`)."""
    name = str(data.get("annotator") or Path(path).stem)
    problems, out = [], {}
    for key, label in (data.get("clusters") or {}).items():
        label = label or {}
        g = label.get("global")
        if g not in taxonomy.global_concepts:
            problems.append(f"cluster {key}: global concept {g!r} is not in the taxonomy ({', '.join(taxonomy.global_concepts)})")
            continue
        local = [str(x) for x in label.get("local") or []]
        allowed = {x for v in taxonomy.global_concepts.values() for x in v}
        bad = [x for x in local if x not in allowed]
        if bad:
            problems.append(f"cluster {key}: local concept(s) {bad} are not in the taxonomy")
        panel = label.get("panel") or ""
        if panel and taxonomy.panel_types and panel not in taxonomy.panel_types:
            problems.append(f"cluster {key}: panel type {panel!r} is not one of {taxonomy.panel_types}")
        out[int(key)] = {"panel": panel, "global": g, "local": local}
    if problems:
        raise ConceptError(f"{path}: " + "; ".join(problems))
    return name, out


def fleiss_kappa(table: list[list[int]]) -> float | None:
    """Fleiss' kappa for items x categories counts, each item rated by the same number of raters."""
    if not table or len({sum(r) for r in table}) != 1 or sum(table[0]) < 2:
        return None
    n, raters = len(table), sum(table[0])
    p_cat = [sum(r[j] for r in table) / (n * raters) for j in range(len(table[0]))]
    p_item = [(sum(c * c for c in r) - raters) / (raters * (raters - 1)) for r in table]
    p_bar, p_e = sum(p_item) / n, sum(p * p for p in p_cat)
    return 1.0 if p_e == 1 else (p_bar - p_e) / (1 - p_e)


def decide(labels: list[tuple[str, dict[int, dict]]], taxonomy: Taxonomy) -> tuple[dict[int, dict], ConceptReport]:
    """Per cluster the majority's panel, global and local concepts, with the annotators' agreement."""
    report = ConceptReport(annotators=[name for name, _ in labels])
    decided: dict[int, dict] = {}
    kappa_rows = []
    cats = list(taxonomy.global_concepts)
    for c in sorted({c for _, lab in labels for c in lab}):
        votes = [lab[c] for _, lab in labels if c in lab]
        g_count = Counter(v["global"] for v in votes)
        top = max(g_count.values())
        winners = sorted((g for g, n in g_count.items() if n == top), key=taxonomy.order)
        if len(winners) > 1:
            report.ties.append(c)
        p_count = Counter(v["panel"] for v in votes if v["panel"])
        panel = sorted(p_count.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] if p_count else ""
        l_count = Counter(x for v in votes for x in set(v["local"]))
        local = sorted(x for x, n in l_count.items() if n * 2 > len(votes))
        decided[c] = {"panel": panel, "global": winners[0], "local": local, "votes": len(votes)}
        report.agreement[str(c)] = top / len(votes)
        if len(votes) == len(labels):
            kappa_rows.append([g_count.get(g, 0) for g in cats])
    report.clusters_labelled = len(decided)
    report.mean_agreement = sum(report.agreement.values()) / len(report.agreement) if report.agreement else 0.0
    report.fleiss_kappa = fleiss_kappa(kappa_rows) if len(labels) > 1 else None
    report.decisions = {str(c): d for c, d in decided.items()}
    return decided, report


@writer
def apply_labels(loom: Path, files: list[Path], taxonomy_path: Path | None = None) -> ConceptReport:
    taxonomy = load_taxonomy(taxonomy_path)
    return write_concepts(loom, [read_labels(f, taxonomy) for f in files], taxonomy, [str(f) for f in files])


@writer
def apply_votes(
    loom: Path, labels: list[tuple[str, dict[int, dict]]], taxonomy_path: Path | None = None, files: list[str] | None = None
) -> ConceptReport:
    """`apply_labels` for labels already read and merged (the app's apply)."""
    return write_concepts(loom, labels, load_taxonomy(taxonomy_path), files or [])


def applied_labels(loom: Path) -> list[tuple[str, dict[int, dict]]] | None:
    """The votes the last apply propagated (None: no apply yet, or one from before they were kept)."""
    from ..outputs import written_by_medloom

    path = Path(loom) / CURATION / "concepts.json"
    if not written_by_medloom(path):
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if "labels" not in data:
        return None
    return [(str(e["annotator"]), {int(c): v for c, v in (e.get("clusters") or {}).items()}) for e in data["labels"]]


def write_concepts(loom: Path, labels: list[tuple[str, dict[int, dict]]], taxonomy: Taxonomy, files: list[str]) -> ConceptReport:
    loom = Path(loom)
    clusters_file = loom / CURATION / "clusters.parquet"
    if not clusters_file.is_file():
        raise ConceptError(f"{loom}: no clusters; run `medloom embed` and `medloom cluster` first")
    decided, report = decide(labels, taxonomy)
    report.files = list(files)
    report.labels = [{"annotator": name, "clusters": {str(c): v for c, v in sorted(lab.items())}} for name, lab in labels]
    clusters = pq.read_table(clusters_file).to_pylist()
    rows = []
    for r in clusters:
        d = decided.get(r["cluster"])
        rows.append(
            {
                "id": r["id"],
                "cluster": r["cluster"],
                "panel": d["panel"] if d else "",
                "global_concept": d["global"] if d else "unlabelled",
                "local_concepts": d["local"] if d else [],
            }
        )
        key = d["global"] if d else "unlabelled"
        report.per_concept[key] = report.per_concept.get(key, 0) + 1
    report.records = len(rows)
    write_parquet(loom / CURATION / "concepts.parquet", pa.Table.from_pylist(rows, CONCEPTS_SCHEMA))
    write_file(loom / CURATION / "concepts.json", json.dumps(report.as_dict(), indent=1).encode())
    return report
