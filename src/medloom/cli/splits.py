"""`medloom split`, and `subsets`, the old name of `medloom cg subsets`."""

from __future__ import annotations

from typing import Annotated

import typer

from .app import app
from .common import (
    AsJson,
    Loom,
    Wait,
    emit,
    err,
    fail,
    resolve_loom,
)


@app.command()
def split(
    loom: Loom,
    by: Annotated[str, typer.Option(help="patient | study | record | source: what never crosses sides.")] = "patient",
    val: Annotated[float, typer.Option(help="Share of records for validation.")] = 0.1,
    test: Annotated[float, typer.Option(help="Share of records for test.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed for the order groups are drawn in.")] = 0,
    stratify: Annotated[str | None, typer.Option(help="label: split within each label.")] = None,
    keep_source: Annotated[bool, typer.Option(help="Keep each source's own split (and check it).")] = False,
    as_json: AsJson = False,
    wait: Wait = False,
) -> None:
    """Assign train/val/test so that no patient (or study) is on two sides; exports use it from then on.
    The split is checked against the duplicate groups and every leak is reported."""
    from ..splits.assign import make_split

    try:
        report = make_split(
            resolve_loom(loom), by=by, val=val, test=test, seed=seed, stratify=stratify, keep_source=keep_source, wait=wait
        )
    except FileNotFoundError as e:
        fail(str(e))
    emit(report.as_dict(), as_json, report.summary())
    if report.duplicate_leaks or report.groups_on_two_sides:
        err.print("[yellow]warning:[/yellow] the split leaks; see the report (split.json) for the groups", highlight=False)


@app.command(
    "subsets", help="Renamed: `medloom cg subsets` (records grouped by MAT triplet across sources); this old name still runs it."
)
def subsets_alias(loom: Loom, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    from .cg import cg_subsets

    err.print("note: `medloom subsets` is now `medloom cg subsets`", highlight=False)
    cg_subsets(loom, as_json)
