"""The catalog's commands: write a recipe, ingest it, and look at what the loom holds."""

from __future__ import annotations

import csv
import io
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .. import layout
from ..sources import worker_modules
from .app import app
from .common import (
    Address,
    Executor,
    Loom,
    Quiet,
    Wait,
    Workers,
    err,
    executor_spec,
    fail,
    lean_driver,
    out,
    resolve_loom,
)


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder to create the recipe in.")],
    preset: Annotated[
        str | None,
        typer.Option(
            help="Sources from the registry's presets: medmat:2,45,93 (rows of Med-MAT's dataset table) or "
            "medmat:subset:7 (a subset's datasets). See `medloom registry list`."
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing recipe.yaml.")] = False,
) -> None:
    """Write a commented recipe template (every reader's keys documented) to DIRECTORY/recipe.yaml, or, with
    --preset, a recipe with one source per dataset in its published layout."""
    target = directory / "recipe.yaml"
    if target.exists() and not force:
        fail(f"{target} exists; pass --force to overwrite it")
    if preset:
        from ..registry.recipes import DATA_DIR, preset_recipe

        text, rows, missing = preset_recipe(preset)
        directory.mkdir(parents=True, exist_ok=True)
        target.write_text(text + "\n", encoding="utf-8")
        out.print(
            f"wrote {target}: {len(rows)} source(s); put each download in {directory / DATA_DIR}/<folder> as its "
            f"comment shows, then run `medloom ingest {target}`",
            highlight=False,
        )
        if missing:
            err.print(f"[yellow]warning:[/yellow] rows without a preset yet, left out: {', '.join(map(str, missing))}")
        return
    directory.mkdir(parents=True, exist_ok=True)
    target.write_text(resources.files("medloom").joinpath("templates/recipe.yaml").read_text(encoding="utf-8"))
    out.print(f"wrote {target}: describe your datasets under `sources:`, then run `medloom ingest {target}`", highlight=False)


def layout_hints(sources: list[dict], reports: list) -> None:
    """For a source that gave no record and whose recipe says what layout to expect (`init --preset`): the expected
    layout beside the first lines of what its folder holds."""
    from ..sources.listing import listing

    by_name = {s["name"]: s for s in sources}
    for r in reports:
        source = by_name.get(r.name)
        if r.records or not source or not source.get("expected_layout"):
            continue
        expected = "\n".join(f"    {line}" for line in source["expected_layout"].strip().splitlines())
        found = "\n".join(f"    {line}" for line in listing(source["root"]))
        err.print(
            f"source {escape(r.name)} gave no record. The download's layout it expects:\n{escape(expected)}\n"
            f"  found under {escape(source['root'])}:\n{escape(found)}",
            highlight=False,
        )


@app.command()
def ingest(
    recipe: Annotated[Path, typer.Argument(help="The recipe YAML (or the folder holding recipe.yaml).")],
    workers: Workers = 0,
    source: Annotated[list[str] | None, typer.Option(help="Only these sources (repeatable).")] = None,
    strict: Annotated[bool, typer.Option(help="Exit non-zero if any input is quarantined.")] = False,
    executor: Executor = None,
    address: Address = None,
    quiet: Quiet = False,
    wait: Wait = False,
) -> None:
    """Build or update the catalog in the recipe's loom. Unchanged parts are not decoded again."""
    lean_driver()
    from ..recipe import load_recipe

    loaded = load_recipe(recipe)
    unknown = [s for s in source or [] if s not in {x["name"] for x in loaded.sources}]
    if unknown:
        fail(f"no source named {', '.join(unknown)} in {loaded.path}")
    runner = executor_spec(executor, address, workers, loaded.recipe)
    from ..engine import start_early

    start_early(runner, worker_modules(s["reader"] for s in loaded.sources))  # they start while we import
    from ..ingest import ingest as run

    reports = run(loaded, workers=runner, quiet=quiet, only=source or None, wait=wait)
    table = Table(title=f"ingest: {loaded.recipe.name}", title_justify="left")
    for col in ("source", "reader", "inputs", "records", "quarantined", "filtered", "box/label problems", "parts decoded"):
        table.add_column(col, justify="left" if col in ("source", "reader") else "right")
    for r in reports:
        table.add_row(
            escape(r.name),
            r.reader,
            str(r.inputs),
            str(r.records),
            str(r.quarantined_inputs),
            str(sum(r.filtered.values())),
            str(r.annotation_problems),
            f"{r.parts_decoded}/{r.parts}",
        )
    out.print(table)
    quarantined = sum(r.quarantined_inputs for r in reports)
    problems = sum(r.quarantined_inputs + r.annotation_problems for r in reports)
    for r in reports:
        if r.error:
            err.print(f"[yellow]warning:[/yellow] source {r.name}: {escape(r.error)}", highlight=False)
    layout_hints(loaded.sources, reports)
    if problems:
        reasons: dict[str, int] = {}
        for r in reports:
            for k, v in r.reasons.items():
                reasons[k] = reasons.get(k, 0) + v
        err.print(
            f"[yellow]warning:[/yellow] {quarantined} input(s) quarantined, "
            f"{problems - quarantined} annotation problem(s): "
            + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]))
            + f'. See them with: medloom query {loaded.loom} "SELECT * FROM quarantine"',
            highlight=False,
        )
    out.print(f"catalog: {loaded.loom / 'catalog'}", highlight=False)
    # a source left with no records because it could not be read or every input failed fails the command (its
    # reasons are printed above); a failed scan that keeps an earlier run's records is a warning
    failed = [r.name for r in reports if not r.records and (r.error or r.quarantined_inputs)]
    if failed:
        err.print(f"[red]error:[/red] no records from source(s) {escape(', '.join(failed))}", highlight=False)
    if failed or (strict and problems):
        raise typer.Exit(1)


@app.command()
def stats(loom: Loom, as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False) -> None:
    """Counts: totals, per source, per MAT triplet, per label, quarantine per reason."""
    from ..stats import catalog_stats

    try:
        s = catalog_stats(resolve_loom(loom))
    except FileNotFoundError as e:
        fail(str(e))
    if as_json:
        sys.stdout.write(json.dumps(s, indent=1) + "\n")
        return
    out.print(
        f"[bold]{s['records']}[/bold] records, {s['quarantined']} quarantined inputs, "
        f"{s['annotation_problems']} annotation problems, {s['warnings']} warnings"
    )
    for title, key, head in (
        ("per source", "by_source", "source"),
        ("per MAT triplet", "by_mat", "modality|anatomy|task"),
        ("per split", "by_split", "split"),
        ("per label", "by_label", "label"),
        ("quarantine per reason", "quarantine_reasons", "reason"),
        ("filtered per reason", "filtered_reasons", "reason"),
    ):
        if not s[key]:
            continue
        table = Table(title=title, title_justify="left")
        table.add_column(head)
        table.add_column("count", justify="right")
        for k, v in list(s[key].items())[:40]:
            table.add_row(escape(k), str(v))
        if len(s[key]) > 40:
            table.add_row(f"... {len(s[key]) - 40} more (see --json)", "")
        out.print(table)
    out.print(f"catalog: {s['catalog']}", highlight=False)


def _rows_to(fmt: str, columns: list[str], rows: list[tuple]) -> str:
    if fmt == "json":
        return json.dumps([dict(zip(columns, r)) for r in rows], default=str, indent=1) + "\n"
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(columns)
    writer.writerows([[json.dumps(v, default=str) if isinstance(v, (list, dict)) else v for v in r] for r in rows])
    return buf.getvalue()


@app.command()
def query(
    loom: Loom,
    sql: Annotated[str, typer.Argument(help="DuckDB SQL over the views `records` and `quarantine`.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | csv | json")] = "table",
    limit: Annotated[int, typer.Option(help="Rows shown in table format (0: all).")] = 100,
) -> None:
    """Run DuckDB SQL over the catalog."""
    import duckdb

    from ..catalog import connect

    if fmt not in ("table", "csv", "json"):
        fail(f"--format {fmt!r}: use table, csv or json")
    try:
        con = connect(resolve_loom(loom))
        cur = con.execute(sql)
    except FileNotFoundError as e:
        fail(str(e))
    except duckdb.Error as e:
        views = [r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1").fetchall()]
        fail(f"SQL failed: {e}" + (f" (this loom's views: {', '.join(views)})" if isinstance(e, duckdb.CatalogException) else ""))
    columns = [d[0] for d in cur.description or []]
    rows = cur.fetchall()
    if fmt != "table":
        sys.stdout.write(_rows_to(fmt, columns, rows))
        return
    table = Table()
    for c in columns:
        table.add_column(c, overflow="fold")
    shown = rows if limit == 0 else rows[:limit]
    for r in shown:
        table.add_row(*[escape(json.dumps(v, default=str) if isinstance(v, (list, dict)) else str(v)) for v in r])
    out.print(table)
    if len(shown) < len(rows):
        err.print(f"{len(rows)} rows, {len(shown)} shown (--limit 0 for all, or --format csv)")


@app.command()
def show(loom: Loom, record_id: Annotated[str, typer.Argument(help="The record id.")]) -> None:
    """Print one record (and any quarantine rows about it) as JSON."""
    from ..catalog import connect

    try:
        con = connect(resolve_loom(loom))
    except FileNotFoundError as e:
        fail(str(e))
    cur = con.execute("SELECT * FROM records WHERE id = ?", [record_id])
    columns = [d[0] for d in cur.description]
    found = cur.fetchall()
    row = found[0] if found else None
    if row is None:
        near = [
            r[0]
            for r in con.execute(
                "SELECT id FROM records ORDER BY jaro_winkler_similarity(id, ?) DESC LIMIT 5", [record_id]
            ).fetchall()
        ]
        fail(f"no record {record_id!r}" + (f"; closest ids: {', '.join(near)}" if near else ""))
    record = dict(zip(columns, row))
    if record.get("meta"):
        record["meta"] = json.loads(record["meta"])
    record["quarantine"] = [
        dict(zip(["reason", "message"], r))
        for r in con.execute("SELECT reason, message FROM quarantine WHERE record_id = ?", [record_id]).fetchall()
    ]
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
    for view in layout.VIEWS:  # what later steps said of it
        if view in views:
            cur = con.execute(f"SELECT * FROM {view} WHERE id = ?", [record_id])
            found = cur.fetchall()
            if found:
                fields = [[(k, v) for k, v in zip([d[0] for d in cur.description], f) if k != "id"] for f in found]
                record[view] = dict(fields[0]) if view != "leakage" else [dict(f) for f in fields]
    sys.stdout.write(json.dumps(record, indent=1, default=str) + "\n")
