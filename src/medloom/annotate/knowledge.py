"""A knowledge base of terms with short definitions, and BM25 retrieval of a label's definition.

A label that is a term or a synonym gets that entry; otherwise BM25 over terms, synonyms and definitions
finds the closest entry, kept only when it shares a word with the label (no unrelated definitions).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def term_key(text: str) -> str:
    return " ".join(words(text))


@dataclass(frozen=True)
class Entry:
    term: str
    synonyms: tuple[str, ...]
    definition: str


class KnowledgeBase:
    """Entries plus a BM25 index over them (k1=1.5, b=0.75)."""

    def __init__(self, entries: list[Entry]):
        self.entries = entries
        self.exact = {}
        for i, e in enumerate(entries):
            for name in (e.term, *e.synonyms):
                self.exact.setdefault(term_key(name), i)
        self.docs = [Counter(words(" ".join((e.term, *e.synonyms, e.definition)))) for e in entries]
        self.lengths = [sum(d.values()) for d in self.docs]
        self.avg = sum(self.lengths) / len(self.lengths) if self.lengths else 0.0
        df = Counter(w for d in self.docs for w in d)
        n = len(self.docs)
        self.idf = {w: math.log(1 + (n - c + 0.5) / (c + 0.5)) for w, c in df.items()}
        self._found: dict[str, Entry | None] = {}  # a corpus has few labels and many records: look up once

    def bm25(self, query: str) -> list[tuple[float, int]]:
        q = words(query)
        scores = []
        for i, doc in enumerate(self.docs):
            s = 0.0
            for w in q:
                f = doc.get(w, 0)
                if f:
                    s += self.idf[w] * f * 2.5 / (f + 1.5 * (0.25 + 0.75 * self.lengths[i] / self.avg))
            if s > 0:
                scores.append((s, i))
        return sorted(scores, key=lambda x: (-x[0], x[1]))

    def lookup(self, label: str) -> Entry | None:
        """The entry for a label: exact term or synonym first, else the best BM25 hit naming a label word
        in its term or synonyms."""
        if label not in self._found:
            self._found[label] = self._lookup(label)
        return self._found[label]

    def _lookup(self, label: str) -> Entry | None:
        i = self.exact.get(term_key(label))
        if i is not None:
            return self.entries[i]
        label_words = set(words(label))
        for _, i in self.bm25(label):
            e = self.entries[i]
            if label_words & set(words(" ".join((e.term, *e.synonyms)))):
                return e
        return None

    def synonyms(self, label: str) -> list[str]:
        """The label and every name its entry gives, for checking that a text names it."""
        e = self.entries[self.exact[term_key(label)]] if term_key(label) in self.exact else None
        return [label] + ([e.term, *e.synonyms] if e else [])


def load_knowledge(path: str | Path | None = None) -> KnowledgeBase:
    """The default knowledge base, or a YAML list / JSONL file of {term, synonyms, definition}."""
    if path is None:
        data = yaml.safe_load(resources.files(__package__).joinpath("knowledge.yaml").read_text(encoding="utf-8"))
    else:
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            data = yaml.safe_load(text)
    entries, problems = [], []
    for n, item in enumerate(data or [], 1):
        if not isinstance(item, dict) or not item.get("term") or not item.get("definition"):
            problems.append(f"entry {n}: needs `term` and `definition`, got {item!r}"[:200])
            continue
        entries.append(Entry(str(item["term"]), tuple(str(s) for s in item.get("synonyms") or ()), str(item["definition"])))
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return KnowledgeBase(entries)
