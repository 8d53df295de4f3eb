"""Annotations as the JSON that trainers read, with the images written beside it.

- `medmat`: Med-MAT's fields, one item per multiple-choice question: `id`, `caption`, `image`, `Question`
  (the instruction), `Question-choice` (the options in order, A to D), `Answer` (the correct option),
  `Answer-choice` (its letter), `data-no` (the source).
- `llava`: LLaVA conversations: `id`, `image`, `conversations` of `{"from": "human"|"gpt", "value"}`, the
  first human turn starting with `<image>\\n`.
- `sharegpt`: the multimodal ShareGPT layout LLaMA-Factory reads: `messages` of `{"role", "content"}` with
  `<image>` in the first user turn, and `images`; a `dataset_info.json` describing it is written too.

Image paths are relative to the output folder (where the JSON is), so they resolve wherever it is moved.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa

from .. import catalog
from ..engine import make_executor
from ..engine.progress import progress_bar

TRAINING_FORMATS = ("medmat", "llava", "sharegpt")
DESCRIBE = "Describe this image."
DESCRIBE_REGIONS = "Describe the regions of interest in this image."


class TrainingExportError(ValueError):
    pass


@dataclass
class TrainingReport:
    out: str
    format: str
    records: int = 0
    items: int = 0
    images: int = 0
    quarantined: list[dict] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def image_name(record_id: str, ext: str) -> str:
    return f"images/{record_id}.{ext}"


def turns(ann: dict) -> list[tuple[str, str]]:
    """(question, answer) pairs for a conversation: caption, ROI description, then every question."""
    out = []
    if ann["caption"]:
        out.append((DESCRIBE, ann["caption"]))
    if ann["roi_text"]:
        out.append((DESCRIBE_REGIONS, ann["roi_text"]))
    for q in ann["vqa"]:
        out.append((q["prompt"], q["answer_letter"] if q["kind"] == "multiple-choice" else q["answer"]))
    return out


def medmat_items(row: dict, ann: dict, image: str) -> list[dict]:
    items = []
    for n, q in enumerate(x for x in ann["vqa"] if x["kind"] == "multiple-choice"):
        items.append({"id": f"{row['id']}#{n}", "caption": ann["caption"], "image": image, "Question": q["question"],
                      "Question-choice": list(q["options"]), "Answer": q["answer"],
                      "Answer-choice": q["answer_letter"], "data-no": row["source"]})
    return items


def llava_items(row: dict, ann: dict, image: str) -> list[dict]:
    conversation = []
    for i, (question, answer) in enumerate(turns(ann)):
        conversation.append({"from": "human", "value": ("<image>\n" if i == 0 else "") + question})
        conversation.append({"from": "gpt", "value": answer})
    return [{"id": row["id"], "image": image, "conversations": conversation}] if conversation else []


def sharegpt_items(row: dict, ann: dict, image: str) -> list[dict]:
    messages = []
    for i, (question, answer) in enumerate(turns(ann)):
        messages.append({"role": "user", "content": ("<image>" if i == 0 else "") + question})
        messages.append({"role": "assistant", "content": answer})
    return [{"messages": messages, "images": [image]}] if messages else []


BUILDERS = {"medmat": medmat_items, "llava": llava_items, "sharegpt": sharegpt_items}


def export_training(loom: Path, out: Path, fmt: str, *, where: str | None = None, max_side: int | None = None,
                    quality: int = 90, workers: int | None = None, quiet: bool = False,
                    include_duplicates: bool = False, subset: str | None = None,
                    experiment: str | None = None) -> TrainingReport:
    from . import ExportOptions, render_sources, selection_sql

    if fmt not in TRAINING_FORMATS:
        raise TrainingExportError(f"format {fmt!r}: choose one of {', '.join(TRAINING_FORMATS)}")
    started = time.perf_counter()
    loom, out = Path(loom), Path(out)
    con = catalog.connect(loom)
    if "annotations" not in {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}:
        raise TrainingExportError(f"{loom}: no annotations yet; run `medloom annotate {loom}` first")
    sources = render_sources(catalog.read_manifest(loom))
    joins, split, marks, _ = selection_sql(loom, ExportOptions(include_duplicates=include_duplicates, subset=subset,
                                                               experiment=experiment))
    query = (f"SELECT records.*, {split} AS split FROM records {joins} JOIN annotations a USING (id) "
             "WHERE (a.caption <> '' OR len(a.vqa) > 0 OR a.roi_text <> '')"
             + "".join(f" AND ({c})" for c in (where, marks) if c) + " ORDER BY records.id")
    anns = {a["id"]: a for a in con.sql("SELECT * FROM annotations").to_arrow_table().to_pylist()}
    total = con.execute(f"SELECT count(*) FROM ({query})").fetchall()[0][0]
    report = TrainingReport(out=str(out), format=fmt, records=total)
    settings = {"sources": sources, "image_format": "jpg", "keep_bytes": False, "max_side": max_side,
                "quality": quality}
    items: dict[str, list[dict]] = {}
    batches = (pa.Table.from_batches([b]) for b in con.sql(query).to_arrow_reader(256))
    (out / "images").mkdir(parents=True, exist_ok=True)
    with make_executor(workers, preload=["medloom.export.render"]) as executor, \
            progress_bar(f"export {fmt}", total, quiet) as advance:
        for _, results in executor.map("export.render", batches, settings, ordered=True):
            for result in results:
                row = result["row"]
                if "reason" in result:
                    report.quarantined.append({"id": row["id"], "reason": result["reason"],
                                               "message": result["message"]})
                    continue
                name = image_name(row["id"], "jpg")
                catalog.write_atomic(out / name, result["image"])
                report.images += 1
                items.setdefault(row["split"], []).extend(BUILDERS[fmt](row, anns[row["id"]], name))
            advance(len(results))
    report.items = sum(len(v) for v in items.values())
    report.files = write_items(out, fmt, items, by_split=experiment is not None)
    if fmt == "sharegpt":
        info = {Path(f).stem: {"file_name": f, "formatting": "sharegpt",
                               "columns": {"messages": "messages", "images": "images"},
                               "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                        "assistant_tag": "assistant"}} for f in report.files}
        catalog.write_atomic(out / "dataset_info.json", json.dumps(info, indent=1).encode())
    report.seconds = time.perf_counter() - started
    catalog.write_atomic(out / "manifest.json", json.dumps(report.as_dict(), indent=1).encode())
    every = [i for v in items.values() for i in v]
    used = {i["image"] for i in every if "image" in i} | {p for i in every for p in i.get("images", [])}
    _remove_stale_images(out, used)
    return report


def write_items(out: Path, fmt: str, items: dict[str, list[dict]], by_split: bool) -> list[str]:
    """FORMAT.json with every item; for an experiment FORMAT-train.json and FORMAT-test.json instead."""
    groups = {f"{fmt}-{split}.json": v for split, v in sorted(items.items())} if by_split else \
        {f"{fmt}.json": [i for _, v in sorted(items.items()) for i in v]}
    for name, data in groups.items():
        catalog.write_atomic(out / name, json.dumps(data, ensure_ascii=False, indent=1).encode())
    return sorted(groups)


def _remove_stale_images(out: Path, keep: set[str]) -> None:
    """Only images the JSON names stay: others (an earlier selection, a record without a question) mislead."""
    base = out / "images"
    for dirpath, _, files in os.walk(base):
        for f in files:
            rel = (Path(dirpath) / f).relative_to(out).as_posix()
            if rel not in keep:
                os.unlink(Path(dirpath) / f)
