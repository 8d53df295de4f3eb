"""Every generated text is checked against its record: it must name the label (or a synonym of it), must
not name a modality or an anatomical area other than the record's, and must not state a count of a label
("three brains", "2 nodules") other than the number of objects its ROIs show (`structures.py`)."""

from __future__ import annotations

import re

from ..vocab import Vocabulary, term_key
from ..vocab.words import label_words, plural
from .knowledge import KnowledgeBase


def _padded(text: str) -> str:
    return f" {term_key(text)} "


NUMBER_WORDS = {
    "one": 1,
    "single": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "several": -2,
    "multiple": -2,
}
# words that may stand between a number and its noun ("two small round nodules"), so not these
_NOT_BETWEEN = frozenset(
    "of the a an and or is are was were with in on at to from by than its their this that which overlaps lies".split()
)


def stated_counts(text: str, name: str) -> list[int]:
    """The counts a text states of `name` (a term key, singular or plural): "two small nodules" -> [2];
    several/multiple -> -2 (meaning: more than one). Digits count only right before the noun ("3 cysts"),
    as "nodule 1 overlaps nodule 2" numbers objects rather than counting them."""
    padded = _padded(text)
    words = "|".join(NUMBER_WORDS)
    found = []
    for m in re.finditer(rf"(?<= )(?:({words})((?: [a-z%]+){{0,2}})|(\d+)) {re.escape(name)}(?= )", padded):
        if m.group(1):
            if any(w in _NOT_BETWEEN for w in m.group(2).split()):
                continue
            found.append(NUMBER_WORDS[m.group(1)])
        else:
            found.append(int(m.group(3)))
    return found


class TextChecker:
    def __init__(self, vocab: Vocabulary, kb: KnowledgeBase):
        self.vocab, self.kb = vocab, kb
        self._own: dict[tuple, frozenset[str]] = {}

    def names(self, label: str) -> list[str]:
        """The label and its synonyms as the texts may write them."""
        out = []
        for name in (*self.kb.synonyms(label), label_words(label)):
            for key in (term_key(name), term_key(plural(name))):  # "two lesions" names "lesion"
                if key and key not in out:
                    out.append(key)
        return out

    def missing_labels(self, text: str, labels: list[str]) -> list[str]:
        """The labels the text names neither directly nor by a synonym."""
        padded = _padded(text)
        return [label for label in labels if not any(f" {name} " in padded for name in self.names(label))]

    def _own_keys(self, modality: str | None, anatomy: str | None) -> frozenset[str]:
        """Every vocabulary key of the record's own modality and anatomy (cached: a few per corpus)."""
        key = (modality, anatomy)
        if key not in self._own:
            own = {modality, anatomy, "unknown"}
            self._own[key] = frozenset(
                k for kind in ("modality", "anatomy") for k, v in self.vocab.lookup[kind].items() if v in own
            )
        return self._own[key]

    def foreign_terms(self, text: str, record: dict) -> list[str]:
        """Modality and anatomy terms in the text that belong to neither of the record's own."""
        padded = _padded(text)
        own = {record.get("modality"), record.get("anatomy"), "unknown"}
        allowed = set(self._own_keys(record.get("modality"), record.get("anatomy")))
        allowed |= {n for label in record.get("labels") or [] for n in self.names(label)}
        allowed |= {n for roi in record.get("rois") or [] for n in self.names(roi["label"])}
        for key in sorted(allowed, key=len, reverse=True):  # "fundus photograph" is not a "photograph"
            if key:
                padded = padded.replace(f" {key} ", " | ")
        found = []
        for kind in ("modality", "anatomy"):
            for key, canonical in self.vocab.lookup[kind].items():
                if canonical in own or key in allowed or not key:
                    continue
                if len(key) <= 3:  # abbreviations count only as written in capitals (CT, US, MR)
                    if re.search(rf"(?<![A-Za-z]){re.escape(key.upper())}(?![A-Za-z])", text):
                        found.append(f"{kind} {canonical!r} ({key.upper()})")
                elif f" {key} " in padded:
                    found.append(f"{kind} {canonical!r} ({key})")
        return found

    def wrong_counts(self, text: str, counts: dict[str, int]) -> list[str]:
        """Count words that contradict the number of objects of a label (`counts`, from the ROIs)."""
        out = []
        for label, n in counts.items():
            for name in self.names(label):
                for said in stated_counts(text, name):
                    if (said == -2 and n < 2) or (said > 0 and said != n):
                        word = "several" if said == -2 else str(said)
                        out.append(f"says {word} {name!r} where the ROIs show {n}")
        return sorted(set(out))

    def problems(self, text: str, record: dict, labels: list[str] | None, counts: dict[str, int] | None = None) -> list[str]:
        """What is wrong with a text for this record ([] when nothing); `labels` None skips the label rule
        (a question must not give its answer away); `counts` (objects per label) enables the count rule."""
        out = self.wrong_counts(text, counts) if counts else []
        missing = self.missing_labels(text, labels) if labels else []
        if missing:
            out.append(f"does not name {', '.join(repr(x) for x in missing)}")
        foreign = self.foreign_terms(text, record)
        if foreign:
            out.append("names " + ", ".join(foreign))
        return out
