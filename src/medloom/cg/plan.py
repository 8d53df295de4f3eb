"""MAT subsets and the compositional-generalization planner (Med-MAT).

A subset is every record with one (modality, anatomy, task) triplet, whatever source it came from (as
Med-MAT merges 106 datasets into subsets). For a target triplet (M, A, T), the other subsets reach it in
five directions, each a set of roles that training data must fill (primes: a different value):

- fixed-modality: (M, A, T') and (M, A', T)   the modality is constant, area and task recombined
- fixed-area:     (M, A, T') and (M', A, T)
- fixed-task:     (M, A', T) and (M', A, T)
- modality-area:  (M, A, T') and (M', A', T)   modality and area come paired, the task from elsewhere
- three-way:      (M, A', T'), (M', A, T') and (M', A', T)   each subset supplies one element

A direction is available when every role has at least one subset; its experiment trains on all of them.
The ablations: all-related (every subset sharing an element with the target), all-unrelated (sharing
none), without-modality / without-area / without-task (all-related minus the subsets sharing that
element), and baseline-plus (random records from unrelated subsets, as many as all-related has, from the
seed). The target subset is never in training; it is the test set.

Copies: a target image whose exact or near copy sits in another subset (the same file in two datasets) makes
every mix that trains on that copy score as if it generalised. Each manifest counts the test records with a
copy among its training records (`copies`), leaving out records `dedup`/`leakage --mark` marked out (training
leaves them out too); `cg plan` and `cg run` warn, and `cg plan --strict` refuses to write such a plan.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from .. import catalog
from ..errors import CopiesInTraining, PlanError
from ..locks import writer
from ..outputs import write_file

Triplet = tuple[str, str, str]
DIRECTIONS = {
    # role patterns: for each element, True = same as the target, False = different
    "fixed-modality": [(True, True, False), (True, False, True)],
    "fixed-area": [(True, True, False), (False, True, True)],
    "fixed-task": [(True, False, True), (False, True, True)],
    "modality-area": [(True, True, False), (False, False, True)],
    "three-way": [(True, False, False), (False, True, False), (False, False, True)],
}
ELEMENTS = ("modality", "area", "task")
KINDS = ("related", "all-related", "all-unrelated", "without-modality", "without-area", "without-task", "baseline-plus")


def name(t: Triplet) -> str:
    return "|".join(t)


def parse_target(text: str, vocab=None) -> Triplet:
    """ "CT,lung,cancer" or "CT|lung|cancer", normalised through the vocabulary."""
    from ..vocab import default_vocabulary

    parts = [p.strip() for p in re.split(r"[|,]", text)]
    if len(parts) != 3 or not all(parts):
        raise PlanError(f'--target {text!r}: give modality, anatomy and task, e.g. "CT,lung,cancer"')
    v = vocab or default_vocabulary()
    return (v.normalise("modality", parts[0]), v.normalise("anatomy", parts[1]), v.normalise("task", parts[2]))


@dataclass
class Subset:
    triplet: Triplet
    records: int
    sources: list[str]
    labels: list[str]


def mat_subsets(loom: Path) -> dict[Triplet, Subset]:
    con = catalog.connect(Path(loom))
    labels = {
        (m, a, t): list(ls)
        for m, a, t, ls in con.execute(
            "SELECT modality, anatomy, task, list_sort(list(DISTINCT label)) FROM (SELECT modality, anatomy, task, "
            "unnest(labels) AS label FROM records) GROUP BY ALL"
        ).fetchall()
    }
    return {
        (m, a, t): Subset((m, a, t), n, list(sources), labels.get((m, a, t), []))
        for m, a, t, n, sources in con.execute(
            "SELECT modality, anatomy, task, count(*), list_sort(list(DISTINCT source)) FROM records GROUP BY ALL"
        ).fetchall()
    }


def _pattern(s: Triplet, target: Triplet) -> tuple[bool, bool, bool]:
    return tuple(x == y for x, y in zip(s, target))


def directions(target: Triplet, subsets: list[Triplet]) -> dict[str, list[list[Triplet]]]:
    """For each direction, the subsets filling each of its roles (empty roles: not reachable that way)."""
    others = [s for s in subsets if s != target]
    return {d: [sorted(s for s in others if _pattern(s, target) == role) for role in roles] for d, roles in DIRECTIONS.items()}


def matrix(loom: Path) -> dict[str, dict[str, int]]:
    """target -> direction -> number of training subsets (0: the direction cannot reach the target)."""
    subsets = sorted(mat_subsets(loom))
    out = {}
    for t in subsets:
        roles = directions(t, subsets)
        out[name(t)] = {d: (sum(len(r) for r in rs) if all(rs) else 0) for d, rs in roles.items()}
    return out


def _why(s: Triplet, target: Triplet) -> str:
    same = [e for e, eq in zip(ELEMENTS, _pattern(s, target)) if eq]
    return f"shares {' and '.join(same)} with the target" if same else "shares no element with the target"


def _records(con, triplets: list[Triplet]) -> list[str]:
    if not triplets:
        return []
    cond = " OR ".join("(modality = ? AND anatomy = ? AND task = ?)" for _ in triplets)
    return [
        r[0] for r in con.execute(f"SELECT id FROM records WHERE {cond} ORDER BY id", [x for t in triplets for x in t]).fetchall()
    ]


class CopyCheck:
    """Which test records have an exact or near copy among an experiment's training records: duplicate groups
    over the whole catalog (`dedup`'s grouping, computed here whether or not `dedup` ran), without the records
    that `dedup` or `leakage --mark` marked out."""

    def __init__(self, loom: Path):
        from ..curate.dedup import DEFAULT_NEAR, find_groups
        from ..view.selection import excluded_ids

        rows, groups = find_groups(loom, DEFAULT_NEAR)
        out = excluded_ids(loom)
        self.group = {i: int(g) for i, g in zip(rows["id"], groups) if i not in out}
        self.pixels = dict(zip(rows["id"], rows["pixel_hash"]))

    def copies(self, train: list[str], test: list[str]) -> dict:
        held = {}
        for t in train:
            g = self.group.get(t)
            if g is not None:
                held.setdefault(g, t)
        pairs = [(i, held[self.group[i]]) for i in test if self.group.get(i) in held]
        exact = sum(self.pixels[a] == self.pixels[b] for a, b in pairs)
        return {"test_records": len(pairs), "exact": exact, "near": len(pairs) - exact, "examples": [list(p) for p in pairs[:5]]}


def copies_warning(experiments: list[dict]) -> str | None:
    """One line for the experiments whose test records have copies in their training records, or None."""
    hit = [e for e in experiments if (e.get("copies") or {}).get("test_records")]
    if not hit:
        return None
    worst = max(hit, key=lambda e: e["copies"]["test_records"])
    c = worst["copies"]
    return (
        f"{len(hit)} experiment(s) train on copies of their target's test images (up to {c['test_records']} of "
        f"{worst['test_records']} test records in {worst['target']} / {worst['name']}: {c['exact']} exact, "
        f"{c['near']} near; e.g. {c['examples'][0][0]} = {c['examples'][0][1]}): those mixes would score as if "
        "they generalised. Run `medloom dedup LOOM` (it keeps the test copy and marks the training copies out), "
        "then plan again"
    )


@writer
def plan(loom: Path, targets: list[Triplet], out: Path, *, seed: int = 0, strict: bool = False) -> list[dict]:
    """Write one folder per experiment (train.txt, test.txt, manifest.json); returns the manifests. With
    `strict`, a plan whose training records hold copies of test records is refused before anything is written."""
    loom, out = Path(loom), Path(out)
    subsets = mat_subsets(loom)
    con = catalog.connect(loom)
    check = CopyCheck(loom)
    planned = []
    for target in targets:
        if target not in subsets:
            raise PlanError(f"target {name(target)!r} is not a subset of this loom; `medloom subsets` lists them")
        test = _records(con, [target])
        others = [s for s in sorted(subsets) if s != target]
        related = [s for s in others if any(_pattern(s, target))]
        unrelated = [s for s in others if not any(_pattern(s, target))]
        runs: list[tuple[str, str, list[Triplet], dict[str, str]]] = []
        for d, roles in directions(target, list(subsets)).items():
            if all(roles):
                chosen = sorted({s for r in roles for s in r})
                why = {name(s): f"{d} role {i + 1}: {_why(s, target)}" for i, r in enumerate(roles) for s in r}
                runs.append((f"related-{d}", d, chosen, why))
        runs.append(("all-related", "", related, {name(s): _why(s, target) for s in related}))
        runs.append(("all-unrelated", "", unrelated, {name(s): _why(s, target) for s in unrelated}))
        for i, element in enumerate(ELEMENTS):
            kept = [s for s in related if s[i] != target[i]]
            runs.append(
                (
                    f"without-{element}",
                    "",
                    kept,
                    {name(s): f"{_why(s, target)}; its {element} differs from the target's" for s in kept},
                )
            )
        for run_name, direction, chosen, why in runs:
            kind = "related" if run_name.startswith("related-") else run_name
            planned.append((target, run_name, kind, direction, chosen, why, _records(con, chosen), test))
        # baseline-plus: unrelated records, as many as the related mix, chosen by the seed
        pool = _records(con, unrelated)
        size = len(_records(con, related))
        pick = sorted(pool, key=lambda r: hashlib.sha256(f"{seed}:{r}".encode()).hexdigest())[:size]
        chosen = sorted({t for t in unrelated if set(_records(con, [t])) & set(pick)})
        why = {
            name(s): f"{_why(s, target)}; records drawn at random (seed {seed}) to match all-related's {size} records"
            for s in chosen
        }
        planned.append((target, "baseline-plus", "baseline-plus", "", chosen, why, sorted(pick), test))
    copies = [check.copies(p[6], p[7]) for p in planned]
    if strict and any(c["test_records"] for c in copies):
        hit = [{"target": name(p[0]), "name": p[1], "test_records": len(p[7]), "copies": c} for p, c in zip(planned, copies)]
        raise CopiesInTraining(f"--strict: {copies_warning(hit)}; nothing was written")
    return [_write(out, *p, seed, loom, c) for p, c in zip(planned, copies)]


def _write(
    out: Path,
    target: Triplet,
    run_name: str,
    kind: str,
    direction: str,
    chosen: list[Triplet],
    why: dict[str, str],
    train: list[str],
    test: list[str],
    seed: int,
    loom: Path,
    copies: dict,
) -> dict:
    assert target not in chosen, "the target subset must never be trained on"
    folder = out / slug(name(target)) / run_name
    manifest = {
        "name": run_name,
        "kind": kind,
        "direction": direction,
        "target": name(target),
        "train_subsets": [name(s) for s in chosen],
        "why": why,
        "train_records": len(train),
        "test_records": len(test),
        "seed": seed,
        "folder": str(folder),
        "loom": str(loom.resolve()),
        "copies": copies,
    }
    write_file(folder / "train.txt", ("\n".join(train) + "\n" if train else "").encode())
    write_file(folder / "test.txt", ("\n".join(test) + "\n").encode())
    write_file(folder / "manifest.json", json.dumps(manifest, indent=1).encode())
    return manifest


def slug(target: str) -> str:
    """A target's folder name (`CT|lung|cancer` -> `CT_lung_cancer`)."""
    return re.sub(r"[^A-Za-z0-9_\-]+", "_", target)


def find_experiments(folder: Path) -> list[dict]:
    """The manifests of a plan folder (`cg plan --out`), of one target's folder, or of one experiment, sorted by
    target and name."""
    folder = Path(folder)
    found = []
    for path in [folder / "manifest.json", *sorted(folder.glob("*/manifest.json")), *sorted(folder.glob("*/*/manifest.json"))]:
        if path.is_file():
            try:
                manifest = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise PlanError(f"{path}: not a readable experiment manifest ({e})") from None
            found.append({**manifest, "folder": str(path.parent)})
    if not found:
        raise PlanError(
            f"{folder}: no experiment here (no manifest.json in it or two levels below); write one with "
            "`medloom cg plan LOOM --target M,A,T`"
        )
    return sorted(found, key=lambda m: (m["target"], m["name"]))
