"""Curation: duplicates, leakage, embeddings, clusters, concepts and named subsets."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .. import models
from .app import app
from .common import (
    Address,
    AsJson,
    Executor,
    Loom,
    Quiet,
    Wait,
    emit,
    executor_spec,
    fail,
    out,
    resolve_loom,
)


@app.command()
def dedup(
    loom: Loom,
    near: Annotated[
        int, typer.Option(help="Perceptual-hash distance (bits of 64) for near duplicates; -1: exact copies only.")
    ] = 6,
    embed_threshold: Annotated[
        float | None,
        typer.Option(help="Also join embedding neighbours with cosine similarity at least this (needs `medloom embed`)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"groups": [[ids]], "keep": [ids]}.')] = False,
    wait: Wait = False,
) -> None:
    """Group exact and near duplicates across sources; keep one per group (the test split's copy first, then
    the larger image); mark the rest, which exports then leave out. Nothing is deleted."""
    from ..curate.dedup import dedup as run

    try:
        report, groups, keep = run(
            resolve_loom(loom), near=None if near < 0 else near, embed_threshold=embed_threshold, wait=wait
        )
    except FileNotFoundError as e:
        fail(str(e))
    if as_json:
        sys.stdout.write(json.dumps({"groups": groups, "keep": keep, "report": report.as_dict()}, indent=1) + "\n")
        return
    out.print(escape(report.summary()), highlight=False)


@app.command()
def leakage(
    loom: Loom,
    near: Annotated[int, typer.Option(help="Perceptual-hash distance for near copies; -1: exact only.")] = 6,
    mark: Annotated[bool, typer.Option(help="Mark the training copies so that exports leave them out.")] = False,
    against: Annotated[
        list[Path] | None,
        typer.Option(
            "--against",
            help="Compare LOOM with another loom (a benchmark's; its folder or recipe; repeatable) instead of its "
            "own splits: records holding one of its images (exact or near copies) or questions (exact or high "
            "3-gram overlap). The report goes to LOOM/curation/contamination.json; `export --exclude` leaves them out.",
        ),
    ] = None,
    against_split: Annotated[
        list[str] | None,
        typer.Option(help="--against: the other loom's splits compared (repeatable; default: test and val)."),
    ] = None,
    questions: Annotated[bool, typer.Option(help="--against: compare question texts too.")] = True,
    question_overlap: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="--against: share of a benchmark question's word 3-grams found in a question that makes it a copy "
            "(0: exact copies only).",
        ),
    ] = 0.8,
    as_json: AsJson = False,
    wait: Wait = False,
) -> None:
    """Test and validation records with an exact or near copy in any training split, per source pair; with
    --against, the records of LOOM that hold a benchmark loom's images or questions."""
    if against:
        _contamination(loom, against, near, against_split, questions, question_overlap, mark, as_json, wait)
        return
    from ..curate.dedup import leakage as run

    try:
        report = run(resolve_loom(loom), near=None if near < 0 else near, mark=mark, wait=wait)
    except FileNotFoundError as e:
        fail(str(e))
    emit(report.as_dict(), as_json, report.summary(marking=mark))


def _contamination(
    loom: Path,
    against: list[Path],
    near: int,
    splits: list[str] | None,
    questions: bool,
    overlap: float,
    mark: bool,
    as_json: bool,
    wait: bool,
) -> None:
    from rich.table import Table

    from ..curate.decontam import EVALUATION_SPLITS, contamination, write_report
    from ..vocab.splits import split_name

    if mark:
        fail(
            "--mark marks a loom's own training copies; with --against, leave the records out of an export with "
            "`medloom export LOOM --exclude OTHER`"
        )
    chosen = tuple(dict.fromkeys(split_name(s) for s in splits)) if splits else EVALUATION_SPLITS
    if None in chosen:
        fail(f"--against-split {splits}: use train, val or test")
    loom = resolve_loom(loom)
    try:
        report = contamination(
            loom,
            [resolve_loom(a) for a in against],
            near=None if near < 0 else near,
            overlap=overlap or None,
            splits=chosen,
            questions=questions,
            wait=wait,
        )
        path = write_report(loom, report, wait=wait)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=1, ensure_ascii=False) + "\n")
        return
    out.print(escape(report.summary()), highlight=False)
    rows = report.rows()
    if rows:
        table = Table("record", "split", "why", "benchmark record", "detail")
        for row in rows[:50]:
            table.add_row(*map(escape, row))
        out.print(table)
        if len(rows) > 50:
            out.print(f"... {len(rows) - 50} more rows", highlight=False)
    out.print(f"report: {escape(str(path))}", highlight=False)


@app.command()
def embed(
    loom: Loom,
    model: Annotated[
        str, typer.Option(help=models.forms("embed") + " (hf:FOLDER, the earlier name of hf-image:, still works here)")
    ] = "builtin",
    workers: Annotated[int, typer.Option("--workers", "-w", help="Worker processes.")] = 0,
    executor: Executor = None,
    address: Address = None,
    as_json: AsJson = False,
    quiet: Quiet = False,
    wait: Wait = False,
) -> None:
    """Embed every record's image; cached per catalog part, so a re-run embeds only new or changed parts."""
    from ..curate.embed import embed as run

    try:
        report = run(
            resolve_loom(loom), model, workers=executor_spec(executor, address, workers), quiet=quiet or as_json, wait=wait
        )
    except (FileNotFoundError, ValueError, ImportError) as e:
        fail(str(e))
    emit(report.as_dict(), as_json, report.summary())


@app.command("cluster")
def cluster_cmd(
    loom: Loom,
    k: Annotated[int, typer.Option("--k", help="Number of clusters.", min=1)] = 20,
    pca: Annotated[int, typer.Option(help="Principal components kept before k-means.", min=1)] = 50,
    seed: Annotated[int, typer.Option(help="Seed for k-means.")] = 0,
    model: Annotated[str | None, typer.Option(help="Embeddings of this model (default: the last embedded).")] = None,
    sheets: Annotated[bool, typer.Option(help="Write a contact sheet PNG per cluster.")] = True,
    as_json: AsJson = False,
    quiet: Quiet = False,
    wait: Wait = False,
) -> None:
    """PCA (explained-variance curve as JSON and PNG) then k-means, streamed by part; contact sheets."""
    from ..curate.cluster import cluster as run

    try:
        report = run(resolve_loom(loom), k, pca=pca, seed=seed, model=model, sheets=sheets, quiet=quiet or as_json, wait=wait)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    emit(report.as_dict(), as_json, report.summary())


@app.command()
def concepts(
    loom: Loom,
    apply: Annotated[
        list[Path], typer.Option("--apply", help="A cluster label file (YAML), one per annotator; repeat for several.")
    ],
    taxonomy: Annotated[Path | None, typer.Option(help="Concept taxonomy YAML (default: medloom's).")] = None,
    as_json: AsJson = False,
    wait: Wait = False,
) -> None:
    """Take cluster labels from annotators, report their agreement, and propagate the majority to records."""
    from ..curate.concepts import apply_labels

    try:
        report = apply_labels(resolve_loom(loom), apply, taxonomy, wait=wait)
    except (FileNotFoundError, OSError) as e:
        fail(str(e))
    emit(report.as_dict(), as_json, report.summary())


@app.command()
def subset(
    loom: Loom,
    name: Annotated[str, typer.Argument(help="The subset's name (for export --subset).")],
    concept: Annotated[
        list[str] | None, typer.Option(help="Keep records with this global or local concept; repeat for several.")
    ] = None,
    cap: Annotated[int | None, typer.Option(help="At most N records per global concept.", min=1)] = None,
    seed: Annotated[int, typer.Option(help="Seed choosing which records a cap keeps.")] = 0,
    where: Annotated[str | None, typer.Option(help="Also an SQL condition on the records.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the subset's description as JSON.")] = False,
    wait: Wait = False,
) -> None:
    """Save a named subset: filter by concept and balance by capping records per concept."""
    from ..curate.subsets import make_subset

    try:
        info = make_subset(resolve_loom(loom), name, concepts=concept, cap=cap, seed=seed, where=where, wait=wait)
    except FileNotFoundError as e:
        fail(str(e))
    emit(
        info,
        as_json,
        f"subset {name}: {info['records']} records (" + ", ".join(f"{k} {v}" for k, v in info["per_concept"].items()) + ")",
    )
