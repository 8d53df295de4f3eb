"""Questions about an image, as Med-MAT builds them: a multiple-choice question from one of six or more
instructions per task family, up to four options (distractors from the same label space, never the
answer or a synonym of it, never another label of the same image), shuffled by seed, with the answer
letter; plus open-ended, yes/no, and grounding questions (answer: a normalised box)."""

from __future__ import annotations

import random

from ..records import source_questions as records_source_questions
from ..vocab.words import anatomy_phrase, class_name, finding, label_words, modality_phrase, plural, sentence
from .knowledge import KnowledgeBase, term_key
from .structures import instance_words, objects

INSTRUCTION = "Answer with the option's letter from the given choices directly."
LETTERS = "ABCD"

QUESTIONS: dict[str, list[str]] = {
    "classification": [
        "What disease is shown in this {image} {of_anatomy}?",
        "Which of the following best describes the finding in this {image}?",
        "Based on this {image} {of_anatomy}, what is the most likely diagnosis?",
        "What does this {image} show?",
        "Identify the condition visible in this {image} {of_anatomy}.",
        "Which label applies to this {image}?",
    ],
    "multi-label": [
        "Which of the following findings is present in this {image} {of_anatomy}?",
        "One of these findings appears in this {image}. Which one?",
        "Which finding below can be seen in this {image} {of_anatomy}?",
        "Select the finding that is present in this {image}.",
        "Which of these conditions does this {image} {of_anatomy} show?",
        "Among the options, which finding is visible in this {image}?",
    ],
    "grading": [
        "What grade does this {image} {of_anatomy} show?",
        "How severe is the condition in this {image}?",
        "Which level best describes this {image} {of_anatomy}?",
        "Assign a grade to this {image}.",
        "What is the severity level shown in this {image} {of_anatomy}?",
        "Which grade applies to this {image}?",
    ],
    "detection": [
        "Which of the following is present in this {image} {of_anatomy}?",
        "What kind of object can be located in this {image}?",
        "Which structure or lesion appears in this {image} {of_anatomy}?",
        "Which of these can be found in this {image}?",
        "What is marked in this {image} {of_anatomy}?",
        "Identify the object visible in this {image}.",
    ],
    "segmentation": [
        "Which region is delineated in this {image} {of_anatomy}?",
        "What structure or lesion occupies a region of this {image}?",
        "Which of the following is present in this {image} {of_anatomy}?",
        "What does the region of interest in this {image} correspond to?",
        "Which of these can be segmented in this {image} {of_anatomy}?",
        "Identify the region of interest in this {image}.",
    ],
}


def _slots(record: dict) -> dict[str, str]:
    return {"image": modality_phrase(record["modality"]), "of_anatomy": anatomy_phrase(record["anatomy"])}


def _question(template: str, record: dict) -> str:
    return sentence(template.format(**_slots(record)))


def distractors(record: dict, present: list[str], kb: KnowledgeBase) -> list[str]:
    """Labels of the space that are wrong for this image: not one of its labels, nor a synonym of one."""
    taken = {term_key(n) for label in present for n in kb.synonyms(label) + [label_words(label)]}
    pool = []
    for label in sorted(record.get("label_space") or []):
        names = {term_key(n) for n in kb.synonyms(label) + [label_words(label)]}
        if not names & taken and label not in pool:
            pool.append(label)
    return pool


def multiple_choice(record: dict, family: str, rng: random.Random, kb: KnowledgeBase) -> dict | None:
    """A Med-MAT question, or None when the label space leaves no distractor."""
    present = (
        list(record.get("labels") or [])
        if family not in ("detection", "segmentation")
        else sorted({r["label"] for r in record.get("rois") or []})
    )
    if not present:
        return None
    answer = rng.choice(sorted(present))
    pool = distractors(record, present, kb)
    if not pool:
        return None
    options = [answer] + rng.sample(pool, min(3, len(pool)))
    rng.shuffle(options)
    letter = LETTERS[options.index(answer)]
    stem = _question(rng.choice(QUESTIONS[family]), record)
    lines = [f"{LETTERS[i]}. {class_name(o)}" for i, o in enumerate(options)]
    return item(
        "multiple-choice",
        stem,
        class_name(answer),
        options=[class_name(o) for o in options],
        option_labels=options,
        answer_letter=letter,
        answer_label=answer,
        prompt="\n".join([stem, *lines, INSTRUCTION]),
    )


def widen(question: dict, record: dict, extra: list[str], fewest: int, rng: random.Random, kb: KnowledgeBase) -> dict:
    """A multiple-choice question with at least `fewest` options (at most four), the missing ones drawn from
    `extra` (labels of other tasks: `cg plan`'s distractors), never the answer, one of the image's labels, an
    option already shown or a synonym of one; options reshuffled and the letter and prompt made again. The
    question as it was when it has enough options or `extra` has nothing that fits."""
    shown = list(question.get("option_labels") or question["options"])
    need = min(fewest, len(LETTERS)) - len(shown)
    if need <= 0:
        return question
    names = lambda label: {term_key(n) for n in kb.synonyms(label) + [label_words(label)]}  # noqa: E731
    taken = set().union(*(names(x) for x in [*shown, *(record.get("labels") or [])]))
    pool = []
    for label in sorted(set(extra)):
        if not names(label) & taken:
            pool.append(label)
            taken |= names(label)
    if not pool:
        return question
    answer = question.get("answer_label") or question["answer"]
    options = shown + rng.sample(pool, min(need, len(pool)))
    rng.shuffle(options)
    truth = next(i for i, o in enumerate(options) if o == answer or class_name(o) == question["answer"])
    lines = [f"{LETTERS[i]}. {class_name(o)}" for i, o in enumerate(options)]
    return {
        **question,
        "options": [class_name(o) for o in options],
        "option_labels": options,
        "answer_letter": LETTERS[truth],
        "prompt": "\n".join([question["question"], *lines, INSTRUCTION]),
    }


def item(kind: str, question: str, answer: str, **more) -> dict:
    """One question with every field present (the stored type is the same for every kind)."""
    return {
        "kind": kind,
        "question": question,
        "options": [],
        "option_labels": [],
        "answer": answer,
        "answer_letter": "",
        "answer_label": "",
        "prompt": question,
        "box": [],
        **more,
    }


def open_questions(
    record: dict,
    family: str,
    rng: random.Random,
    kb: KnowledgeBase,
    *,
    max_grounding: int = 3,
    instances: frozenset[str] | None = None,
) -> list[dict]:
    """Open-ended and yes/no questions about the labels, and grounding questions for objects whose label is
    unique in the image (a box answer must be unambiguous; a structure in parts is one object, its box
    the union of its parts': see `structures.py`)."""
    slots = _slots(record)
    out = []
    labels = list(record.get("labels") or [])
    if labels and family in ("classification", "multi-label", "grading"):
        out.append(
            item(
                "open",
                sentence(f"What is shown in this {slots['image']} {slots['of_anatomy']}?"),
                sentence(", ".join(class_name(x) for x in labels)),
                answer_label=labels[0],
            )
        )
        out.append(item("yes-no", f"Does this image show {finding(labels[0])}?", "Yes.", answer_label=labels[0]))
        others = distractors(record, labels, kb)
        if others:
            other = rng.choice(sorted(others))
            out.append(item("yes-no", f"Does this image show {finding(other)}?", "No.", answer_label=other))
    return out + grounding_questions(record, rng, max_grounding, instances)


def grounding_questions(
    record: dict, rng: random.Random | None, most: int | None = None, instances: frozenset[str] | None = None
) -> list[dict]:
    """A grounding question per object whose label is unique in the image (a box answer must be unambiguous),
    answered by its normalised box; `most` drawn with `rng` (None: all, in ROI order)."""
    rois = objects(list(record.get("rois") or []), instance_words(None) if instances is None else instances)
    unique = [r for r in rois if sum(x["label"] == r["label"] for x in rois) == 1]
    chosen = unique if most is None or rng is None else rng.sample(unique, min(most, len(unique)))
    out = []
    for roi in chosen:
        box = [round(float(v), 3) for v in roi["bbox"]]
        out.append(
            item(
                "grounding",
                f"Where is the {label_words(roi['label'])} in this image? Answer with a normalised box [x0, y0, x1, y1].",
                "[" + ", ".join(f"{v:.3f}" for v in box) + "]",
                box=box,
                answer_label=roi["label"],
            )
        )
    return out


def detection_questions(record: dict, findings: list[str], instances: frozenset[str] | None = None) -> list[dict]:
    """What a detection record trains on in a `cg plan` experiment (Med-MAT's Table 5): for each label it shows,
    where it is: one object's box, or every box of a label shown several times ("Where are the nodules ...?",
    the boxes in reading order); an image showing none of the subset's `findings` (a negative) is asked where the
    first one is and answered that there is none, so that every record of the mix trains."""
    rois = objects(list(record.get("rois") or []), instance_words(None) if instances is None else instances)
    out = []
    for label in dict.fromkeys(r["label"] for r in rois):
        boxes = sorted(([round(float(v), 3) for v in r["bbox"]] for r in rois if r["label"] == label), key=lambda b: (b[1], b[0]))
        words = label_words(label)
        text = "; ".join("[" + ", ".join(f"{v:.3f}" for v in b) + "]" for b in boxes)
        if len(boxes) == 1:
            question = f"Where is the {words} in this image? Answer with a normalised box [x0, y0, x1, y1]."
        else:
            question = f"Where are the {plural(words)} in this image? Answer with a normalised box [x0, y0, x1, y1] for each."
        out.append(item("grounding", question, text, box=boxes[0] if len(boxes) == 1 else [], answer_label=label))
    if not rois and findings:
        words = label_words(findings[0])
        question = f"Where is the {words} in this image? Answer with a normalised box [x0, y0, x1, y1]."
        out.append(item("grounding", question, f"There is no {words} in this image.", answer_label=findings[0]))
    return out


def source_questions(record: dict) -> list[dict]:
    """The multiple-choice questions a training set published for this image (the `medmat` reader keeps Med-MAT's
    as source questions holding the published record), as they were: question, options, answer and letter
    unchanged. A benchmark's source questions (the `vqa` readers') stay out: they are asked by `eval vqa`, never
    mixed with the annotation's."""
    try:
        asked = records_source_questions(record.get("meta"))
    except ValueError:
        return []
    out = []
    for q in (a.get("published") for a in asked if isinstance(a, dict)):
        if isinstance(q, dict) and q.get("options"):
            out.append(
                item(
                    "multiple-choice",
                    q["Question"],
                    q["Answer"],
                    options=list(q["options"]),
                    option_labels=list(q["options"]),
                    answer_letter=q["Answer-choice"],
                    answer_label=q["Answer"],
                    prompt=q["Question-choice"],
                    source="medmat",
                )
            )
    return out
