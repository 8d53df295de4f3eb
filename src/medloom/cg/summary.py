"""The numbers behind `cg report`'s tables: each run's accuracy over seeds, its test against its Baseline+, the
correction over each table, and what the test set can detect.

- A cell is one experiment of one target, over the seeds it was run with: the mean accuracy, the spread over
  seeds (sd, min, max) and each seed's accuracy; its interval is the 95% Wilson interval of the mean over the
  test questions (one seed: the usual Wilson interval) and a bootstrap interval that resamples patients.
- The test: the experiment against its reference Baseline+ (a combination's own, else the shared one), seed
  by seed on the same questions, each question's difference averaged over the seeds both have; a paired
  sign-flip test over patients (`evaluate.stats.cluster_signflip`), which is the exact McNemar test when every
  patient has one question and there is one seed, and stays valid when one patient has many questions. Each
  seed's exact McNemar p-value is kept beside it.
- The correction: Holm over every comparison of one table (Table 3's combinations, Table 4's, Table 5's, the pooled
  directions, the ablations), across the targets of the report. `*` marks a run better than its Baseline+
  after correction, `!` one worse.
- Power: the test size (questions, patients) and the smallest gain over Baseline+'s accuracy a test of that
  size detects with 80% power, at alpha and at Holm's strictest step (alpha / comparisons of the table).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from ..errors import ReportError
from ..evaluate.compare import CompareError, read_units
from ..evaluate.metrics import metrics
from ..evaluate.stats import cluster_bootstrap, cluster_signflip, detectable_difference, holm, mcnemar_exact, wilson

ALPHA = 0.05
FAMILIES = {
    "table3": "Table 3 (related combinations)",
    "table4": "Table 4 (three-way combinations)",
    "table5": "Table 5 (combinations with a detection subset)",
    "pooled": "directions pooled",
    "ablations": "Figure 4 ablations",
    "other": "other runs",
}
TEST = (
    "paired sign-flip test over patients on the questions both runs answered, each question's difference averaged "
    "over seeds (the exact McNemar test when every patient has one question and one seed was run)"
)


def family(manifest: dict | None, run: str) -> str:
    kind = (manifest or {}).get("kind", "")
    if kind == "combination":
        return combination_table(manifest)
    if kind == "related" or run.startswith("related-"):
        return "pooled"
    if kind.startswith(("all-", "without-")) or run.startswith(("all-", "without-")):
        return "ablations"
    return "other"


def combination_table(manifest: dict) -> str:
    """Where a related combination's row goes: Table 5 when a detection (or segmentation) subset fills one of its
    roles (it trains on that subset's boxes), else Table 4 for a three-way combination, else Table 3."""
    if set(manifest.get("roles") or []) & set(manifest.get("grounding") or []):
        return "table5"
    return "table4" if manifest.get("direction") == "three-way" else "table3"


def read_seeds(folders: dict[str, Path], test: set[str]) -> tuple[dict[str, dict], dict[str, dict], str]:
    """Per seed: the run's units on the target's test records, its results; and why there are none."""
    units, results = {}, {}
    for seed, folder in folders.items():
        try:
            res, us = read_units(folder)
        except CompareError as e:
            raise ReportError(str(e)) from None
        us = {k: u for k, u in us.items() if k[0] in test}
        if not us:
            return {}, {}, f"{folder} has no prediction on this target's test records"
        units[seed], results[seed] = us, res
    return units, results, ""


def cell(units: dict[str, dict], results: dict[str, dict], folders: dict[str, Path], seed: int) -> dict:
    """One experiment over its seeds (`units`: seed -> (record, question) -> unit)."""
    seeds = sorted(units)
    per_seed = {s: metrics(list(units[s].values()), seed) for s in seeds}
    first = seeds[0]
    if len(seeds) == 1:
        top = dict(per_seed[first])
    else:
        keys = sorted(set.intersection(*(set(units[s]) for s in seeds)))
        means = [sum(units[s][k]["correct"] for s in seeds) / len(seeds) for k in keys]
        clusters = [units[first][k]["cluster"] for k in keys]
        mean = sum(means) / len(keys) if keys else None
        top = {
            "n": len(keys),
            "accuracy": mean,
            "wilson95": list(wilson(sum(means), len(keys))) if keys else None,
            "bootstrap95": list(cluster_bootstrap(means, clusters, seed=seed)) if keys else None,
            "clusters": len(set(clusters)),
        }
    accuracies = [per_seed[s]["accuracy"] for s in seeds if per_seed[s]["accuracy"] is not None]
    return {
        **top,
        "seeds": {s: per_seed[s] for s in seeds},
        "seed_accuracies": {s: per_seed[s]["accuracy"] for s in seeds},
        "seed_sd": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        "seed_range": [min(accuracies), max(accuracies)] if accuracies else None,
        "run": str(folders[first]),
        "runs": {s: str(f) for s, f in folders.items()},
        "model": results[first]["settings"].get("model", ""),
    }


def versus(units: dict[str, dict], reference: dict[str, dict], name: str, seed: int) -> dict | None:
    """The experiment against its reference on the questions and seeds both have (None: nothing shared)."""
    seeds = sorted(set(units) & set(reference))
    if not seeds:
        return None
    keys = sorted(set.intersection(*(set(units[s]) & set(reference[s]) for s in seeds)))
    if not keys:
        return None
    diffs = [sum(float(units[s][k]["correct"]) - float(reference[s][k]["correct"]) for s in seeds) / len(seeds) for k in keys]
    clusters = [reference[seeds[0]][k]["cluster"] for k in keys]
    discordant = {
        s: (
            sum(1 for k in keys if reference[s][k]["correct"] and not units[s][k]["correct"]),
            sum(1 for k in keys if units[s][k]["correct"] and not reference[s][k]["correct"]),
        )
        for s in seeds
    }
    lo, hi = cluster_bootstrap(diffs, clusters, seed=seed)
    return {
        "reference": name,
        "seeds": seeds,
        "shared": len(keys),
        "clusters": len(set(clusters)),
        "difference": sum(diffs) / len(keys),
        "bootstrap95": [lo, hi],
        "a_right_b_wrong": {s: a for s, (a, _) in discordant.items()},
        "b_right_a_wrong": {s: b for s, (_, b) in discordant.items()},
        "mcnemar_exact_p": {s: mcnemar_exact(a, b) for s, (a, b) in discordant.items()},
        "p": cluster_signflip(diffs, clusters, seed=seed),
    }


def correct_and_mark(targets: dict) -> dict[str, int]:
    """Holm over each table's comparisons, across targets; sets holm_p, success (better) and worse. Returns the
    number of comparisons per table."""
    tests: dict[str, list[dict]] = {}
    for t in targets.values():
        for run, c in t["runs"].items():
            test = c.get("vs_baseline-plus")
            if test is not None:
                test["family"] = family(t["experiments"].get(run), run)
                tests.setdefault(test["family"], []).append(test)
    for group in tests.values():
        for test, adjusted in zip(group, holm([x["p"] for x in group])):
            test["holm_p"] = adjusted
            test["success"] = adjusted < ALPHA and test["difference"] > 0
            test["worse"] = adjusted < ALPHA and test["difference"] < 0
    return {f: len(g) for f, g in tests.items()}


def power(target: dict, comparisons: dict[str, int]) -> dict:
    """Test size and the smallest detectable gain over Baseline+ at 80% power (patients as the effective n when
    they are fewer than the questions: conservative)."""
    cells = [c for c in target["runs"].values() if c.get("n")]
    if not cells:
        return {}
    questions = max(c["n"] for c in cells)
    clusters = max(c.get("clusters") or 0 for c in cells) or questions
    plus = [c["accuracy"] for r, c in target["runs"].items() if r.startswith("baseline-plus") and c.get("accuracy") is not None]
    base = sum(plus) / len(plus) if plus else 0.5
    n = min(questions, clusters)
    return {
        "questions": questions,
        "clusters": clusters,
        "effective_n": n,
        "base": base,
        "detectable": detectable_difference(n, base, alpha=ALPHA),
        "detectable_holm": {f: detectable_difference(n, base, alpha=ALPHA / m) for f, m in comparisons.items() if m},
    }
