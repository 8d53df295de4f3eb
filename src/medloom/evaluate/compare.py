"""`medloom eval compare RUN_A RUN_B`: the paired difference of two runs on the questions both answered, with
an exact McNemar test and a paired bootstrap interval that resamples patients. Runs are `eval vqa` runs (one
unit per question) or `eval zeroshot` runs (one unit per record)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from ..errors import CompareError
from .metrics import as_question, units
from .stats import mcnemar_exact, paired_bootstrap


def read_run(folder: Path) -> tuple[dict, list[dict]]:
    folder = Path(folder)
    try:
        results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        rows = pq.read_table(folder / "predictions.parquet").to_pylist()
    except (OSError, ValueError) as e:
        raise CompareError(f"{folder}: not a `medloom eval` run folder ({e})") from None
    return results, rows


def read_units(folder: Path) -> tuple[dict, dict[tuple[str, int], dict]]:
    """A run's results and its scoring units by (record id, question)."""
    results, rows = read_run(folder)
    if rows and "correct" not in rows[0]:
        raise CompareError(f"{folder}: a retrieval run has no right or wrong answers to compare")
    if rows and "question" not in rows[0]:  # zero-shot
        rows = [as_question(r) for r in rows]
    return results, {(u["record_id"], u["question"]): u for u in units(rows, results["settings"].get("circular", False))}


def paired(a: dict, b: dict, keys: list, seed: int) -> dict:
    """B against A on the same units: difference, discordant pairs, exact McNemar p, paired bootstrap."""
    ca = [float(a[k]["correct"]) for k in keys]
    cb = [float(b[k]["correct"]) for k in keys]
    a_only = sum(1 for x, y in zip(ca, cb) if x and not y)
    b_only = sum(1 for x, y in zip(ca, cb) if y and not x)
    lo, hi = paired_bootstrap(ca, cb, [a[k]["cluster"] for k in keys], seed=seed)
    return {
        "shared": len(keys),
        "difference": (sum(cb) - sum(ca)) / len(keys),
        "bootstrap95": [lo, hi],
        "a_right_b_wrong": a_only,
        "b_right_a_wrong": b_only,
        "mcnemar_exact_p": mcnemar_exact(a_only, b_only),
    }


def compare(run_a: Path, run_b: Path, *, seed: int = 0) -> dict:
    (res_a, a), (res_b, b) = read_units(run_a), read_units(run_b)
    shared = sorted(a.keys() & b.keys())
    if not shared:
        raise CompareError(f"{run_a} and {run_b} share no question: were they run on the same loom and selection?")
    n = len(shared)
    return {
        "a": {"run": str(run_a), "model": res_a["settings"]["model"], "accuracy": sum(a[k]["correct"] for k in shared) / n},
        "b": {"run": str(run_b), "model": res_b["settings"]["model"], "accuracy": sum(b[k]["correct"] for k in shared) / n},
        "only_a": len(a.keys() - b.keys()),
        "only_b": len(b.keys() - a.keys()),
        **paired(a, b, shared, seed),
        "same_records": res_a["settings"].get("records_sha256") == res_b["settings"].get("records_sha256"),
    }
