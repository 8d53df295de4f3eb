"""Every generated text is checked against its record: it must name the label (or a synonym of it) and
must not name a modality or an anatomical area other than the record's."""

from __future__ import annotations

import re

from ..vocab import Vocabulary, term_key
from .knowledge import KnowledgeBase
from .text import label_words, plural


def _padded(text: str) -> str:
    return f" {term_key(text)} "


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
            self._own[key] = frozenset(k for kind in ("modality", "anatomy")
                                       for k, v in self.vocab.lookup[kind].items() if v in own)
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

    def problems(self, text: str, record: dict, labels: list[str] | None) -> list[str]:
        """What is wrong with a text for this record ([] when nothing); `labels` None skips the label rule
        (a question must not give its answer away)."""
        out = []
        missing = self.missing_labels(text, labels) if labels else []
        if missing:
            out.append(f"does not name {', '.join(repr(x) for x in missing)}")
        foreign = self.foreign_terms(text, record)
        if foreign:
            out.append("names " + ", ".join(foreign))
        return out
