"""Near-duplicate search over 64-bit perceptual hashes without comparing all pairs.

Locality-sensitive hashing by bit sampling: each of L tables keys every hash by a fixed random subset of 20
of its 64 bits, and only hashes that share a key somewhere are compared in full. Two hashes d bits apart
share a table's key with probability C(64 - d, 20) / C(64, 20); L is chosen so that pairs at the threshold
are found with probability at least 0.995 (closer pairs more surely; `benchmarks/dedup.py` measures the
recall against the all-pairs answer). Each table costs a sort, so time grows with L n log n. Identical
hashes are collapsed first, so a pile of identical images (blank slices) costs one entry, not a quadratic
number of pairs.

`near_pairs_exact` (multi-index hashing: four 16-bit blocks probed within floor(t / 4) bits) finds every
pair, but its candidates grow with n^2 / 65536; it serves small sets and the tests.
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np

BLOCKS, BITS = 4, 16


def _masks(radius: int) -> np.ndarray:
    out = [0]
    for r in range(1, radius + 1):
        out += [sum(1 << b for b in bits) for bits in combinations(range(BITS), r)]
    return np.array(out, dtype=np.int64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.bitwise_count(np.bitwise_xor(a, b))


KEY_BITS = 20
TARGET_RECALL = 0.995


def tables_for(threshold: int, key_bits: int = KEY_BITS, target: float = TARGET_RECALL) -> int:
    """Tables needed so that a pair exactly `threshold` bits apart is found with probability >= target."""
    p = math.comb(64 - threshold, key_bits) / math.comb(64, key_bits)
    return 1 if p >= target else math.ceil(math.log(1 - target) / math.log(1 - p))


def _pairs_in_runs(order: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Every pair of positions whose keys are equal (keys sorted by `order`)."""
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    ends = np.r_[starts[1:], len(order)]
    run_end = np.repeat(ends, ends - starts)
    partners = run_end - np.arange(len(order)) - 1  # later members of the same run
    hit = np.flatnonzero(partners)
    if not len(hit):
        return np.empty((0, 2), np.int64)
    counts = partners[hit]
    first = np.repeat(hit, counts)
    run_start = np.repeat(np.cumsum(counts) - counts, counts)
    second = first + 1 + (np.arange(len(first)) - run_start)
    return np.stack([order[first], order[second]], axis=1)


def near_pairs(hashes: np.ndarray, threshold: int, *, seed: int = 0) -> np.ndarray:
    """Index pairs (i < j) of distinct hash values within `threshold` bits (LSH: see the module text)."""
    h = np.asarray(hashes, dtype=np.uint64)
    if len(h) < 2 or threshold < 0:
        return np.empty((0, 2), np.int64)
    if threshold < BLOCKS:  # exact and cheap: every pair shares one of four 16-bit blocks
        return near_pairs_exact(h, threshold)
    rng = np.random.default_rng(seed)
    found = []
    for _ in range(tables_for(threshold)):
        mask = np.uint64(sum(1 << int(b) for b in rng.choice(64, KEY_BITS, replace=False)))
        keys = h & mask
        pairs = _pairs_in_runs(np.argsort(keys, kind="stable"), keys)
        if len(pairs):
            pairs = np.sort(pairs, axis=1)
            found.append(pairs[hamming(h[pairs[:, 0]], h[pairs[:, 1]]) <= threshold])
    return np.unique(np.concatenate(found), axis=0) if found else np.empty((0, 2), np.int64)


def near_pairs_exact(hashes: np.ndarray, threshold: int) -> np.ndarray:
    """Every index pair (i < j) within `threshold` bits, by multi-index hashing."""
    h = np.asarray(hashes, dtype=np.uint64)
    n = len(h)
    if n < 2 or threshold < 0:
        return np.empty((0, 2), np.int64)
    found = []
    masks = _masks(threshold // BLOCKS)
    for block in range(BLOCKS):
        keys = ((h >> np.uint64(BITS * block)) & np.uint64(0xFFFF)).astype(np.int64)
        order = np.argsort(keys, kind="stable")
        starts = np.concatenate([[0], np.cumsum(np.bincount(keys, minlength=1 << BITS))])  # bucket offsets
        for mask in masks:
            probe = keys ^ mask
            lo, hi = starts[probe], starts[probe + 1]
            counts = hi - lo
            hit = np.nonzero(counts)[0]
            if not len(hit):
                continue
            counts = counts[hit]
            queries = np.repeat(hit, counts)
            # position k of each query's run: lo + 0, 1, ..., count - 1
            run_start = np.repeat(np.cumsum(counts) - counts, counts)
            positions = np.repeat(lo[hit], counts) + (np.arange(len(queries)) - run_start)
            other = order[positions]
            keep = (queries < other) & (hamming(h[queries], h[other]) <= threshold)  # compare as found
            if keep.any():
                found.append(np.stack([queries[keep], other[keep]], axis=1))
    if not found:
        return np.empty((0, 2), np.int64)
    return np.unique(np.concatenate(found), axis=0)


def all_pairs(hashes: np.ndarray, threshold: int, chunk: int = 2048) -> np.ndarray:
    """The same answer by comparing every pair (the baseline for the benchmark and the tests)."""
    h = np.asarray(hashes, dtype=np.uint64)
    out = []
    for start in range(0, len(h), chunk):
        block = h[start : start + chunk]
        d = hamming(block[:, None], h[None, :])
        i, j = np.nonzero(d <= threshold)
        i = i + start
        keep = i < j
        out.append(np.stack([i[keep], j[keep]], axis=1))
    return np.concatenate(out) if out else np.empty((0, 2), np.int64)


def components(n: int, edges: list[np.ndarray]) -> np.ndarray:
    """A component label per node for an undirected graph given as edge arrays."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    e = np.concatenate([x for x in edges if len(x)]) if any(len(x) for x in edges) else np.empty((0, 2), np.int64)
    graph = coo_matrix((np.ones(len(e), np.int8), (e[:, 0], e[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def first_of(values: np.ndarray) -> np.ndarray:
    """For each position, the first position holding the same value (edges that join equal values)."""
    _, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    return first[inverse]


def duplicate_groups(pixel_hashes: list[str], phashes: np.ndarray, near: int | None) -> np.ndarray:
    """A group label per record: same decoded pixels, and (with `near`) perceptual hashes within `near` bits
    are joined, transitively."""
    n = len(pixel_hashes)
    if not n:
        return np.empty(0, np.int64)
    index = np.arange(n)
    edges = [np.stack([index, first_of(np.asarray(pixel_hashes))], axis=1)]
    if near is not None:
        phashes = np.asarray(phashes, np.uint64)
        unique, first = np.unique(phashes, return_index=True)
        edges.append(np.stack([index, first_of(phashes)], axis=1))  # identical hashes
        edges.append(first[near_pairs(unique, near)])  # close hashes, via one record per value
    return components(n, edges)
