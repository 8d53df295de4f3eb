"""Which records a step reads, and on which side of the split each one is: the one rule that exports,
evaluation, training and the web app all select records by.

A selection is the `records` view filtered by a `--where` condition, without the records `dedup` / `leakage
--mark` marked out (unless asked), only a named subset's or an experiment's records when one is named. A
record's split is the experiment's (train/test), else the one `medloom split` assigned, else its source's own
(`DEFAULT_SPLIT` when it has none).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .. import catalog, layout
from ..errors import ExportError, PlanError, SubsetError
from ..outputs import sha256_file, written_by_medloom
from ..vocab.splits import DEFAULT_SPLIT
from .proposals import proposal_join

SUBSET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class Excluded:
    """Records an export leaves out besides the marked ones (`export --exclude`: those holding a benchmark's
    images or questions): a Parquet file with their `id`s, and a fingerprint of them for the export's plan."""

    file: str
    fingerprint: str


@dataclass
class Selection:
    """What `selection_sql` reads of a step's options (an `ExportOptions` has the same fields)."""

    include_duplicates: bool = False  # keep records that `dedup` / `leakage --mark` marked out
    subset: str | None = None
    experiment: str | None = None
    excluded: Excluded | None = None


def quoted(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def selection_sql(loom: Path, options: Selection) -> tuple[str, str, str, str]:
    """(joins, split expression, condition, fingerprint) of what an export takes from the records view.

    Records marked out by `dedup` / `leakage --mark` are left out, and those `excluded` names (`export
    --exclude`), and only a subset's or an experiment's records are taken when one is named. The split is the
    experiment's (train/test), else the one `medloom split` assigned, else the source's own (train when it has
    none). The fingerprint covers every file read, so a changed mark or split is a changed export.
    """
    conditions, prints, joins = [], [], ""
    split = f"CASE WHEN coalesce(source_split, '') = '' THEN '{DEFAULT_SPLIT}' ELSE source_split END"
    if not options.include_duplicates:
        cond, fp = excluded_sql(loom)
        if cond:
            conditions.append(cond)
            prints.append(fp)
    excluded = getattr(options, "excluded", None)
    if excluded is not None:
        conditions.append(f"id NOT IN (SELECT id FROM read_parquet({quoted(Path(excluded.file))}))")
        prints.append(f"excluded:{excluded.fingerprint}")
    if options.subset:
        cond, fp = subset_sql(loom, options.subset)
        conditions.append(cond)
        prints.append(fp)
    assigned = layout.split_file(loom)
    if options.experiment:
        folder = Path(options.experiment)
        read_experiment(folder)  # a clear error for a folder that is not an experiment
        lists = {
            s: f"(SELECT column0 FROM read_csv({quoted(folder / f'{s}.txt')}, header = false, "
            "columns = {'column0': 'VARCHAR'}))"
            for s in ("train", "test")
        }
        conditions.append(f"id IN {lists['train']} OR id IN {lists['test']}")
        split = f"CASE WHEN id IN {lists['test']} THEN 'test' ELSE 'train' END"
        prints.append(sha256_file(folder / "train.txt") + sha256_file(folder / "test.txt"))
    elif written_by_medloom(assigned):
        joins = f"LEFT JOIN read_parquet({quoted(assigned)}) AS assigned USING (id)"
        split = f"coalesce(assigned.split, {split})"
        prints.append(sha256_file(assigned))
    return joins, split, " AND ".join(f"({c})" for c in conditions), ",".join(prints)


def split_condition(split: str, splits: list[str] | None) -> str:
    """SQL keeping the records of the chosen splits (names as `medloom` spells them: train, val, test)."""
    if not splits:
        return ""
    return f"({split}) IN (" + ", ".join("'" + s.replace("'", "''") + "'" for s in splits) + ")"


def has_view(con, name: str) -> bool:
    return name in {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}


def select_records(
    con,
    where: str | None,
    joins: str = "",
    split: str = "",
    marks: str = "",
    splits: list[str] | None = None,
    text: str = "",
    counts: tuple[str, ...] = (),
    groups: tuple[str, ...] = (),
    proposals: str = "accepted",
) -> list[tuple]:
    """The `selection` view: the chosen records with their split, the ROI proposals `proposals` chooses
    (`proposal_rois`: accepted, all or none, view/proposals.py) and, when the loom has annotations, the
    annotation's caption, caption source, ROI text and questions (`ann_*`).

    Returns, in split order, per split (and per value of the `groups` SQL expressions): (split, *groups, records,
    then the records meeting each of `counts`' SQL conditions, and with `groups` one id of the group), from one
    pass over the catalog, the pass that also checks the filter: every pass reads every part, and the plan used
    to make several of them (one per split among them) before its first sample."""
    import duckdb

    conditions = [f"({c})" for c in (where, marks, split_condition(split, splits)) if c]
    ann = (
        ", ann.caption AS ann_caption, ann.caption_source AS ann_caption_source, ann.roi_text AS ann_roi_text, ann.vqa AS ann_vqa"
        if has_view(con, "annotations")
        else ""
    )
    joins += " LEFT JOIN annotations AS ann USING (id)" if ann else ""
    prop_column, prop_join = proposal_join(con, which=proposals)  # kept apart from the record's own ROIs
    ann += prop_column
    joins += prop_join
    try:
        inner = f"SELECT records.*, {split} AS split{ann} FROM records {joins}" + (
            f" WHERE {' AND '.join(conditions)}" if conditions else ""
        )
        con.execute(f"CREATE TEMP VIEW selection AS SELECT * FROM ({inner})" + (f" WHERE {text}" if text else ""))
        keys = "".join(f", {g}" for g in groups)
        counted = "".join(f", count(*) FILTER (WHERE {c})" for c in counts)
        pick = ", min_by(id, md5(id))" if groups else ""
        return con.execute(f"SELECT split{keys}, count(*){counted}{pick} FROM selection GROUP BY ALL ORDER BY ALL").fetchall()
    except duckdb.Error as e:
        raise ExportError(f"--where {where!r} is not a valid filter on the records view: {e}") from None


def excluded_ids(loom: Path) -> set[str]:
    """The records `dedup` or `leakage --mark` marked out (exports and training leave them out)."""
    cond, _ = excluded_sql(loom)
    if not cond:
        return set()
    con = catalog.connect(loom)
    return {r[0] for r in con.execute(f"SELECT id FROM records WHERE NOT ({cond})").fetchall()}


def excluded_sql(loom: Path) -> tuple[str, str]:
    """(SQL condition keeping records not marked out, a fingerprint of the marks) for exports."""
    folder = layout.curation_dir(loom)
    parts, prints = [], []
    for name, cond in (("dedup.parquet", "NOT keep"), ("leakage.parquet", "marked")):
        path = folder / name
        if written_by_medloom(path):
            quoted = str(path).replace("'", "''")
            parts.append(f"id NOT IN (SELECT id FROM read_parquet('{quoted}') WHERE {cond})")
            prints.append(sha256_file(path))
    return " AND ".join(parts), ",".join(prints)


def subset_path(loom: Path, name: str) -> Path:
    if not SUBSET_NAME.match(name or ""):
        raise SubsetError(f"subset name {name!r}: use letters, digits, '-' and '_'")
    return layout.subsets_dir(loom) / f"{name}.parquet"


def existing(loom: Path) -> list[str]:
    folder = layout.subsets_dir(loom)
    return sorted(p.stem for p in folder.glob("*.parquet")) if folder.is_dir() else []


def subset_sql(loom: Path, name: str) -> tuple[str, str]:
    """(SQL condition keeping the subset's records, a fingerprint of its file)."""
    path = subset_path(loom, name)
    if not path.is_file():
        have = existing(loom)
        raise SubsetError(
            f"no subset {name!r} in {loom}"
            + (f"; there are: {', '.join(have)}" if have else "; create one with `medloom subset LOOM NAME ...`")
        )
    quoted = str(path).replace("'", "''")
    return f"id IN (SELECT id FROM read_parquet('{quoted}'))", sha256_file(path)


def plan_manifest(folder: Path) -> dict:
    """An experiment folder's `manifest.json` (`cg plan`), or {} where it has none or it cannot be read."""
    try:
        return json.loads((Path(folder) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def experiment_options(folder: Path) -> tuple[list[str], int]:
    """The distractors a `cg plan` experiment adds to its target's questions, and the fewest options a question
    has (`manifest.json`'s `distractors` and `options`); none for a plan written before they existed."""
    manifest = plan_manifest(folder)
    return sorted(manifest.get("distractors") or {}), int(manifest.get("options") or 0)


def experiment_grounding(folder: Path) -> set[tuple[str, str, str]]:
    """The training subsets of a `cg plan` experiment that train with their boxes (detection or segmentation
    tasks: `manifest.json`'s `grounding`, as (modality, anatomy, task)); none for a plan written before it."""
    names = plan_manifest(folder).get("grounding") or []
    return {tuple(n.split("|")) for n in names if n.count("|") == 2}  # type: ignore[misc]


def read_experiment(folder: Path) -> dict[str, str]:
    """record id -> train | test for an experiment folder written by `plan`."""
    folder = Path(folder)
    if not (folder / "manifest.json").is_file():
        raise PlanError(f"{folder}: not an experiment folder (no manifest.json); see `medloom cg plan`")
    out = {}
    for split in ("train", "test"):
        for line in (folder / f"{split}.txt").read_text(encoding="utf-8").splitlines():
            if line.strip():
                out[line.strip()] = split
    return out
