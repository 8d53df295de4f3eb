"""`--format vlmeval-tsv`: a loom's questions as the TSV files VLMEvalKit evaluates, so a model can be scored on
them there too.

VLMEvalKit (https://github.com/open-compass/VLMEvalKit, read at commit e8e78f05) loads a dataset it does not know
from `$LMUData/NAME.tsv` (`vlmeval/dataset/__init__.py`, `build_dataset`): a file with `question`, `A`, `B` and an
`image` column is a custom multiple-choice set (`CustomMCQDataset`), one without options a custom VQA set
(`CustomVQADataset`, which runs inference but has no `evaluate`). It reads the file with pandas
(`pd.read_csv(f, sep='\\t')`, `vlmeval/smp/file.py`), and `ImageBaseDataset.__init__` (`image_base.py`) turns an
`image` of at most 64 characters into the image of the row whose `index` it names (one image, several
questions); `dump_image` decodes the base64 image, and `ImageMCQDataset.build_prompt` (`image_mcq.py`) asks
`Hint: ...` (when the `hint` cell is not empty), `Question: ...` and the options present (a letter column left
empty is no option); the evaluation compares the reply with the `answer` letter and groups accuracy by `split`,
`category` and `l2-category` (`utils/multiple_choice.py`, `report_acc`).

So each split goes to `NAME_SPLIT.tsv` (NAME: the recipe's name), one row per multiple-choice question: `index`
(0, 1, ...), `image` (base64, once per record; the record's other questions hold the first one's index),
`question`, `hint` (a benchmark's hint, which medloom's readers keep as `Hint: ...` before the question), `A`..
(as many letter columns as the longest question has options), `answer` (the letter), `category` (the question's
type as its benchmark names it, else its MAT task, else the record's), `l2-category` (the record's modality),
`split`, and medloom's `modality`, `organ`, `record_id`, `question_id` (columns VLMEvalKit keeps and does not
use). Questions without options (a benchmark's open questions, and closed ones answered yes or no) go to
`NAME_SPLIT_open.tsv` with `index`, `image`, `question`, `answer`, `answer_type`, the same grouping columns, for
VLMEvalKit's custom VQA set (inference only) or any other reader.

Which questions (`--questions`): `source` (a benchmark's own, exported as they are), `generated` (the
multiple-choice questions of `medloom annotate`), or `auto`: source questions when the selection has any, else
generated ones; never both in one export. pandas reads some cell texts as missing (`NA`, `None`, `null`, `nan`,
...): a question with such an option or answer would lose it there, so it is left out and counted.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import catalog
from ..errors import ExportError
from ..locks import hold
from ..records import source_questions
from . import check_options, open_output_folder

FORMAT = "vlmeval-tsv"
QUESTION_KINDS = ("auto", "source", "generated")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# the strings pandas' read_csv takes for a missing value by default (pandas' `STR_NA_VALUES`)
PANDAS_NA = frozenset(
    ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA"]
    + ["NULL", "NaN", "None", "n/a", "nan", "null"]
)
HINTED = re.compile(r"\AHint: (?P<hint>.*)\nQuestion: (?P<question>.*)\Z", re.S)
TAIL = ["category", "l2-category", "split", "modality", "organ", "record_id", "question_id"]


@dataclass
class VLMEvalReport:
    out: str
    questions: str = "source"  # which questions were exported: source or generated
    records: int = 0  # records selected
    images: int = 0  # records with at least one question exported
    multiple_choice: int = 0
    open: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # questions left out, per reason
    quarantined: list[dict] = field(default_factory=list)  # records whose image could not be rendered
    files: dict[str, int] = field(default_factory=dict)  # file -> rows
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"
        return [
            f"export {FORMAT}: {self.multiple_choice} multiple-choice and {self.open} open {self.questions} "
            f"question(s) of {self.images} image(s) from {self.records} record(s); left out: {skipped}; "
            f"{len(self.quarantined)} record(s) quarantined",
            *(f"  {Path(self.out) / name}: {rows} row(s)" for name, rows in sorted(self.files.items())),
        ]

    def warnings(self) -> list[tuple[str, str]]:
        if not self.records or self.multiple_choice + self.open:
            return []
        return [("warning", f"no {self.questions} question in the selection: nothing to evaluate in {self.out}")]


def export_format(loom: Path, out: Path, request, *, workers=None, quiet: bool = False, wait: bool = False) -> VLMEvalReport:
    """`formats.FORMATS`' entry for vlmeval-tsv."""
    from ..view.selection import Selection

    if request.questions not in QUESTION_KINDS:
        raise ExportError(f"--questions {request.questions!r}: choose auto, source or generated")
    check_options(request.max_side, request.quality, request.image_format)
    loom, out = Path(loom), Path(out)
    folder = open_output_folder(loom, out, ["manifest.json"])
    chosen = Selection(request.include_duplicates, request.subset, request.experiment, request.excluded)
    with hold(loom, shared=True, wait=wait), hold(out, wait=wait, what="export folder"):
        return _export(loom, folder, request, chosen, workers, quiet)


def question_rows(row: dict, questions: list[dict], kind: str, skipped: dict[str, int]) -> tuple[list[dict], list[dict]]:
    """(multiple-choice rows, open rows) of one record's questions, without `index` and `image` yet."""
    choice, free = [], []
    for q in questions:
        options = [str(o) for o in q.get("options") or []]
        if kind == "generated":
            if q.get("kind") != "multiple-choice":
                skipped["not_multiple_choice"] = skipped.get("not_multiple_choice", 0) + 1
                continue
            category = row.get("task") or "unknown"
        else:
            category = q.get("question_type") or q.get("task") or row.get("task") or "unknown"
        text = str(q.get("question") or "")
        hinted = HINTED.match(text)
        hint, text = (hinted["hint"], hinted["question"]) if hinted else ("", text)
        answer = (q.get("answer_letter") or "") if options else str(q.get("answer") or "")
        if text.strip() in PANDAS_NA or answer in PANDAS_NA or any(o.strip() in PANDAS_NA for o in options):
            skipped["read_as_missing_by_pandas"] = skipped.get("read_as_missing_by_pandas", 0) + 1
            continue
        if options and (len(options) > len(LETTERS) or answer not in LETTERS[: len(options)]):
            skipped["no_answer_letter"] = skipped.get("no_answer_letter", 0) + 1
            continue
        out = {"question": text, "hint": hint, "answer": answer}
        out.update(
            {
                "category": category,
                "l2-category": row.get("modality") or "unknown",  # report_acc sorts the groups: never missing
                "split": row["split"],
                "modality": row.get("modality") or "",
                "organ": row.get("anatomy") or "",
                "record_id": row["id"],
                "question_id": str(q.get("id") or ""),
            }
        )
        if options:
            choice.append({**out, **dict(zip(LETTERS, options))})
        else:
            free.append({**out, "answer_type": q.get("answer_type") or "open"})
    return choice, free


def _export(loom: Path, folder, request, chosen, workers, quiet: bool) -> VLMEvalReport:
    from ..view.render import image_ext, render_sources, rendered
    from ..view.selection import has_view, select_records, selection_sql
    from .training import dataset_name

    started = time.perf_counter()
    con = catalog.connect(loom)
    joins, split, marks, _ = selection_sql(loom, chosen)
    select_records(con, request.where, joins, split, marks, request.splits)
    with_source = con.execute("SELECT count(*) FROM selection WHERE contains(coalesce(meta, ''), 'source_questions')")
    kind = request.questions
    if kind == "auto":
        kind = "source" if with_source.fetchall()[0][0] else "generated"
    anns: dict[str, list[dict]] = {}
    if kind == "generated":
        if not has_view(con, "annotations"):
            raise ExportError(f"{loom}: no annotations and no source questions; run `medloom annotate {loom}` first")
        anns = {a["id"]: list(a["vqa"] or []) for a in con.sql("SELECT id, vqa FROM annotations").to_arrow_table().to_pylist()}
    sources = render_sources(catalog.read_manifest(loom))
    ext = image_ext(con, request.image_format, sources)
    total = con.execute("SELECT count(*) FROM selection").fetchall()[0][0]
    report = VLMEvalReport(out=str(folder.path), questions=kind, records=total)
    settings = {
        "sources": sources,
        "image_format": ext,
        "keep_bytes": request.image_format == "keep",
        "max_side": request.max_side,
        "quality": request.quality,
        "keep_metadata": request.keep_metadata,
    }
    tables: dict[str, tuple[list[dict], list[dict]]] = {}
    query = con.sql("SELECT * FROM selection ORDER BY split, id")
    for results in rendered(query, settings, workers, quiet, f"export {FORMAT}", total, report.quarantined):
        for result in results:
            row = result["row"]
            questions = source_questions(row.get("meta")) if kind == "source" else anns.get(row["id"], [])
            choice, free = question_rows(row, questions, kind, report.skipped)
            if not choice and not free:
                continue
            report.images += 1
            image = base64.b64encode(result["image"]).decode("ascii")
            for rows in (choice, free):
                if rows:
                    have = tables.setdefault(row["split"], ([], []))[rows is free]
                    first = len(have)
                    for k, r in enumerate(rows):
                        have.append({"index": first + k, "image": image if k == 0 else str(first), **r})
    name = dataset_name(loom)
    written = []
    for split, (choice, free) in sorted(tables.items()):
        for rows, suffix in ((choice, ""), (free, "_open")):
            if rows:
                file = f"{name}_{split}{suffix}.tsv"
                folder.write_bytes(file, tsv(rows, bool(suffix)).encode("utf-8"))
                report.files[file] = len(rows)
                written.append(file)
        report.multiple_choice += len(choice)
        report.open += len(free)
    report.seconds = time.perf_counter() - started
    manifest = {"format": FORMAT, "image_format": ext, **report.as_dict()}
    folder.write_bytes("manifest.json", json.dumps(manifest, indent=1, ensure_ascii=False).encode())
    folder.remove_many([r for r in folder.owned if r.endswith(".tsv") and r not in written])  # an earlier selection's
    return report


def tsv(rows: list[dict], free: bool) -> str:
    """The rows as a TSV: a header, then one line per row; a cell holding a tab, a newline or a quote is quoted
    (csv's minimal quoting, which pandas reads back)."""
    if free:
        header = ["index", "image", "question", "hint", "answer", "answer_type", *TAIL]
    else:
        letters = max(sum(letter in r for letter in LETTERS) for r in rows)
        header = ["index", "image", "question", "hint", *LETTERS[:letters], "answer", *TAIL]
    if not any(r["hint"] for r in rows):
        header.remove("hint")
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[r.get(h, "") for h in header] for r in rows])
    return buffer.getvalue()
