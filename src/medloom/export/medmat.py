"""`--format medmat`: Med-MAT's question records, in the files and the folder layout Med-MAT publishes.

A record is Med-MAT's (FreedomIntelligence/Med-MAT, README "Data Construction" and the HF question files), its
fields in this order: `id` (a count from 1 in each file), `caption` (the original label), `image` (a path from the
folder that holds `med-mat/`), `Question`, `Answer` (the label), `Question-choice` (the question, one `A: option`
line per option, and the instruction line), `Answer-choice` (the letter) and `data-no` (the dataset's number, as
text). Files: `Original_Medical_Datasets/ori--NN-SPLIT.json` per dataset and `Aggregated_Subsets/Subset--NN-
SPLIT.json` per subset the registry puts it in, for sources whose number is known (a preset's `medmat-NNN` name);
`medmat-SPLIT.json` for the others (`data-no`: the source's name). Questions a `medmat` source read from Med-MAT's
own files go back to the file, id and image path they came from, unchanged.
"""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath

from ..records import source_questions

INSTRUCTION = "Answer with the option's letter from the given choices directly."
LETTERS = "ABCD"
ORIGINAL = "Original_Medical_Datasets"
SUBSETS = "Aggregated_Subsets"
SOURCE_NAME = re.compile(r"^medmat-(\d{1,3})$")  # the name `medloom init --preset medmat:N` gives a source
# Med-MAT's own folder under med-mat/ for a dataset, where its published records show it (ori--02, ori--03,
# ori--04, Subset--03); the others get the preset's folder name
FOLDERS = {2: "CT_Kindney_Dataset", 3: "SARS-COV-2_Ct-Scan", 4: "COVID_CT_COVID-CT/COVID-CT-master"}


def prompt(question: str, options: list[str]) -> str:
    """Med-MAT's `Question-choice`: the question, `A: option` lines, the instruction."""
    return "\n".join([question, *(f"{LETTERS[i]}: {o}" for i, o in enumerate(options)), INSTRUCTION])


def dataset_number(source: str) -> int | None:
    m = SOURCE_NAME.match(source)
    return int(m.group(1)) if m else None


def safe_path(path: str) -> bool:
    """A relative path with no `..`: written under the export folder, never beside it."""
    p = PurePosixPath(path)
    return bool(path) and not p.is_absolute() and ".." not in p.parts and "\\" not in path and ":" not in p.parts[0]


def published(row: dict) -> list[dict]:
    """The questions a `medmat` source read from Med-MAT's files (its source questions' `published`), as read."""
    try:
        asked = source_questions(row.get("meta"))
    except ValueError:
        return []
    return [q["published"] for q in asked if isinstance(q, dict) and isinstance(q.get("published"), dict)]


def image_path(row: dict, ext: str, fallback: str, private: bool = False) -> str:
    """Where Med-MAT's layout puts the record's image: `med-mat/FOLDER/ROOT/URI` (its extension the export's),
    `fallback` (images/ID.ext) for a source whose number is not known, and for one with pseudonymous ids (its
    paths can name patients: they stay in the loom)."""
    if private:
        return fallback
    stored = published(row)
    if stored and safe_path(stored[0].get("image", "")):
        path = stored[0]["image"]
    else:
        number = dataset_number(row["source"])
        if number is None:
            return fallback
        from ..registry.presets import presets

        preset = presets("medmat").get(number)
        folder = FOLDERS.get(number) or (preset.folder if preset else row["source"])
        root = f"{preset.root}/" if preset and preset.root else ""
        path = f"med-mat/{folder}/{root}{row['uri']}"
        if not safe_path(path):
            return fallback
    stem, dot, old = path.rpartition(".")
    same = old.lower() in (ext, "jpeg" if ext == "jpg" else ext)
    return path if dot and same else f"{stem if dot else path}.{ext}"


def original_names(label_map: dict[str, str]) -> dict[str, str]:
    """label -> the name the source wrote, where the recipe's `label_map` renamed one name only to it."""
    back: dict[str, list[str]] = {}
    for written, label in label_map.items():
        back.setdefault(label, []).append(written)
    return {label: names[0] for label, names in back.items() if len(names) == 1}


def items(row: dict, ann: dict, image: str, names: dict[str, str]) -> list[tuple[list[str], dict]]:
    """(the files it goes to, the record without its id) for each multiple-choice question of the record."""
    stored = published(row)
    if stored:
        return [
            (
                [q["file"]],
                {
                    "id": q["id"],
                    "caption": q["caption"],
                    "image": image,
                    "Question": q["Question"],
                    "Answer": q["Answer"],
                    "Question-choice": q["Question-choice"],
                    "Answer-choice": q["Answer-choice"],
                    "data-no": q["data-no"],
                },
            )
            for q in stored
        ]
    number = dataset_number(row["source"])
    split = row["split"] or "train"
    if number is None:
        files = [f"medmat-{split}.json"]
    else:
        from ..registry import load

        files = [f"{ORIGINAL}/ori--{number:02d}-{split}.json"]
        files += [f"{SUBSETS}/Subset--{s.number:02d}-{split}.json" for s in load("medmat").subsets_of(number)]
    word = lambda label: names.get(label, label)  # noqa: E731
    caption = ", ".join(word(x) for x in row["labels"] or []) or ", ".join(
        dict.fromkeys(word(r["label"]) for r in row["rois"] or [])
    )
    out = []
    for q in ann["vqa"]:
        if q["kind"] != "multiple-choice" or q["source"] == "medmat":
            continue
        options = [word(x) for x in q["option_labels"]]
        record = {
            "id": 0,
            "caption": caption,
            "image": image,
            "Question": q["question"],
            "Answer": word(q["answer_label"]),
            "Question-choice": prompt(q["question"], options),
            "Answer-choice": q["answer_letter"],
            "data-no": str(number) if number is not None else row["source"],
        }
        out.append((files, record))
    return out


def file_groups(found: list[tuple[list[str], dict]]) -> dict[str, list[dict]]:
    """Records per file; Med-MAT's own keep their ids (in id order), medloom's are counted from 1."""
    groups: dict[str, list[dict]] = {}
    for files, record in found:
        for name in files:
            groups.setdefault(name, []).append(dict(record))
    for records in groups.values():
        if all(r["id"] for r in records):
            records.sort(key=lambda r: r["id"])
        else:
            for n, r in enumerate(records, 1):
                r["id"] = n
    return groups


def text(records: list[dict]) -> str:
    """A file's text as Med-MAT's README shows a record: four-space indent, characters as they are."""
    return json.dumps(records, ensure_ascii=False, indent=4)
