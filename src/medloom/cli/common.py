"""What every command shares: the consoles, the options several commands take, and the small rules they apply
alike (the loom argument, sizes, split names, the executor, a failure's one line)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from .. import layout
from ..arrowpool import use_system_pool
from ..nopandas import keep_pandas_out

out = Console()


def lean_driver() -> None:
    """What the ingest and export commands set before pyarrow loads: no pandas (nopandas.py) and Arrow's
    system allocator (arrowpool.py)."""
    keep_pandas_out()
    use_system_pool()


err = Console(stderr=True)

Loom = Annotated[Path, typer.Argument(help="The loom (working folder) holding catalog/.")]

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Workers = Annotated[int, typer.Option("--workers", "-w", help="Worker processes (default: all cores).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]

Executor = Annotated[
    str | None,
    typer.Option(
        "--executor", help="local (a process pool on this machine) or ray (default: the recipe's executor:, else local)."
    ),
]

Address = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="With --executor ray: auto (the cluster `ray start` "
        "made here) or ray://HOST:PORT; default: a Ray "
        "instance on this machine for this command.",
    ),
]

Wait = Annotated[
    bool,
    typer.Option(
        "--wait",
        help="When another medloom process writes to this loom (or export folder), wait for it instead of exiting at once.",
    ),
]


def fail(message: str, code: int = 2) -> None:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def resolve_loom(path: Path) -> Path:
    """Accept the loom folder, its catalog/ folder, or a recipe file."""
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        from ..recipe import load_recipe

        return load_recipe(path).loom
    if path.name == layout.CATALOG and (path / "manifest.json").is_file():
        return path.parent
    return path


def parse_bytes(text: str) -> int:
    """'500MB', '1.5GiB', '2e9' or a plain number of bytes."""
    match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([kKmMgGtT]?)(i?)[bB]?\s*", text)
    if not match:
        raise typer.BadParameter(f"{text!r}: give a size such as 500MB, 2GiB or 1000000")
    number, unit, binary = match.groups()
    base = 1024 if binary else 1000
    return int(float(number) * base ** " KMGT".index(unit.upper() or " "))


def print_report(report) -> None:
    """A step's report as the command prints it: its lines, then its (label, text) warnings on stderr."""
    for line in report.lines():
        out.print(escape(line), highlight=False)
    for label, text in report.warnings():
        err.print(f"[yellow]{label}:[/yellow] {escape(text)}", highlight=False)


def emit(report: dict, as_json: bool, summary: str) -> None:
    if as_json:
        sys.stdout.write(json.dumps(report, indent=1) + "\n")
    else:
        out.print(escape(summary), highlight=False)


ClipModelOption = Annotated[
    str,
    typer.Option(
        "--model",
        help="medloom:PATH, a folder with medloom-clip.json and "
        "projection.npz (image tower, text tower, projection), "
        "or hf-clip:PATH, a local transformers CLIP-style "
        "model (model, tokenizer, image processor).",
    ),
]

RunOption = Annotated[Path, typer.Option("--out", help="The run folder (predictions.parquet, results.json).")]

SplitOption = Annotated[str, typer.Option(help="The split evaluated: test, val or train.")]

SubsetOption = Annotated[str | None, typer.Option(help="Only this named subset's records.")]

ExperimentOption = Annotated[Path | None, typer.Option(help="A `cg plan` experiment folder: its test records.")]

WhereOption = Annotated[str | None, typer.Option(help="Only records matching this SQL condition.")]

WorkersOption = Annotated[int, typer.Option("--workers", "-w", help="Processes computing image features.")]

TOWERS_HINT = "install the towers with `pip install 'medloom[eval]'` (torch==2.13.0 first)"


def split_option(split: str) -> str:
    """--split as train, val or test (the spellings datasets use for folders are accepted)."""
    from ..vocab.splits import split_name

    name = split_name(split)
    if name is None:
        fail(f"--split {split!r}: use train, val or test")
    return name


def executor_spec(kind: str | None, address: str | None, workers: int, recipe=None):
    """`workers` for a step: a count of local processes, or a Ray executor spec."""
    from ..engine import KINDS, ExecutorSpec

    step = getattr(recipe, "executor", None)
    kind = kind or (step.kind if step else "local")
    address = address or (step.address if step and kind == step.kind else None)
    if kind not in KINDS:
        fail(f"--executor {kind!r}: use local or ray")
    if address and kind != "ray":
        fail("--address goes with --executor ray")
    return ExecutorSpec("ray", workers or None, address) if kind == "ray" else (workers or None)


def os_error_message(e: OSError) -> str:
    """What failed, on which path, and what to do."""
    import errno

    where = e.filename or "a file"
    what = e.strerror or str(e)
    hint = {
        errno.ENOSPC: "the disk is full: free some space, then run the same command again (it resumes)",
        errno.EDQUOT: "the disk quota is used up: free some space, then run the same command again (it resumes)",
        errno.EACCES: "no permission to write there: choose another folder, or fix its permissions",
        errno.EPERM: "no permission to write there: choose another folder, or fix its permissions",
        errno.EROFS: "the file system is read-only: choose another folder",
        errno.ENOTDIR: "a file stands where a folder is needed: choose another path",
        errno.EEXIST: "a file stands where a folder is needed: choose another path",
        errno.EFBIG: "the file grew past the size this system allows: choose another folder or smaller shards",
    }.get(e.errno or 0, "check the path and run the command again")
    return f"{where}: {what}; {hint}"
