"""The `medloom` command: one sub-command per step."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import layout
from .arrowpool import use_system_pool
from .nopandas import keep_pandas_out
from .sources import worker_modules

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_show_locals=False,
                  help="Build curated, MAT-tagged multimodal medical datasets.")
out = Console()


def lean_driver() -> None:
    """What the ingest and export commands set before pyarrow loads: no pandas (nopandas.py) and Arrow's
    system allocator (arrowpool.py)."""
    keep_pandas_out()
    use_system_pool()


err = Console(stderr=True)

Loom = Annotated[Path, typer.Argument(help="The loom (working folder) holding catalog/.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Executor = Annotated[str | None, typer.Option("--executor", help="local (a process pool on this machine) or ray "
                                                                 "(default: the recipe's executor:, else local).")]
Address = Annotated[str | None, typer.Option("--address", help="With --executor ray: auto (the cluster `ray start` "
                                                               "made here) or ray://HOST:PORT; default: a Ray "
                                                               "instance on this machine for this command.")]
Wait = Annotated[bool, typer.Option("--wait", help="When another medloom process writes to this loom (or export "
                                                   "folder), wait for it instead of exiting at once.")]


def fail(message: str, code: int = 2) -> None:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def resolve_loom(path: Path) -> Path:
    """Accept the loom folder, its catalog/ folder, or a recipe file."""
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        from .recipe import RecipeError, load_recipe

        try:
            return load_recipe(path).loom
        except RecipeError as e:
            fail(str(e))
    if path.name == layout.CATALOG and (path / "manifest.json").is_file():
        return path.parent
    return path


@app.command()
def init(directory: Annotated[Path, typer.Argument(help="Folder to create the recipe in.")],
         force: Annotated[bool, typer.Option(help="Overwrite an existing recipe.yaml.")] = False) -> None:
    """Write a commented recipe template (every reader's keys documented) to DIRECTORY/recipe.yaml."""
    target = directory / "recipe.yaml"
    if target.exists() and not force:
        fail(f"{target} exists; pass --force to overwrite it")
    directory.mkdir(parents=True, exist_ok=True)
    target.write_text(resources.files("medloom").joinpath("templates/recipe.yaml").read_text(encoding="utf-8"))
    out.print(f"wrote {target}: describe your datasets under `sources:`, then run "
              f"`medloom ingest {target}`", highlight=False)


@app.command()
def ingest(recipe: Annotated[Path, typer.Argument(help="The recipe YAML (or the folder holding recipe.yaml).")],
           workers: Annotated[int, typer.Option("--workers", "-w", help="Worker processes (default: all cores).")] = 0,
           source: Annotated[list[str] | None, typer.Option(help="Only these sources (repeatable).")] = None,
           strict: Annotated[bool, typer.Option(help="Exit non-zero if any input is quarantined.")] = False,
           executor: Executor = None, address: Address = None, quiet: Quiet = False,
        wait: Wait = False) -> None:
    """Build or update the catalog in the recipe's loom. Unchanged parts are not decoded again."""
    lean_driver()
    from .recipe import RecipeError, load_recipe

    try:
        loaded = load_recipe(recipe)
    except RecipeError as e:
        fail(str(e))
    unknown = [s for s in source or [] if s not in {x["name"] for x in loaded.sources}]
    if unknown:
        fail(f"no source named {', '.join(unknown)} in {loaded.path}")
    runner = executor_spec(executor, address, workers, loaded.recipe)
    from .engine import start_early

    start_early(runner, worker_modules(s["reader"] for s in loaded.sources))  # they start while we import
    from .ingest import ingest as run

    reports = run(loaded, workers=runner, quiet=quiet, only=source or None, wait=wait)
    table = Table(title=f"ingest: {loaded.recipe.name}", title_justify="left")
    for col in ("source", "reader", "inputs", "records", "quarantined", "filtered", "box/label problems",
                "parts decoded"):
        table.add_column(col, justify="left" if col in ("source", "reader") else "right")
    for r in reports:
        table.add_row(escape(r.name), r.reader, str(r.inputs), str(r.records), str(r.quarantined_inputs),
                      str(sum(r.filtered.values())), str(r.annotation_problems), f"{r.parts_decoded}/{r.parts}")
    out.print(table)
    quarantined = sum(r.quarantined_inputs for r in reports)
    problems = sum(r.quarantined_inputs + r.annotation_problems for r in reports)
    for r in reports:
        if r.error:
            err.print(f"[yellow]warning:[/yellow] source {r.name}: {escape(r.error)}", highlight=False)
    if problems:
        reasons: dict[str, int] = {}
        for r in reports:
            for k, v in r.reasons.items():
                reasons[k] = reasons.get(k, 0) + v
        err.print(f"[yellow]warning:[/yellow] {quarantined} input(s) quarantined, "
                  f"{problems - quarantined} annotation problem(s): "
                  + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]))
                  + f". See them with: medloom query {loaded.loom} \"SELECT * FROM quarantine\"", highlight=False)
    out.print(f"catalog: {loaded.loom / 'catalog'}", highlight=False)
    if strict and problems:
        raise typer.Exit(1)


@app.command()
def stats(loom: Loom, as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False) -> None:
    """Counts: totals, per source, per MAT triplet, per label, quarantine per reason."""
    from .stats import catalog_stats

    try:
        s = catalog_stats(resolve_loom(loom))
    except FileNotFoundError as e:
        fail(str(e))
    if as_json:
        sys.stdout.write(json.dumps(s, indent=1) + "\n")
        return
    out.print(f"[bold]{s['records']}[/bold] records, {s['quarantined']} quarantined inputs, "
              f"{s['annotation_problems']} annotation problems, {s['warnings']} warnings")
    for title, key, head in (("per source", "by_source", "source"), ("per MAT triplet", "by_mat", "modality|anatomy|task"),
                             ("per split", "by_split", "split"), ("per label", "by_label", "label"),
                             ("quarantine per reason", "quarantine_reasons", "reason"),
                             ("filtered per reason", "filtered_reasons", "reason")):
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
def query(loom: Loom, sql: Annotated[str, typer.Argument(help="DuckDB SQL over the views `records` and `quarantine`.")],
          fmt: Annotated[str, typer.Option("--format", "-f", help="table | csv | json")] = "table",
          limit: Annotated[int, typer.Option(help="Rows shown in table format (0: all).")] = 100) -> None:
    """Run DuckDB SQL over the catalog."""
    import duckdb

    if fmt not in ("table", "csv", "json"):
        fail(f"--format {fmt!r}: use table, csv or json")
    try:
        con = __import__("medloom.catalog", fromlist=["connect"]).connect(resolve_loom(loom))
        cur = con.execute(sql)
    except FileNotFoundError as e:
        fail(str(e))
    except duckdb.Error as e:
        views = [r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal "
                                           "ORDER BY 1").fetchall()]
        fail(f"SQL failed: {e}" + (f" (this loom's views: {', '.join(views)})" if isinstance(e, duckdb.CatalogException)
                                   else ""))
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
    from .catalog import connect

    try:
        con = connect(resolve_loom(loom))
    except FileNotFoundError as e:
        fail(str(e))
    cur = con.execute("SELECT * FROM records WHERE id = ?", [record_id])
    columns = [d[0] for d in cur.description]
    found = cur.fetchall()
    row = found[0] if found else None
    if row is None:
        near = [r[0] for r in con.execute(
            "SELECT id FROM records ORDER BY jaro_winkler_similarity(id, ?) DESC LIMIT 5", [record_id]).fetchall()]
        fail(f"no record {record_id!r}" + (f"; closest ids: {', '.join(near)}" if near else ""))
    record = dict(zip(columns, row))
    if record.get("meta"):
        record["meta"] = json.loads(record["meta"])
    record["quarantine"] = [dict(zip(["reason", "message"], r)) for r in con.execute(
        "SELECT reason, message FROM quarantine WHERE record_id = ?", [record_id]).fetchall()]
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
    for view in layout.VIEWS:  # what later steps said of it
        if view in views:
            cur = con.execute(f"SELECT * FROM {view} WHERE id = ?", [record_id])
            found = cur.fetchall()
            if found:
                fields = [[(k, v) for k, v in zip([d[0] for d in cur.description], f) if k != "id"] for f in found]
                record[view] = dict(fields[0]) if view != "leakage" else [dict(f) for f in fields]
    sys.stdout.write(json.dumps(record, indent=1, default=str) + "\n")


def parse_bytes(text: str) -> int:
    """'500MB', '1.5GiB', '2e9' or a plain number of bytes."""
    match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([kKmMgGtT]?)(i?)[bB]?\s*", text)
    if not match:
        raise typer.BadParameter(f"{text!r}: give a size such as 500MB, 2GiB or 1000000")
    number, unit, binary = match.groups()
    base = 1024 if binary else 1000
    return int(float(number) * base ** " KMGT".index(unit.upper() or " "))


@app.command("export")
def export_cmd(loom: Loom,
               fmt: Annotated[str, typer.Option("--format", "-f", help="webdataset (tar shards) | parquet | medmat | "
                                                                    "llava | sharegpt | swift (annotations as training "
                                                                    "JSON/JSONL) | clip-benchmark (zero-shot "
                                                                    "classification and retrieval sets) | dicom "
                                                                    "(de-identified DICOM copies)."
                                                )] = "webdataset",
               out_to: Annotated[str | None, typer.Option(
                   "--out", "-o", help="Output folder (default: LOOM/exports/FORMAT), or an s3:// or gs:// URL: "
                                       "the export is made in LOOM/exports/staged/ and then published there "
                                       "(see `medloom publish`).")] = None,
               shard_size: Annotated[int, typer.Option(help="Samples per shard at most.")] = 5000,
               shard_bytes: Annotated[str, typer.Option(help="Bytes per shard at most, e.g. 500MB or 1GiB.")] = "500MB",
               balance_shards: Annotated[int | None, typer.Option(
                   metavar="N", min=1,
                   help="webdataset | parquet: cut each split into equal shards (within one sample), as many as the "
                        "smallest multiple of N that keeps each within --shard-size (--shard-bytes does not apply), so "
                        "that N data-loader workers (times GPUs) read as much each; open_clip needs a shard and a "
                        "full batch per worker (see examples/train/open_clip.sh).")] = None,
               max_side: Annotated[int | None, typer.Option(
                   help="Shrink so the longer side is at most PX (aspect kept, Lanczos).")] = None,
               image_format: Annotated[str, typer.Option(
                   help="jpg | png | keep (copy JPEG or PNG files as they are when possible).")] = "jpg",
               quality: Annotated[int, typer.Option(help="JPEG quality.", min=1, max=100)] = 90,
               where: Annotated[str | None, typer.Option(
                   help="SQL condition on the records view, e.g. \"modality = 'CT'\".")] = None,
               workers: Annotated[int, typer.Option("--workers", "-w", help="Worker processes (default: all cores).")] = 0,
               executor: Executor = None, address: Address = None,
               overwrite: Annotated[bool, typer.Option(help="Replace a different export already in the folder.")] = False,
               include_duplicates: Annotated[bool, typer.Option(
                   help="Keep records that dedup or leakage --mark marked out.")] = False,
               subset_name: Annotated[str | None, typer.Option("--subset", help="Only this named subset.")] = None,
               experiment: Annotated[Path | None, typer.Option(
                   help="A `medloom cg plan` experiment folder: its train and test records as the splits.")] = None,
               split: Annotated[list[str] | None, typer.Option(
                   "--split", help="Only this split (train, val, test; repeatable). Default: every split, each "
                                   "to its own files.")] = None,
               text: Annotated[str, typer.Option(
                   help="The sample's text (.txt, the `text` column): auto (the source's caption, else the "
                        "annotation's, else a sentence from the MAT triplet) | source | annotation | both.")] = "auto",
               citing_sentences: Annotated[bool, typer.Option(
                   help="Add the article sentences that cite a PMC figure to its caption.")] = False,
               require_text: Annotated[bool, typer.Option(
                   help="Leave out records with no text under --text (counted as filtered).")] = False,
               absolute_paths: Annotated[bool, typer.Option(
                   help="medmat/llava/sharegpt: absolute image paths (for an entry merged into another "
                        "dataset_info.json); default: relative to the output folder.")] = False,
               burned_in: Annotated[str, typer.Option(
                   help="dicom: files with burned-in text (tag or border heuristic): exclude | flag.")] = "exclude",
               keep_metadata: Annotated[bool, typer.Option(
                   help="Keep EXIF, XMP, comments and text chunks in exported images (default: removed).")] = False,
               as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
               quiet: Quiet = False,
        wait: Wait = False) -> None:
    """Write shards per split ({split}-{index:06d}.tar or .parquet) with a manifest; resumes a killed run.

    medmat, llava, sharegpt and swift write the annotations (`medloom annotate`) as FORMAT-SPLIT.json (.jsonl for
    swift; one file per split) with images/ beside them; clip-benchmark writes the WebDataset layout clip_benchmark
    reads (classification/SOURCE/ and retrieval/, a shard set per split); dicom writes de-identified DICOM copies.
    With an s3:// or gs:// --out, the finished folder is then published to that URL (`medloom publish`).
    """
    lean_driver()
    runner = executor_spec(executor, address, workers)
    if fmt != "dicom":
        from .engine import stage_module, start_early

        start_early(runner, [stage_module("export.render")])  # they start while we import
    from .export import ExportError, ExportOptions, export
    from .export.training import TRAINING_FORMATS, export_training

    loom = resolve_loom(loom)
    from .publish import PublishError, is_url, open_url, staging_name
    from .vocab.splits import split_name

    url = out_to if is_url(out_to) else None
    if url:
        if absolute_paths:
            fail("--absolute-paths names files on this machine; leave it out when --out is a URL")
        try:
            open_url(url)  # a bad URL fails now, not after the export
        except PublishError as e:
            fail(str(e))
    out_dir = layout.export_dir(loom, f"staged/{staging_name(url)}") if url else Path(out_to) if out_to else None

    unknown = [s for s in split or [] if split_name(s) is None]
    if unknown:
        fail(f"--split {unknown[0]!r}: use train, val or test")
    splits = sorted({split_name(s) for s in split}) if split else None
    if balance_shards is not None and fmt not in ("webdataset", "parquet"):
        fail(f"--balance-shards cuts webdataset and parquet shards; --format {fmt} has none to balance: leave it out")
    if fmt == "dicom":
        from .export.dicom import DicomExportError, export_dicom

        try:
            report = export_dicom(loom, out_dir or layout.export_dir(loom, "dicom"), where=where,
                                  include_duplicates=include_duplicates, burned_in=burned_in, quiet=quiet or as_json,
                                  wait=wait, splits=splits)
        except (DicomExportError, FileNotFoundError, ValueError) as e:
            fail(str(e))
        if not as_json:
            out.print(f"export dicom: {report.files} de-identified file(s) from {report.records - report.not_dicom} "
                      f"DICOM record(s) ({report.not_dicom} other records left out); burned-in text: "
                      f"{len(report.excluded_burned_in)} excluded, {len(report.flagged_burned_in)} flagged; "
                      f"{len(report.failed)} failed; {report.out}", highlight=False)
            for item in report.excluded_burned_in[:20]:
                err.print(f"[yellow]excluded:[/yellow] {escape(item['records'][0])}: {escape(item['reason'])}",
                          highlight=False)
        return _published(report.out, url, report.as_dict(), as_json, quiet, wait)
    # what the image-writing formats other than webdataset/parquet take alike
    rendered = dict(where=where, max_side=max_side, quality=quality, workers=runner, quiet=quiet or as_json,
                    include_duplicates=include_duplicates, subset=subset_name,
                    experiment=str(experiment) if experiment else None, wait=wait, keep_metadata=keep_metadata,
                    splits=splits, image_format=image_format)
    if fmt == "clip-benchmark":
        from .export.clipbench import export_clip_benchmark

        try:
            bench = export_clip_benchmark(loom, out_dir or layout.export_dir(loom, fmt), shard_size=shard_size, **rendered)
        except (ExportError, FileNotFoundError, ValueError) as e:
            fail(str(e))
        sets = ", ".join(f"{k} ({len(v['classes'])} classes)" for k, v in bench.classification.items()) or "none"
        if not as_json:
            out.print(f"export clip-benchmark: {sum(bench.retrieval.values())} retrieval sample(s) in "
                      f"{', '.join(bench.retrieval) or 'no split'}; classification datasets: {sets}; "
                      f"{bench.not_single_label} record(s) without exactly one label left out of classification; "
                      + (f"no classification set for {', '.join(sorted(bench.one_class_sources))} (fewer than two "
                         "classes); " if bench.one_class_sources else "") +
                      f"{len(bench.quarantined)} quarantined; {bench.out}", highlight=False)
        return _published(bench.out, url, bench.as_dict(), as_json, quiet, wait)
    if fmt in TRAINING_FORMATS:
        try:
            report = export_training(loom, out_dir or layout.export_dir(loom, fmt), fmt, absolute_paths=absolute_paths,
                                     **rendered)
        except (ExportError, FileNotFoundError, ValueError) as e:
            fail(str(e))
        if not as_json:
            out.print(f"export {fmt}: {report.items} item(s) from {report.records} annotated record(s), "
                      f"{report.images} image(s), {len(report.quarantined)} quarantined; "
                      + ", ".join(str(Path(report.out) / f) for f in report.files), highlight=False)
        return _published(Path(report.out), url, report.as_dict(), as_json, quiet, wait)
    options = ExportOptions(format=fmt, image_format=image_format, max_side=max_side, quality=quality,
                            shard_size=shard_size, shard_bytes=parse_bytes(shard_bytes), balance_shards=balance_shards,
                            where=where, overwrite=overwrite,
                            include_duplicates=include_duplicates, subset=subset_name,
                            experiment=str(experiment) if experiment else None, keep_metadata=keep_metadata,
                            splits=splits, text=text, citing=citing_sentences, require_text=require_text)
    target = out_dir or layout.export_dir(loom, fmt)
    try:
        report = export(loom, target, options, workers=runner, quiet=quiet or as_json, wait=wait)
    except (ExportError, FileNotFoundError, ValueError) as e:
        fail(str(e))
    if not as_json:
        state = "up to date, nothing written" if report.up_to_date else f"{report.shards_written} shard(s) written"
        out.print(f"export {fmt}: in {report.inputs} = exported {report.exported} + filtered {report.filtered} + "
                  f"quarantined {report.quarantined}; {report.shards} shard(s), {state}", highlight=False)
        for split, n in report.splits.items():
            out.print(f"  {escape(split)}: {n} samples", highlight=False)
        if report.reasons:
            err.print("[yellow]warning:[/yellow] quarantined at render: "
                      + ", ".join(f"{k} {v}" for k, v in sorted(report.reasons.items())) +
                      f" (details in {report.out / 'quarantine.jsonl'})", highlight=False)
        out.print(f"export: {report.out}", highlight=False)
    _published(report.out, url, report.as_dict(), as_json, quiet, wait)


def _published(folder: Path, url: str | None, summary: dict, as_json: bool, quiet: bool, wait: bool) -> None:
    """After an export: publish its folder when --out was a URL; print the summary as JSON when asked."""
    if url:
        summary["published"] = _publish_or_fail(folder, url, quiet=quiet or as_json, wait=wait, as_json=as_json)
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=1) + "\n")


def _publish_or_fail(folder: Path, url: str, *, threads: int = 8, quiet: bool, wait: bool, as_json: bool) -> dict:
    from .publish import PublishError, publish

    try:
        report = publish(folder, url, threads=threads, quiet=quiet, wait=wait)
    except PublishError as e:
        fail(str(e))
    if not as_json:
        out.print(f"publish: {report.uploaded} file(s) uploaded ({report.bytes_uploaded / 1e6:.1f} MB), "
                  f"{report.skipped} already there, {report.removed} old file(s) removed; {report.url}",
                  highlight=False)
        if report.left_out:
            err.print(f"[yellow]note:[/yellow] {len(report.left_out)} file(s) in {folder} that medloom did not write "
                      f"were not uploaded (first: {escape(report.left_out[0])})", highlight=False)
    return report.as_dict()


@app.command("publish")
def publish_cmd(folder: Annotated[Path, typer.Argument(help="An output folder medloom wrote (an export, a training-"
                                                            "format folder, a clip-benchmark set).")],
                url: Annotated[str, typer.Argument(help="s3://BUCKET/PREFIX or gs://BUCKET/PREFIX; S3 options in the "
                                                        "query, e.g. ?endpoint_override=http://HOST:9000.")],
                threads: Annotated[int, typer.Option(help="Uploads at once.", min=1)] = 8,
                as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
                quiet: Quiet = False, wait: Wait = False) -> None:
    """Upload the files medloom wrote in FOLDER to an object store; a rerun uploads only what changed.

    The prefix keeps a record of the objects medloom put there (.medloom-written.json): a prefix holding
    anything else is refused, nothing medloom did not write is overwritten or removed, manifest.json goes up
    last, and files of an earlier export that the folder no longer has are removed after it. Credentials
    come from the environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, ~/.aws, AWS_ENDPOINT_URL,
    GOOGLE_APPLICATION_CREDENTIALS), never from the URL.
    """
    from .publish import is_url

    if not is_url(url):
        fail(f"{url}: give an s3:// or gs:// URL (to copy to a local folder, export there instead)")
    summary = _publish_or_fail(folder, url, threads=threads, quiet=quiet or as_json, wait=wait, as_json=as_json)
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=1) + "\n")


@app.command()
def verify(directory: Annotated[Path, typer.Argument(help="An export folder (or a folder of WebDataset tars, or one tar).")],
           as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False) -> None:
    """Check every shard against the export manifest (counts, sizes, sha256) and the format rules."""
    from .export.verify import verify as run

    report = run(directory)
    if as_json:
        sys.stdout.write(json.dumps({"folder": str(report.folder), "format": report.format, "shards": report.shards,
                                     "samples": report.samples, "ok": report.ok, "problems": report.problems,
                                     "notes": report.notes}, indent=1) + "\n")
    else:
        for note in report.notes:
            err.print(f"note: {escape(note)}", highlight=False)
        for problem in report.problems[:200]:
            err.print(f"[red]problem:[/red] {escape(problem)}", highlight=False)
        if len(report.problems) > 200:
            err.print(f"... {len(report.problems) - 200} more problems (see --json)")
        verdict = "ok" if report.ok else f"{len(report.problems)} problem(s)"
        out.print(f"{directory}: {report.format}, {report.shards} shard(s), {report.samples} samples: {verdict}",
                  highlight=False)
    if not report.ok:
        raise typer.Exit(1)


@app.command("annotate")
def annotate_cmd(target: Annotated[Path, typer.Argument(help="The loom, or a recipe whose `annotate:` step to run.")],
                 captions: Annotated[bool, typer.Option("--captions", help="Captions from the MAT triplet and "
                                                                            "labels.")] = False,
                 rois: Annotated[bool, typer.Option("--rois", help="Multigranular ROI descriptions.")] = False,
                 vqa: Annotated[bool, typer.Option("--vqa", help="Multiple-choice, open, yes/no and grounding "
                                                                  "questions.")] = False,
                 seed: Annotated[int | None, typer.Option(help="Seed for every random choice (default 0).")] = None,
                 knowledge: Annotated[Path | None, typer.Option(help="Knowledge base (YAML/JSONL of term, synonyms, "
                                                                     "definition).")] = None,
                 templates: Annotated[Path | None, typer.Option(help="YAML: task family -> extra caption "
                                                                     "templates.")] = None,
                 instances: Annotated[list[str] | None, typer.Option(
                     "--instances", help="A label whose mask regions are counted one by one (repeat for more); "
                                         "other labels' regions are parts of one structure. Default: lesion and "
                                         "cell words (nodule, polyp, cell, ...).")] = None,
                 llm: Annotated[str | None, typer.Option(help="OpenAI-compatible server, e.g. "
                                                              "http://localhost:8000/v1.")] = None,
                 model: Annotated[str | None, typer.Option(help="Model name on that server.")] = None,
                 llm_images: Annotated[bool, typer.Option(help="Send images to a multimodal server.")] = False,
                 llm_concurrency: Annotated[int, typer.Option(help="Requests in flight at most.", min=1)] = 4,
                 llm_max_wait: Annotated[float, typer.Option(help="Longest Retry-After honoured, in seconds; a "
                                                                  "longer one fails the request.", min=0)] = 60.0,
                 llm_allow_insecure_key: Annotated[bool, typer.Option(help="Send OPENAI_API_KEY over plain http to "
                                                                           "another machine.")] = False,
                 where: Annotated[str | None, typer.Option(help="Only records matching this SQL condition.")] = None,
                 workers: Annotated[int, typer.Option("--workers", "-w", help="Worker processes (default: all "
                                                                              "cores).")] = 0,
                 executor: Executor = None, address: Address = None,
                 as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
                 quiet: Quiet = False,
        wait: Wait = False) -> None:
    """Generate captions, ROI descriptions and questions for every record (all three unless some are named).

    Stored in LOOM/annotations and shown by `medloom show`; every text is checked against its record.
    """
    import yaml

    from .annotate import AnnotateError, AnnotateSettings, annotate

    step = None
    if target.is_file() and target.suffix in (".yaml", ".yml"):
        from .recipe import RecipeError, load_recipe

        try:
            loaded = load_recipe(target)
        except RecipeError as e:
            fail(str(e))
        loom, step = loaded.loom, loaded.recipe.annotate
    else:
        loom = resolve_loom(target)
    settings = AnnotateSettings()
    if step is not None:
        settings = AnnotateSettings(captions=step.captions, rois=step.rois, vqa=step.vqa, seed=step.seed,
                                    templates=step.templates, knowledge=step.knowledge, definitions=step.definitions,
                                    instances=step.instances)
        if step.llm:
            settings.llm_url, settings.llm_model = step.llm.url, step.llm.model
            settings.llm_images, settings.llm_concurrency = step.llm.images, step.llm.concurrency
            settings.llm_max_wait, settings.llm_allow_insecure_key = step.llm.max_wait, step.llm.allow_insecure_key
    if captions or rois or vqa:
        settings.captions, settings.rois, settings.vqa = captions, rois, vqa
    if seed is not None:
        settings.seed = seed
    if knowledge is not None:
        settings.knowledge = str(knowledge)
    if instances:
        settings.instances = list(instances)
    if templates is not None:
        try:
            settings.templates = yaml.safe_load(templates.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            fail(f"{templates}: {e}")
    if llm:
        settings.llm_url, settings.llm_model, settings.llm_images = llm, model, llm_images
        settings.llm_concurrency, settings.llm_max_wait = llm_concurrency, llm_max_wait
    if llm_allow_insecure_key:
        settings.llm_allow_insecure_key = True
    try:
        report = annotate(loom, settings, workers=executor_spec(executor, address, workers), quiet=quiet or as_json,
                          where=where, wait=wait)
    except (AnnotateError, FileNotFoundError, ValueError) as e:
        fail(str(e))
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=1) + "\n")
        return
    questions = ", ".join(f"{k} {v}" for k, v in sorted(report.questions.items())) or "none"
    out.print(f"annotate: {report.records} records: {report.captions} captions, {report.roi_descriptions} ROI "
              f"descriptions, questions: {questions}; {report.without_labels} without labels or ROIs", highlight=False)
    others = [k for k in ("captions", "rois", "vqa") if k not in report.redone]
    if others or report.kept:
        out.print(f"made now: {', '.join(report.redone)}; kept as they were: "
                  + "; ".join(([", ".join(others)] if others else [])
                              + ([f"{report.kept} record(s) outside --where"] if report.kept else [])), highlight=False)
    if report.llm:
        s = report.llm
        out.print(f"llm: {s['answered']} answered, {s['cached']} from the cache, {s['failed']} failed "
                  f"({s['requests']} HTTP requests)", highlight=False)
    if report.flags:
        err.print("[yellow]flagged:[/yellow] " + ", ".join(f"{k} {v}" for k, v in sorted(report.flags.items()))
                  + f" (details in {report.out}/manifest.json)", highlight=False)
    out.print(f"annotations: {report.out}", highlight=False)


def _emit(report: dict, as_json: bool, summary: str) -> None:
    if as_json:
        sys.stdout.write(json.dumps(report, indent=1) + "\n")
    else:
        out.print(summary, highlight=False)


@app.command()
def dedup(loom: Loom,
          near: Annotated[int, typer.Option(help="Perceptual-hash distance (bits of 64) for near duplicates; "
                                                 "-1: exact copies only.")] = 6,
          embed_threshold: Annotated[float | None, typer.Option(
              help="Also join embedding neighbours with cosine similarity at least this (needs `medloom embed`).")
          ] = None,
          as_json: Annotated[bool, typer.Option("--json", help='Print {"groups": [[ids]], "keep": [ids]}.')] = False,
        wait: Wait = False) -> None:
    """Group exact and near duplicates across sources; keep one per group (the test split's copy first, then
    the larger image); mark the rest, which exports then leave out. Nothing is deleted."""
    from .curate.dedup import dedup as run

    try:
        report, groups, keep = run(resolve_loom(loom), near=None if near < 0 else near,
                                   embed_threshold=embed_threshold, wait=wait)
    except FileNotFoundError as e:
        fail(str(e))
    if as_json:
        sys.stdout.write(json.dumps({"groups": groups, "keep": keep, "report": report.as_dict()}, indent=1) + "\n")
        return
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(report.by_reason.items())) or "none"
    out.print(f"dedup: {report.records} records, {report.groups} groups holding {report.in_groups}; "
              f"{report.marked} marked as duplicates ({reasons}); groups and report in {report.out}", highlight=False)


@app.command()
def leakage(loom: Loom,
            near: Annotated[int, typer.Option(help="Perceptual-hash distance for near copies; -1: exact only.")] = 6,
            mark: Annotated[bool, typer.Option(help="Mark the training copies so that exports leave them out.")
                            ] = False,
            as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
        wait: Wait = False) -> None:
    """Test and validation records with an exact or near copy in any training split, per source pair."""
    from .curate.dedup import leakage as run

    try:
        report = run(resolve_loom(loom), near=None if near < 0 else near, mark=mark, wait=wait)
    except FileNotFoundError as e:
        fail(str(e))
    pairs = "; ".join(f"{k}: {v}" for k, v in sorted(report.by_source_pair.items())) or "no leaks"
    _emit(report.as_dict(), as_json, f"leakage: {report.leaking} of {report.evaluation_records} test/validation "
                                     f"records have {report.training_copies} copies in training ({pairs})"
                                     + (f"; {report.marked} training copies marked" if mark else ""))


@app.command()
def embed(loom: Loom,
          model: Annotated[str, typer.Option(help="builtin | efficientnet-lite0 | open_clip:ARCH:WEIGHTS | "
                                                  "timm:ARCH:WEIGHTS | hf:FOLDER")] = "builtin",
          workers: Annotated[int, typer.Option("--workers", "-w", help="Worker processes.")] = 0,
          executor: Executor = None, address: Address = None,
          as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
          quiet: Quiet = False,
        wait: Wait = False) -> None:
    """Embed every record's image; cached per catalog part, so a re-run embeds only new or changed parts."""
    from .curate.embed import embed as run

    try:
        report = run(resolve_loom(loom), model, workers=executor_spec(executor, address, workers),
                     quiet=quiet or as_json, wait=wait)
    except (FileNotFoundError, ValueError, ImportError) as e:
        fail(str(e))
    _emit(report.as_dict(), as_json, f"embed {model}: {report.records} records, {report.dimensions} dimensions; "
                                     f"{report.parts_computed} of {report.parts} parts computed, the rest cached; "
                                     f"{len(report.unreadable)} unreadable; {report.out}")


@app.command("cluster")
def cluster_cmd(loom: Loom,
                k: Annotated[int, typer.Option("--k", help="Number of clusters.", min=1)] = 20,
                pca: Annotated[int, typer.Option(help="Principal components kept before k-means.", min=1)] = 50,
                seed: Annotated[int, typer.Option(help="Seed for k-means.")] = 0,
                model: Annotated[str | None, typer.Option(help="Embeddings of this model (default: the last "
                                                               "embedded).")] = None,
                sheets: Annotated[bool, typer.Option(help="Write a contact sheet PNG per cluster.")] = True,
                as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
                quiet: Quiet = False,
        wait: Wait = False) -> None:
    """PCA (explained-variance curve as JSON and PNG) then k-means, streamed by part; contact sheets."""
    from .curate.cluster import cluster as run

    try:
        report = run(resolve_loom(loom), k, pca=pca, seed=seed, model=model, sheets=sheets, quiet=quiet or as_json, wait=wait)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    _emit(report.as_dict(), as_json, f"cluster: {report.records} records into {report.k} clusters (sizes "
                                     f"{min(report.sizes)}..{max(report.sizes)}) after PCA to {report.pca} "
                                     f"dimensions ({report.explained_variance:.0%} of the variance); {report.out}")


@app.command()
def concepts(loom: Loom,
             apply: Annotated[list[Path], typer.Option("--apply", help="A cluster label file (YAML), one per "
                                                                      "annotator; repeat for several.")],
             taxonomy: Annotated[Path | None, typer.Option(help="Concept taxonomy YAML (default: medloom's).")
                                 ] = None,
             as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
        wait: Wait = False) -> None:
    """Take cluster labels from annotators, report their agreement, and propagate the majority to records."""
    from .curate.concepts import ConceptError, apply_labels

    try:
        report = apply_labels(resolve_loom(loom), apply, taxonomy, wait=wait)
    except (ConceptError, FileNotFoundError, OSError) as e:
        fail(str(e))
    kappa = f", Fleiss' kappa {report.fleiss_kappa:.2f}" if report.fleiss_kappa is not None else ""
    _emit(report.as_dict(), as_json, f"concepts: {report.clusters_labelled} clusters labelled by "
                                     f"{len(report.annotators)} annotator(s), mean agreement "
                                     f"{report.mean_agreement:.2f}{kappa}; {report.records} records: "
                                     + ", ".join(f"{k} {v}" for k, v in sorted(report.per_concept.items())))


@app.command()
def subset(loom: Loom, name: Annotated[str, typer.Argument(help="The subset's name (for export --subset).")],
           concept: Annotated[list[str] | None, typer.Option(help="Keep records with this global or local "
                                                                  "concept; repeat for several.")] = None,
           cap: Annotated[int | None, typer.Option(help="At most N records per global concept.", min=1)] = None,
           seed: Annotated[int, typer.Option(help="Seed choosing which records a cap keeps.")] = 0,
           where: Annotated[str | None, typer.Option(help="Also an SQL condition on the records.")] = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print the subset's description as JSON.")] = False,
        wait: Wait = False) -> None:
    """Save a named subset: filter by concept and balance by capping records per concept."""
    from .curate.subsets import SubsetError, make_subset

    try:
        info = make_subset(resolve_loom(loom), name, concepts=concept, cap=cap, seed=seed, where=where, wait=wait)
    except (SubsetError, FileNotFoundError) as e:
        fail(str(e))
    _emit(info, as_json, f"subset {name}: {info['records']} records ("
                         + ", ".join(f"{k} {v}" for k, v in info["per_concept"].items()) + ")")


@app.command()
def split(loom: Loom,
          by: Annotated[str, typer.Option(help="patient | study | record | source: what never crosses sides.")
                        ] = "patient",
          val: Annotated[float, typer.Option(help="Share of records for validation.")] = 0.1,
          test: Annotated[float, typer.Option(help="Share of records for test.")] = 0.1,
          seed: Annotated[int, typer.Option(help="Seed for the order groups are drawn in.")] = 0,
          stratify: Annotated[str | None, typer.Option(help="label: split within each label.")] = None,
          keep_source: Annotated[bool, typer.Option(help="Keep each source's own split (and check it).")] = False,
          as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
        wait: Wait = False) -> None:
    """Assign train/val/test so that no patient (or study) is on two sides; exports use it from then on.
    The split is checked against the duplicate groups and every leak is reported."""
    from .splits.assign import SplitError, make_split

    try:
        report = make_split(resolve_loom(loom), by=by, val=val, test=test, seed=seed, stratify=stratify,
                            keep_source=keep_source, wait=wait)
    except (SplitError, FileNotFoundError) as e:
        fail(str(e))
    sizes = ", ".join(f"{k} {v}" for k, v in sorted(report.sizes.items()))
    _emit(report.as_dict(), as_json, f"split by {by}: {report.records} records in {report.groups} groups: {sizes}; "
                                     f"{report.groups_on_two_sides} {by}s on two sides, {report.duplicate_leaks} "
                                     f"duplicate groups on two sides; {report.out}")
    if report.duplicate_leaks or report.groups_on_two_sides:
        err.print("[yellow]warning:[/yellow] the split leaks; see the report (split.json) for the groups",
                  highlight=False)


@app.command("subsets")
def subsets_cmd(loom: Loom, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Records grouped by MAT triplet across sources (Med-MAT's subsets), with sizes and label spaces."""
    from .cg.plan import mat_subsets, name

    found = mat_subsets(resolve_loom(loom))
    data = [{"triplet": name(t), "records": s.records, "sources": s.sources, "labels": s.labels}
            for t, s in sorted(found.items())]
    if as_json:
        sys.stdout.write(json.dumps(data, indent=1) + "\n")
        return
    table = Table(title=f"{len(data)} MAT subsets", title_justify="left")
    for col in ("modality|anatomy|task", "records", "sources", "labels"):
        table.add_column(col)
    for d in data:
        table.add_row(escape(d["triplet"]), str(d["records"]), escape(", ".join(d["sources"])),
                      escape(", ".join(d["labels"][:12]) + (" ..." if len(d["labels"]) > 12 else "")))
    out.print(table)


@app.command()
def report(loom: Loom,
           out_file: Annotated[Path, typer.Option("--out", help="The HTML file to write.")] = Path("report.html")
           ) -> None:
    """Write the loom's overview (counts per MAT triplet, source, split, licence, label, quarantine reason, with
    charts) as one HTML file that opens offline."""
    from .web.report import write_report

    try:
        path = write_report(resolve_loom(loom), out_file)
    except (FileNotFoundError, FileExistsError, IsADirectoryError) as e:
        fail(str(e))
    out.print(f"report: {path}", highlight=False)


@app.command()
def serve(loom: Loom,
          host: Annotated[str, typer.Option(help="Address to listen on; anything but loopback needs --token.")
                          ] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).", min=0, max=65535)] = 8765,
          read_only: Annotated[bool, typer.Option("--read-only", help="Refuse every write (labels, choices, "
                                                                      "reviews).")] = False,
          token: Annotated[str | None, typer.Option(help="Access token, needed when --host is not loopback "
                                                         "(use `auto` for a random one).")] = None,
          taxonomy: Annotated[Path | None, typer.Option(help="Concept taxonomy YAML for cluster labels "
                                                              "(default: medloom's).")] = None,
          allow_host: Annotated[list[str] | None, typer.Option(
              "--allow-host", help="Another host name requests may use (a DNS name or proxy in front of this "
                                   "server); repeat for several. Others are refused (DNS rebinding).")] = None,
          filter_timeout: Annotated[float, typer.Option(help="Seconds a grid WHERE filter may run before it is "
                                                             "stopped.", min=0.1)] = 10.0,
          filter_memory: Annotated[int, typer.Option(help="MiB a grid WHERE filter may use before it is stopped.",
                                                     min=16)] = 1024,
          workers: Annotated[int, typer.Option(help="Processes making the thumbnails (0: one per core).", min=0)] = 0,
          executor: Executor = None, address: Address = None, quiet: Quiet = False) -> None:
    """Look at the loom in a browser: overview, grid with facets, records with their ROIs, clusters to label,
    duplicates to resolve, generated texts to audit. Thumbnails missing from the cache are made first."""
    import secrets
    import socket

    from .web.app import is_loopback

    loom = resolve_loom(loom)
    if not is_loopback(host) and not token:
        fail(f"--host {host} is reachable from other machines: pass --token SECRET (or --token auto)")
    if token == "auto":
        token = secrets.token_urlsafe(24)
    try:
        import uvicorn

        from .web.app import make_app
    except ImportError as e:
        fail(f"the web app needs its extra: pip install 'medloom[web]' ({e.name} is missing)")
    from . import catalog
    from .view.render import render_sources
    from .web.thumbs import build_thumbnails

    try:
        con = catalog.connect(loom)
    except FileNotFoundError as e:
        fail(str(e))
    made = build_thumbnails(loom, con, render_sources(catalog.read_manifest(loom)),
                            workers=executor_spec(executor, address, workers), quiet=quiet)
    if made["failed"]:
        err.print(f"thumbnails: {made['failed']} record(s) could not be rendered (shown as broken images)",
                  highlight=False)
    application = make_app(loom, read_only=read_only, token=token, host=host, taxonomy=taxonomy,
                           allow_hosts=list(allow_host or []), filter_seconds=filter_timeout,
                           filter_memory_mb=filter_memory)
    shown = f"[{host}]" if ":" in host else host
    # bound and listening here, so a port in use is one clear line and the URL printed already answers
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        fail(f"cannot listen on {shown}:{port}: {e.strerror or e}; choose another --port (0: any free one)")
    url = f"http://{shown}:{sock.getsockname()[1]}/" + (f"?token={token}" if token else "")
    out.print(f"medloom serve: {url}  ({made['records']} records; Ctrl-C stops)", highlight=False)
    sys.stdout.flush()
    state = application.state.medloom

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            # SIGTERM or Ctrl-C: stop the filters in flight too, or uvicorn waits for their requests to end
            state.close()
            super().handle_exit(sig, frame)

    try:
        Server(uvicorn.Config(application, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
               ).run(sockets=[sock])
    finally:
        state.close()


eval_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                       help="Evaluate models on a loom: multiple-choice VQA, paired comparisons of runs.")
app.add_typer(eval_app, name="eval")


@eval_app.command("vqa")
def eval_vqa(loom: Loom,
             model: Annotated[str, typer.Option(help="openai:http://HOST:PORT/v1#MODEL (vLLM, Ollama, LMDeploy, "
                                                     "OpenAI), hf:PATH (a local transformers vision-language "
                                                     "model), or medloom:PATH or hf-clip:PATH (CLIP-style models: "
                                                     "each option scored by image-text similarity).")],
             out_dir: Annotated[Path, typer.Option("--out", help="The run folder (predictions.parquet, "
                                                                 "results.json, cache/).")],
             split: Annotated[str, typer.Option(help="The split evaluated: test, val or train.")] = "test",
             subset: Annotated[str | None, typer.Option(help="Only this named subset's records.")] = None,
             experiment: Annotated[Path | None, typer.Option(help="A `cg plan` experiment folder: its test records."
                                                             )] = None,
             where: Annotated[str | None, typer.Option(help="Only records matching this SQL condition.")] = None,
             circular: Annotated[bool, typer.Option(help="Ask every rotation of the options; right only when all "
                                                         "are.")] = False,
             images: Annotated[bool, typer.Option(help="Send each image (JPEG, 512 px) with its question.")] = True,
             seed: Annotated[int, typer.Option(help="Seed for questions made on the fly and the bootstrap.")] = 0,
             concurrency: Annotated[int, typer.Option(help="Requests in flight at most.", min=1)] = 8,
             retries: Annotated[int, typer.Option(help="Retries of a failed request.", min=0)] = 3,
             timeout: Annotated[float, typer.Option(help="Seconds one answer may take at most, from sending the "
                                                         "question to the reply's last byte, every retry included "
                                                         "(a server trickling bytes is cut off).", min=0.1)] = 120.0,
             max_failures: Annotated[int, typer.Option(help="Stop after this many failed questions in a row (what "
                                                            "was answered is kept; run again to resume).",
                                                       min=1)] = 20,
             allow_insecure_key: Annotated[bool, typer.Option(help="Send OPENAI_API_KEY over plain http to another "
                                                                  "machine.")] = False,
             judge: Annotated[str | None, typer.Option(help="openai:URL#MODEL: a chat model that maps each invalid "
                                                          "answer to an option's letter, or leaves it invalid "
                                                          "(logged in RUN/judge.jsonl).")] = None,
             workers: Annotated[int, typer.Option("--workers", "-w", help="Processes rendering the images "
                                                                          "(default: all cores).")] = 0,
             executor: Executor = None, address: Address = None,
             as_json: Annotated[bool, typer.Option("--json", help="Print results.json.")] = False,
             quiet: Quiet = False) -> None:
    """Ask a model every multiple-choice question of the selection; accuracy with 95% Wilson and patient-bootstrap
    intervals per MAT triplet, per source and overall. Invalid answers (no parsing rule matched) count wrong."""
    from .evaluate import EvalError, ModelSpecError, VQASettings, evaluate_vqa
    from .evaluate.metrics import table_rows
    from .export import ExportError
    from .models.chat import LLMError

    split_name = split_option(split)
    settings = VQASettings(model=model, split=split_name, subset=subset,
                           experiment=str(experiment) if experiment else None, where=where, circular=circular,
                           images=images, seed=seed, concurrency=concurrency, retries=retries, timeout=timeout,
                           max_failures=max_failures, allow_insecure_key=allow_insecure_key, judge=judge)
    try:
        results = evaluate_vqa(resolve_loom(loom), out_dir, settings, quiet=quiet or as_json,
                               workers=executor_spec(executor, address, workers))
    except (EvalError, ModelSpecError, ExportError, LLMError, FileNotFoundError) as e:
        fail(str(e))
    if as_json:
        sys.stdout.write(json.dumps(results, indent=1) + "\n")
    else:
        table = Table(title=f"{results['settings']['model']} on {results['settings']['selection']}"
                            + (" (circular)" if circular else ""), title_justify="left")
        for name in ("group", "n", "accuracy", "95% Wilson", "95% bootstrap (patients)", "invalid", "class recall"):
            table.add_column(name, justify="left" if name == "group" else "right")
        for name, m in table_rows(results):
            if not m["n"]:
                table.add_row(escape(name), "0", *["-"] * 5)
                continue
            table.add_row(escape(name), str(m["n"]), f"{m['accuracy']:.3f}",
                          f"{m['wilson95'][0]:.3f}-{m['wilson95'][1]:.3f}",
                          f"{m['bootstrap95'][0]:.3f}-{m['bootstrap95'][1]:.3f} ({m['clusters']})",
                          f"{m['invalid_rate']:.1%}", f"{m['mean_class_recall']:.3f}")
        out.print(table)
        out.print("rules: " + ", ".join(f"{k} {v}" for k, v in sorted(results["rules"].items())), highlight=False)
        if results.get("judge"):
            j = results["judge"]
            out.print(f"judge {escape(j['model'])}: {j['mapped']} of {j['asked']} invalid answers mapped to an option"
                      + (f", {j['errors']} failed (still invalid)" if j["errors"] else "")
                      + f"; log: {out_dir / 'judge.jsonl'}", highlight=False)
    if not results["complete"]:
        err.print(f"stopped: {results['answered']} of {results['asked']} answers, {results['failed']} failed "
                  f"(last: {escape(results['last_error'])}); run the same command again to ask only the rest",
                  highlight=False)
        raise typer.Exit(1)


def _clip_eval(kind: str, loom: Path, model: str, out_dir: Path, split: str, subset: str | None,
               experiment: Path | None, where: str | None, templates: Path | None, seed: int, workers,
               as_json: bool, quiet: bool) -> dict:
    from .evaluate import EvalError, ModelSpecError
    from .evaluate.zeroshot import ClipEvalSettings, evaluate_retrieval, evaluate_zeroshot
    from .export import ExportError

    split_name = split_option(split)
    prompts = None
    if templates is not None:
        try:
            prompts = [line.strip() for line in templates.read_text(encoding="utf-8").splitlines() if line.strip()]
        except OSError as e:
            fail(f"--templates {templates}: {os_error_message(e)}")
        bad = [p for p in prompts if "{c}" not in p]
        if bad or not prompts:
            fail(f"--templates {templates}: every line needs {{c}} where the class name goes"
                 + (f" (not: {bad[0]!r})" if bad else ""))
    settings = ClipEvalSettings(model=model, split=split_name, subset=subset,
                                experiment=str(experiment) if experiment else None, where=where, templates=prompts,
                                seed=seed)
    run = evaluate_zeroshot if kind == "zeroshot" else evaluate_retrieval
    try:
        results = run(resolve_loom(loom), out_dir, settings, quiet=quiet or as_json, workers=workers)
    except (EvalError, ModelSpecError, ExportError, FileNotFoundError) as e:
        fail(str(e))
    if as_json:
        sys.stdout.write(json.dumps(results, indent=1) + "\n")
    return results


ClipModelOption = Annotated[str, typer.Option("--model", help="medloom:PATH, a folder with medloom-clip.json and "
                                                               "projection.npz (image tower, text tower, projection), "
                                                               "or hf-clip:PATH, a local transformers CLIP-style "
                                                               "model (model, tokenizer, image processor).")]
RunOption = Annotated[Path, typer.Option("--out", help="The run folder (predictions.parquet, results.json).")]
SplitOption = Annotated[str, typer.Option(help="The split evaluated: test, val or train.")]
SubsetOption = Annotated[str | None, typer.Option(help="Only this named subset's records.")]
ExperimentOption = Annotated[Path | None, typer.Option(help="A `cg plan` experiment folder: its test records.")]
WhereOption = Annotated[str | None, typer.Option(help="Only records matching this SQL condition.")]
WorkersOption = Annotated[int, typer.Option("--workers", "-w", help="Processes computing image features.")]


@eval_app.command("zeroshot")
def eval_zeroshot(loom: Loom, model: ClipModelOption, out_dir: RunOption, split: SplitOption = "test",
                  subset: SubsetOption = None, experiment: ExperimentOption = None, where: WhereOption = None,
                  templates: Annotated[Path | None, typer.Option(help="Prompt templates, one per line with {c} for "
                                                                      "the class name.")] = None,
                  seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0, workers: WorkersOption = 0,
                  executor: Executor = None, address: Address = None,
                  as_json: Annotated[bool, typer.Option("--json", help="Print results.json.")] = False,
                  quiet: Quiet = False) -> None:
    """Zero-shot classification per source (its label space as the classes): top-1 with Wilson and patient-
    bootstrap intervals, top-5, mean per-class recall, AUROC for two classes."""
    results = _clip_eval("zeroshot", loom, model, out_dir, split, subset, experiment, where, templates, seed,
                         executor_spec(executor, address, workers), as_json, quiet)
    if as_json:
        return
    table = Table(title=f"{model} zero-shot on {results['settings']['selection']}", title_justify="left")
    for name in ("task", "classes", "n", "top-1", "95% Wilson", "95% bootstrap (patients)", "top-5", "class recall",
                 "AUROC"):
        table.add_column(name, justify="left" if name == "task" else "right")
    rows = [(k, v) for k, v in results["tasks"].items()] + [("overall", results["overall"])]
    for name, m in rows:
        table.add_row(escape(name), str(len(m.get("classes", [])) or "-"), str(m["n"]), f"{m['accuracy']:.3f}",
                      f"{m['wilson95'][0]:.3f}-{m['wilson95'][1]:.3f}",
                      f"{m['bootstrap95'][0]:.3f}-{m['bootstrap95'][1]:.3f} ({m['clusters']})", f"{m['top5']:.3f}",
                      f"{m['mean_class_recall']:.3f}", f"{m['auroc']:.3f}" if m.get("auroc") is not None else "-")
    out.print(table)


@eval_app.command("retrieval")
def eval_retrieval(loom: Loom, model: ClipModelOption, out_dir: RunOption, split: SplitOption = "test",
                   subset: SubsetOption = None, experiment: ExperimentOption = None, where: WhereOption = None,
                   workers: WorkersOption = 0, executor: Executor = None, address: Address = None,
                   as_json: Annotated[bool, typer.Option("--json", help="Print results.json.")] = False,
                   quiet: Quiet = False) -> None:
    """Image-to-text and text-to-image retrieval over the records' texts (the export text rule): recall@1/5/10."""
    results = _clip_eval("retrieval", loom, model, out_dir, split, subset, experiment, where, None, 0,
                         executor_spec(executor, address, workers), as_json, quiet)
    if as_json:
        return
    i2t, t2i = results["image_to_text"], results["text_to_image"]
    out.print(f"{results['images']} images, {results['texts']} distinct texts ({escape(results['settings']['selection'])}): "
              f"image to text R@1 {i2t['R@1']:.3f} R@5 {i2t['R@5']:.3f} R@10 {i2t['R@10']:.3f}; text to image "
              f"R@1 {t2i['R@1']:.3f} R@5 {t2i['R@5']:.3f} R@10 {t2i['R@10']:.3f}", highlight=False)


@eval_app.command("compare")
def eval_compare(run_a: Annotated[Path, typer.Argument(help="The first run folder.")],
                 run_b: Annotated[Path, typer.Argument(help="The second run folder.")],
                 seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
                 as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """B minus A on the questions both runs answered: exact McNemar test and a paired bootstrap interval."""
    from .evaluate import CompareError, compare

    try:
        result = compare(run_a, run_b, seed=seed)
    except CompareError as e:
        fail(str(e))
    if as_json:
        sys.stdout.write(json.dumps(result, indent=1) + "\n")
        return
    out.print(f"{result['shared']} shared questions (only A {result['only_a']}, only B {result['only_b']}): "
              f"A {result['a']['accuracy']:.3f} ({escape(result['a']['model'])}), "
              f"B {result['b']['accuracy']:.3f} ({escape(result['b']['model'])}); B - A = {result['difference']:+.3f}, "
              f"95% paired bootstrap {result['bootstrap95'][0]:+.3f} to {result['bootstrap95'][1]:+.3f}; "
              f"exact McNemar p = {result['mcnemar_exact_p']:.4g} ({result['a_right_b_wrong']} only A right, "
              f"{result['b_right_a_wrong']} only B right)", highlight=False)


train_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                        help="Train on a loom: a CLIP-style model with locked pip-installed towers.")
app.add_typer(train_app, name="train")


@train_app.command("clip")
def train_clip_cmd(loom: Loom,
                   out_dir: Annotated[Path, typer.Option("--out", help="The model folder (medloom-clip.json, "
                                                                       "projection.npz, train.json, loss.png, "
                                                                       "checkpoint.pt).")],
                   split: Annotated[str, typer.Option(help="The split trained on.")] = "train",
                   subset: SubsetOption = None,
                   experiment: Annotated[Path | None, typer.Option(help="A `cg plan` experiment folder: trains on "
                                                                        "its train.txt only.")] = None,
                   mix: Annotated[str | None, typer.Option(help="With --experiment TARGET_FOLDER: the experiment "
                                                                 "by name (related-fixed-task, all-related, "
                                                                 "without-area, baseline-plus, ...).")] = None,
                   where: WhereOption = None,
                   epochs: Annotated[int, typer.Option(help="Passes over the records.", min=1)] = 20,
                   batch_size: Annotated[int, typer.Option(help="Image-text pairs per step.", min=2)] = 64,
                   lr: Annotated[float, typer.Option(help="AdamW learning rate.", min=1e-9)] = 1e-3,
                   dim: Annotated[int, typer.Option(help="Size of the shared embedding space.", min=1)] = 256,
                   seed: Annotated[int, typer.Option(help="Seed of the initialisation and the order.")] = 0,
                   prompts: Annotated[bool, typer.Option(help="Train single-label records on their class prompts "
                                                              "too.")] = True,
                   image_tower: Annotated[str, typer.Option(help="efficientnet-lite0 (locked, LiT). Continual "
                                                                 "pretraining of a full open_clip model runs "
                                                                 "open_clip's trainer: examples/train/open_clip.sh "
                                                                 "with PRETRAINED=CHECKPOINT.")] = "efficientnet-lite0",
                   workers: WorkersOption = 0, executor: Executor = None, address: Address = None,
                   as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
                   quiet: Quiet = False, wait: Wait = False) -> None:
    """Train projections (and the temperature) over the locked EfficientNet-Lite0 and MiniLM towers with a
    contrastive loss; resumes from its last epoch; `medloom eval ... --model medloom:OUT` reads the result."""
    from .export import ExportError
    from .models.specs import ModelSpecError
    from .train.projections import TrainError, TrainSettings, train_clip

    if image_tower != "efficientnet-lite0":
        fail(f"--image-tower {image_tower!r}: `train clip` trains projections over the locked efficientnet-lite0; "
             "to continue pretraining a full open_clip model (open_clip:CHECKPOINT), run open_clip's own trainer on "
             "the loom's WebDataset export: PRETRAINED=CHECKPOINT examples/train/open_clip.sh LOOM (it needs "
             "open_clip_torch and torchvision)")
    split_name = split_option(split)
    if mix is not None:
        if experiment is None:
            fail("--mix names an experiment of a target folder: give that folder with --experiment")
        names = sorted(p.parent.name for p in experiment.glob("*/manifest.json"))
        if mix not in names:
            fail(f"--mix {mix!r}: {experiment} has " + (", ".join(names) if names else "no experiment (is it a target "
                                                                                         "folder of `cg plan`?)"))
        experiment = experiment / mix
    settings = TrainSettings(split=split_name, subset=subset, experiment=str(experiment) if experiment else None,
                             where=where, epochs=epochs, batch_size=batch_size, lr=lr, dim=dim, seed=seed,
                             prompts=prompts)
    try:
        report = train_clip(resolve_loom(loom), out_dir, settings, workers=executor_spec(executor, address, workers),
                            quiet=quiet or as_json, wait=wait)
    except (TrainError, ModelSpecError, ExportError, FileNotFoundError) as e:
        fail(str(e))
    except ImportError as e:
        fail(f"{e}; {TOWERS_HINT}")
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=1) + "\n")
    else:
        losses = f", loss {report.losses[0]:.4f} -> {report.losses[-1]:.4f}" if report.losses else ""
        out.print(f"train clip: {report.records} records, {report.texts} distinct texts, {report.epochs_run} epoch(s) "
                  "run" + (f" (resumed after epoch {report.resumed_from})" if report.resumed_from else "")
                  + f"{losses}; {report.out}", highlight=False)
    if report.stopped:
        err.print(f"[red]error:[/red] {escape(report.stopped)}", highlight=False)
        raise typer.Exit(1)


cg_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                     help="Compositional-generalization experiments (Med-MAT): which subsets reach a target.")
app.add_typer(cg_app, name="cg")


@cg_app.command("matrix")
def cg_matrix(loom: Loom, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """For every subset as a target: the training subsets each direction type has (0: not reachable)."""
    from .cg.plan import DIRECTIONS, matrix

    m = matrix(resolve_loom(loom))
    if as_json:
        sys.stdout.write(json.dumps(m, indent=1) + "\n")
        return
    table = Table(title="training subsets per direction (0: the direction cannot reach the target)",
                  title_justify="left")
    table.add_column("target")
    for d in DIRECTIONS:
        table.add_column(d, justify="right")
    for target, row in m.items():
        table.add_row(escape(target), *(str(row[d]) if row[d] else "-" for d in DIRECTIONS))
    out.print(table)


@cg_app.command("plan")
def cg_plan(loom: Loom,
            target: Annotated[str | None, typer.Option(help='The unseen triplet, e.g. "CT,lung,cancer".')] = None,
            all_targets: Annotated[bool, typer.Option("--all", help="Every subset in turn as the target.")] = False,
            out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="Where experiment folders go "
                                                                             "(default: LOOM/experiments).")] = None,
            seed: Annotated[int, typer.Option(help="Seed for baseline-plus.")] = 0,
            strict: Annotated[bool, typer.Option(help="Refuse (exit 1, nothing written) when an experiment would "
                                                      "train on exact or near copies of its target's test images; "
                                                      "default: warn.")] = False,
            as_json: Annotated[bool, typer.Option("--json", help="Print the experiments as JSON.")] = False,
        wait: Wait = False) -> None:
    """Write one folder per experiment (train.txt, test.txt, manifest.json saying why each subset is in)."""
    from .cg.plan import CopiesInTraining, PlanError, copies_warning, mat_subsets, parse_target, plan
    from .vocab import UnknownTermError

    loom = resolve_loom(loom)
    if bool(target) == all_targets:
        fail("give --target \"M,A,T\" or --all")
    try:
        targets = sorted(mat_subsets(loom)) if all_targets else [parse_target(target)]
        experiments = plan(loom, targets, out_dir or layout.experiments_dir(loom), seed=seed, strict=strict, wait=wait)
    except CopiesInTraining as e:
        fail(str(e), 1)
    except (PlanError, UnknownTermError, FileNotFoundError) as e:
        fail(str(e))
    warning = copies_warning(experiments)
    if warning:
        err.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)
    if as_json:
        sys.stdout.write(json.dumps([{k: v for k, v in e.items() if k != "why"} for e in experiments], indent=1)
                         + "\n")
        return
    table = Table(title=f"{len(experiments)} experiments", title_justify="left")
    for col in ("target", "name", "train subsets", "train", "test"):
        table.add_column(col)
    for e in experiments:
        table.add_row(escape(e["target"]), e["name"], str(len(e["train_subsets"])), str(e["train_records"]),
                      str(e["test_records"]))
    out.print(table)
    out.print(f"experiments: {out_dir or loom / 'experiments'}", highlight=False)


def _print_cg_tables(report: dict, metric: str) -> None:
    from .cg.tables import TABLE3, TABLE4, table_rows

    what = "multiple-choice" if metric == "mc" else "zero-shot top-1"
    for title, names in ((f"Table 3 ({what}): accuracy on the unseen target, 95% Wilson; * beats Baseline+ "
                          "(exact McNemar p < 0.05)", TABLE3), (f"Table 4 ({what}): ablations", TABLE4)):
        header, rows = table_rows(report, names)
        if len(header) == 2:
            continue
        table = Table(title=title, title_justify="left")
        for i, col in enumerate(header):
            table.add_column(escape(col), justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*map(escape, row))
        out.print(table)
    for target, t in report["targets"].items():
        for name, cell in sorted(t["runs"].items()):
            if "missing" in cell:
                err.print(f"{escape(target)} / {escape(name)}: n/a: {escape(cell['missing'])}", highlight=False)


@cg_app.command("run")
def cg_run_cmd(plan: Annotated[Path, typer.Argument(help="A `cg plan` output folder (or one target's folder).")],
               out_dir: Annotated[Path, typer.Option("--out", help="The results folder: a model and its evaluations "
                                                                   "per experiment, and report/.")],
               loom: Annotated[Path | None, typer.Option(help="The loom (default: the one the plan names).")] = None,
               epochs: Annotated[int, typer.Option(help="Training epochs per model.", min=1)] = 20,
               batch_size: Annotated[int, typer.Option(help="Image-text pairs per step.", min=2)] = 64,
               lr: Annotated[float, typer.Option(help="AdamW learning rate.", min=1e-9)] = 1e-3,
               dim: Annotated[int, typer.Option(help="Size of the shared embedding space.", min=1)] = 256,
               seed: Annotated[int, typer.Option(help="Seed of every model and of the bootstrap.")] = 0,
               workers: WorkersOption = 0, executor: Executor = None, address: Address = None,
               as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
               quiet: Quiet = False) -> None:
    """For every experiment of a plan: train a CLIP-style model on its mix, evaluate it on the target's test
    records (multiple choice by image-text similarity, and zero-shot), beside the untrained Baseline; then
    print Med-MAT's tables. Finished experiments are skipped when run again."""
    from .cg.plan import PlanError
    from .cg.run import run_cg
    from .cg.tables import ReportError
    from .evaluate import EvalError, ModelSpecError
    from .export import ExportError
    from .train.projections import TrainError, TrainSettings

    settings = TrainSettings(epochs=epochs, batch_size=batch_size, lr=lr, dim=dim, seed=seed)
    say = (lambda _: None) if quiet or as_json else (lambda m: err.print(escape(m), highlight=False))
    try:
        report = run_cg(plan, out_dir, settings, loom=resolve_loom(loom) if loom else None,
                        workers=executor_spec(executor, address, workers),
                        quiet=quiet or as_json, progress=say)
    except (PlanError, ReportError, TrainError, EvalError, ModelSpecError, ExportError, FileNotFoundError) as e:
        fail(str(e))
    except ImportError as e:
        fail(f"{e}; {TOWERS_HINT}")
    if report.warning:
        err.print(f"[yellow]warning:[/yellow] {escape(report.warning)}", highlight=False)
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=1) + "\n")
        return
    for metric, table in (report.report or {}).items():
        _print_cg_tables(table, metric)
    out.print(f"cg run: {report.targets} target(s), {report.trained} model(s) trained, {report.reused} experiment(s) "
              f"already done, {report.skipped} n/a; report: {out_dir / 'report'}", highlight=False)


@cg_app.command("report")
def cg_report_cmd(plan: Annotated[Path, typer.Argument(help="A `cg plan` output folder (or one target's folder).")],
                  runs: Annotated[list[str] | None, typer.Option("--runs", help="NAME=RUN: an `eval vqa` or `eval "
                                  "zeroshot` run folder under a column name (baseline, baseline-plus, "
                                  "related-fixed-modality, all-related, without-task, ...); TARGET_FOLDER/NAME=RUN "
                                  "for one target only. Repeat it.")] = None,
                  results: Annotated[Path | None, typer.Option(help="A `cg run` results folder: its runs.")] = None,
                  metric: Annotated[str, typer.Option(help="With --results: mc (multiple choice) or zeroshot.")] = "mc",
                  out_dir: Annotated[Path | None, typer.Option("--out", help="Write report.json, report.md and "
                                                                             "report.png here.")] = None,
                  seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
                  as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False) -> None:
    """Med-MAT's Tables 3 and 4 for a plan: each target's accuracy under each run with intervals, a mark where a
    trained run beats Baseline+ by an exact McNemar test, and a bar chart like Med-MAT's Figure 4."""
    from .cg.plan import PlanError, find_experiments
    from .cg.tables import ReportError, cg_report, figure, markdown, resolve_runs
    from .outputs import OutputFolder

    if metric not in ("mc", "zeroshot"):
        fail(f"--metric {metric!r}: use mc or zeroshot")
    try:
        experiments = find_experiments(plan)
        found, skipped = resolve_runs(experiments, runs or [], results, metric)
        report = cg_report(experiments, found, skipped, seed=seed)
    except (PlanError, ReportError) as e:
        fail(str(e))
    if out_dir is not None:
        folder = OutputFolder(out_dir)
        folder.require_only_own("report")
        folder.write_bytes("report.json", json.dumps(report, indent=1).encode())
        folder.write_bytes("report.md", markdown(report, metric).encode())
        folder.write_bytes("report.png", figure(report))
    if as_json:
        sys.stdout.write(json.dumps(report, indent=1) + "\n")
        return
    _print_cg_tables(report, metric)
    if out_dir is not None:
        out.print(f"report: {out_dir}", highlight=False)


pmc_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                      help="PubMed Central Open Access: download article packages.")
app.add_typer(pmc_app, name="pmc")


@pmc_app.command("fetch")
def pmc_fetch(file_list: Annotated[Path, typer.Option(
                  "--file-list", help="The service's oa_file_list.csv (or the older tab-separated .txt).")],
              out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for the .tar.gz packages.")],
              licenses: Annotated[str, typer.Option(
                  help="commercial (CC0, CC BY, CC BY-SA, CC BY-ND) | noncommercial (those and the CC BY-NC "
                       "licences) | all (every package, custom licences too).")] = "all",
              limit: Annotated[int | None, typer.Option(help="At most N packages (after the licence filter).")] = None,
              base_url: Annotated[str, typer.Option(help="Where the file list's paths are.")] = "https://ftp.ncbi.nlm.nih.gov/pub/pmc/",
              workers: Annotated[int, typer.Option("--workers", "-w", help="Parallel downloads (pooled connections).",
                                                   min=1)] = 4,
              retries: Annotated[int, typer.Option(help="Retries per package (back-off doubles each time).", min=0)] = 5,
              timeout: Annotated[float, typer.Option(help="Seconds to wait for a connection or for data.")] = 60.0,
              max_wait: Annotated[float, typer.Option(help="Longest Retry-After honoured, in seconds; a server "
                                                           "asking for more fails that package.", min=0)] = 300.0,
              max_bytes: Annotated[str, typer.Option(help="Largest package accepted, e.g. 4GiB.")] = "4GiB",
              as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
              quiet: Quiet = False) -> None:
    """Download packages from the PMC OA service; a second run fetches only what is missing.

    Partial downloads resume; every outcome is logged to OUT/fetch-log.jsonl. Exits 1 when any package failed.
    """
    from .engine.progress import progress_bar
    from .literature.fetch import FetchError, fetch, read_file_list, select

    try:
        packages = select(read_file_list(file_list), licenses, limit)
    except FetchError as e:
        fail(str(e))
    with progress_bar("pmc fetch", len(packages), quiet or as_json) as advance:
        report = fetch(packages, out_dir, base_url=base_url, workers=workers, retries=retries, timeout=timeout,
                       progress=advance, max_bytes=parse_bytes(max_bytes), max_wait=max_wait)
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=1) + "\n")
    else:
        out.print(f"pmc fetch: {report.selected} selected = {report.skipped} already complete + {report.fetched} "
                  f"fetched ({report.bytes / 1e6:.1f} MB) + {len(report.failed)} failed", highlight=False)
        for f in report.failed[:20]:
            err.print(f"[red]failed:[/red] {escape(f['name'])}: {escape(f['error'])} after {f['attempts']} attempt(s)",
                      highlight=False)
        out.print(f"packages: {out_dir} (log: {out_dir / 'fetch-log.jsonl'})", highlight=False)
    if report.failed:
        raise typer.Exit(1)


TOWERS_HINT = "install the towers with `pip install 'medloom[eval]'` (torch==2.13.0 first)"


def split_option(split: str) -> str:
    """--split as train, val or test (the spellings datasets use for folders are accepted)."""
    from .vocab.splits import split_name

    name = split_name(split)
    if name is None:
        fail(f"--split {split!r}: use train, val or test")
    return name


def executor_spec(kind: str | None, address: str | None, workers: int, recipe=None):
    """`workers` for a step: a count of local processes, or a Ray executor spec."""
    from .engine import KINDS, ExecutorSpec

    step = getattr(recipe, "executor", None)
    kind = kind or (step.kind if step else "local")
    address = address or (step.address if step and kind == step.kind else None)
    if kind not in KINDS:
        fail(f"--executor {kind!r}: use local or ray")
    if address and kind != "ray":
        fail("--address goes with --executor ray")
    return ExecutorSpec("ray", workers or None, address) if kind == "ray" else (workers or None)


def main() -> None:
    """The command, with one clear line (and a non-zero exit) for the failures a user must act on: another
    process holding the loom, a folder holding files medloom did not write, a full disk, a path that is a file."""
    from .engine.ray import disconnect
    from .errors import ExecutorError
    from .locks import LockHeld
    from .outputs import ForeignFileError

    try:
        app()
    except ExecutorError as e:
        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False)
        sys.exit(1)
    except LockHeld as e:
        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False)
        sys.exit(3)
    except ForeignFileError as e:
        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False)
        sys.exit(2)
    except OSError as e:
        err.print(f"[red]error:[/red] {escape(os_error_message(e))}", highlight=False)
        sys.exit(1)
    finally:
        disconnect()


def os_error_message(e: OSError) -> str:
    """What failed, on which path, and what to do."""
    import errno

    where = e.filename or "a file"
    what = e.strerror or str(e)
    hint = {errno.ENOSPC: "the disk is full: free some space, then run the same command again (it resumes)",
            errno.EDQUOT: "the disk quota is used up: free some space, then run the same command again (it resumes)",
            errno.EACCES: "no permission to write there: choose another folder, or fix its permissions",
            errno.EPERM: "no permission to write there: choose another folder, or fix its permissions",
            errno.EROFS: "the file system is read-only: choose another folder",
            errno.ENOTDIR: "a file stands where a folder is needed: choose another path",
            errno.EEXIST: "a file stands where a folder is needed: choose another path",
            errno.EFBIG: "the file grew past the size this system allows: choose another folder or smaller shards",
            }.get(e.errno or 0, "check the path and run the command again")
    return f"{where}: {what}; {hint}"


if __name__ == "__main__":
    main()
