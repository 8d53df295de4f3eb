"""`medloom cg matrix --registry medmat`: the CG matrix over a published registry's subsets, before any download.

The units are the registry's subsets (Med-MAT's 53), each with the triplet it is compared by: the registry's
stored `normalised` modality, area and task (`medloom registry list --json`), so that a vocabulary change
reaches this matrix through `python -m medloom.registry refresh`. Relations and directions are those of a loom's
subsets (`plan.DIRECTIONS`): a subset is related to a target when it shares at least one element with it.

Where the stored task is null (today, 52 of Med-MAT's 53 subsets: the vocabulary does not know its task
wording yet), the task is the category that the written task names (`written_task_category`: "Lung Cancer
Classification" is a cancer task, "Cancer Degree Classification" a level task). `task_term` is the one place
that chooses; once the registry stores every task, the fallback is no longer used. A term that is null on both
counts shares nothing (it is unknown, not equal to another unknown).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import PlanError
from ..registry import Registry, Subset, load
from ..vocab import UNKNOWN, Vocabulary, default_vocabulary, term_key
from .plan import DIRECTIONS, ELEMENTS

Terms = tuple[str | None, str | None, str | None]
# words of a written task that make it a detection or segmentation task: no classification category is read
# from such a task (Med-MAT's "Cancer Det/Seg" is not a cancer classification)
LOCATING = {"det", "seg", "detection", "segmentation", "localisation", "localization"}


def written_task_category(text: str, vocabulary: Vocabulary | None = None) -> str | None:
    """The task category a written task names: the whole text if the vocabulary knows it, else the last span of
    its words that the vocabulary knows (the head of the phrase: "Cancer Degree Classification" -> level), else
    None. Detection and segmentation tasks get a category only from their whole text, and a word of a
    classification task is never read as one ("lesion" alone means lesion detection to the vocabulary)."""
    vocab = vocabulary or default_vocabulary()
    whole = vocab.normalise("task", text, strict=False)
    if whole != UNKNOWN:
        return whole
    words = term_key(text).split()
    if LOCATING & set(words):
        return None
    found = None
    for i in range(len(words)):
        for j in range(len(words), i, -1):  # the longest known span starting at word i
            term = vocab.normalise("task", " ".join(words[i:j]), strict=False)
            if term != UNKNOWN and not LOCATING & set(term.split()):  # "Spinal lesion Classification"
                found = term
                break
    return found


def task_term(subset: Subset, vocabulary: Vocabulary | None = None) -> tuple[str | None, str]:
    """The task a subset is compared by, and where it comes from: "stored" (the registry's normalised task)
    or "written" (the category its written task names, while the stored one is null)."""
    stored = subset.normalised.get("task")
    if stored:
        return stored, "stored"
    return written_task_category(subset.task, vocabulary), "written"


@dataclass(frozen=True)
class Unit:
    """A registry subset as the CG matrix sees it."""

    number: int
    written: tuple[str, str, str]
    terms: Terms  # compared modality, area, task (None: unknown, shares nothing)
    task_from: str  # "stored" or "written" (task_term)

    def as_dict(self) -> dict:
        return {
            "number": self.number,
            "written": dict(zip(ELEMENTS, self.written)),
            "compared": dict(zip(ELEMENTS, self.terms)),
            "task_from": self.task_from,
        }


def units(registry: Registry | None = None, vocabulary: Vocabulary | None = None) -> list[Unit]:
    reg = registry or load("medmat")
    out = []
    for s in reg.subsets:
        task, source = task_term(s, vocabulary)
        terms = (s.normalised.get("modality"), s.normalised.get("anatomy"), task)
        out.append(Unit(s.number, (s.modality, s.area, s.task), terms, source))
    return out


def shared(unit: Unit, target: Unit) -> tuple[bool, bool, bool]:
    """Which elements the two share (an unknown term shares nothing)."""
    return tuple(a is not None and a == b for a, b in zip(unit.terms, target.terms))  # type: ignore[return-value]


def relations(target: Unit, all_units: list[Unit]) -> dict:
    """For one target: its related subsets (sharing one or two elements), those with its very triplet (one
    subset once a loom merges them: never training data for it), the unrelated ones, and each direction's
    roles (the subsets filling each; a direction reaches the target when every role has one)."""
    others = [u for u in all_units if u.number != target.number]
    same = [u for u in others if all(shared(u, target))]
    related = [u for u in others if any(shared(u, target)) and not all(shared(u, target))]
    unrelated = [u for u in others if not any(shared(u, target))]
    roles = {
        d: [[u.number for u in related if shared(u, target) == role] for role in pattern] for d, pattern in DIRECTIONS.items()
    }
    return {"related": related, "same_triplet": same, "unrelated": unrelated, "directions": roles}


def _roles_of(number: int, roles: dict[str, list[list[int]]]) -> list[str]:
    return [f"{d} role {i + 1}" for d, rs in roles.items() for i, r in enumerate(rs) if number in r]


def target_view(number: int, registry: Registry | None = None, vocabulary: Vocabulary | None = None) -> dict:
    """`cg matrix --registry R --target N`: one target's related subsets, what each shares and the roles it fills."""
    all_units = units(registry, vocabulary)
    by_number = {u.number: u for u in all_units}
    if number not in by_number:
        raise PlanError(
            f"--target {number}: no subset {number} in the registry; its subsets are numbered "
            f"{all_units[0].number}-{all_units[-1].number} (`medloom registry list`)"
        )
    target = by_number[number]
    rel = relations(target, all_units)
    return {
        "target": target.as_dict(),
        "related": [
            {
                **u.as_dict(),
                "shares": [e for e, s in zip(ELEMENTS, shared(u, target)) if s],
                "roles": _roles_of(u.number, rel["directions"]),
            }
            for u in rel["related"]
        ],
        "same_triplet": [u.number for u in rel["same_triplet"]],
        "unrelated": [u.number for u in rel["unrelated"]],
        "directions": rel["directions"],
        "reached_by": [d for d, rs in rel["directions"].items() if all(rs)],
    }


def registry_matrix(registry: Registry | None = None, vocabulary: Vocabulary | None = None) -> dict:
    """`cg matrix --registry R`: for every subset as a target, each direction's training subsets (0: the
    direction cannot reach it) and its related subsets."""
    reg = registry or load("medmat")
    all_units = units(reg, vocabulary)
    rows = []
    for u in all_units:
        rel = relations(u, all_units)
        rows.append(
            {
                **u.as_dict(),
                "directions": {d: (sum(len(r) for r in rs) if all(rs) else 0) for d, rs in rel["directions"].items()},
                "related": [r.number for r in rel["related"]],
                "same_triplet": [r.number for r in rel["same_triplet"]],
            }
        )
    written = sum(u.task_from == "written" for u in all_units)
    return {
        "registry": reg.name,
        "source": dict(reg.source),
        "task_terms": f"{len(all_units) - written} stored, {written} read from the written task (written_task_category)",
        "subsets": rows,
    }
