"""Export a loom to WebDataset or Parquet shards, with a manifest; resumable after a kill.

The selection (`--where`) is ordered per split by a hash of the file name (a fixed pseudo-random
order, so a shard mixes sources and classes; frames and slices of one file stay together), except
that a few records that together have every kind of list field filled (ROIs, masks, labels, the
annotation's questions with their options and boxes) lead each split: readers that infer types from the
first samples then see them typed.

Workers render records part by part; the parent writes shards in order. Each shard is written under a
temporary name; the manifest (updated after every shard) lists it with its size, sha256 and the
position in the split's order where it ends, and only then is the shard renamed into place. A run
that was killed resumes after the last listed shard; listed shards are not rewritten.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from .. import catalog
from ..engine import make_executor, stage_module
from ..engine.progress import progress_bar
from ..errors import ExportError
from ..locks import hold
from ..outputs import OutputFolder, sha256_file
from ..version import __version__
from ..view.proposals import proposal_settings, roi_summary
from ..view.render import image_ext, render_sources
from ..view.selection import Excluded, has_view, select_records, selection_sql
from ..view.texts import TEXT_MODES, text_condition
from .card import parquet_features, webdataset_features, write_card
from .croissant import write_croissant
from .parquet import ROW_BYTES, ParquetShardWriter
from .samples import ANNOTATION_JSON_TYPE, ARTICLE_LISTS
from .webdataset import RECORD, TarShardWriter, temporary

FORMATS = {"webdataset": "tar", "parquet": "parquet"}
MANIFEST = "manifest.json"
EXTRA_FILES = ("quarantine.jsonl", "sizes.json", "README.md", "croissant.json")  # beside the shards
BATCH = 32  # records per worker task
SCHEMA = 3  # of the samples' fields: part of the plan, so an export made with other fields is never resumed


@dataclass
class ExportOptions:
    format: str = "webdataset"
    image_format: str = "jpg"  # jpg | png | keep
    max_side: int | None = None
    quality: int = 90
    shard_size: int = 5000
    shard_bytes: int = 500 * 1024**2
    balance_shards: int | None = None  # equal shards per split, their number a multiple of this (see balanced_ends)
    where: str | None = None
    overwrite: bool = False
    include_duplicates: bool = False  # keep records that `dedup` / `leakage --mark` marked out
    subset: str | None = None  # a named subset (`medloom subset`): only its records
    experiment: str | None = None  # a `medloom cg plan` folder: its train and test records, as its splits
    keep_metadata: bool = False  # keep EXIF, XMP, comments and text chunks in exported images
    splits: list[str] | None = None  # only these splits (train, val, test); default: every split
    text: str = "auto"  # which caption is the sample's text: auto | source | annotation | both (see texts.py)
    citing: bool = False  # add the sentences that cite a PMC figure to its source caption
    require_text: bool = False  # leave out records with no text under `text` (counted as filtered)
    excluded: Excluded | None = None  # records `export --exclude` leaves out (a benchmark's images or questions)
    proposals: str = "accepted"  # ROI proposals beside the dataset's: accepted | all | none (view/proposals.py)


@dataclass
class ExportReport:
    out: Path
    inputs: int = 0
    exported: int = 0
    filtered: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    shards: int = 0
    shards_written: int = 0
    up_to_date: bool = False
    format: str = "webdataset"
    rois: dict = field(default_factory=dict)  # the dataset's ROIs and the proposals written or left out (roi_summary)

    def as_dict(self) -> dict:
        return {
            "out": str(self.out),
            "in": self.inputs,
            "exported": self.exported,
            "filtered": self.filtered,
            "quarantined": self.quarantined,
            "reasons": self.reasons,
            "splits": self.splits,
            "shards": self.shards,
            "shards_written": self.shards_written,
            "up_to_date": self.up_to_date,
            "rois": self.rois,
        }

    def lines(self) -> list[str]:
        state = "up to date, nothing written" if self.up_to_date else f"{self.shards_written} shard(s) written"
        return [
            f"export {self.format}: in {self.inputs} = exported {self.exported} + filtered {self.filtered} + "
            f"quarantined {self.quarantined}; {self.shards} shard(s), {state}",
            *(f"  {split}: {n} samples" for split, n in self.splits.items()),
            f"export: {self.out}",
        ] + (
            [f"ROIs: {self.rois['note']}"]
            if self.rois.get("proposals") or self.rois.get("choice", "accepted") != "accepted"
            else []
        )

    def warnings(self) -> list[tuple[str, str]]:
        if not self.reasons:
            return []
        return [
            (
                "warning",
                "quarantined at render: "
                + ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items()))
                + f" (details in {Path(self.out) / 'quarantine.jsonl'})",
            )
        ]


def shard_name(split: str, index: int, ext: str) -> str:
    return f"{re.sub(r'[^a-z0-9_-]+', '_', split.lower())}-{index:06d}.{ext}"


def balanced_ends(records: int, multiple: int, shard_size: int) -> list[int]:
    """Where each shard of a split of `records` ends (positions in the split's order) under `--balance-shards`:
    the fewest shards that keep each within `shard_size`, their number a multiple of `multiple`, cut equal (within
    one sample); one shard per record when the split has fewer records than that.

    Data loaders deal whole shards to their workers (open_clip asserts at least one shard per worker, and a
    worker whose shards hold less than one batch yields none), so N workers reading a multiple of N equal shards
    each get the same number of samples."""
    count = min(records, multiple * -(-records // (multiple * shard_size)))
    return [(k + 1) * records // count for k in range(count)]


def read_export_manifest(out: Path) -> dict | None:
    path = Path(out) / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def hf_features(folder: Path):
    """HF `datasets.Features` of a WebDataset export, to pass as `load_dataset("webdataset", ..., features=)`.

    `datasets` infers types from the first samples of one shard; a list that is empty there (no ROIs
    in that split, say) would be typed as null and fail later. Declared features avoid the guess (the
    export's README.md declares the same for `load_dataset(EXPORT_DIR)`).
    """
    import datasets

    from .card import webdataset_features

    manifest = read_export_manifest(Path(folder))
    if manifest is None or manifest["settings"]["format"] != "webdataset":
        raise ExportError(f"{folder}: not a medloom WebDataset export (no manifest.json for format webdataset)")
    image, *rest = manifest["fields"]
    return datasets.Features.from_dict(webdataset_features(manifest["settings"], image, "txt" in rest))


# what a record may fill of the list fields (see the module docstring): ROIs, ROI masks, labels, a label space,
# each of an article's lists
LEAD_FLAGS = (
    "len(rois) > 0",
    "coalesce(list_sum(list_transform(rois, lambda r: len(r.rle))), 0) > 0",
    "len(labels) > 0",
    "len(label_space) > 0",
    *(f"coalesce(len(article.{name}), 0) > 0" for name in ARTICLE_LISTS),
)
# and, when the loom has annotations, the lists of `annotation`: its questions, and each list of a question (a
# split whose first samples had questions but no grounding box typed `box` as null, and `datasets` failed)
QUESTION_LISTS = tuple(f.name for f in ANNOTATION_JSON_TYPE.field("questions").type.value_type if pa.types.is_list(f.type))
ANNOTATION_FLAGS = (
    "coalesce(len(ann_vqa), 0) > 0",
    *(
        f"coalesce(list_bool_or(list_transform(ann_vqa, lambda q: coalesce(len(q.{name}), 0) > 0)), false)"
        for name in QUESTION_LISTS
    ),
)


def lead_flags(with_annotation: bool) -> tuple[str, ...]:
    """The list fields the lead records must fill: `LEAD_FLAGS`, plus `ANNOTATION_FLAGS` when samples carry an
    `annotation`."""
    return LEAD_FLAGS + ANNOTATION_FLAGS if with_annotation else LEAD_FLAGS


def lead_ids(groups: list[tuple[tuple[bool, ...], str]]) -> list[str]:
    """A few records that together fill every list field found in a split: from its groups of records with the
    same `LEAD_FLAGS` (the flags, one id of the group), greedily the group that fills the most fields still
    wanted."""
    candidates = [({i for i, flag in enumerate(flags) if flag}, rid) for flags, rid in groups]
    wanted = set().union(*(c[0] for c in candidates)) if candidates else set()
    chosen: list[str] = []
    while wanted:
        flags, rid = max(candidates, key=lambda c: (len(c[0] & wanted), c[1]))
        chosen.append(rid)
        wanted -= flags
    return sorted(chosen)


def plan_splits(rows: list[tuple], counts: int, flags: int = len(LEAD_FLAGS)) -> dict[str, tuple[int, list[int], list[str]]]:
    """`_select`'s rows grouped by `flags` lead flags (`lead_flags`), per split: (records, the `counts` counts, the
    lead ids)."""
    out: dict[str, tuple[int, list[int], list[str]]] = {}
    for split in dict.fromkeys(r[0] for r in rows):
        mine = [r[1:] for r in rows if r[0] == split]
        totals = [sum(r[flags + i] for r in mine) for i in range(1 + counts)]
        out[split] = (totals[0], totals[1:], lead_ids([(r[:flags], r[-1]) for r in mine]))
    return out


def _plan_hash(settings: dict, manifest: dict) -> str:
    parts = sorted(p["records"]["sha256"] for s in manifest["sources"].values() for p in s["parts"])
    return hashlib.sha256(json.dumps({"settings": settings, "catalog": parts}, sort_keys=True).encode()).hexdigest()


def _write_state(folder: OutputFolder, state: dict) -> None:
    state["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    folder.write_bytes(MANIFEST, json.dumps(state, indent=1, sort_keys=True).encode())


def open_output_folder(loom: Path, out: Path, adopt: list[str] | tuple = ()) -> OutputFolder:
    """The output folder of an export of `loom`, every format's: the loom must have a catalog, and the folder
    may hold only files medloom wrote there (`adopt`: those an export from before the written-files record
    names); anything else refuses the export (`ForeignFileError`)."""
    if not (catalog.catalog_dir(loom) / catalog.MANIFEST).is_file():
        raise FileNotFoundError(f"{loom}: no catalog here (run `medloom ingest RECIPE` first)")
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file, not a folder; choose a folder for the export")
    folder = OutputFolder(out, adopt=adopt)
    folder.require_only_own("export")
    return folder


def open_export_folder(loom: Path, out: Path) -> OutputFolder:
    """The shard export's folder; an export made by a medloom from before the written-files record adopts the
    files its manifest lists."""
    adopt: list[str] = []
    try:
        previous = read_export_manifest(out)
    except (ValueError, OSError):
        previous = None
    if isinstance(previous, dict) and "plan" in previous and "medloom" in previous:
        shards = [s["file"] for split in previous.get("splits", {}).values() for s in split.get("shards", [])]
        adopt = [MANIFEST, *EXTRA_FILES, *shards]
    return open_output_folder(loom, out, adopt)


def _resume(folder: OutputFolder, plan: str, options: ExportOptions) -> dict | None:
    """The previous state to continue from, after checking its shards; None to start afresh."""
    out = folder.path
    previous = read_export_manifest(out)
    shards = sorted(r for r in folder.owned if r.endswith((".tar", ".parquet")))
    if previous is None or previous.get("plan") != plan:
        if previous is not None and not options.overwrite:
            raise ExportError(
                f"{out} holds an export of another selection, other settings or an older catalog; "
                "pass --overwrite to replace it, or choose another --out"
            )
        folder.remove_temporary()
        folder.remove_many([*shards, *EXTRA_FILES])  # only files medloom wrote
        return None
    for split in previous["splits"].values():
        listed, kept = split["shards"], []
        for shard in split["shards"]:
            path = out / shard["file"]
            tmp = temporary(path)
            if not path.is_file() and tmp.is_file() and sha256_file(tmp) == shard["sha256"]:
                os.replace(tmp, path)  # killed between listing the shard and renaming it
            if not path.is_file() or path.stat().st_size != shard["bytes"]:
                break
            kept.append(shard)
        if len(kept) < len(listed):
            split["shards"], split["done"], previous["complete"] = kept, False, False
    listed = {s["file"] for split in previous["splits"].values() for s in split["shards"]}
    folder.remove_temporary()
    folder.remove_many([r for r in shards if r not in listed])  # shards past the last listed one
    return previous


def check_options(max_side: int | None, quality: int, image_format: str = "jpg") -> None:
    if max_side is not None and max_side < 1:
        raise ExportError(
            f"--max-side {max_side}: give the longest side in pixels, at least 1 (or leave it out to keep the size)"
        )
    if not 1 <= quality <= 100:
        raise ExportError(f"--quality {quality}: give a JPEG quality from 1 to 100")
    if image_format not in ("jpg", "png", "keep"):
        raise ExportError(f"image format {image_format!r}: choose jpg, png or keep")


def export(
    loom: Path, out: Path, options: ExportOptions, *, workers: int | None = None, quiet: bool = False, wait: bool = False
) -> ExportReport:
    """Export under the locks: the loom shared (no writer meanwhile, other exports welcome), the output
    folder exclusively."""
    check_options(options.max_side, options.quality, options.image_format)
    if options.format not in FORMATS:
        raise ExportError(f"format {options.format!r}: choose {' or '.join(FORMATS)}")
    if options.shard_size < 1 or options.shard_bytes < 1:
        raise ExportError("--shard-size and --shard-bytes must be positive")
    if options.balance_shards is not None and options.balance_shards < 1:
        raise ExportError(
            f"--balance-shards {options.balance_shards}: give the number of data-loader workers the "
            "shards are for (at least 1), or leave it out to cut shards by --shard-size and --shard-bytes"
        )
    loom, out = Path(loom), Path(out)
    folder = open_export_folder(loom, out)
    with (
        hold(loom, shared=True, wait=wait),
        hold(out, wait=wait, what="export folder"),
        make_executor(workers, preload=[stage_module("export.render")], pandas_free=True) as executor,
    ):
        if not (read_export_manifest(out) or {}).get("complete"):
            executor.prestart()  # the workers start while the catalog is read and the export planned
        return _export(loom, folder, options, executor, quiet)


def export_format(loom: Path, out: Path, request, *, workers=None, quiet: bool = False, wait: bool = False) -> ExportReport:
    """`formats.FORMATS`' entry for webdataset and parquet."""
    options = ExportOptions(
        format=request.format,
        image_format=request.image_format,
        max_side=request.max_side,
        quality=request.quality,
        shard_size=request.shard_size,
        shard_bytes=request.shard_bytes,
        balance_shards=request.balance_shards,
        where=request.where,
        overwrite=request.overwrite,
        include_duplicates=request.include_duplicates,
        subset=request.subset,
        experiment=request.experiment,
        keep_metadata=request.keep_metadata,
        splits=request.splits,
        text=request.text,
        citing=request.citing,
        require_text=request.require_text,
        excluded=request.excluded,
        proposals=request.proposals,
    )
    return export(loom, out, options, workers=workers, quiet=quiet, wait=wait)


def _export(loom: Path, folder: OutputFolder, options: ExportOptions, executor, quiet: bool) -> ExportReport:
    out = folder.path
    con = catalog.connect(loom)
    joins, split, marks, marks_print = selection_sql(loom, options)
    if options.text not in TEXT_MODES:
        raise ExportError(f"--text {options.text!r}: choose one of {', '.join(TEXT_MODES)}")
    cond = text_condition(options.text, options.citing)
    counts = (cond or "false", "article IS NOT NULL")
    with_annotation = has_view(con, "annotations")
    flags = lead_flags(with_annotation)
    per_split = plan_splits(
        select_records(
            con,
            options.where,
            joins,
            split,
            marks,
            options.splits,
            cond if options.require_text else "",
            counts=counts,
            groups=flags,
            proposals=options.proposals,
        ),
        len(counts),
        len(flags),
    )
    manifest = catalog.read_manifest(loom)
    sources = render_sources(manifest)
    total = con.execute("SELECT count(*) FROM records").fetchall()[0][0]
    split_sizes = {name: n for name, (n, _, _) in per_split.items()}
    ext = image_ext(con, options.image_format, sources)
    with_txt = not cond or any(counted[0] for _, counted, _ in per_split.values())
    with_article = any(counted[1] for _, counted, _ in per_split.values())
    settings = {
        "format": options.format,
        "schema": SCHEMA,
        "image_format": ext,
        "keep": options.image_format == "keep",
        "max_side": options.max_side,
        "quality": options.quality,
        "shard_size": options.shard_size,
        "shard_bytes": options.shard_bytes,
        "where": options.where,
        "txt": with_txt,
        "marks": marks_print,
        "include_duplicates": options.include_duplicates,
        "subset": options.subset,
        "experiment": options.experiment,
        "keep_metadata": options.keep_metadata,
        "splits": options.splits,
        "text": options.text,
        "citing": options.citing,
        "require_text": options.require_text,
        "annotation": with_annotation,
        "article": with_article,
    }
    if with_annotation:  # the questions' lists lead too: another order than an export made before they did
        settings["lead"] = ["questions", *QUESTION_LISTS]
    if options.balance_shards:  # only when asked, so that exports made before the option still resume
        settings["balance_shards"] = options.balance_shards
    settings.update(proposal_settings(loom, options.proposals))
    plan = _plan_hash(settings, manifest)
    state = _resume(folder, plan, options)
    report = ExportReport(out=out, inputs=total, filtered=total - sum(split_sizes.values()), format=options.format)
    if state is None:
        fields = [ext, "json", "txt"] if with_txt else [ext, "json"]
        state = {
            "format_version": 1,
            "medloom": __version__,
            "plan": plan,
            "settings": settings,
            "loom": str(loom.resolve()),
            "complete": False,
            "fields": fields if options.format == "webdataset" else None,
            "splits": {},
            "quarantine": [],
        }
    elif state.get("complete"):
        report.up_to_date = True
        return _finish(folder, state, report, write=False)
    state["complete"] = False
    parquet = options.format == "parquet"  # Parquet has a column for every field, always
    sample = {
        "format": options.format,
        "ext": ext,
        "text": options.text,
        "citing": options.citing,
        "txt": state["settings"]["txt"],
        "article": parquet or state["settings"].get("article", False),
        "annotation": parquet or state["settings"].get("annotation", False),
    }
    render_settings = {
        "sources": sources,
        "image_format": ext,
        "keep_bytes": options.image_format == "keep",
        "max_side": options.max_side,
        "quality": options.quality,
        "keep_metadata": options.keep_metadata,
        "sample": sample,
    }
    done = sum(split["shards"][-1]["end"] if split["shards"] else 0 for split in state["splits"].values())
    with progress_bar(f"export {options.format}", sum(split_sizes.values()) - done, quiet) as advance:
        for split, size in split_sizes.items():
            report.shards_written += _export_split(
                con, folder, state, split, size, per_split[split][2], options, ext, executor, render_settings, advance
            )
    state["complete"] = True
    if options.format == "webdataset":
        features = webdataset_features(state["settings"], ext, state["settings"]["txt"])
    else:
        features = parquet_features()
    state["rois"] = roi_summary(con, carried=True, which=options.proposals)  # the choice, written and left out
    write_card(folder, loom, con, state, features, FORMATS[options.format])
    write_croissant(folder, loom, con, state, FORMATS[options.format])
    return _finish(folder, state, report, write=True)


def _export_split(
    con,
    folder: OutputFolder,
    state: dict,
    split: str,
    size: int,
    lead: list[str],
    options: ExportOptions,
    ext: str,
    executor,
    render_settings: dict,
    advance,
) -> int:
    entry = state["splits"].setdefault(split, {"records": size, "shards": [], "done": False})
    if entry["done"]:
        return 0
    start = entry["shards"][-1]["end"] if entry["shards"] else 0
    state["quarantine"] = [q for q in state["quarantine"] if q["split"] != split or q["index"] < start]
    # files in hashed order, a file's frames or slices together (a worker then reads a volume once)
    query = con.sql(
        "SELECT * FROM selection WHERE split = $split ORDER BY list_contains($lead, id) DESC, "
        "md5(source || '/' || uri), frame, id OFFSET $start",
        params={"split": split, "lead": lead, "start": start},
    )
    batches = (pa.Table.from_batches([b]) for b in query.to_arrow_reader(BATCH))
    writer = None
    written = 0
    position = start
    # --balance-shards: a shard holds the records of one part of the split's order (within one sample of the others)
    ends = balanced_ends(size, options.balance_shards, options.shard_size) if options.balance_shards else None
    writer_part = -1
    file_ext = FORMATS[options.format]
    parquet = options.format == "parquet"

    def commit(end: int) -> None:
        nonlocal writer, written
        facts = writer.finish()
        entry["shards"].append({"file": writer.path.name, "samples": writer.samples, **facts, "end": end})
        _write_state(folder, state)  # listed first, renamed second: see _resume
        os.replace(temporary(writer.path), writer.path)
        writer, written = None, written + 1

    try:
        for _, results in executor.map("export.render", batches, render_settings, ordered=True):
            for result in results:
                index, position = position, position + 1
                row = result["row"]
                if "reason" in result:
                    state["quarantine"].append(
                        {
                            "split": split,
                            "index": index,
                            "record_id": row["id"],
                            "source": row["source"],
                            "path": row["uri"],
                            "reason": result["reason"],
                            "message": result["message"],
                        }
                    )
                    continue
                need = len(result["image"]) + ROW_BYTES if parquet else len(result["tar"])
                part = bisect.bisect_right(ends, index) if ends else -1
                if writer and (
                    part != writer_part
                    if ends
                    else (
                        writer.samples >= options.shard_size
                        or _final_size(writer.size + need, options.format) > options.shard_bytes
                    )
                ):
                    commit(index)
                if writer is None:
                    writer_part = part
                    path = folder.claim(shard_name(split, len(entry["shards"]), file_ext))
                    writer = ParquetShardWriter(path, ext) if parquet else TarShardWriter(path)
                if parquet:
                    writer.add(row["id"], result["metadata"], result["image"])
                else:
                    writer.add_bytes(result["tar"])
            advance(len(results))
        if writer is not None:
            commit(position)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    entry["done"] = True
    _write_state(folder, state)
    return written


def _final_size(size: int, fmt: str) -> int:
    return -(-size // RECORD) * RECORD if fmt == "webdataset" else size


def _finish(folder: OutputFolder, state: dict, report: ExportReport, write: bool) -> ExportReport:
    report.splits = {name: sum(s["samples"] for s in split["shards"]) for name, split in sorted(state["splits"].items())}
    report.exported = sum(report.splits.values())
    report.shards = sum(len(split["shards"]) for split in state["splits"].values())
    report.quarantined = len(state["quarantine"])
    report.rois = state.get("rois", {})
    for q in state["quarantine"]:
        report.reasons[q["reason"]] = report.reasons.get(q["reason"], 0) + 1
    state["counts"] = {
        "in": report.inputs,
        "exported": report.exported,
        "filtered": report.filtered,
        "quarantined": report.quarantined,
        "reasons": report.reasons,
    }
    if write:
        lines = "".join(json.dumps(q, sort_keys=True) + "\n" for q in state["quarantine"])
        folder.write_bytes("quarantine.jsonl", lines.encode())
        if state["settings"]["format"] == "webdataset":  # open_clip reads the sample count per shard here
            sizes = {s["file"]: s["samples"] for split in state["splits"].values() for s in split["shards"]}
            folder.write_bytes("sizes.json", json.dumps(sizes, indent=1, sort_keys=True).encode())
        _write_state(folder, state)
    return report
