"""Exports and what follows them: every format, publishing to an object store, verifying shards."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .. import layout
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
    parse_bytes,
    print_report,
    resolve_loom,
)


@app.command("export")
def export_cmd(
    loom: Loom,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="webdataset (tar shards) | parquet | medmat | "
            "llava | sharegpt | swift (annotations as training "
            "JSON/JSONL) | clip-benchmark (zero-shot "
            "classification and retrieval sets) | dicom "
            "(de-identified DICOM copies) | vlmeval-tsv (the "
            "questions as VLMEvalKit's benchmark TSV).",
        ),
    ] = "webdataset",
    out_to: Annotated[
        str | None,
        typer.Option(
            "--out",
            "-o",
            help="Output folder (default: LOOM/exports/FORMAT), or an s3:// or gs:// URL: "
            "the export is made in LOOM/exports/staged/ and then published there "
            "(see `medloom publish`).",
        ),
    ] = None,
    shard_size: Annotated[int, typer.Option(help="Samples per shard at most.")] = 5000,
    shard_bytes: Annotated[str, typer.Option(help="Bytes per shard at most, e.g. 500MB or 1GiB.")] = "500MB",
    balance_shards: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            min=1,
            help="webdataset | parquet: cut each split into equal shards (within one sample), as many as the "
            "smallest multiple of N that keeps each within --shard-size (--shard-bytes does not apply), so "
            "that N data-loader workers (times GPUs) read as much each; open_clip needs a shard and a "
            "full batch per worker (see examples/train/open_clip.sh).",
        ),
    ] = None,
    max_side: Annotated[int | None, typer.Option(help="Shrink so the longer side is at most PX (aspect kept, Lanczos).")] = None,
    image_format: Annotated[
        str, typer.Option(help="jpg | png | keep (copy JPEG or PNG files as they are when possible).")
    ] = "jpg",
    quality: Annotated[int, typer.Option(help="JPEG quality.", min=1, max=100)] = 90,
    where: Annotated[str | None, typer.Option(help="SQL condition on the records view, e.g. \"modality = 'CT'\".")] = None,
    workers: Workers = 0,
    executor: Executor = None,
    address: Address = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a different export already in the folder.")] = False,
    include_duplicates: Annotated[bool, typer.Option(help="Keep records that dedup or leakage --mark marked out.")] = False,
    exclude: Annotated[
        list[Path] | None,
        typer.Option(
            "--exclude",
            metavar="LOOM_OR_BENCHMARK",
            help="Leave out the records holding an image (exact or near copy) or a question (exact or high 3-gram "
            "overlap) of the test and val records of this loom, a benchmark's (its folder or recipe; repeatable), "
            "as `leakage --against` finds them; the export's manifest, card and excluded.json say what was left out.",
        ),
    ] = None,
    subset_name: Annotated[str | None, typer.Option("--subset", help="Only this named subset.")] = None,
    experiment: Annotated[
        Path | None, typer.Option(help="A `medloom cg plan` experiment folder: its train and test records as the splits.")
    ] = None,
    split: Annotated[
        list[str] | None,
        typer.Option(
            "--split", help="Only this split (train, val, test; repeatable). Default: every split, each to its own files."
        ),
    ] = None,
    text: Annotated[
        str,
        typer.Option(
            help="The sample's text (.txt, the `text` column): auto (the source's caption, else the "
            "annotation's, else a sentence from the MAT triplet) | source | annotation | both."
        ),
    ] = "auto",
    citing_sentences: Annotated[
        bool, typer.Option(help="Add the article sentences that cite a PMC figure to its caption.")
    ] = False,
    require_text: Annotated[
        bool, typer.Option(help="Leave out records with no text under --text (counted as filtered).")
    ] = False,
    absolute_paths: Annotated[
        bool,
        typer.Option(
            help="medmat/llava/sharegpt: absolute image paths (for an entry merged into another "
            "dataset_info.json); default: relative to the output folder."
        ),
    ] = False,
    burned_in: Annotated[
        str,
        typer.Option(
            help="dicom: files with burned-in text (the tag, or text-like marks in any colour anywhere in "
            "the checked frames): exclude | flag (exported with Burned In Annotation = YES)."
        ),
    ] = "exclude",
    burned_in_frames: Annotated[
        int,
        typer.Option(
            help="dicom: frames checked for burned-in text: all up to N, else N evenly spaced ones with the "
            "first and last (0: every frame)."
        ),
    ] = 32,
    burned_in_ocr: Annotated[
        bool,
        typer.Option(
            help="dicom: also read up to 4 of the checked frames with OCR (needs the tesseract program: "
            "apt-get install tesseract-ocr); slower, finds text the heuristic misses."
        ),
    ] = False,
    questions: Annotated[
        str,
        typer.Option(
            help="vlmeval-tsv: which questions: source (a benchmark's own, as they are) | generated (the "
            "multiple-choice questions of `medloom annotate`) | auto (source when the selection has any)."
        ),
    ] = "auto",
    keep_metadata: Annotated[
        bool, typer.Option(help="Keep EXIF, XMP, comments and text chunks in exported images (default: removed).")
    ] = False,
    proposals: Annotated[
        str,
        typer.Option(
            "--proposals",
            help="Which ROI proposals (`medloom propose`) go beside the dataset's own ROIs, each marked roi_source: "
            "proposal and accepted true/false: accepted (those a person accepted) | all (those not yet accepted "
            "too, for review in another tool) | none (the dataset's ROIs only). The manifest counts them.",
        ),
    ] = "accepted",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    quiet: Quiet = False,
    wait: Wait = False,
) -> None:
    """Write shards per split ({split}-{index:06d}.tar or .parquet) with a manifest; resumes a killed run.

    medmat, llava, sharegpt and swift write the annotations (`medloom annotate`) as FORMAT-SPLIT.json (.jsonl for
    swift; one file per split) with images/ beside them; clip-benchmark writes the WebDataset layout clip_benchmark
    reads (classification/SOURCE/ and retrieval/, a shard set per split); dicom writes de-identified DICOM copies.
    With an s3:// or gs:// --out, the finished folder is then published to that URL (`medloom publish`).
    """
    lean_driver()
    from ..export.formats import FORMATS

    runner = executor_spec(executor, address, workers)
    if fmt in FORMATS and FORMATS[fmt].renders:
        from ..engine import stage_module, start_early

        start_early(runner, [stage_module("export.render")])  # they start while we import
    from ..export.formats import ExportRequest, run_format
    from ..publish import is_url, open_url, staging_name
    from ..vocab.splits import split_name

    loom = resolve_loom(loom)
    url = out_to if is_url(out_to) else None
    if url:
        if absolute_paths:
            fail("--absolute-paths names files on this machine; leave it out when --out is a URL")
        open_url(url)  # a bad URL fails now, not after the export
    out_dir = layout.export_dir(loom, f"staged/{staging_name(url)}") if url else Path(out_to) if out_to else None
    unknown = [s for s in split or [] if split_name(s) is None]
    if unknown:
        fail(f"--split {unknown[0]!r}: use train, val or test")
    if balance_shards is not None and fmt in FORMATS and not FORMATS[fmt].shards:
        fail(f"--balance-shards cuts webdataset and parquet shards; --format {fmt} has none to balance: leave it out")
    request = ExportRequest(
        format=fmt,
        where=where,
        include_duplicates=include_duplicates,
        subset=subset_name,
        experiment=str(experiment) if experiment else None,
        splits=sorted({split_name(s) for s in split}) if split else None,
        image_format=image_format,
        max_side=max_side,
        quality=quality,
        keep_metadata=keep_metadata,
        shard_size=shard_size,
        shard_bytes=parse_bytes(shard_bytes),
        balance_shards=balance_shards,
        overwrite=overwrite,
        text=text,
        citing=citing_sentences,
        require_text=require_text,
        absolute_paths=absolute_paths,
        burned_in=burned_in,
        burned_in_frames=burned_in_frames,
        burned_in_ocr=burned_in_ocr,
        exclude=tuple(str(resolve_loom(p)) for p in exclude or ()),
        questions=questions,
        proposals=proposals,
    )
    try:
        report = run_format(
            loom, out_dir or layout.export_dir(loom, fmt), request, workers=runner, quiet=quiet or as_json, wait=wait
        )
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    if not as_json:
        print_report(report)
    _published(Path(report.out), url, report.as_dict(), as_json, quiet, wait)


def _published(folder: Path, url: str | None, summary: dict, as_json: bool, quiet: bool, wait: bool) -> None:
    """After an export: publish its folder when --out was a URL; print the summary as JSON when asked."""
    if url:
        summary["published"] = _publish_or_fail(folder, url, quiet=quiet or as_json, wait=wait, as_json=as_json)
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=1) + "\n")


def _publish_or_fail(folder: Path, url: str, *, threads: int = 8, quiet: bool, wait: bool, as_json: bool) -> dict:
    from ..publish import publish

    report = publish(folder, url, threads=threads, quiet=quiet, wait=wait)
    if not as_json:
        out.print(
            f"publish: {report.uploaded} file(s) uploaded ({report.bytes_uploaded / 1e6:.1f} MB), "
            f"{report.skipped} already there, {report.removed} old file(s) removed; {report.url}",
            highlight=False,
        )
        if report.left_out:
            err.print(
                f"[yellow]note:[/yellow] {len(report.left_out)} file(s) in {folder} that medloom did not write "
                f"were not uploaded (first: {escape(report.left_out[0])})",
                highlight=False,
            )
    return report.as_dict()


@app.command("publish")
def publish_cmd(
    folder: Annotated[
        Path, typer.Argument(help="An output folder medloom wrote (an export, a training-format folder, a clip-benchmark set).")
    ],
    url: Annotated[
        str,
        typer.Argument(
            help="s3://BUCKET/PREFIX or gs://BUCKET/PREFIX; S3 options in the query, e.g. ?endpoint_override=http://HOST:9000."
        ),
    ],
    threads: Annotated[int, typer.Option(help="Uploads at once.", min=1)] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    quiet: Quiet = False,
    wait: Wait = False,
) -> None:
    """Upload the files medloom wrote in FOLDER to an object store; a rerun uploads only what changed.

    The prefix keeps a record of the objects medloom put there (.medloom-written.json): a prefix holding
    anything else is refused, nothing medloom did not write is overwritten or removed, manifest.json goes up
    last, and files of an earlier export that the folder no longer has are removed after it. Credentials
    come from the environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, ~/.aws, AWS_ENDPOINT_URL,
    GOOGLE_APPLICATION_CREDENTIALS), never from the URL.
    """
    from ..publish import is_url

    if not is_url(url):
        fail(f"{url}: give an s3:// or gs:// URL (to copy to a local folder, export there instead)")
    summary = _publish_or_fail(folder, url, threads=threads, quiet=quiet or as_json, wait=wait, as_json=as_json)
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=1) + "\n")


@app.command()
def verify(
    directory: Annotated[Path, typer.Argument(help="An export folder (or a folder of WebDataset tars, or one tar).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Check every shard against the export manifest (counts, sizes, sha256) and the format rules."""
    from ..export.verify import verify as run

    report = run(directory)
    if as_json:
        sys.stdout.write(
            json.dumps(
                {
                    "folder": str(report.folder),
                    "format": report.format,
                    "shards": report.shards,
                    "samples": report.samples,
                    "ok": report.ok,
                    "problems": report.problems,
                    "notes": report.notes,
                },
                indent=1,
            )
            + "\n"
        )
    else:
        for note in report.notes:
            err.print(f"note: {escape(note)}", highlight=False)
        for problem in report.problems[:200]:
            err.print(f"[red]problem:[/red] {escape(problem)}", highlight=False)
        if len(report.problems) > 200:
            err.print(f"... {len(report.problems) - 200} more problems (see --json)")
        verdict = "ok" if report.ok else f"{len(report.problems)} problem(s)"
        out.print(f"{directory}: {report.format}, {report.shards} shard(s), {report.samples} samples: {verdict}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)
