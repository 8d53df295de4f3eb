"""`medloom pmc fetch`: PubMed Central Open Access packages."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .app import pmc_app
from .common import (
    Quiet,
    err,
    out,
    parse_bytes,
)


@pmc_app.command("fetch")
def pmc_fetch(
    file_list: Annotated[
        Path, typer.Option("--file-list", help="The service's oa_file_list.csv (or the older tab-separated .txt).")
    ],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for the .tar.gz packages.")],
    licenses: Annotated[
        str,
        typer.Option(
            help="commercial (CC0, CC BY, CC BY-SA, CC BY-ND) | noncommercial (those and the CC BY-NC "
            "licences) | all (every package, custom licences too)."
        ),
    ] = "all",
    limit: Annotated[int | None, typer.Option(help="At most N packages (after the licence filter).")] = None,
    base_url: Annotated[str, typer.Option(help="Where the file list's paths are.")] = "https://ftp.ncbi.nlm.nih.gov/pub/pmc/",
    workers: Annotated[int, typer.Option("--workers", "-w", help="Parallel downloads (pooled connections).", min=1)] = 4,
    retries: Annotated[int, typer.Option(help="Retries per package (back-off doubles each time).", min=0)] = 5,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for a connection or for data.")] = 60.0,
    max_wait: Annotated[
        float, typer.Option(help="Longest Retry-After honoured, in seconds; a server asking for more fails that package.", min=0)
    ] = 300.0,
    max_bytes: Annotated[str, typer.Option(help="Largest package accepted, e.g. 4GiB.")] = "4GiB",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    quiet: Quiet = False,
) -> None:
    """Download packages from the PMC OA service; a second run fetches only what is missing.

    Partial downloads resume; every outcome is logged to OUT/fetch-log.jsonl. Exits 1 when any package failed.
    """
    from ..engine.progress import progress_bar
    from ..literature.fetch import fetch, read_file_list, select

    packages = select(read_file_list(file_list), licenses, limit)
    with progress_bar("pmc fetch", len(packages), quiet or as_json) as advance:
        report = fetch(
            packages,
            out_dir,
            base_url=base_url,
            workers=workers,
            retries=retries,
            timeout=timeout,
            progress=advance,
            max_bytes=parse_bytes(max_bytes),
            max_wait=max_wait,
        )
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=1) + "\n")
    else:
        summary, packages = report.lines(out_dir)
        out.print(escape(summary), highlight=False)
        for label, text in report.warnings():
            err.print(f"[red]{label}:[/red] {escape(text)}", highlight=False)
        out.print(escape(packages), highlight=False)
    if report.failed:
        raise typer.Exit(1)
