"""The `medloom` command: one module per command group (`loom`, `export`, `annotate`, `curate`, `splits`, `web`,
`evaluate`, `train`, `cg`, `registry`, `pmc`), the options they share in `common.py`, and one map from errors to
exit codes (`main`)."""

from __future__ import annotations

import importlib
import sys

from rich.markup import escape

from ..errors import MedloomError
from .app import app
from .common import err, os_error_message

__all__ = ["app", "main"]
# the command modules, in the order `medloom --help` lists their commands; importing one adds its commands
COMMANDS = ("loom", "export", "annotate", "propose", "curate", "splits", "web", "evaluate", "train", "cg", "registry", "pmc")
for _module in COMMANDS:
    importlib.import_module(f"{__name__}.{_module}")


def main(args: list[str] | None = None, prog_name: str | None = None) -> None:
    """The command, with one clear line and its exit code for every failure a user must act on: a `MedloomError`
    carries its own (2 for a request that cannot be done as given, 1 for work that failed, 3 for a loom another
    process holds), any other OSError (a full disk, a path that is a file, no permission) exits 1 naming the path.
    `args` and `prog_name` default to the process's own (tests run commands in their process with them)."""
    from ..engine.ray import disconnect

    try:
        app(args=args, prog_name=prog_name)
    except MedloomError as e:
        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False)
        sys.exit(e.exit_code)
    except OSError as e:
        err.print(f"[red]error:[/red] {escape(os_error_message(e))}", highlight=False)
        sys.exit(1)
    finally:
        disconnect()
