"""MAT subsets and the compositional-generalization planner (Med-MAT).

A subset is every record with one (modality, anatomy, task) triplet, whatever source it came from (as
Med-MAT merges 106 datasets into subsets). For a target triplet (M, A, T), the other subsets reach it in
five directions, each a set of roles that training data must fill (primes: a different value):

- fixed-modality: (M, A, T') and (M, A', T)   the modality is constant, area and task recombined
- fixed-area:     (M, A, T') and (M', A, T)
- fixed-task:     (M, A', T) and (M', A, T)
- modality-area:  (M, A, T') and (M', A', T)   modality and area come paired, the task from elsewhere
- three-way:      (M, A', T'), (M', A, T') and (M', A', T)   each subset supplies one element

A direction is available when every role has at least one subset. The experiments of a target
(`design.py`): one per related subset combination (one subset per role; Med-MAT's Table 3 rows, and its
Table 4 for three-way), each with its own Baseline+ drawn from the unrelated subsets; one per direction pooled
over every subset filling its roles; the ablations all-related, all-unrelated, all-data and without-modality /
-area / -task; and the shared baseline-plus. All train on the same number of records (`--train-size`), drawn
with the seed; a pool too small is written untrained with the reason (`short`). The target subset is never
in training; it is the test set. Where the target has fewer labels than `--options` (3), the manifest lists
distractors (findings of other tasks in its modality or area) that `eval vqa --experiment` adds as options.

Copies: a target image whose exact or near copy sits in another subset (the same file in two datasets) makes
every mix that trains on that copy score as if it generalised. Each manifest counts the test records with a
copy among its training records (`copies`), leaving out records `dedup`/`leakage --mark` marked out (training
leaves them out too); `cg plan` and `cg run` warn, and `cg plan --strict` refuses to write such a plan.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .. import catalog
from ..errors import CopiesInTraining, PlanError
from ..locks import writer
from ..outputs import write_file
from ..vocab.words import GROUNDING_FORMS, task_form
from .design import DESIGNS, Design, distractors, fill, name, pattern, target_designs

Triplet = tuple[str, str, str]
DIRECTIONS = {
    # role patterns: for each element, True = same as the target, False = different
    "fixed-modality": [(True, True, False), (True, False, True)],
    "fixed-area": [(True, True, False), (False, True, True)],
    "fixed-task": [(True, False, True), (False, True, True)],
    "modality-area": [(True, True, False), (False, False, True)],
    "three-way": [(True, False, False), (False, True, False), (False, False, True)],
}
KINDS = (
    "combination",
    "related",
    "all-related",
    "all-unrelated",
    "all-data",
    "without-modality",
    "without-area",
    "without-task",
    "baseline-plus",
)


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


def directions(target: Triplet, subsets: list[Triplet]) -> dict[str, list[list[Triplet]]]:
    """For each direction, the subsets filling each of its roles (empty roles: not reachable that way)."""
    others = [s for s in subsets if s != target]
    return {d: [sorted(s for s in others if pattern(s, target) == role) for role in roles] for d, roles in DIRECTIONS.items()}


def matrix(loom: Path) -> dict[str, dict[str, int]]:
    """target -> direction -> number of training subsets (0: the direction cannot reach the target)."""
    subsets = sorted(mat_subsets(loom))
    out = {}
    for t in subsets:
        roles = directions(t, subsets)
        out[name(t)] = {d: (sum(len(r) for r in rs) if all(rs) else 0) for d, rs in roles.items()}
    return out


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
def plan(
    loom: Path,
    targets: list[Triplet],
    out: Path,
    *,
    seed: int = 0,
    strict: bool = False,
    train_size: int | str = "smallest",
    designs: tuple[str, ...] = DESIGNS,
    options: int = 3,
) -> list[dict]:
    """Write one folder per experiment (train.txt, test.txt, manifest.json); returns the manifests. With
    `strict`, a plan whose training records hold copies of test records is refused before anything is written.
    `train_size`: records per experiment (`design.fill`); `options`: the fewest options a target question has
    (extra distractors from `design.distractors` where its label space is smaller)."""
    from ..annotate.knowledge import load_knowledge

    loom, out = Path(loom), Path(out)
    subsets = mat_subsets(loom)
    con = catalog.connect(loom)
    check = CopyCheck(loom)
    kb = load_knowledge(None)
    labels = {t: s.labels for t, s in subsets.items()}
    planned = []
    for target in targets:
        if target not in subsets:
            raise PlanError(f"target {name(target)!r} is not a subset of this loom; `medloom subsets` lists them")
        test = _records(con, [target])
        # every design is drawn (the train size and each draw are then the same whichever designs are kept)
        found = target_designs(target, list(subsets), directions(target, list(subsets)))
        records = {s: _records(con, [s]) for s in {s for d in found for s in d.subsets}}
        related = sum(subsets[s].records for s in subsets if s != target and any(pattern(s, target)))
        size = fill(found, records, train_size, seed, related)
        kept = set(d.name for d in target_designs(target, list(subsets), directions(target, list(subsets)), designs))
        found = [d for d in found if d.name in kept]
        extra = distractors(target, labels, kb) if len(labels.get(target, [])) < options else {}
        target_info = {"train_size": size if size is not None else "all", "options": options, "distractors": extra}
        planned += [(target, d, test, target_info) for d in found]
    copies = [check.copies(d.train, test) for _, d, test, _ in planned]
    if strict and any(c["test_records"] for c in copies):
        hit = [
            {"target": name(t), "name": d.name, "test_records": len(test), "copies": c}
            for (t, d, test, _), c in zip(planned, copies)
        ]
        raise CopiesInTraining(f"--strict: {copies_warning(hit)}; nothing was written")
    return [_write(out, t, d, test, info, seed, loom, c) for (t, d, test, info), c in zip(planned, copies)]


def _write(out: Path, target: Triplet, d: Design, test: list[str], info: dict, seed: int, loom: Path, copies: dict) -> dict:
    assert target not in d.subsets, "the target subset must never be trained on"
    folder = out / slug(name(target)) / d.name
    manifest = {
        "name": d.name,
        "kind": d.kind,
        "direction": d.direction,
        "target": name(target),
        "train_subsets": [name(s) for s in d.subsets],
        "roles": d.roles,
        # detection / segmentation subsets: their records train with their boxes (grounding questions)
        "grounding": [name(s) for s in d.subsets if task_form(s[2]) in GROUNDING_FORMS],
        "reference": d.reference,
        "why": d.why,
        "pool_records": d.pool,
        "train_records": len(d.train),
        "train_size": info["train_size"],
        "short": d.short,
        "note": d.note,
        "test_records": len(test),
        "options": info["options"],
        "distractors": info["distractors"],
        "seed": seed,
        "folder": str(folder),
        "loom": str(loom.resolve()),
        "copies": copies,
    }
    write_file(folder / "train.txt", ("\n".join(d.train) + "\n" if d.train else "").encode())
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
