"""Annotations as the JSON that trainers read, with the images written beside it.

Each split goes to its own file, always: `FORMAT-train.json`, `FORMAT-val.json`, `FORMAT-test.json` (`.jsonl`
for swift).

- `medmat`: Med-MAT's own records and files (`medmat.py`): `Original_Medical_Datasets/ori--NN-SPLIT.json` and
  `Aggregated_Subsets/Subset--NN-SPLIT.json`, images under `med-mat/` as Med-MAT lays them out.
- `llava`: LLaVA conversations: `id`, `split`, `image`, `conversations` of `{"from": "human"|"gpt", "value"}`,
  the first human turn starting with `<image>\\n`.
- `sharegpt`: the multimodal ShareGPT layout LLaMA-Factory reads: `id`, `split`, `messages` of
  `{"role", "content"}` with `<image>` in the first user turn, and `images`; a `dataset_info.json` with one
  entry per split, named after the recipe (`NAME_train`, ...), is written too.
- `swift`: ms-swift's standard JSONL: `messages` of `{"role", "content"}` with `<image>` in the first user turn,
  `images`, and for grounding questions `objects` (`ref`: the label in words, one per `<ref-object>`; `bbox`:
  the normalised box, one per `<bbox>`; `bbox_type`: `norm1`), which ms-swift turns into each model's own
  grounding format and coordinates; plus `id` and `split` (ms-swift drops keys it does not know).

An item with the ROI description turn (llava, sharegpt, swift) carries `rois`: the regions that text speaks of,
each with `roi_source` (`dataset`, or `proposal` for one `medloom propose --accept` accepted, with its method,
version and score), so that a trainer can keep or drop machine-made regions; grounding boxes are the dataset's
own (questions are never asked of proposals). Med-MAT's records have no place for ROIs: the manifest's `rois`
says how many accepted proposals were left out.

Image paths are relative to the output folder (where the JSON is), so they resolve wherever it is moved (for
LLaMA-Factory: the folder is `dataset_dir` and `media_dir`); `absolute_paths` writes them, and the
`file_name` of each `dataset_info.json` entry, absolute, for an entry merged into another `dataset_info.json`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import catalog
from ..errors import TrainingExportError
from ..locks import hold
from ..outputs import OutputFolder, write_atomic
from ..view.proposals import exported_rois, roi_summary
from ..view.texts import choose_text
from . import check_options, open_output_folder
from . import medmat as medmat_json

TRAINING_FORMATS = ("medmat", "llava", "sharegpt", "swift")
JSONL_FORMATS = ("swift",)
DESCRIBE = "Describe this image."
DESCRIBE_REGIONS = "Describe the regions of interest in this image."


@dataclass
class TrainingReport:
    out: str
    format: str
    records: int = 0
    items: int = 0
    images: int = 0
    quarantined: list[dict] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    rois: dict = field(default_factory=dict)  # the dataset's ROIs and the proposals, carried or left out (roi_summary)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        return [
            f"export {self.format}: {self.items} item(s) from {self.records} annotated record(s), {self.images} "
            f"image(s), {len(self.quarantined)} quarantined; " + ", ".join(str(Path(self.out) / f) for f in self.files)
        ] + ([f"ROIs: {self.rois['note']}"] if self.rois.get("proposals") or self.rois.get("proposals_left_out") else [])

    def warnings(self) -> list[tuple[str, str]]:
        return []


def export_format(loom: Path, out: Path, request, *, workers=None, quiet: bool = False, wait: bool = False) -> TrainingReport:
    """`formats.FORMATS`' entry for medmat, llava, sharegpt and swift."""
    return export_training(
        loom,
        out,
        request.format,
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
        absolute_paths=request.absolute_paths,
        excluded=request.excluded,
        proposals=request.proposals,
    )


def image_name(record_id: str, ext: str) -> str:
    return f"images/{record_id}.{ext}"


def description(row: dict, ann: dict) -> str:
    """The answer to "describe this image": the source's own caption when it has one, else the annotation's
    (the rule of `export/texts.py` in `auto` mode, without the MAT-only sentence)."""
    text, origin = choose_text({**row, "ann_caption": ann["caption"]}, "auto")
    return text if origin in ("source", "annotation") else ""


def turns(row: dict, ann: dict) -> list[tuple[str, str, dict | None]]:
    """(question, answer, the question's record or None) for a conversation: the description, the ROI
    description, then every question."""
    out: list[tuple[str, str, dict | None]] = []
    caption = description(row, ann)
    if caption:
        out.append((DESCRIBE, caption, None))
    if ann["roi_text"]:
        out.append((DESCRIBE_REGIONS, ann["roi_text"], None))
    for q in ann["vqa"]:
        out.append((q["prompt"], q["answer_letter"] if q["kind"] == "multiple-choice" else q["answer"], q))
    return out


def regions(row: dict, ann: dict) -> dict:
    """`rois` for an item whose conversation describes the regions: each with its `roi_source`."""
    return {"rois": exported_rois(row, rle=False)} if ann["roi_text"] else {}


def llava_items(row: dict, ann: dict, image: str) -> list[dict]:
    conversation = []
    for i, (question, answer, _) in enumerate(turns(row, ann)):
        conversation.append({"from": "human", "value": ("<image>\n" if i == 0 else "") + question})
        conversation.append({"from": "gpt", "value": answer})
    item = {"id": row["id"], "split": row["split"], "image": image, "conversations": conversation}
    return [item | regions(row, ann)] if conversation else []


def sharegpt_items(row: dict, ann: dict, image: str) -> list[dict]:
    messages = []
    for i, (question, answer, _) in enumerate(turns(row, ann)):
        messages.append({"role": "user", "content": ("<image>" if i == 0 else "") + question})
        messages.append({"role": "assistant", "content": answer})
    item = {"id": row["id"], "split": row["split"], "messages": messages, "images": [image]}
    return [item | regions(row, ann)] if messages else []


def swift_items(row: dict, ann: dict, image: str) -> list[dict]:
    """ms-swift's layout; a grounding question asks for `<ref-object>` and is answered `<bbox>`, so that
    ms-swift writes the model's own grounding tokens and scales the normalised box for it."""
    from ..vocab.words import label_words

    messages, refs, boxes = [], [], []
    for i, (question, answer, q) in enumerate(turns(row, ann)):
        if q is not None and q["kind"] == "grounding" and len(q["box"] or []) == 4:
            question, answer = "Where is the <ref-object> in this image? Answer with its bounding box.", "<bbox>"
            refs.append(label_words(q["answer_label"]))
            boxes.append([float(v) for v in q["box"]])
        messages.append({"role": "user", "content": ("<image>" if i == 0 else "") + question})
        messages.append({"role": "assistant", "content": answer})
    if not messages:
        return []
    item = {"id": row["id"], "split": row["split"], "messages": messages, "images": [image]}
    if refs:
        item["objects"] = {"ref": refs, "bbox": boxes, "bbox_type": "norm1"}
    return [item | regions(row, ann)]


BUILDERS = {"llava": llava_items, "sharegpt": sharegpt_items, "swift": swift_items}


def open_training_folder(loom: Path, out: Path) -> OutputFolder:
    """The output folder; one made by a medloom from before the written-files record adopts its JSON files and
    the images they name. A folder holding anything else is refused: nothing in it is ours to replace."""
    adopt: list[str] = []
    try:
        previous = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = None
    if isinstance(previous, dict) and previous.get("format") in TRAINING_FORMATS and "files" in previous:
        adopt = ["manifest.json", "dataset_info.json", *previous["files"]]
        for name in previous["files"]:
            try:
                items = json.loads((out / name).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            adopt += [i["image"] for i in items if isinstance(i, dict) and "image" in i]
            adopt += [p for i in items if isinstance(i, dict) for p in i.get("images", [])]
    return open_output_folder(loom, out, adopt)


def export_training(
    loom: Path,
    out: Path,
    fmt: str,
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
    absolute_paths: bool = False,
    excluded=None,
    proposals: str = "accepted",
) -> TrainingReport:
    if fmt not in TRAINING_FORMATS:
        raise TrainingExportError(f"format {fmt!r}: choose one of {', '.join(TRAINING_FORMATS)}")
    check_options(max_side, quality, image_format)
    loom, out = Path(loom), Path(out)
    folder = open_training_folder(loom, out)
    with hold(loom, shared=True, wait=wait), hold(out, wait=wait, what="export folder"):
        return _export_training(
            loom,
            folder,
            fmt,
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
            absolute_paths,
            excluded,
            proposals,
        )


def _export_training(
    loom: Path,
    folder: OutputFolder,
    fmt: str,
    where: str | None,
    max_side: int | None,
    quality: int,
    workers: int | None,
    quiet: bool,
    include_duplicates: bool,
    subset: str | None,
    experiment: str | None,
    keep_metadata: bool,
    splits: list[str] | None,
    image_format: str,
    absolute_paths: bool,
    excluded=None,
    proposals: str = "accepted",
) -> TrainingReport:
    from ..view.render import image_ext, render_sources, rendered
    from ..view.selection import Selection, has_view, select_records, selection_sql

    started = time.perf_counter()
    out = folder.path
    con = catalog.connect(loom)
    if not has_view(con, "annotations"):
        raise TrainingExportError(f"{loom}: no annotations yet; run `medloom annotate {loom}` first")
    sources = render_sources(catalog.read_manifest(loom))
    chosen = Selection(include_duplicates=include_duplicates, subset=subset, experiment=experiment, excluded=excluded)
    joins, split, marks, _ = selection_sql(loom, chosen)
    select_records(
        con,
        where,
        joins,
        split,
        marks,
        splits,
        "coalesce(ann_caption, '') <> '' OR len(ann_vqa) > 0 OR coalesce(ann_roi_text, '') <> ''",
        proposals=proposals,
    )
    ext = image_ext(con, image_format, sources)
    query = "SELECT * FROM selection ORDER BY id"
    anns = {a["id"]: a for a in con.sql("SELECT * FROM annotations").to_arrow_table().to_pylist()}
    total = con.execute("SELECT count(*) FROM selection").fetchall()[0][0]
    report = TrainingReport(
        out=str(out), format=fmt, records=total, rois=roi_summary(con, carried=fmt != "medmat", which=proposals)
    )
    settings = {
        "sources": sources,
        "image_format": ext,
        "keep_bytes": image_format == "keep",
        "max_side": max_side,
        "quality": quality,
        "keep_metadata": keep_metadata,
    }
    items: dict[str, list[dict]] = {}
    found: list[tuple[list[str], dict]] = []  # medmat: (files, record)
    names = {n: medmat_json.original_names(e.get("label_map") or {}) for n, e in catalog.read_manifest(loom)["sources"].items()}
    passes = [(ext, query, total)]
    if fmt == "medmat" and image_format == "keep" and ext == "png":  # JPEG files stay JPEG: Med-MAT's paths hold
        jpeg = "regexp_matches(lower(uri), '\\.jpe?g$')"
        passes = [
            (
                kind,
                f"SELECT * FROM selection WHERE {cond} ORDER BY id",
                con.execute(f"SELECT count(*) FROM selection WHERE {cond}").fetchall()[0][0],
            )
            for kind, cond in (("jpg", jpeg), ("png", f"NOT {jpeg}"))
        ]
    batches = (
        (kind, results)
        for kind, sql, n in passes
        for results in rendered(
            con.sql(sql), {**settings, "image_format": kind}, workers, quiet, f"export {fmt}", n, report.quarantined
        )
    )
    for kind, results in batches:
        where_to = {
            r["row"]["id"]: medmat_json.image_path(
                r["row"], kind, image_name(r["row"]["id"], kind), sources[r["row"]["source"]]["pseudonymous_ids"]
            )
            if fmt == "medmat"
            else image_name(r["row"]["id"], kind)
            for r in results
        }
        folder.claim_many(where_to.values())
        for result in results:
            row = result["row"]
            name = where_to[row["id"]]
            write_atomic(out / name, result["image"])
            report.images += 1
            shown = str((out / name).resolve()) if absolute_paths else name
            if fmt == "medmat":
                found += medmat_json.items(row, anns[row["id"]], shown, names.get(row["source"], {}))
            else:
                items.setdefault(row["split"], []).extend(BUILDERS[fmt](row, anns[row["id"]], shown))
    if fmt == "medmat":
        items = medmat_json.file_groups(found)
    report.items = sum(len(v) for v in items.values())
    report.files = write_items(folder, fmt, items)
    if fmt == "sharegpt":
        name = dataset_name(loom)
        # LLaMA-Factory opens os.path.join(dataset_dir, file_name): an absolute file_name holds in any dataset_dir
        shown_file = (lambda f: str((out / f).resolve())) if absolute_paths else (lambda f: f)
        info = {
            f"{name}_{Path(f).stem.rsplit('-', 1)[1]}": {
                "file_name": shown_file(f),
                "formatting": "sharegpt",
                "columns": {"messages": "messages", "images": "images"},
                "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
            }
            for f in report.files
        }
        folder.write_bytes("dataset_info.json", json.dumps(info, indent=1).encode())
    report.seconds = time.perf_counter() - started
    folder.write_bytes("manifest.json", json.dumps(report.as_dict(), indent=1).encode())
    every = [i for v in items.values() for i in v]
    used = {
        folder.rel(p) if absolute_paths else p
        for p in [i["image"] for i in every if "image" in i] + [p for i in every for p in i.get("images", [])]
    }
    # images an earlier selection wrote and this one does not name mislead; only medloom's own are removed
    folder.remove_many([r for r in folder.owned if r.startswith(("images/", "med-mat/")) and r not in used])
    ours = (f"{fmt}-", f"{medmat_json.ORIGINAL}/", f"{medmat_json.SUBSETS}/") if fmt == "medmat" else (f"{fmt}-",)
    folder.remove_many(
        [r for r in folder.owned if r.endswith((".json", ".jsonl")) and r.startswith(ours) and r not in report.files]
    )
    return report


def dataset_name(loom: Path) -> str:
    """The recipe's name (kept in the catalog manifest), else the loom folder's, as a dataset key."""
    import re

    name = catalog.read_manifest(loom).get("name") or Path(loom).resolve().name
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "medloom"


def write_items(folder: OutputFolder, fmt: str, items: dict[str, list[dict]]) -> list[str]:
    """One file per split, always (FORMAT-train.json, FORMAT-val.json, FORMAT-test.json): a trainer pointed at
    the training file can never read a test record."""
    ext = "jsonl" if fmt in JSONL_FORMATS else "json"
    if fmt == "medmat":  # already named by file (`medmat.file_groups`)
        for name, data in items.items():
            folder.write_bytes(name, medmat_json.text(data).encode())
        return sorted(items)
    groups = {f"{fmt}-{split}.{ext}": v for split, v in sorted(items.items())}
    for name, data in groups.items():
        if ext == "jsonl":
            text = "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in data)
        else:
            text = json.dumps(data, ensure_ascii=False, indent=1)
        folder.write_bytes(name, text.encode())
    return sorted(groups)
