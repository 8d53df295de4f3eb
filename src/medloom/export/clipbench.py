"""The WebDataset layout that `clip_benchmark` reads (`--dataset wds/NAME --dataset_root DIR`), for zero-shot
classification and retrieval.

    OUT/classification/SOURCE/   one dataset per source whose records carry exactly one label
        classnames.txt                       the source's classes as words, one per line, in class-id order
        zeroshot_classification_templates.txt  prompts with `{c}`, from the source's modality and anatomy
        dataset_type.txt                     "classification"
        SPLIT/nshards.txt, SPLIT/0.tar, ...  samples KEY.jpg (or .png) and KEY.cls (the class id)
    OUT/retrieval/
        dataset_type.txt                     "retrieval"
        SPLIT/nshards.txt, SPLIT/0.tar, ...  samples KEY.jpg and KEY.txt (the text of `export/texts.py`)

Each split is its own shard set, as everywhere in medloom; clip_benchmark evaluates `--split test` by default.
Records with several labels or none are left out of the classification datasets and counted; a source with
fewer than two classes has no classification dataset (every prediction would be right).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import catalog
from ..errors import ClipBenchmarkError
from ..locks import hold
from ..outputs import OutputFolder
from ..view.texts import choose_text
from . import check_options, open_output_folder
from .webdataset import TarShardWriter, temporary


@dataclass
class ClipBenchmarkReport:
    out: str
    records: int = 0
    retrieval: dict[str, int] = field(default_factory=dict)  # split -> samples
    classification: dict[str, dict] = field(default_factory=dict)  # dataset -> classes, samples per split
    not_single_label: int = 0  # records with several labels or none: retrieval only
    one_class_sources: list[str] = field(default_factory=list)  # no classification dataset: fewer than 2 classes
    quarantined: list[dict] = field(default_factory=list)
    rois: dict = field(default_factory=dict)  # the ROIs and accepted proposals left out (no place for them)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        sets = ", ".join(f"{k} ({len(v['classes'])} classes)" for k, v in self.classification.items()) or "none"
        return [
            f"export clip-benchmark: {sum(self.retrieval.values())} retrieval sample(s) in "
            f"{', '.join(self.retrieval) or 'no split'}; classification datasets: {sets}; "
            f"{self.not_single_label} record(s) without exactly one label left out of classification; "
            + (
                f"no classification set for {', '.join(sorted(self.one_class_sources))} (fewer than two classes); "
                if self.one_class_sources
                else ""
            )
            + f"{len(self.quarantined)} quarantined; {self.out}"
        ] + ([f"ROIs: {self.rois['note']}"] if self.rois.get("proposals_left_out") else [])

    def warnings(self) -> list[tuple[str, str]]:
        return []


def export_format(
    loom: Path, out: Path, request, *, workers=None, quiet: bool = False, wait: bool = False
) -> ClipBenchmarkReport:
    """`formats.FORMATS`' entry for clip-benchmark."""
    return export_clip_benchmark(
        loom,
        out,
        where=request.where,
        max_side=request.max_side,
        quality=request.quality,
        workers=workers,
        quiet=quiet,
        include_duplicates=request.include_duplicates,
        subset=request.subset,
        experiment=request.experiment,
        wait=wait,
        keep_metadata=request.keep_metadata,
        splits=request.splits,
        image_format=request.image_format,
        shard_size=request.shard_size,
        excluded=request.excluded,
        proposals=request.proposals,
    )


def dataset_key(source: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", source).strip("_") or "source"


def templates(modality: str, anatomy: str) -> list[str]:
    """Zero-shot prompts for one source: `{c}` is the class name, as clip_benchmark fills it."""
    from ..vocab.words import anatomy_phrase, modality_phrase, with_article

    image, of_anatomy = modality_phrase(modality or "unknown"), anatomy_phrase(anatomy or "unknown")
    lead = f"{with_article(image)} {of_anatomy}".strip().replace("{", "(").replace("}", ")")
    return [f"{lead} showing {{c}}.", f"{lead} with {{c}}.", f"{{c}} on {lead}.", "{c}."]


class ShardSet:
    """One dataset's shards of one split: `0.tar`, `1.tar`, ... of at most `size` samples each."""

    def __init__(self, folder: OutputFolder, prefix: str, size: int):
        self.folder, self.prefix, self.size = folder, prefix, size
        self.writer: TarShardWriter | None = None
        self.shards = 0
        self.samples = 0

    def add(self, key: str, files: dict[str, bytes]) -> None:
        if self.writer is not None and self.writer.samples >= self.size:
            self.close()
        if self.writer is None:
            self.writer = TarShardWriter(self.folder.claim(f"{self.prefix}/{self.shards}.tar"))
        self.writer.add(key, files)
        self.samples += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.finish()
            os.replace(temporary(self.writer.path), self.writer.path)
            self.writer, self.shards = None, self.shards + 1

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()


def export_clip_benchmark(
    loom: Path,
    out: Path,
    *,
    where: str | None = None,
    max_side: int | None = None,
    quality: int = 90,
    workers: int | None = None,
    quiet: bool = False,
    include_duplicates: bool = False,
    subset: str | None = None,
    experiment: str | None = None,
    wait: bool = False,
    keep_metadata: bool = False,
    splits: list[str] | None = None,
    image_format: str = "jpg",
    shard_size: int = 5000,
    excluded=None,
    proposals: str = "accepted",
) -> ClipBenchmarkReport:
    check_options(max_side, quality, image_format)
    if shard_size < 1:
        raise ClipBenchmarkError("--shard-size must be positive")
    loom, out = Path(loom), Path(out)
    folder = open_output_folder(loom, out)
    with hold(loom, shared=True, wait=wait), hold(out, wait=wait, what="export folder"):
        return _export(
            loom,
            folder,
            where,
            max_side,
            quality,
            workers,
            quiet,
            include_duplicates,
            subset,
            experiment,
            keep_metadata,
            splits,
            image_format,
            shard_size,
            excluded,
            proposals,
        )


def _export(
    loom: Path,
    folder: OutputFolder,
    where,
    max_side,
    quality,
    workers,
    quiet,
    include_duplicates,
    subset,
    experiment,
    keep_metadata,
    splits,
    image_format,
    shard_size,
    excluded=None,
    proposals: str = "accepted",
) -> ClipBenchmarkReport:
    from ..view.proposals import roi_summary
    from ..view.render import image_ext, render_sources, rendered
    from ..view.selection import Selection, select_records, selection_sql
    from ..vocab.words import class_name

    started = time.perf_counter()
    con = catalog.connect(loom)
    sources = render_sources(catalog.read_manifest(loom))
    chosen = Selection(include_duplicates=include_duplicates, subset=subset, experiment=experiment, excluded=excluded)
    joins, split, marks, _ = selection_sql(loom, chosen)
    select_records(con, where, joins, split, marks, splits, proposals=proposals)
    ext = image_ext(con, image_format, sources)
    report = ClipBenchmarkReport(
        out=str(folder.path),
        records=con.execute("SELECT count(*) FROM selection").fetchall()[0][0],
        rois=roi_summary(con, carried=False, which=proposals),  # image-text pairs and classes: no place for an ROI
    )
    # per source: its classes (the declared label space, else the labels found) and its commonest MAT pair
    classes: dict[str, list[str]] = {}
    for source, space, found in con.execute(
        "SELECT source, list_sort(list_distinct(flatten(list(label_space)))), "
        "list_sort(list_distinct(flatten(list(labels)))) FROM selection GROUP BY source"
    ).fetchall():
        classes[source] = list(space or found or [])
        if len(classes[source]) < 2:
            report.one_class_sources.append(source)
    pairs = {
        s: (m, a)
        for s, m, a in con.execute("SELECT source, mode(modality), mode(anatomy) FROM selection GROUP BY source").fetchall()
    }
    written: set[str] = set()
    sets: dict[tuple[str, str], ShardSet] = {}

    def shard_set(prefix: str, split_name: str) -> ShardSet:
        key = (prefix, split_name)
        if key not in sets:
            sets[key] = ShardSet(folder, f"{prefix}/{split_name}", shard_size)
        return sets[key]

    settings = {
        "sources": sources,
        "image_format": ext,
        "keep_bytes": image_format == "keep",
        "max_side": max_side,
        "quality": quality,
        "keep_metadata": keep_metadata,
    }
    query = con.sql("SELECT * FROM selection ORDER BY split, md5(source || '/' || uri), frame, id")
    try:
        for results in rendered(query, settings, workers, quiet, "export clip-benchmark", report.records, report.quarantined):
            for result in results:
                row = result["row"]
                text = " ".join(choose_text(row, "auto")[0].split())
                shard_set("retrieval", row["split"]).add(row["id"], {ext: result["image"], "txt": text.encode()})
                labels = list(row["labels"] or [])
                if len(labels) != 1 or labels[0] not in classes[row["source"]]:
                    report.not_single_label += 1
                    continue
                if len(classes[row["source"]]) < 2:
                    continue
                cls = classes[row["source"]].index(labels[0])
                shard_set(f"classification/{dataset_key(row['source'])}", row["split"]).add(
                    row["id"], {ext: result["image"], "cls": str(cls).encode()}
                )
    except BaseException:
        for s in sets.values():
            s.abort()
        raise
    for s in sets.values():
        s.close()
    for (prefix, split_name), s in sorted(sets.items()):
        written |= {f"{prefix}/{split_name}/{i}.tar" for i in range(s.shards)}
        written.add(folder.rel(folder.write_bytes(f"{prefix}/{split_name}/nshards.txt", f"{s.shards}\n".encode())))
        if prefix == "retrieval":
            report.retrieval[split_name] = s.samples
        else:
            source = next(x for x in classes if dataset_key(x) == prefix.split("/", 1)[1])
            entry = report.classification.setdefault(
                prefix.split("/", 1)[1], {"source": source, "classes": classes[source], "splits": {}}
            )
            entry["splits"][split_name] = s.samples
    meta: dict[str, bytes] = {}
    if report.retrieval:
        meta["retrieval/dataset_type.txt"] = b"retrieval\n"
    for key, entry in report.classification.items():
        modality, anatomy = pairs[entry["source"]]
        meta[f"classification/{key}/dataset_type.txt"] = b"classification\n"
        meta[f"classification/{key}/classnames.txt"] = "".join(f"{class_name(c)}\n" for c in entry["classes"]).encode()
        meta[f"classification/{key}/zeroshot_classification_templates.txt"] = "".join(
            f"{t}\n" for t in templates(modality, anatomy)
        ).encode()
    for rel, data in meta.items():
        folder.write_bytes(rel, data)
        written.add(rel)
    report.seconds = time.perf_counter() - started
    folder.write_bytes("manifest.json", json.dumps({"format": "clip-benchmark", **report.as_dict()}, indent=1).encode())
    written.add("manifest.json")
    # what an earlier export wrote and this one did not: only medloom's own files are removed
    folder.remove_many([r for r in folder.owned if r not in written])
    return report
