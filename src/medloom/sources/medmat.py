"""Med-MAT's released question files (FreedomIntelligence/Med-MAT on Hugging Face) with the images they name.

The source's root is the folder Med-MAT's README lays out: `med-mat/` (the unzipped datasets), and the question
files in `Original_Medical_Datasets/ori--NN-train.json` and `Aggregated_Subsets/Subset--NN-train.json`. Each
file is a JSON list of records `{id, caption, image, Question, Answer, Question-choice, Answer-choice, data-no}`;
`image` is a path from the root (`med-mat/CT_Kindney_Dataset/.../Cyst- (561).jpg`). One record per image: its
label is the records' `caption`, and every question about it (from every file) is one of the record's source
questions (`records.source_question`, in its `meta`, as the benchmark readers keep theirs) holding the record as
published (`published`), which the annotate step turns into its questions and `--format medmat` writes back
unchanged.
"""

from __future__ import annotations

import glob
import json
import os
import re

from pydantic import BaseModel, ConfigDict

from ..imaging import DEFAULT_MAX_FILE_BYTES, DecodeError, read_file
from ..records import SOURCE_QUESTIONS, quarantine_row, source_question
from ..vocab.splits import split_name
from .base import Scan, check_label, decode_image_file, decode_text, inside, make_task, source_roots

FIELDS = ("id", "caption", "image", "Question", "Answer", "Question-choice", "Answer-choice", "data-no")
INSTRUCTION = "Answer with the option's letter from the given choices directly."
LETTERS = "ABCD"
OPTION = re.compile(r"^([A-D]): (.*)$")


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # the question files, globs relative to the source root
    files: list[str] = ["Original_Medical_Datasets/*.json", "Aggregated_Subsets/*.json"]
    encoding: str | None = None  # of the JSON files; default UTF-8


decode = decode_image_file


def options_of(record: dict) -> list[str] | None:
    """The options of a `Question-choice` in Med-MAT's form (question, `A: option` lines, instruction), or None."""
    text, question = record["Question-choice"], record["Question"]
    head, tail = f"{question}\n", f"\n{INSTRUCTION}"
    if not text.startswith(head) or not text.endswith(tail) or len(text) < len(head) + len(tail):
        return None
    lines = text[len(head) : len(text) - len(tail)].split("\n")
    found = [OPTION.match(line) for line in lines]
    if not 1 < len(lines) <= 4 or not all(found) or [m.group(1) for m in found] != list(LETTERS[: len(lines)]):
        return None
    return [m.group(2) for m in found]


def problem(record: object) -> str | None:
    """What keeps a record from being one of Med-MAT's, or None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    missing = [f for f in FIELDS if f not in record]
    if missing:
        return f"lacks {', '.join(missing)}"
    if not isinstance(record["id"], int) or not all(isinstance(record[f], str) for f in FIELDS[1:]):
        return "`id` is not a number or another field is not text"
    options = options_of(record)
    if options is None:
        return (
            "`Question-choice` is not the question, `A: option` lines and the line "
            f"{INSTRUCTION!r}: {record['Question-choice'][:200]!r}"
        )
    letter = record["Answer-choice"]
    if letter not in LETTERS[: len(options)] or options[LETTERS.index(letter)] != record["Answer"]:
        return f"`Answer-choice` {letter!r} is not the option {record['Answer']!r}"
    return None


def output_file(rel: str) -> str:
    """Where `--format medmat` writes a file's questions back: Med-MAT's folder for its kind of file."""
    name = rel.rsplit("/", 1)[-1]
    if name.lower().startswith("ori"):
        return f"Original_Medical_Datasets/{name}"
    if name.lower().startswith("subset"):
        return f"Aggregated_Subsets/{name}"
    return name


def scan(source: dict) -> Scan:
    opts = Options(**source["options"])
    root = str(source["root"])
    roots = source_roots(source)
    out = Scan()
    paths = sorted({p for pattern in opts.files for p in glob.glob(os.path.join(glob.escape(root), pattern))})
    paths = [p for p in paths if os.path.isfile(p) and inside(p, roots)]
    if not paths:
        raise ValueError(f"{root}: no question file matches {opts.files}; put Med-MAT's JSON files there or set `files:`")
    images: dict[str, dict] = {}  # image path -> {"split", "labels", "questions"}
    for path in paths:
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        try:
            data = json.loads(
                decode_text(read_file(path, source.get("max_file_bytes") or DEFAULT_MAX_FILE_BYTES), path, opts.encoding)
            )
            if not isinstance(data, list):
                raise ValueError("the top level is not a JSON list")
        except (OSError, ValueError, DecodeError) as e:
            out.quarantine.append(
                quarantine_row(
                    source["name"], rel, "bad_annotation", f"not a readable Med-MAT question file ({e}); the other files are read"
                )
            )
            continue
        words = re.split(r"[^a-z]+", os.path.basename(rel).lower())
        split = next((split_name(w) for w in reversed(words) if split_name(w)), "")
        for n, record in enumerate(data, 1):
            where = f"{rel}:{n}"
            why = problem(record)
            if why:
                out.quarantine.append(quarantine_row(source["name"], where, "bad_annotation", f"record {n}: {why}"))
                continue
            image = record["image"].replace("\\", "/")
            target = os.path.normpath(os.path.join(root, image))
            if os.path.isabs(image) or ".." in image.split("/") or not inside(target, roots):
                out.quarantine.append(
                    quarantine_row(
                        source["name"],
                        where,
                        "outside_root",
                        f"record id {record['id']}: image {image!r} is not a path inside the source",
                    )
                )
                continue
            if not os.path.isfile(target):
                out.quarantine.append(
                    quarantine_row(
                        source["name"],
                        where,
                        "missing_image",
                        f"record id {record['id']}: image {image!r} not found under the source; download its dataset into "
                        "med-mat/ as Med-MAT's README shows",
                    )
                )
                continue
            label = source["label_map"].get(record["caption"], record["caption"])
            bad = check_label(source, where, "", label)
            if bad:
                out.quarantine.append(bad)
                continue
            entry = images.setdefault(image, {"split": split, "labels": [], "questions": []})
            if label not in entry["labels"]:
                entry["labels"].append(label)
            published = {**{f: record[f] for f in FIELDS}, "file": output_file(rel), "options": options_of(record)}
            asked = source_question(
                record["Question"], record["Answer"], answer_type="closed", options=published["options"], qid=str(record["id"])
            )
            entry["questions"].append({**asked, "published": published})
    for image, entry in images.items():
        path = os.path.normpath(os.path.join(root, image))
        meta = {SOURCE_QUESTIONS: entry["questions"]}
        out.tasks.append(make_task(source, path, uri=image, split=entry["split"], labels=entry["labels"], extra={"meta": meta}))
    return out
