"""Reader `vqa`: a medical VQA benchmark's published question files beside its image files (VQA-RAD, SLAKE,
PathVQA, PMC-VQA, OmniMedVQA; `vqa_formats.py` has each format's names).

One record per image (per image and split where a benchmark asks about one image in two splits, as VQA-RAD
does), its questions kept as the record's source questions (`records.SOURCE_QUESTIONS`), never as generated
ones; the record's modality and anatomy come from the benchmark's own fields where it has them (SLAKE's
modality and location, VQA-RAD's image_organ, OmniMedVQA's modality_type) through the vocabulary. A question
that cannot be read, or whose image is missing, is a quarantine row naming the file and the entry.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
from collections import Counter

from pydantic import BaseModel, ConfigDict, Field

from ..imaging import DEFAULT_MAX_FILE_BYTES, read_file
from ..records import SOURCE_QUESTIONS, quarantine_row
from .base import Scan, decode_image_file, decode_text, inside, make_task, source_record_id, source_roots
from .vqa_formats import FORMATS, IMAGE_DIRS, detect, file_split, parse

QUESTION_SUFFIXES = (".json", ".jsonl", ".csv", ".pkl")
# where each format publishes its question files (globs under the root); auto: all of them
DEFAULT_QUESTIONS = {
    "vqa-rad": ["*.json"],
    "slake": ["train.json", "validate.json", "test.json"],
    "pathvqa": ["qas/**/*.pkl", "*.pkl", "*.json", "*.csv"],
    "pmc-vqa": ["*.csv"],
    "omnimedvqa": ["QA_information/**/*.json"],
}
AUTO_QUESTIONS = ["*.json", "*.jsonl", "*.csv", "*.pkl", "qas/**/*.pkl", "QA_information/**/*.json"]


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: str = "auto"  # vqa-rad, slake, pathvqa, pmc-vqa, omnimedvqa, generic; auto: told by each file's names
    # the question files, globs under the root (default: where the format publishes them)
    questions: list[str] | None = None
    # a folder (relative to the root) where image names are looked up first (default: the format's own)
    images_dir: str | None = None
    # keep only the questions in this language (SLAKE's q_lang: en or zh); default: all
    language: str | None = None
    question_max_bytes: int = Field(1 << 30, gt=0)  # bytes read of each question file at most

    def model_post_init(self, _context) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format {self.format!r} is not one of {', '.join(FORMATS)}")


class _PlainData(pickle.Unpickler):
    """PathVQA's pickles hold lists of dicts of text; anything that names a class or function (which a pickle
    would call while loading) is refused."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"the pickle names {module}.{name}; only plain lists, dicts and text are read")


def load_rows(path: str, rel: str, budget: int) -> list[tuple[str, dict]]:
    """A question file's entries as (where, row): `file:line` for CSV and JSON Lines, `file[i]` for JSON and
    pickles."""
    data = read_file(path, budget)
    if rel.endswith(".pkl"):
        try:
            entries = _PlainData(io.BytesIO(data)).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
            raise ValueError(f"{rel}: not a pickle of plain data ({e})") from None
    elif rel.endswith(".csv"):
        reader = csv.DictReader(io.StringIO(decode_text(data, rel), newline=""))
        return [(f"{rel}:{reader.line_num}", dict(row)) for row in reader]
    elif rel.endswith(".jsonl"):
        out = []
        for n, line in enumerate(decode_text(data, rel).splitlines(), 1):
            if line.strip():
                try:
                    out.append((f"{rel}:{n}", json.loads(line)))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{rel}:{n}: not JSON ({e.msg})") from None
        return out
    else:
        try:
            entries = json.loads(decode_text(data, rel))
        except json.JSONDecodeError as e:
            raise ValueError(f"{rel}:{e.lineno}: not JSON ({e.msg})") from None
    if not isinstance(entries, list):
        raise ValueError(f"{rel}: a {type(entries).__name__}, not the list of questions the benchmark publishes")
    return [(f"{rel}[{i}]", e) for i, e in enumerate(entries)]


def question_files(root: str, patterns: list[str]) -> list[str]:
    from pathlib import Path

    found: dict[str, None] = {}
    for pattern in patterns:
        for p in sorted(Path(root).glob(pattern)):
            if p.is_file() and p.suffix.lower() in QUESTION_SUFFIXES and not p.name.startswith("."):
                found[str(p)] = None
    return list(found)


class ImageFinder:
    """A question's image: under `images_dir`, the format's image folders, or the root, inside the roots."""

    def __init__(self, source: dict, opts: Options) -> None:
        self.root, self.roots, self.folders = source["root"], source_roots(source), {}
        self.extra = [opts.images_dir] if opts.images_dir else []

    def find(self, fmt: str, name: str, split: str, beside: str) -> tuple[str | None, str]:
        name = name.replace("\\", "/").lstrip("/")
        dirs = [*self.extra, *(d.format(split=split or "") for d in IMAGE_DIRS.get(fmt, [])), "."]
        tried = []
        for base in [os.path.join(self.root, d) for d in dirs] + [beside]:
            path = os.path.normpath(os.path.join(base, name))
            if path in tried:
                continue
            tried.append(path)
            if os.path.isfile(path):
                if not inside(path, self.roots, self.folders):
                    return None, f"{name!r} lies outside the source's roots; not read"
                return path, ""
        shown = [os.path.relpath(t, self.root) for t in tried]
        return None, f"image {name!r} not found (looked for {', '.join(shown)})"


def scan(source: dict) -> Scan:
    opts = Options(**source["options"])
    out, name, root = Scan(), source["name"], source["root"]
    patterns = opts.questions or DEFAULT_QUESTIONS.get(opts.format, AUTO_QUESTIONS)
    files = question_files(root, patterns)
    if not files:
        raise ValueError(
            f"{root}: no question file ({', '.join(patterns)}); name the benchmark's files with `questions:` "
            "(for example questions: [test.json])"
        )
    finder = ImageFinder(source, opts)
    roots, folders = source_roots(source), {}
    groups: dict[tuple[str, str], dict] = {}
    budget = min(opts.question_max_bytes, source.get("max_file_bytes") or DEFAULT_MAX_FILE_BYTES)
    for path in files:
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        if not inside(path, roots, folders):
            out.quarantine.append(quarantine_row(name, rel, "outside_root", "a link outside the source's roots; not read"))
            continue
        try:
            rows = load_rows(path, rel, budget)
        except (ValueError, OSError) as e:
            out.quarantine.append(quarantine_row(name, rel, "unreadable_questions", str(e)))
            continue
        dicts = [r for _, r in rows if isinstance(r, dict)]
        fmt = opts.format if opts.format != "auto" else detect(dicts[0].keys()) if dicts else None
        if fmt == "generic" and (rel.endswith(".pkl") or rel.startswith("qas/")):
            fmt = "pathvqa"  # PathVQA's pickles: image named without its extension, images/<split>/
        if fmt is None:
            message = "not a question file of a known benchmark format (see `format:`); skipped"
            out.quarantine.append(quarantine_row(name, rel, "not_questions", message, scope="warning"))
            continue
        for where, row in rows:
            try:
                if not isinstance(row, dict):
                    raise ValueError(f"a {type(row).__name__}, not a question's fields")
                r = parse(fmt, row, file_split(rel))
            except ValueError as e:
                out.quarantine.append(quarantine_row(name, where, "bad_question", f"{e}; the question is left out"))
                continue
            if opts.language and r.question["language"] and r.question["language"] != opts.language:
                out.filter("language")
                continue
            image, problem = finder.find(fmt, r.image, r.split, os.path.dirname(path))
            if image is None:
                out.quarantine.append(quarantine_row(name, where, "missing_image", f"{problem}; the question is left out"))
                continue
            add_question(groups, (image, r.split), r, fmt, {})
    splits_of = Counter(image for image, _ in groups)
    for (image, split), group in groups.items():
        task = make_task(source, image, split=split, extra={"meta": meta_of(group), "mat": mat_of(group)})
        if splits_of[image] > 1:  # one image asked about in two splits: a record for each
            task["id"] = source_record_id(source, f"{task['uri']}/{split or 'nosplit'}")
        out.tasks.append(task)
    return out


def meta_of(group: dict) -> dict:
    """The record's meta: its source questions, the benchmark's format and, for an image inside a table, where."""
    meta = {SOURCE_QUESTIONS: group["questions"], "benchmark": group["format"]}
    if group.get("location"):
        meta["embedded"] = group["location"]
    return meta


def mat_of(group: dict) -> dict:
    """The record's modality and anatomy (the most common among its questions') and task (its questions' most
    common task, else none)."""

    def common(values: list[str]) -> str:
        values = [v for v in values if v]
        return Counter(values).most_common(1)[0][0] if values else ""

    return {
        "modality": common(group["modality"]),
        "anatomy": common(group["anatomy"]),
        "task": common([q["task"] for q in group["questions"]]),
    }


def with_mat(records: list[dict], mat: dict) -> list[dict]:
    """Records with the benchmark's own MAT terms (the recipe's, where it gives them, win at ingest)."""
    return [{**r, **{k: v for k, v in mat.items() if v}} for r in records]


def decode(task: dict, source: dict) -> tuple[list[dict], list[dict]]:
    records, problems = decode_image_file(task, source)
    return with_mat(records, json.loads(task["extra"]).get("mat") or {}), problems


def embedded_record(task: dict, source: dict, data: bytes) -> tuple[list[dict], list[dict]]:
    """The record of an image read out of a table (`vlmeval_tsv`, `vqa_parquet`): its facts, its hash (what
    view/render checks the bytes against later), the questions and the benchmark's MAT terms."""
    from ..imaging import DEFAULT_MAX_PIXELS, file_facts
    from .base import image_record

    facts = file_facts(
        io.BytesIO(data),
        source.get("max_pixels") or DEFAULT_MAX_PIXELS,
        damaged=source.get("damaged_images") or "quarantine",
        max_bytes=source.get("max_file_bytes") or DEFAULT_MAX_FILE_BYTES,
    )
    extra = json.loads(task["extra"])
    record = image_record(task, facts, meta=extra.get("meta"), file_hash=facts.file_hash)
    problems = []
    if facts.warning:
        problems.append(
            quarantine_row(
                source["name"], task["uri"], "damaged_kept", facts.warning, stage="decode", scope="warning", record_id=task["id"]
            )
        )
    return with_mat([record], extra.get("mat") or {}), problems


def add_question(groups: dict, key, r, fmt: str, location: dict) -> None:
    """File a question under its image's group (`key`), the first question's row saying where the image is."""
    group = groups.setdefault(key, {"questions": [], "modality": [], "anatomy": [], "format": fmt, "location": location})
    group["questions"].append(r.question)
    group["modality"].append(r.modality)
    group["anatomy"].append(r.anatomy)
