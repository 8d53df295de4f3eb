"""Every export format, one entry each: `medloom export --format NAME` runs its entry with one request.

A format is a function `(loom, out, request, workers, quiet, wait) -> report` in its own module, and its entry
here; its report has `out`, `as_dict()` (what `--json` prints), `lines()` (what the command prints) and
`warnings()` ((label, text) pairs for stderr). To add one: copy the module of the nearest format
(`training.py` for JSON beside images, `clipbench.py` for a shard layout of its own), give it an
`export_format` function, and add its entry.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .burned_in import MAX_FRAMES

if TYPE_CHECKING:  # the command imports this module before anything heavy
    from ..view.selection import Excluded


@dataclass(frozen=True)
class ExportRequest:
    """Everything `medloom export` was asked, whatever the format (each takes what applies to it)."""

    format: str = "webdataset"
    where: str | None = None
    include_duplicates: bool = False
    subset: str | None = None
    experiment: str | None = None
    splits: list[str] | None = None
    image_format: str = "jpg"
    max_side: int | None = None
    quality: int = 90
    keep_metadata: bool = False
    shard_size: int = 5000
    shard_bytes: int = 500 * 1024**2
    balance_shards: int | None = None
    overwrite: bool = False
    text: str = "auto"
    citing: bool = False
    require_text: bool = False
    absolute_paths: bool = False
    burned_in: str = "exclude"
    burned_in_frames: int = MAX_FRAMES
    burned_in_ocr: bool = False
    exclude: tuple[str, ...] = ()  # looms (a benchmark's) whose images and questions the export leaves out
    excluded: Excluded | None = None  # the records that leaves out (`exclude.excluding` fills it from `exclude`)
    questions: str = "auto"  # vlmeval-tsv: source (a benchmark's own) | generated (annotate's) | auto
    proposals: str = "accepted"  # which ROI proposals go beside the dataset's ROIs: accepted | all | none


@dataclass(frozen=True)
class Format:
    run: str  # "module:function"
    what: str  # for --help
    shards: bool = False  # cut into shards by --shard-size / --shard-bytes / --balance-shards
    renders: bool = True  # renders images in the workers (`export.render` or `view.render`)


FORMATS = {
    "webdataset": Format("medloom.export:export_format", "tar shards", shards=True),
    "parquet": Format("medloom.export:export_format", "Parquet shards", shards=True),
    "medmat": Format("medloom.export.training:export_format", "Med-MAT's question JSON"),
    "llava": Format("medloom.export.training:export_format", "LLaVA conversations"),
    "sharegpt": Format("medloom.export.training:export_format", "ShareGPT messages with LLaMA-Factory's dataset_info.json"),
    "swift": Format("medloom.export.training:export_format", "ms-swift's JSONL"),
    "clip-benchmark": Format(
        "medloom.export.clipbench:export_format", "zero-shot classification and retrieval sets as clip_benchmark reads them"
    ),
    "dicom": Format("medloom.export.dicom:export_format", "de-identified DICOM copies", renders=False),
    "vlmeval-tsv": Format("medloom.export.vlmeval:export_format", "VLMEvalKit's benchmark TSV (base64 images, A-D, answer)"),
}


def run_format(loom: Path, out: Path, request: ExportRequest, *, workers=None, quiet: bool = False, wait: bool = False):
    """The export `request.format` names, written to `out`; its report."""
    from ..errors import ExportError
    from ..view.proposals import check_choice

    entry = FORMATS.get(request.format)
    if entry is None:
        raise ExportError(f"--format {request.format!r}: choose one of {', '.join(FORMATS)}")
    try:
        check_choice(request.proposals)
    except ValueError as e:
        raise ExportError(str(e)) from None
    module, _, function = entry.run.partition(":")
    run = getattr(importlib.import_module(module), function)
    from .exclude import excluding, record

    if not request.exclude:
        report = run(loom, out, request, workers=workers, quiet=quiet, wait=wait)
        record(Path(report.out), None)  # an earlier export's exclusion report is no longer true
        return report
    with excluding(loom, request, wait=wait) as (request, contamination):
        report = run(loom, out, request, workers=workers, quiet=quiet, wait=wait)
    return ExcludingReport(report, record(Path(report.out), contamination))


class ExcludingReport:
    """A format's report with what `--exclude` left out: in `as_dict()` under `excluded`, and a line more."""

    def __init__(self, report, excluded: dict):
        self.report, self.excluded, self.out = report, excluded, report.out

    def as_dict(self) -> dict:
        return {**self.report.as_dict(), "excluded": self.excluded}

    def lines(self) -> list[str]:
        from .exclude import summary_line

        return [*self.report.lines(), summary_line(self.excluded)]

    def warnings(self) -> list[tuple[str, str]]:
        return self.report.warnings()
