"""Interval and test statistics for evaluation runs, with no other dependency than numpy and scipy.

- Wilson score interval for a proportion (what `statsmodels.stats.proportion.proportion_confint(...,
  method="wilson")` gives);
- bootstrap intervals that resample clusters (patients, or images when the patient is unknown), because
  images of one patient are not independent;
- the exact McNemar test on paired outcomes (a two-sided binomial test on the discordant pairs, as
  `statsmodels.stats.contingency_tables.mcnemar(exact=True)`), and a paired bootstrap interval of the
  difference.
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    if n == 0:
        return 0.0, 0.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _cluster_sums(values: np.ndarray, clusters: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster: the sum of the values and the number of items."""
    index: dict[str, int] = {}
    ids = np.array([index.setdefault(c, len(index)) for c in clusters], dtype=np.int64)
    sums = np.bincount(ids, weights=values, minlength=len(index))
    counts = np.bincount(ids, minlength=len(index)).astype(np.float64)
    return sums, counts


def cluster_bootstrap(
    values, clusters: list[str], *, rounds: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the mean of `values`, resampling whole clusters with replacement."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return 0.0, 0.0
    sums, counts = _cluster_sums(values, clusters)
    rng = np.random.default_rng(seed)
    k = len(sums)
    means = np.empty(rounds)
    for r in range(rounds):
        pick = np.bincount(rng.integers(0, k, k), minlength=k)
        means[r] = (pick @ sums) / max(pick @ counts, 1.0)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact p-value from the discordant pairs: items only A got right, items only B got right."""
    from scipy.stats import binom

    n = a_only + b_only
    if n == 0:
        return 1.0
    return float(min(1.0, 2 * binom.cdf(min(a_only, b_only), n, 0.5)))


def paired_bootstrap(a, b, clusters: list[str], *, rounds: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Interval of mean(b) - mean(a) over the same items, resampling clusters."""
    return cluster_bootstrap(
        np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64), clusters, rounds=rounds, seed=seed, level=level
    )
