"""Every generated text is checked against its record: a text whose stated facts contradict the catalog is
refused. It must name the label (or a synonym of it) and no other class of the label space (unless negated:
"no pneumothorax"); must not name a modality or an anatomical area other than the record's; must not state
a count of a label ("three brains", "2 nodules") other than the number of objects its ROIs show
(`structures.py`); must not put a lone object on the wrong side or in the wrong half of the image (nor on
the patient's side when the record does not say which side is which); must not call it by a size word
or a share of the image its geometry contradicts; must not call a method's proposal (`roi_source:
proposal`) annotated; and any knowledge it cites (HPO ids, in the text or kept beside it) must be the
term of one of its findings (`ontology.py`). The geometric rules read sentences that name exactly one
label with one object, so "nodule 1 lies left of nodule 2" is never read as a claim about one nodule."""

from __future__ import annotations

import json
import re

from ..vocab import Vocabulary, term_key
from ..vocab.words import NORMAL, label_words, plural
from .knowledge import KnowledgeBase
from .prose import ANNOTATED_WORDS, is_proposal
from .regions import patient_sides, size_words
from .structures import instance_words, objects


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


SIZES = ("tiny", "small", "medium-sized", "large")
SIZE_WORDS = {
    "tiny": 0,
    "minute": 0,
    "punctate": 0,
    "small": 1,
    "medium-sized": 2,
    "medium": 2,
    "moderate": 2,
    "moderate-sized": 2,
    "mid-sized": 2,
    "large": 3,
    "big": 3,
    "huge": 3,
    "massive": 3,
    "extensive": 3,
}
_NEGATION = re.compile(r"\b(no|not|without|absent|absence of|negative for|free of|rule out|ruled out)\s+(\w+\s+){0,2}$")
_ANNOTATED = re.compile(r"\b(" + "|".join(re.escape(w) for w in ANNOTATED_WORDS) + r"|annotator|hand-drawn|drawn by)\b", re.I)
_HPO_ID = re.compile(r"\bHP:\d{7}\b")


def sentences(text: str) -> list[str]:
    return [x for x in re.split(r"(?<=[.;!?])\s+", text) if x.strip()]


class TextChecker:
    def __init__(self, vocab: Vocabulary, kb: KnowledgeBase, hpo=None, instances: frozenset[str] | None = None):
        """`hpo`: the ontology knowledge comes from (`ontology.load_hpo()`), None when it is not installed;
        `instances`: the labels counted one by one (`structures.instance_words`)."""
        self.vocab, self.kb, self.hpo = vocab, kb, hpo
        self.words = instance_words(None) if instances is None else instances
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

    def own_labels(self, record: dict) -> list[str]:
        return sorted({*(record.get("labels") or []), *(r["label"] for r in record.get("rois") or [])})

    def foreign_labels(self, text: str, record: dict, knowledge: list[dict] | None = None) -> list[str]:
        """Classes of the record's label space that are not its own, named in the text and not negated
        ("no pneumothorax" is allowed); a normal class is never one (a finding's text may say "normal")."""
        for entry in knowledge or []:  # quoted definitions are the ontology's words, not claims
            text = text.replace(entry.get("definition", ""), " ")
        padded = _padded(text)
        own = {n for label in self.own_labels(record) for n in self.names(label)}
        found = []
        for label in record.get("label_space") or []:
            names = self.names(label)
            if label in self.own_labels(record) or label_words(label).lower() in NORMAL or set(names) & own:
                continue
            for name in names:
                hits = [m.start() for m in re.finditer(f" {re.escape(name)} ", padded)]
                if any(not _NEGATION.search(padded[:i] + " ") for i in hits):
                    found.append(label)
                    break
        return found

    def _single_objects(self, record: dict) -> dict[str, dict]:
        """The labels with exactly one object, with that object's geometry."""
        objs = objects(list(record.get("rois") or []), self.words)
        by_label: dict[str, list[dict]] = {}
        for o in objs:
            by_label.setdefault(o["label"], []).append(o)
        return {k: v[0] for k, v in by_label.items() if len(v) == 1}

    def _claims(self, text: str, record: dict):
        """(sentence with the record's names blanked, object) for each sentence naming exactly one label,
        which has exactly one object."""
        single = self._single_objects(record)
        labels = self.own_labels(record)
        blank = sorted(
            {n for label in labels for n in self.names(label)}
            | set(self._own_keys(record.get("modality"), record.get("anatomy"))),
            key=len,
            reverse=True,
        )
        for sent in sentences(text):
            padded = _padded(sent)
            named = [label for label in labels if any(f" {n} " in padded for n in self.names(label))]
            if len(named) != 1 or named[0] not in single:
                continue
            for key in blank:
                if key:
                    padded = padded.replace(f" {key} ", " | ")
            yield sent, padded, single[named[0]]

    def wrong_locations(self, text: str, record: dict) -> list[str]:
        """Side and half words about a lone object that its box's centre contradicts (a band of 10% around
        the midline says nothing); the patient's side only where the record's orientation gives it."""
        meta = json.loads(record["meta"]) if record.get("meta") else {}
        sides = patient_sides(record, meta)
        out = []
        for _, padded, obj in self._claims(text, record):
            x0, y0, x1, y1 = obj["bbox"]
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            name = label_words(obj["label"])
            for m in re.finditer(r"(patient'?s )?(left|right|upper|lower|top|bottom)(?= )", padded):
                word = m.group(2)
                if m.group(1):
                    if sides is None:
                        out.append(f"puts the {name} on the patient's {word}, but the record does not say which side is which")
                        continue
                    image_side = next(k for k, v in sides.items() if v == word)
                    wrong = cx > 0.55 if image_side == "left" else cx < 0.45
                elif word in ("left", "right"):
                    wrong = cx > 0.55 if word == "left" else cx < 0.45
                else:
                    wrong = cy > 0.55 if word in ("upper", "top") else cy < 0.45
                if wrong:
                    said = f"on the patient's {word}" if m.group(1) else word
                    out.append(f"puts the {name} {said} where its centre is at ({cx:.2f}, {cy:.2f})")
        return sorted(set(out))

    def wrong_sizes(self, text: str, record: dict) -> list[str]:
        """Size words two classes away from the lone object's share of the image (tiny < 1%, small < 5%,
        medium-sized < 20%, large), and stated shares of the image off by more than a quarter (or 1 point)."""
        out = []
        for sent, padded, obj in self._claims(text, record):
            x0, y0, x1, y1 = obj["bbox"]
            share = float(obj["area"] or (x1 - x0) * (y1 - y0))
            actual = SIZES.index(size_words(share))
            name = label_words(obj["label"])
            for word, level in SIZE_WORDS.items():
                if f" {term_key(word)} " in padded and abs(level - actual) >= 2:
                    out.append(f"calls the {name} {word} where it covers {share * 100:.1f}% of the image ({SIZES[actual]})")
            for m in re.finditer(r"(\d+(?:\.\d+)?)\s*% of the image", sent):
                said = float(m.group(1))
                if abs(said - share * 100) > max(1.0, 0.25 * share * 100):
                    out.append(f"says the {name} covers {said:g}% of the image where it covers {share * 100:.1f}%")
        return sorted(set(out))

    def proposals_called_annotated(self, text: str, record: dict) -> list[str]:
        """A method's proposals described as people's ROIs: any annotation word when every ROI is a proposal,
        else in a sentence that names only labels whose ROIs are all proposals."""
        rois = list(record.get("rois") or [])
        proposed = {r["label"] for r in rois if is_proposal(r)} - {r["label"] for r in rois if not is_proposal(r)}
        if not proposed:
            return []
        if all(is_proposal(r) for r in rois):
            m = _ANNOTATED.search(text)
            return [f"calls machine-proposed regions {m.group(0).lower()!r}"] if m else []
        out = []
        for sent in sentences(text):
            padded = _padded(sent)
            named = {label for label in self.own_labels(record) if any(f" {n} " in padded for n in self.names(label))}
            m = _ANNOTATED.search(sent)
            if m and named and named <= proposed:
                out.append(f"calls the machine-proposed {', '.join(sorted(named))} region {m.group(0).lower()!r}")
        return out

    def expected_knowledge(self, record: dict) -> dict[str, str | None]:
        """Each finding's ontology term id (None: the ontology has no term for it)."""
        from .ontology import lookup_finding

        return {label: (t.id if (t := lookup_finding(self.hpo, self.kb, label)) else None) for label in self.own_labels(record)}

    def wrong_knowledge(self, text: str, record: dict, knowledge: list[dict] | None) -> list[str]:
        """Ontology ids in the text or beside it that are not the term of the finding they stand for."""
        if self.hpo is None:
            return []
        expected = self.expected_knowledge(record)
        out = []
        for entry in knowledge or []:
            want = expected.get(entry["label"], None)
            if entry["label"] not in expected:
                out.append(f"keeps knowledge {entry['id']} for {entry['label']!r}, which is not a finding of this record")
            elif want != entry["id"]:
                out.append(f"keeps knowledge {entry['id']} for {entry['label']!r}, whose term is {want or 'none'}")
        for found in sorted(set(_HPO_ID.findall(text)) - {v for v in expected.values() if v}):
            out.append(f"cites {found}, which is not the term of any finding of this record")
        return out

    def problems(
        self,
        text: str,
        record: dict,
        labels: list[str] | None,
        counts: dict[str, int] | None = None,
        knowledge: list[dict] | None = None,
    ) -> list[str]:
        """What is wrong with a text for this record ([] when nothing); `labels` None skips the label rules
        (a question must not give its answer away, and yes/no questions name other classes); `counts`
        (objects per label) enables the count rule; `knowledge`: the entries kept beside the text."""
        out = self.wrong_counts(text, counts) if counts else []
        missing = self.missing_labels(text, labels) if labels else []
        if missing:
            out.append(f"does not name {', '.join(repr(x) for x in missing)}")
        foreign_labels = self.foreign_labels(text, record, knowledge) if labels is not None else []
        if foreign_labels:
            out.append(f"names {', '.join(repr(x) for x in foreign_labels)}, not a finding of this record")
        foreign = self.foreign_terms(text, record)
        if foreign:
            out.append("names " + ", ".join(foreign))
        out += self.wrong_locations(text, record) + self.wrong_sizes(text, record)
        out += self.proposals_called_annotated(text, record) + self.wrong_knowledge(text, record, knowledge)
        return out
