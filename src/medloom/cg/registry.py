"""`medloom cg matrix --registry medmat`: the CG matrix over a published registry's subsets, before any download.

The units are the registry's subsets (Med-MAT's 53), each with the triplet it is compared by: the registry's
stored `normalised` modality, area and task (`medloom registry list --json`), so that a vocabulary change
reaches this matrix through `python -m medloom.registry refresh`. Relations and directions are those of a loom's
subsets (`plan.DIRECTIONS`): a subset is related to a target when it shares at least one element with it.

The stored task is the registry's reading of Med-MAT's written task as one of the paper's categories
(`registry.normalised_rows`: the vocabulary, else the registry's `task_readings`). A term that is null shares
nothing (it is unknown, not equal to another unknown).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import PlanError
from ..registry import Registry, Subset, load
from ..vocab import Vocabulary
from .design import ELEMENTS
from .plan import DIRECTIONS

Terms = tuple[str | None, str | None, str | None]


def task_term(subset: Subset, vocabulary: Vocabulary | None = None) -> tuple[str | None, str]:
    """The task a subset is compared by, and where it comes from: "stored" (the registry's normalised task) or
    "unknown" (none stored: it shares nothing)."""
    stored = subset.normalised.get("task")
    return (stored, "stored") if stored else (None, "unknown")


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
    unknown = sum(u.task_from == "unknown" for u in all_units)
    return {
        "registry": reg.name,
        "source": dict(reg.source),
        "task_terms": f"{len(all_units) - unknown} stored, {unknown} unknown",
        "subsets": rows,
    }
