"""The experiments of one compositional-generalization target, as Med-MAT ran them, with equal training sizes.

Per target (M, A, T), the designs (`plan.DIRECTIONS` names the roles):

- **combinations** (Med-MAT's Table 3 grain; the three-way ones are its Table 4): one experiment per related
  subset combination, i.e. one subset per role of a direction (`fixed-modality-1`, ..., `three-way-4`), each
  with its own Baseline+ (`baseline-plus-fixed-modality-1`): records drawn from the unrelated subsets, as many
  as the combination trains on, seeded by the combination's name (so each row has its own draw);
- **pooled** directions: one experiment per direction over every subset that fills one of its roles
  (`related-fixed-modality`, ...), compared with the shared `baseline-plus`;
- **ablations** (Med-MAT's Figure 4): all related subsets, all unrelated ones, all data (every subset but the
  target), and all related without those sharing the modality, the area or the task.

Every experiment of a target trains on the same number of records (the train size: by default the smallest
related combination's pool), drawn from its pool with the seed, in turn from each of its subsets so that every
role is represented. A pool smaller than the train size is never topped up or replaced: the experiment is
written with no training record and `short` saying why, and `cg run` reports it as n/a. With the train size
`all`, each experiment trains on its whole pool (Med-MAT's way; step counts then differ) and each Baseline+
matches its combination's pool.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field

from ..errors import PlanError

Triplet = tuple[str, str, str]
ELEMENTS = ("modality", "area", "task")
DESIGNS = ("combinations", "pooled", "ablations")


@dataclass
class Design:
    """One experiment of a target before its records are drawn."""

    name: str
    kind: str  # combination | related | baseline-plus | all-related | all-unrelated | all-data | without-ELEMENT
    direction: str
    subsets: list[Triplet]
    why: dict[str, str]
    reference: str = ""  # the Baseline+ it is compared with ("" for a baseline)
    roles: list[str] = field(default_factory=list)  # a combination: its subset per role, in role order
    size: int | None = None  # records to draw (None: the plan's train size)
    train: list[str] = field(default_factory=list)
    pool: int = 0
    short: str = ""  # why it has no training record (its pool is smaller than the train size)
    note: str = ""


def name(t: Triplet) -> str:
    return "|".join(t)


def pattern(s: Triplet, target: Triplet) -> tuple[bool, bool, bool]:
    return tuple(x == y for x, y in zip(s, target))  # type: ignore[return-value]


def why(s: Triplet, target: Triplet) -> str:
    same = [e for e, eq in zip(ELEMENTS, pattern(s, target)) if eq]
    return f"shares {' and '.join(same)} with the target" if same else "shares no element with the target"


def combinations(roles: list[list[Triplet]]) -> list[tuple[Triplet, ...]]:
    """Every choice of one subset per role (none when a role is empty)."""
    return list(itertools.product(*roles)) if all(roles) else []


def target_designs(
    target: Triplet, subsets: list[Triplet], directions: dict[str, list[list[Triplet]]], wanted: tuple[str, ...] = DESIGNS
) -> list[Design]:
    """The designs of one target (without records), in the order they are written."""
    others = [s for s in sorted(subsets) if s != target]
    related = [s for s in others if any(pattern(s, target))]
    unrelated = [s for s in others if not any(pattern(s, target))]
    about = lambda ss, extra="": {name(s): why(s, target) + extra for s in ss}  # noqa: E731
    out: list[Design] = []
    if "combinations" in wanted:
        for d, roles in directions.items():
            for i, combo in enumerate(combinations(roles), 1):
                run = f"{d}-{i}"
                reasons = {name(s): f"{d} role {r + 1}: {why(s, target)}" for r, s in enumerate(combo)}
                out.append(
                    Design(run, "combination", d, sorted(set(combo)), reasons, f"baseline-plus-{run}", [name(s) for s in combo])
                )
                out.append(
                    Design(
                        f"baseline-plus-{run}",
                        "baseline-plus",
                        d,
                        unrelated,
                        about(unrelated, f"; records drawn to {run}'s size"),
                        roles=[name(s) for s in combo],
                    )
                )
    if "pooled" in wanted:
        for d, roles in directions.items():
            if all(roles):
                chosen = sorted({s for r in roles for s in r})
                reasons = {name(s): f"{d} role {i + 1}: {why(s, target)}" for i, r in enumerate(roles) for s in r}
                out.append(Design(f"related-{d}", "related", d, chosen, reasons, "baseline-plus"))
    if "ablations" in wanted:
        out.append(Design("all-related", "all-related", "", related, about(related), "baseline-plus"))
        out.append(Design("all-unrelated", "all-unrelated", "", unrelated, about(unrelated), "baseline-plus"))
        out.append(Design("all-data", "all-data", "", others, about(others), "baseline-plus"))
        for i, element in enumerate(ELEMENTS):
            kept = [s for s in related if s[i] != target[i]]
            out.append(
                Design(
                    f"without-{element}",
                    f"without-{element}",
                    "",
                    kept,
                    about(kept, f"; its {element} differs from the target's"),
                    "baseline-plus",
                )
            )
    if "pooled" in wanted or "ablations" in wanted:
        out.append(Design("baseline-plus", "baseline-plus", "", unrelated, about(unrelated, "; records drawn at random")))
    return out


def parse_train_size(text: str | None) -> int | str:
    """`--train-size`: a number of records, `smallest` (the default) or `all`."""
    if text is None or text == "smallest":
        return "smallest"
    if text == "all":
        return "all"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise PlanError(f"--train-size {text!r}: give a number of records (at least 1), `smallest` or `all`")
    return value


def parse_designs(text: str | None) -> tuple[str, ...]:
    """`--designs combinations,pooled,ablations` (default: all three)."""
    if not text:
        return DESIGNS
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in parts if p not in DESIGNS]
    if bad or not parts:
        raise PlanError(f"--designs {text!r}: choose among {', '.join(DESIGNS)} (comma-separated)")
    return parts


def order(ids: list[str], seed: int, key: str) -> list[str]:
    """The records in a seeded order that depends on the experiment (`key`) too."""
    return sorted(ids, key=lambda r: hashlib.sha256(f"{seed}:{key}:{r}".encode()).hexdigest())


def draw(by_subset: dict[Triplet, list[str]], size: int, seed: int, key: str) -> list[str]:
    """`size` records, taken in turn from each subset (each in its seeded order) so that every subset of the
    pool is represented; a subset with fewer records leaves its turns to the others. Sorted."""
    queues = [order(ids, seed, key) for _, ids in sorted(by_subset.items()) if ids]
    picked: list[str] = []
    depth = 0
    while len(picked) < size and any(depth < len(q) for q in queues):
        for q in queues:
            if depth < len(q) and len(picked) < size:
                picked.append(q[depth])
        depth += 1
    return sorted(picked)


def resolve_size(designs: list[Design], pools: dict[str, int], requested: int | str) -> int | None:
    """The train size of a target: the number given, else the smallest related combination's pool (the smallest
    non-empty related pool when the target has no combination); None for `all`."""
    if requested == "all":
        return None
    if isinstance(requested, int):
        return requested
    combos = [pools[d.name] for d in designs if d.kind == "combination" and pools[d.name]]
    related = [pools[d.name] for d in designs if d.kind not in ("baseline-plus", "all-unrelated", "all-data") and pools[d.name]]
    found = combos or related or [p for p in pools.values() if p]
    return min(found) if found else 0


def fill(
    designs: list[Design], records: dict[Triplet, list[str]], requested: int | str, seed: int, related_pool: int
) -> int | None:
    """Draw every design's training records (in place); returns the target's train size (None: `all`, where the
    shared Baseline+ matches `related_pool`, all related records)."""
    pools = {d.name: sum(len(records.get(s, [])) for s in d.subsets) for d in designs}
    size = resolve_size(designs, pools, requested)
    for d in designs:
        d.pool = pools[d.name]
        want = size
        if size is None:  # `all`: every record of the pool; a Baseline+ matches what it is the control of
            matched = d.name.removeprefix("baseline-plus-") if d.name.startswith("baseline-plus-") else None
            want = pools[matched] if matched else related_pool if d.name == "baseline-plus" else None
        if want is None:
            want = d.pool
        d.size = want
        if d.pool < want or not d.pool:
            d.short = (
                f"its pool has {d.pool} records, fewer than the train size {want}: not trained (nothing is topped up "
                "or replaced; give a smaller --train-size, or add data)"
                if d.pool
                else "no subset fills this design: nothing to train on"
            )
            continue
        d.train = draw({s: records.get(s, []) for s in d.subsets}, want, seed, d.name)
        if d.kind == "baseline-plus" and d.pool == want:
            d.note = "draws every unrelated record: the same records as all-unrelated"
    return size


def distractors(target: Triplet, labels: dict[Triplet, list[str]], kb) -> dict[str, str]:
    """Wrong options for the target's questions beyond its own label space: the findings of other tasks in the
    target's modality or area (labels of real subsets, as Med-MAT's options are), never one of the target's
    labels or a synonym of one. label -> the subset it comes from (the first, in sorted order)."""
    from ..annotate.knowledge import term_key
    from ..vocab.words import label_words

    def names(label: str) -> set[str]:
        return {term_key(n) for n in [*kb.synonyms(label), label_words(label)]}

    taken = set().union(*(names(x) for x in labels.get(target, [])))
    out: dict[str, str] = {}
    for s in sorted(labels):
        if s == target or s[2] == target[2] or not (s[0] == target[0] or s[1] == target[1]):
            continue
        for label in labels[s]:
            if label not in out and not names(label) & taken:
                out[label] = name(s)
    return out
