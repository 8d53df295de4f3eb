"""nnU-Net's inference steps that do not depend on the number of spatial dimensions, shared by its 2d (one
image per record) and 3d (one volume for a volume's slice records) configurations: the default normalisation
schemes, and the Gaussian-weighted sliding window of nnunetv2's predictor (half-patch steps, no mirroring)."""

from __future__ import annotations

import itertools

import numpy as np

from .base import Refused


def normalise(image: np.ndarray, scheme: str, props: dict) -> np.ndarray:
    """One channel (an image or a volume) as nnunetv2's default normalisation schemes make it."""
    x = image.astype(np.float32)
    if scheme == "CTNormalization":
        x = np.clip(x, props["percentile_00_5"], props["percentile_99_5"])
        return (x - props["mean"]) / max(props["std"], 1e-8)
    if scheme == "ZScoreNormalization":
        return (x - x.mean()) / max(float(x.std()), 1e-8)
    if scheme == "RescaleTo01Normalization":
        return (x - x.min()) / max(float(x.max() - x.min()), 1e-8)
    if scheme == "RGBTo01Normalization":
        return x / 255.0
    if scheme == "NoNormalization":
        return x
    raise Refused("unknown_normalization", f"normalisation {scheme} is not one of nnU-Net's defaults")


def starts(size: int, patch: int) -> list[int]:
    """Where the windows along one axis begin: half-patch steps spread evenly to cover `size`, as nnunetv2's
    `compute_steps_for_sliding_window` (tile_step_size 0.5)."""
    n = int(np.ceil((size - patch) / (patch * 0.5))) + 1
    return sorted({round(i * (size - patch) / max(n - 1, 1)) for i in range(n)})


def gaussian(patch: list[int]) -> np.ndarray:
    """The weight of each position of a window (sigma an eighth of the patch, peak 1, never below 1e-4), so the
    centre of a window, where the network sees most context, counts most where windows overlap."""
    weight = np.ones((), np.float32)
    for p in patch:
        g = np.exp(-(((np.arange(p) - (p - 1) / 2) / (p / 8)) ** 2) / 2).astype(np.float32)
        weight = np.multiply.outer(weight, g)
    return np.maximum(weight / weight.max(), 1e-4).astype(np.float32)


def sliding_window(network, x: np.ndarray, patch: list[int], classes: int) -> tuple[np.ndarray, int]:
    """Softmax probabilities (classes, *spatial) of `x` (channels, *spatial) and the number of windows the
    network ran on: `x` padded to at least the patch, windows of the patch at half-patch steps, each window's
    logits weighted by `gaussian` and averaged where windows overlap (nnU-Net's predictor, without mirroring)."""
    import torch

    shape = x.shape[1:]
    if len(patch) != len(shape):
        raise ValueError(f"a patch of {len(patch)} axes for an input of {len(shape)} spatial axes")
    pads = [max(p - s, 0) for p, s in zip(patch, shape)]
    x = np.pad(x, [(0, 0)] + [(p // 2, p - p // 2) for p in pads])
    padded = x.shape[1:]
    weight = gaussian(patch)
    logits = np.zeros((classes, *padded), np.float32)
    counts = np.zeros(padded, np.float32)
    dev = next(network.parameters()).device
    windows = 0
    with torch.inference_mode():
        for corner in itertools.product(*(starts(s, p) for s, p in zip(padded, patch))):
            box = tuple(slice(c, c + p) for c, p in zip(corner, patch))
            tile = torch.as_tensor(np.ascontiguousarray(x[(slice(None), *box)][None]), device=dev)
            logits[(slice(None), *box)] += network(tile)[0].float().cpu().numpy() * weight
            counts[box] += weight
            windows += 1
    inside = tuple(slice(p // 2, p // 2 + s) for p, s in zip(pads, shape))
    logits /= counts  # in place: for a 3d model the logits are the largest array (classes x voxels x 4 bytes)
    prob = np.ascontiguousarray(logits[(slice(None), *inside)])
    del logits
    prob -= prob.max(0)
    np.exp(prob, out=prob)
    prob /= prob.sum(0)
    return prob, windows
