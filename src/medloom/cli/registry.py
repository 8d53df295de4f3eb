"""`medloom registry`: the published dataset tables medloom knows (Med-MAT), as data; no download, no loom."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..vocab.words import plural
from .app import registry_app
from .common import out

JSON = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def triplet(normalised: dict[str, str | None]) -> str:
    """medloom's triplet in one cell, '?' where a term did not normalise."""
    return " | ".join(normalised[k] or "?" for k in ("modality", "anatomy", "task"))


@registry_app.command("list")
def registry_list(
    modality: Annotated[
        str | None,
        typer.Option(help="Only rows of this modality, as Med-MAT writes it (FP, Der) or as medloom names it (OCT, fundus)"),
    ] = None,
    anatomy: Annotated[
        str | None, typer.Option(help="Only rows of this anatomical area, as written (Bones) or normalised (bone, optic disc).")
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(help="Only rows whose task contains these words (tuberculosis) or is of this category (state)."),
    ] = None,
    as_json: JSON = False,
) -> None:
    """Med-MAT's source datasets and subsets: number, name, M/A/T as published and normalised, access, reader.

    Filters apply to datasets and subsets alike (each by its own M/A/T). A '*' after a number marks a note on a
    known error in the published table: see `medloom registry show N`.
    """
    from ..registry import load

    reg = load()
    datasets, subsets = reg.select(modality=modality, anatomy=anatomy, task=task)
    if as_json:
        sys.stdout.write(json.dumps(reg.as_dict(datasets, subsets), indent=1) + "\n")
        return
    title = f"Med-MAT source datasets ({reg.source['repository']} @ {reg.source['commit'][:7]})"
    table = Table(title=title, title_justify="left")
    for col in ("No.", "name", "Med-MAT M | A | T", "medloom triplet", "access", "reader", "preset"):
        table.add_column(col)
    for d in datasets:
        table.add_row(
            f"{d.number}{'*' if d.note else ''}",
            escape(d.name),
            escape(f"{d.modality} | {d.area} | {d.task}"),
            escape(triplet(d.normalised)),
            d.access,
            escape((d.layout or {}).get("reader") or "-"),
            "yes" if d.preset else "no",
        )
    out.print(table)
    subs = Table(title="Med-MAT subsets", title_justify="left")
    for col in ("No.", "Med-MAT M | A | T", "medloom triplet", "datasets"):
        subs.add_column(col)
    for s in subsets:
        subs.add_row(
            f"{s.number}{'*' if s.note else ''}",
            escape(f"{s.modality} | {s.area} | {s.task}"),
            escape(triplet(s.normalised)),
            ", ".join(map(str, s.members)),
        )
    out.print(subs)
    presets = sum(d.preset for d in datasets)
    of = "" if len(datasets) == len(reg.datasets) else f" (of {len(reg.datasets)})"
    line = f"{len(datasets)} {plural('row', len(datasets))}{of}, {len(subsets)} {plural('subset', len(subsets))}"
    out.print(f"{line}, {presets} {plural('row', presets)} with a preset", highlight=False)


@registry_app.command("show")
def registry_show(
    number: Annotated[int, typer.Argument(help="The dataset's number in Med-MAT's table (1-109).")],
    subset: Annotated[bool, typer.Option("--subset", help="NUMBER is a subset's (1-53), not a dataset's.")] = False,
    as_json: JSON = False,
) -> None:
    """One row of the registry with every field: link, M/A/T as published and normalised, access, licence,
    expected layout, preset, the subsets holding it, and the note on a known error in the published table."""
    from ..registry import load

    reg = load()
    if subset:
        s = reg.subset(number)
        fields = {
            **s.as_dict(),
            "datasets": [{"number": n, "name": reg.dataset(n).name} for n in s.members],
        }
        del fields["members"]
    else:
        d = reg.dataset(number)
        fields = {**d.as_dict(), "subsets": [s.number for s in reg.subsets_of(number)]}
    if as_json:
        sys.stdout.write(json.dumps(fields, indent=1) + "\n")
        return
    for key, value in fields.items():
        if key == "normalised":
            value = triplet(value)
        elif key == "layout" and value:
            value = f"{value['reader'] or 'no reader yet'}: {value['description']}"
        elif key == "datasets":
            value = "; ".join(f"{x['number']} {x['name']}" for x in value)
        elif isinstance(value, list):
            value = ", ".join(map(str, value))
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        out.print(f"[bold]{key}:[/bold] {escape('-' if value is None else str(value))}", highlight=False, soft_wrap=True)
