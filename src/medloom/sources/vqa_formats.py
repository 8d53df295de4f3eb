"""The published question files of medical VQA benchmarks, one row at a time, as medloom's source questions.

Each format's names are as the benchmark publishes them (checked against the releases and the loaders of
VLMEvalKit and lmms-eval; see docs/recipes-and-readers.md, "VQA benchmarks"):

- vqa-rad: `VQA_RAD Dataset Public.json`, a list of {qid, image_name, question, answer, answer_type (OPEN /
  CLOSED), question_type, image_organ (HEAD, CHEST, ABD), phrase_type (freeform, para, test_freeform,
  test_para: the test questions are the `test_` ones)}; images in `VQA_RAD Image Folder/`.
- slake: `train.json`, `validate.json`, `test.json`, lists of {qid, img_id, img_name (`xmlab0/source.jpg`),
  question, answer, answer_type, q_lang (en, zh), modality, location, content_type, base_type}; images in `imgs/`.
- pathvqa: `qas/{train,val,test}/*_qa.pkl` (a pickled list of {image, question, answer}, the image named without
  its extension: `train_0422` is `images/train/train_0422.jpg`), or the same fields in JSON or CSV.
- pmc-vqa: `train.csv`, `test.csv` (and `test_clean.csv`): Figure_path, Question, Answer, `Choice A` .. `Choice D`
  (written ` A:text`), Answer_label (the letter); figures in `images/` (`figures/`).
- omnimedvqa: `QA_information/{Open-access,Restricted-access}/<dataset>.json`, lists of {dataset, question_id,
  question_type, question, gt_answer, image_path, option_A .. option_D, modality_type}.
- vlmeval: VLMEvalKit's TSV columns: index, image, question, A .. J (the options present), answer (a letter for a
  multiple-choice question, else the answer), hint, category, l2-category, split.
- generic: image, question, answer (Hugging Face datasets' VQA-RAD and PathVQA Parquet).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..records import source_question
from ..vocab import default_vocabulary, term_key
from ..vocab.splits import split_name

FORMATS = ("auto", "vqa-rad", "slake", "pathvqa", "pmc-vqa", "omnimedvqa", "vlmeval", "generic")
LETTERS = "ABCDEFGHIJ"
# where each format's images lie, relative to the source's root (then the root itself)
IMAGE_DIRS = {
    "vqa-rad": ["VQA_RAD Image Folder"],
    "slake": ["imgs"],
    "pathvqa": ["images/{split}", "images"],
    "pmc-vqa": ["images", "figures"],
}
# benchmark words the vocabulary does not hold as such
ANATOMY_WORDS = {"abd": "abdomen", "head": "brain"}
TASK_WORDS = {
    "anatomy identification": "organ recognition",
    "lesion grading": "level",
    "abnormality": "disease",
    "abn": "disease",
    "modality": "modality recognition",
    "organ": "organ recognition",
}


@dataclass
class Row:
    """One question as a benchmark's file has it: which image, the question, and the image's own facts."""

    image: str
    question: dict
    split: str = ""
    modality: str = ""
    anatomy: str = ""


def detect(columns) -> str | None:
    """The format whose published column names these are, else None."""
    cols = set(columns)
    if "image_organ" in cols or ("image_name" in cols and "answer_type" in cols):
        return "vqa-rad"
    if "img_name" in cols and "question" in cols:
        return "slake"
    if "Figure_path" in cols:
        return "pmc-vqa"
    if "gt_answer" in cols:
        return "omnimedvqa"
    if "index" in cols and "question" in cols and "answer" in cols:
        return "vlmeval"
    if {"image", "question", "answer"} <= cols:
        return "generic"
    return None


def text(value) -> str:
    """A cell as text: numbers as written (VQA-RAD has answers such as 2), empty for None and NaN."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def mat_term(kind: str, value: str) -> str:
    """A benchmark's modality or organ word as the vocabulary's term: the whole text, a known spelling, or its
    first word the vocabulary knows (SLAKE's `Chest_heart` is chest, OmniMedVQA's `Microscopy Images`
    microscopy); empty when none is known."""
    vocab = default_vocabulary()
    value = text(value)
    if not value:
        return ""
    found = vocab.normalise(kind, value, strict=False)
    if found != "unknown":
        return found
    if kind == "anatomy" and term_key(value) in ANATOMY_WORDS:
        return ANATOMY_WORDS[term_key(value)]
    for word in re.split(r"[\s_/,-]+", value):
        found = vocab.normalise(kind, word, strict=False) if len(word) > 2 else "unknown"
        if found != "unknown":
            return found
    return ""


def task_term(question_type: str) -> str:
    """A question type as a MAT task (SLAKE's content_type, OmniMedVQA's question_type), else empty."""
    key = term_key(question_type)
    if not key:
        return ""
    found = default_vocabulary().normalise("task", key, strict=False)
    return found if found != "unknown" else TASK_WORDS.get(key, "")


def file_split(name: str) -> str:
    """The split a question file's name says: `validate.json` val, `test_clean.csv` test, `train_qa.pkl` train."""
    stem = name.rsplit("/", 1)[-1].split(".")[0].lower()
    for part in re.split(r"[_\-\s]+", stem):
        if part == "validate":
            return "val"
        if split_name(part):
            return split_name(part) or ""
    return ""


def _options(row: dict, keys: list[str]) -> list[str]:
    out = []
    for key in keys:
        value = text(row.get(key))
        if not value:
            break
        out.append(value)
    return out


def _answer_by_letter(letter: str, options: list[str], where: str) -> str:
    index = LETTERS.find(letter.strip().upper()[:1]) if letter.strip() else -1
    if len(letter.strip()) != 1 or not 0 <= index < len(options):
        raise ValueError(f"the answer {letter!r} is not the letter of one of the {len(options)} options ({where})")
    return options[index]


def parse(fmt: str, row: dict, split: str) -> Row:
    """One published row as a `Row`; ValueError (said plainly) for a row that cannot be read."""
    get = lambda key: text(row.get(key))  # noqa: E731
    if fmt == "vqa-rad":
        phrase = get("phrase_type").lower()
        q = source_question(
            get("question"),
            get("answer"),
            answer_type=get("answer_type"),
            qid=get("qid"),
            question_type=get("question_type"),
            task=task_term(get("question_type").split(",")[0]),
        )
        split = "test" if phrase.startswith("test") else ("train" if phrase else split)
        return _checked(Row(get("image_name"), q, split, "", mat_term("anatomy", get("image_organ"))))
    if fmt == "slake":
        q = source_question(
            get("question"),
            get("answer"),
            answer_type=get("answer_type"),
            qid=get("qid"),
            question_type=get("content_type"),
            language=get("q_lang"),
            task=task_term(get("content_type")),
        )
        return _checked(
            Row(get("img_name"), q, split, mat_term("modality", get("modality")), mat_term("anatomy", get("location")))
        )
    if fmt == "pathvqa":
        image = get("image")
        q = source_question(get("question"), get("answer"), qid=get("id") or get("qid"))
        if image and "." not in image.rsplit("/", 1)[-1]:
            image += ".jpg"
        split = split or split_name(image.rsplit("/", 1)[-1].split("_")[0]) or ""
        return _checked(Row(image, q, split, "pathology", ""))
    if fmt == "pmc-vqa":
        options = [re.sub(r"^\s*[A-D]\s*:\s*", "", text(row.get(f"Choice {x}"))) for x in "ABCD"]
        options = [o for o in options if o]
        letter = get("Answer_label") or (get("Answer") if len(get("Answer")) == 1 else "")
        answer = _answer_by_letter(letter, options, "Answer_label") if letter else get("Answer")
        q = source_question(get("Question"), answer, options=options, answer_type="closed")
        return _checked(Row(get("Figure_path"), q, split))
    if fmt == "omnimedvqa":
        options = _options(row, [f"option_{x}" for x in "ABCDEFGH"])
        q = source_question(
            get("question"),
            get("gt_answer"),
            options=options,
            answer_type="closed",
            qid=get("question_id"),
            question_type=get("question_type"),
            task=task_term(get("question_type")),
        )
        if options and q["answer"] not in options:
            raise ValueError(f"gt_answer {q['answer']!r} is not one of the options {options}")
        modality = mat_term("modality", get("modality_type") or get("modality"))
        return _checked(Row(get("image_path"), q, split or "test", modality, ""))
    if fmt in ("vlmeval", "generic"):
        options = _options(row, list(LETTERS))
        answer = get("answer")
        if options and len(answer) == 1 and answer.upper() in LETTERS:
            answer = _answer_by_letter(answer, options, "answer")
        question = get("question")
        if get("hint"):
            question = f"Hint: {get('hint')}\nQuestion: {question}"
        qtype = get("question_type") or get("category") or get("content_type")
        q = source_question(
            question,
            answer,
            options=options,
            answer_type=get("answer_type"),
            qid=get("index") or get("qid") or get("question_id"),
            question_type=qtype,
            language=get("q_lang") or get("language"),
            task=task_term(qtype),
        )
        modality = mat_term("modality", get("modality") or get("modality_type"))
        anatomy = mat_term("anatomy", get("image_organ") or get("location") or get("organ") or get("body_part"))
        split = split_name(get("split")) or split
        return _checked(Row(get("image"), q, split, modality, anatomy))
    raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")


def _checked(row: Row) -> Row:
    if not row.question["question"]:
        raise ValueError("the question is empty")
    if not row.question["answer"]:
        raise ValueError("the answer is empty")
    return row
