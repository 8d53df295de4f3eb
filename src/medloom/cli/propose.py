"""`medloom propose`: machine-made ROIs for records that came without them, kept apart until accepted."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from .app import app
from .common import Address, AsJson, Executor, Loom, Quiet, Wait, Workers, executor_spec, fail, out, print_report, resolve_loom


@app.command("propose")
def propose_cmd(
    loom: Loom,
    method: Annotated[str | None, typer.Option("--method", "-m", help="The method (see --list).")] = None,
    where: Annotated[str | None, typer.Option(help="Only records matching this SQL condition on the records view.")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="A method parameter as KEY=VALUE (repeat for more).")
    ] = None,
    accept: Annotated[
        bool, typer.Option("--accept", help="Accept the method's proposals for the selected records (recorded, reversible).")
    ] = False,
    unaccept: Annotated[
        bool, typer.Option("--unaccept", help="Take back the acceptance of the selected records' proposals.")
    ] = False,
    by: Annotated[
        str | None, typer.Option(help="Who decides (recorded with --accept/--unaccept; default: the login name).")
    ] = None,
    list_methods: Annotated[bool, typer.Option("--list", help="List the methods and what they suit.")] = False,
    workers: Workers = 0,
    executor: Executor = None,
    address: Address = None,
    as_json: AsJson = False,
    quiet: Quiet = False,
    wait: Wait = False,
) -> None:
    """Propose ROIs with a method that needs no downloaded weights, or an expert model from weights you have
    (lungmask, cellpose, nnunet, sam: --param weights=FILE or folder=FOLDER; nothing is downloaded); they go to
    the `proposals` view, never into a record's own ROIs. `--accept` makes them read beside the record's ROIs by
    annotate and the exports, marked `roi_source: proposal`; `--unaccept` takes that back. Both are recorded in
    LOOM/proposals/decisions.json."""
    from ..propose import METHODS, get_method

    if list_methods:
        for name in METHODS:
            module = get_method(name)
            summary = (module.__doc__ or "").split(". ")[0].replace("\n", " ")
            out.print(f"{name} (version {module.VERSION}; labels {', '.join(module.LABELS)}): {summary}", highlight=False)
        return
    if not method:
        fail("--method is needed (see --list)")
    if accept and unaccept:
        fail("--accept and --unaccept cannot be given together")
    get_method(method)
    loom = resolve_loom(loom)
    params = {}
    for item in param or []:
        key, eq, value = item.partition("=")
        if not eq:
            fail(f"--param {item!r}: write KEY=VALUE")
        params[key.strip()] = value.strip()
    reports = []
    try:
        if not unaccept:
            from ..propose.step import propose

            spec = executor_spec(executor, address, workers)
            reports.append(propose(loom, method, where=where, params=params, workers=spec, quiet=quiet or as_json, wait=wait))
        if accept or unaccept:
            from ..propose.accept import decide

            reports.append(decide(loom, method, "accept" if accept else "unaccept", where=where, by=by, wait=wait))
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    if as_json:
        sys.stdout.write(json.dumps([r.as_dict() for r in reports], indent=1) + "\n")
        return
    for report in reports:
        print_report(report)
