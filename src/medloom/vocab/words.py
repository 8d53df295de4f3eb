"""Small English helpers so generated text reads as written: a/an, plurals, lists, label words."""

from __future__ import annotations

import re

_SILENT_H = ("hour", "honest", "honor", "honour", "heir")
_YOU_SOUND = ("uni", "use", "usu", "ure", "uri", "uro", "ute", "uti", "uvea", "one", "once", "eu", "ewe")
_LETTER_VOWEL_SOUND = "AEFHILMNORSX"  # letters whose names start with a vowel sound: an MRI, an X-ray
_IRREGULAR = {
    "fungus": "fungi",
    "nucleus": "nuclei",
    "metastasis": "metastases",
    "stenosis": "stenoses",
    "diagnosis": "diagnoses",
    "bacterium": "bacteria",
    "vertebra": "vertebrae",
    "polyp": "polyps",
    "lesion": "lesions",
    "foot": "feet",
    "tooth": "teeth",
    "mouse": "mice",
    "child": "children",
    "ovary": "ovaries",
    "artery": "arteries",
    "opacity": "opacities",
    "effusion": "effusions",
}
_UNCOUNTABLE = frozenset(
    {
        "edema",
        "oedema",
        "pneumonia",
        "cardiomegaly",
        "emphysema",
        "fibrosis",
        "atelectasis",
        "consolidation",
        "hemorrhage",
        "haemorrhage",
        "covid-19",
        "tuberculosis",
        "glaucoma",
        "cataract",
        "myopia",
        "hypertension",
        "ischemia",
        "necrosis",
        "infiltration",
    }
)


def article(phrase: str) -> str:
    """ "a" or "an" by sound: an MRI, an X-ray, an hour, a CT, a uterus, an effusion."""
    words = phrase.split()
    if not words:
        return "a"
    first = words[0]
    core = first.split("-")[0]
    if (core.isupper() and len(core) <= 5) or (len(core) == 1 and core.isalpha()):  # read letter by letter
        return "an" if core[0].upper() in _LETTER_VOWEL_SOUND else "a"
    low = first.lower()
    if low.startswith(_SILENT_H):
        return "an"
    if low.startswith(_YOU_SOUND):
        return "a"
    return "an" if low[0] in "aeiou" else "a"


def with_article(phrase: str) -> str:
    return f"{article(phrase)} {phrase}"


def plural(noun: str, n: int = 2) -> str:
    """The plural of a (last) word when n != 1; uncountable findings stay as they are."""
    if n == 1:
        return noun
    head, _, last = noun.rpartition(" ")
    low = last.lower()
    if low in _UNCOUNTABLE or not last:
        out = last
    elif low in _IRREGULAR:
        out = _IRREGULAR[low]
    elif re.search(r"(s|x|z|ch|sh)$", low):
        out = last + "es"
    elif re.search(r"[^aeiou]y$", low):
        out = last[:-1] + "ies"
    else:
        out = last + "s"
    return f"{head} {out}" if head else out


def counted(noun: str, n: int) -> str:
    """ "one lesion", "3 lesions"."""
    words = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}
    return f"{words.get(n, str(n))} {plural(noun, n)}"


def join_words(items: list[str], conjunction: str = "and") -> str:
    """ "a", "a and b", "a, b and c"."""
    items = [i for i in items if i]
    if len(items) <= 1:
        return items[0] if items else ""
    return f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


def label_words(label: str) -> str:
    """A label as words: "pleural_effusion" -> "pleural effusion", "NoFinding" -> "no finding"; all-caps
    abbreviations (COVID-19, AMD) are kept."""
    text = label.replace("_", " ").strip()
    if not text.isupper():
        text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text)
        text = " ".join(w if w.isupper() and len(w) > 1 else w.lower() for w in text.split())
    return text


def sentence(text: str) -> str:
    """Capitalise the first letter (not the rest) and end with a full stop."""
    text = re.sub(r"\s+([,.:;?!])", r"\1", " ".join(text.split()))
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "?", "!")) else text + "."


# ---- the MAT triplet and classes in words ------------------------------------------------------------------

# how to name an image of each modality ("a fundus photograph", not "a fundus photography image")
MODALITY_NOUNS = {
    "X-ray": "X-ray image",
    "mammography": "mammogram",
    "fundus photography": "fundus photograph",
    "pathology": "pathology slide",
    "digital photography": "clinical photograph",
    "angiography": "angiogram",
    "unknown": "medical image",
}
ANATOMY_PHRASES = {
    "cell": "of cells",
    "blood": "of blood",
    "whole body": "of the whole body",
    "unknown": "",
    "bone": "of the bones",
    "skin": "of the skin",
}
NORMAL = frozenset({"normal", "no finding", "healthy", "negative", "no abnormality", "nofinding"})


def modality_phrase(modality: str) -> str:
    return MODALITY_NOUNS.get(modality, f"{modality} image")


def anatomy_phrase(anatomy: str) -> str:
    return ANATOMY_PHRASES.get(anatomy, f"of the {anatomy}")


def class_name(label: str) -> str:
    """A class's one name, wherever a class is named as a class: multiple-choice options and answers, open
    answers, zero-shot and training prompts, results, exports. It is the label as words (`label_words`)."""
    return label_words(label)


def finding(label: str) -> str:
    """A class as caption prose says it: its name, except that a normal class reads "normal findings" ("a chest
    X-ray showing normal findings"). Only captions and yes/no question stems use this wording."""
    words = class_name(label)
    return "normal findings" if words.lower() in NORMAL else words


GROUNDING_FORMS = ("detection", "segmentation")


def task_form(task: str | None) -> str:
    """What a task asks of an image: `detection` or `segmentation` (the vocabulary's families, e.g. "lesion
    detection"), else `classification`. A subset of a grounding form trains with its boxes, not its labels
    (`cg plan`'s `grounding`, Med-MAT's Table 5)."""
    words = str(task or "").strip().lower()
    return next((f for f in GROUNDING_FORMS if words == f or words.endswith(" " + f)), "classification")


def mat_caption(record: dict) -> str:
    """The sentence every record supports, labels or not: "A CT image of the brain." (from the MAT triplet)."""
    image = modality_phrase(record.get("modality") or "unknown")
    return sentence(f"{with_article(image)} {anatomy_phrase(record.get('anatomy') or 'unknown')}".strip())
