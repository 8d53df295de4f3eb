"""Interval and test statistics for evaluation runs, with no other dependency than numpy and scipy.

- Wilson score interval for a proportion (what `statsmodels.stats.proportion.proportion_confint(...,
  method="wilson")` gives);
- bootstrap intervals that resample clusters (patients, or images when the patient is unknown), because
  images of one patient are not independent;
- the exact McNemar test on paired outcomes (a two-sided binomial test on the discordant pairs, as
  `statsmodels.stats.contingency_tables.mcnemar(exact=True)`), and a paired bootstrap interval of the
  difference;
- a paired sign-flip (randomization) test over clusters, which is the exact McNemar test when every cluster
  holds one question and stays valid when one patient contributes many (or when each question's outcome is
  a mean over seeds);
- Holm's step-down correction, and the smallest difference of two accuracies a test of n items detects with
  80% power.
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
    block = max(1, 1_000_000 // k)  # rounds drawn at once (the same draws as one round at a time): a small matrix
    for start in range(0, rounds, block):
        n = min(block, rounds - start)
        draws = rng.integers(0, k, (n, k))
        means[start : start + n] = sums[draws].sum(axis=1) / np.maximum(counts[draws].sum(axis=1), 1.0)
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


def cluster_signflip(diffs, clusters: list[str], *, rounds: int = 20000, seed: int = 0) -> float:
    """Two-sided p-value that paired differences (B - A per item, any real values) centre on zero, treating each
    cluster's sum as one exchangeable unit: under the null, B and A are exchangeable within a cluster, so each
    cluster sum keeps or flips its sign with probability 1/2. Exact when the non-zero cluster sums all have one
    size (then it is the binomial sign test: with one item per cluster, the exact McNemar test) or are at most
    16; otherwise Monte Carlo (`rounds` draws, the +1 rule)."""
    sums, _ = _cluster_sums(np.asarray(diffs, dtype=np.float64), clusters)
    sums = sums[np.abs(sums) > 1e-12]
    if not len(sums):
        return 1.0
    observed = abs(sums.sum()) - 1e-9
    sizes = np.abs(sums)
    if np.allclose(sizes, sizes[0]):
        return mcnemar_exact(int((sums < 0).sum()), int((sums > 0).sum()))
    if len(sums) <= 16:
        signs = 1 - 2 * ((np.arange(2 ** len(sums))[:, None] >> np.arange(len(sums))) & 1)
        return float(np.mean(np.abs(signs @ sums) >= observed))
    rng = np.random.default_rng(seed)
    flips = rng.choice([-1.0, 1.0], size=(rounds, len(sums)))
    return float((np.sum(np.abs(flips @ sums) >= observed) + 1) / (rounds + 1))


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error), in the order given."""
    m = len(pvalues)
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def detectable_difference(n: int, base: float = 0.5, *, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """The smallest gain over an accuracy `base` that a two-sided test at `alpha` on n independent items detects
    with the given power (two proportions, normal approximation; conservative for paired items, whose
    correlation makes the paired test stronger). None when n is 0 or no gain up to 1 - base is detectable."""
    from scipy.stats import norm

    if n <= 0:
        return None
    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)
    base = min(max(base, 0.0), 1.0)
    for step in range(1, 1001):
        gain = step / 1000
        p1 = base + gain
        if p1 > 1:
            return None
        pooled = (base + p1) / 2
        need = za * math.sqrt(2 * pooled * (1 - pooled) / n) + zb * math.sqrt((base * (1 - base) + p1 * (1 - p1)) / n)
        if gain >= need:
            return gain
    return None
