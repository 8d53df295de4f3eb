"""`medloom report`: the overview as one HTML file, its charts inline SVG, that opens offline (a paper's
appendix, a data review)."""

from __future__ import annotations

from pathlib import Path

from ..outputs import write_atomic
from .app import static_text, templates
from .index import LoomIndex
from .overview import overview


def render_report(loom: Path) -> str:
    return (
        templates()
        .get_template("overview.html")
        .render(o=overview(LoomIndex(loom)), static=True, css=static_text("app.css"), read_only=True, csrf="")
    )


def write_report(loom: Path, out: Path) -> Path:
    """Write the report; a file there that is not a medloom report is not overwritten."""
    out = Path(out)
    if out.is_dir():
        raise IsADirectoryError(f"{out} is a folder; give the report's file name (report.html)")
    if out.exists() and b'name="generator" content="medloom report"' not in out.read_bytes()[:4096]:
        raise FileExistsError(
            f"{out} exists and is not a medloom report; it will not be overwritten: choose another name or move it away"
        )
    write_atomic(out, render_report(loom).encode("utf-8"))
    return out
