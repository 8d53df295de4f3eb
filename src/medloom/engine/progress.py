"""Progress bars for long steps (rich), silenced by --quiet."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextmanager
def progress_bar(
    description: str, total: int, quiet: bool = False, console: Console | None = None
) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n, note=None, skipped=0)` (a note, such as the current loss, shows beside the description;
    `skipped` work found already done leaves the total, so the rate and the time left stay those of the work
    done now); a no-op when quiet."""
    if quiet or total == 0:
        yield lambda n=1, note=None, skipped=0: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("•"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console or Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total)

        left = total

        def advance(n: int = 1, note: str | None = None, skipped: int = 0) -> None:
            nonlocal left
            if note is not None:
                bar.update(task, description=f"{description} ({note})")
            if skipped:
                left -= skipped
                bar.update(task, total=left)
            bar.advance(task, n)

        yield advance
