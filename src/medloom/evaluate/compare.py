"""`medloom eval compare RUN_A RUN_B`: the paired difference of two runs on the questions both answered, with
an exact McNemar test and a paired bootstrap interval that resamples patients."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from .report import units
from .stats import mcnemar_exact, paired_bootstrap


class CompareError(ValueError):
    pass


def read_run(folder: Path) -> tuple[dict, list[dict]]:
    folder = Path(folder)
    try:
        results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        rows = pq.read_table(folder / "predictions.parquet").to_pylist()
    except (OSError, ValueError) as e:
        raise CompareError(f"{folder}: not a `medloom eval` run folder ({e})") from None
    return results, rows


def compare(run_a: Path, run_b: Path, *, seed: int = 0) -> dict:
    (res_a, rows_a), (res_b, rows_b) = read_run(run_a), read_run(run_b)
    a = {(u["record_id"], u["question"]): u for u in units(rows_a, res_a["settings"].get("circular", False))}
    b = {(u["record_id"], u["question"]): u for u in units(rows_b, res_b["settings"].get("circular", False))}
    shared = sorted(a.keys() & b.keys())
    if not shared:
        raise CompareError(f"{run_a} and {run_b} share no question: were they run on the same loom and selection?")
    ca = [float(a[k]["correct"]) for k in shared]
    cb = [float(b[k]["correct"]) for k in shared]
    a_only = sum(1 for x, y in zip(ca, cb) if x and not y)
    b_only = sum(1 for x, y in zip(ca, cb) if y and not x)
    lo, hi = paired_bootstrap(ca, cb, [a[k]["cluster"] for k in shared], seed=seed)
    n = len(shared)
    return {"a": {"run": str(run_a), "model": res_a["settings"]["model"], "accuracy": sum(ca) / n},
            "b": {"run": str(run_b), "model": res_b["settings"]["model"], "accuracy": sum(cb) / n},
            "shared": n, "only_a": len(a.keys() - b.keys()), "only_b": len(b.keys() - a.keys()),
            "difference": (sum(cb) - sum(ca)) / n, "bootstrap95": [lo, hi],
            "a_right_b_wrong": a_only, "b_right_a_wrong": b_only, "mcnemar_exact_p": mcnemar_exact(a_only, b_only),
            "same_records": res_a["settings"].get("records_sha256") == res_b["settings"].get("records_sha256")}
