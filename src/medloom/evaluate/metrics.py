"""Accuracy of a run with honest intervals: per MAT triplet, per source and overall.

The unit is a question; with `--circular` a question is right only when every rotation of its options is.
Each group reports n, correct, accuracy, its 95% Wilson interval, a 95% bootstrap interval that resamples
patients (images when the patient is unknown: images of one patient are not independent), the invalid
answers (rows no parsing rule matched, counted wrong), the truncated answers (cut at --max-tokens, counted wrong,
apart from invalid) and the mean per-class recall (the mean over answer
classes of the share of their questions answered right).
"""

from __future__ import annotations

from collections import Counter, defaultdict

from .stats import cluster_bootstrap, wilson


def units(rows: list[dict], circular: bool) -> list[dict]:
    """One dict per question: right only when all its rows are (one row unless circular)."""
    grouped: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        grouped[(r["record_id"], r["question"])].append(r)
    out = []
    for (rid, q), group in sorted(grouped.items()):
        first = group[0]
        out.append(
            {
                "record_id": rid,
                "question": q,
                "correct": all(g["correct"] for g in group),
                "invalid": sum(bool(g["invalid"]) for g in group),
                "truncated": sum(bool(g.get("truncated")) for g in group),
                "answers": len(group),
                "cluster": first["patient"] or f"record:{rid}",
                "label": first["answer_label"],
                "triplet": f"{first['modality']} / {first['anatomy']} / {first['task']}",
                "source": first["source"],
            }
        )
    return out


def as_question(prediction: dict) -> dict:
    """A zero-shot prediction as the report's unit: one question per record, its label the answer."""
    return {**prediction, "question": 0, "invalid": False, "answer_label": prediction["label"]}


def metrics(group: list[dict], seed: int) -> dict:
    """Accuracy with its intervals, the invalid rate and the mean class recall; null where nothing was scored
    (n = 0: an accuracy of 0.0 would read as a result)."""
    n = len(group)
    if not n:
        return {
            "n": 0,
            "correct": 0,
            "accuracy": None,
            "wilson95": None,
            "bootstrap95": None,
            "clusters": 0,
            "invalid": 0,
            "invalid_rate": None,
            "truncated": 0,
            "mean_class_recall": None,
        }
    correct = sum(u["correct"] for u in group)
    answers = sum(u["answers"] for u in group)
    invalid = sum(u["invalid"] for u in group)
    by_label: dict[str, list[bool]] = defaultdict(list)
    for u in group:
        by_label[u["label"]].append(u["correct"])
    lo, hi = wilson(correct, n)
    blo, bhi = cluster_bootstrap([float(u["correct"]) for u in group], [u["cluster"] for u in group], seed=seed)
    return {
        "n": n,
        "correct": correct,
        "accuracy": correct / n if n else 0.0,
        "wilson95": [lo, hi],
        "bootstrap95": [blo, bhi],
        "clusters": len({u["cluster"] for u in group}),
        "invalid": invalid,
        "invalid_rate": invalid / answers if answers else 0.0,
        "truncated": sum(u.get("truncated", 0) for u in group),
        "mean_class_recall": sum(sum(v) / len(v) for v in by_label.values()) / len(by_label) if by_label else 0.0,
    }


def summarise(rows: list[dict], *, circular: bool, seed: int = 0) -> dict:
    us = units(rows, circular)
    out = {"overall": metrics(us, seed), "rules": dict(Counter(r["rule"] for r in rows))}
    for key, name in (("triplet", "by_triplet"), ("source", "by_source")):
        groups: dict[str, list[dict]] = defaultdict(list)
        for u in us:
            groups[u[key]].append(u)
        out[name] = {k: metrics(v, seed) for k, v in sorted(groups.items())}
    return out


def table_rows(results: dict) -> list[tuple[str, dict]]:
    """(name, metrics) rows to print: each triplet, each source, then overall."""
    return [
        *results["by_triplet"].items(),
        *((f"source {k}", v) for k, v in results["by_source"].items()),
        ("overall", results["overall"]),
    ]
