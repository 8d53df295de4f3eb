"""MAT vocabularies (Modality, Anatomical area, Task) and the normalisation of free-text terms.

Recipes, DICOM tags and (later) article keywords all name the same things in many ways ("CXR",
"chest radiograph", "DX"); everything that enters a record goes through one table so that grouping by
MAT triplet is meaningful across sources.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Literal

import yaml

from ..errors import UnknownTermError

Kind = Literal["modality", "anatomy", "task"]
KINDS: tuple[Kind, ...] = ("modality", "anatomy", "task")
UNKNOWN = "unknown"


def term_key(term: str) -> str:
    """Case-, punctuation- and spacing-insensitive key ("COVID-19" and "covid 19" match)."""
    return re.sub(r"[\s\-_/.,()]+", " ", str(term).strip().lower()).strip()


@dataclass(frozen=True)
class Vocabulary:
    """Canonical terms per kind, with a lookup from every synonym key to its canonical term."""

    canonical: dict[str, tuple[str, ...]]
    lookup: dict[str, dict[str, str]] = field(repr=False)

    def normalise(self, kind: Kind, term: str | None, *, strict: bool = True) -> str:
        """Canonical form of `term`; unknown terms raise (strict) or become "unknown"."""
        if term is None or str(term).strip() == "":
            return UNKNOWN
        found = self.lookup[kind].get(term_key(term))
        if found is not None:
            return found
        if not strict:
            return UNKNOWN
        raise UnknownTermError(kind, str(term), self.suggest(kind, term))

    def suggest(self, kind: Kind, term: str, n: int = 4) -> list[str]:
        keys = difflib.get_close_matches(term_key(term), list(self.lookup[kind]), n=n * 3, cutoff=0.5)
        out: list[str] = []
        for key in keys:
            if self.lookup[kind][key] not in out:
                out.append(self.lookup[kind][key])
        return out[:n]

    def extended(self, additions: dict[str, list]) -> Vocabulary:
        """A copy with recipe-declared terms: plain names or {name, synonyms}."""
        canonical = {k: list(v) for k, v in self.canonical.items()}
        lookup = {k: dict(v) for k, v in self.lookup.items()}
        for kind, items in (additions or {}).items():
            if kind not in KINDS:
                raise ValueError(f"vocabulary kind {kind!r} is not one of {', '.join(KINDS)}")
            for item in items or []:
                name, synonyms = (item, []) if isinstance(item, str) else (item["name"], item.get("synonyms", []))
                canonical[kind].append(name)
                for word in [name, *synonyms]:
                    lookup[kind][term_key(word)] = name
        return Vocabulary({k: tuple(v) for k, v in canonical.items()}, lookup)


def build_vocabulary(tables: dict[str, dict[str, list[str] | None]]) -> Vocabulary:
    canonical: dict[str, tuple[str, ...]] = {}
    lookup: dict[str, dict[str, str]] = {}
    for kind, table in tables.items():
        canonical[kind] = tuple(table)
        lookup[kind] = {}
        for name, synonyms in table.items():
            for word in [name, *(synonyms or [])]:
                key = term_key(word)
                if key in lookup[kind] and lookup[kind][key] != name:
                    raise ValueError(f"{kind} synonym {word!r} maps to both {lookup[kind][key]!r} and {name!r}")
                lookup[kind][key] = name
    return Vocabulary(canonical, lookup)


@cache
def default_vocabulary() -> Vocabulary:
    """The vocabulary shipped with medloom (read once per process; immutable)."""
    tables = {}
    for kind in KINDS:
        text = resources.files(__package__).joinpath(f"{kind}.yaml").read_text(encoding="utf-8")
        tables[kind] = yaml.safe_load(text)
    return build_vocabulary(tables)
