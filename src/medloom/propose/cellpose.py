"""Cells or nuclei in microscopy and pathology by Cellpose's CPnet (Stringer et al. 2021; cellpose 1 to 3: cyto,
cyto2, cyto3, nuclei, or a model the user trained) with the weights file the user has. The image as cellpose
prepares it: the cytoplasm channel and the nuclear channel (`channels=[cyto, nuc]`: 0 grey, 1 red, 2 green, 3
blue), each scaled from its 1st to its 99th percentile, resized so that `diameter` becomes the model's own mean
diameter (kept in the file as `diam_mean`); the network gives flows (dY, dX) and a cell probability. Masks as
cellpose's `dynamics.compute_masks` makes them, simplified: the pixels above `cellprob_threshold` follow the
flows (scaled by 1/5) for `niter` steps, the points they gather at are grouped (touching points one group) and
each pixel joins its point's group; groups under `min_size` pixels or over `max_share` of the image are dropped.
One ROI per cell (`cell`, or `nucleus` with `label=nucleus`), at most `max_cells`. Score: its mean probability.

CPnet is written here after cellpose's `cellpose/resnet_torch.py` (MouseLand/cellpose at commit
031d20abfc971b305b07f788239594fc99e2807a, BSD-3-Clause: residual down and up blocks, style vector added in
each up block, nearest upsampling, max pooling), with its parameter names, so cellpose's state dicts (e.g.
`cyto3`, `nuclei`) load as they are. The cellpose package is not used: it requires torchvision (and cellpose 4
dropped CPnet for Cellpose-SAM).
"""

from __future__ import annotations

import numpy as np

from .base import Refused, Region, refuse_modality
from .weights import cached, device, fit, need_file, sha256, state_dict_of, torch_load

VERSION = "1"
LABELS = ("cell", "nucleus")
DEFAULTS = {
    "weights": "",
    "device": "auto",
    "label": "cell",
    "cyto_channel": 0,
    "nuclear_channel": 0,
    "diameter": 30.0,
    "cellprob_threshold": 0.0,
    "niter": 200,
    "min_size": 15,
    "max_share": 0.4,
    "max_cells": 300,
    "max_side": 2048,
}
WHERE = (
    "give a cellpose 1-3 model file, e.g. cyto3 or nuclei from cellpose's model folder (~/.cellpose/models), or "
    "one `cellpose train` saved"
)


def suits(record: dict) -> str | None:
    return refuse_modality(record, ("microscopy", "pathology"), "cellpose")


def cpnet(nbase: list[int], nout: int, sz: int = 3):
    """cellpose's CPnet(nbase, nout, sz) with residual blocks and style on (every released model)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    def batchconv(cin, cout, k):
        return nn.Sequential(nn.BatchNorm2d(cin, eps=1e-5), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, k, padding=k // 2))

    def batchconv0(cin, cout, k):
        return nn.Sequential(nn.BatchNorm2d(cin, eps=1e-5), nn.Conv2d(cin, cout, k, padding=k // 2))

    class ResDown(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv = nn.Sequential()
            for t in range(4):
                self.conv.add_module(f"conv_{t}", batchconv(cin if t == 0 else cout, cout, sz))
            self.proj = batchconv0(cin, cout, 1)

        def forward(self, x):
            x = self.proj(x) + self.conv[1](self.conv[0](x))
            return x + self.conv[3](self.conv[2](x))

    class Down(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = nn.Sequential()
            self.maxpool = nn.MaxPool2d(2, 2)
            for n in range(len(nbase) - 1):
                self.down.add_module(f"res_down_{n}", ResDown(nbase[n], nbase[n + 1]))

        def forward(self, x):
            xd = []
            for n in range(len(self.down)):
                xd.append(self.down[n](self.maxpool(xd[n - 1]) if n > 0 else x))
            return xd

    class StyleConv(nn.Module):
        def __init__(self, cin, cout, style):
            super().__init__()
            self.conv = batchconv(cin, cout, sz)
            self.full = nn.Linear(style, cout)

        def forward(self, style, x, y=None):
            if y is not None:
                x = x + y
            return self.conv(x + self.full(style)[..., None, None])

    class ResUp(nn.Module):
        def __init__(self, cin, cout, style):
            super().__init__()
            self.conv = nn.Sequential()
            self.conv.add_module("conv_0", batchconv(cin, cout, sz))
            for t in (1, 2, 3):
                self.conv.add_module(f"conv_{t}", StyleConv(cout, cout, style))
            self.proj = batchconv0(cin, cout, 1)

        def forward(self, x, y, style):
            x = self.proj(x) + self.conv[1](style, self.conv[0](x), y=y)
            return x + self.conv[3](style, self.conv[2](style, x))

    class Up(nn.Module):
        def __init__(self, up):
            super().__init__()
            self.upsampling = nn.Upsample(scale_factor=2, mode="nearest")
            self.up = nn.Sequential()
            for n in range(1, len(up)):
                self.up.add_module(f"res_up_{n - 1}", ResUp(up[n], up[n - 1], up[-1]))

        def forward(self, style, xd):
            x = self.up[-1](xd[-1], xd[-1], style)
            for n in range(len(self.up) - 2, -1, -1):
                x = self.up[n](self.upsampling(x), xd[n], style)
            return x

    class CPnet(nn.Module):
        def __init__(self):
            super().__init__()
            up = [*nbase[1:], nbase[-1]]
            self.downsample = Down()
            self.upsample = Up(up)
            self.make_style = nn.Module()  # no parameters; kept for the names
            self.output = batchconv(up[0], nout, 1)
            self.diam_mean = nn.Parameter(torch.ones(1) * 30.0, requires_grad=False)
            self.diam_labels = nn.Parameter(torch.ones(1) * 30.0, requires_grad=False)

        def forward(self, x):
            t0 = self.downsample(x)
            style = F.avg_pool2d(t0[-1], kernel_size=t0[-1].shape[-2:]).flatten(1)
            style = style / torch.sum(style**2, dim=1, keepdim=True) ** 0.5
            return self.output(self.upsample(style, t0)), style

    return CPnet()


def load(path: str, digest: str, device_name: str):
    from ..errors import ProposeError

    state = state_dict_of(torch_load(path, "cellpose"), path, "cellpose")
    downs = sorted(k for k in state if k.startswith("downsample.down.res_down_") and k.endswith(".proj.1.weight"))
    if not downs or "output.2.weight" not in state:
        raise ProposeError(
            f"cellpose: {path} is not a CPnet state dict (no downsample.down.res_down_N.proj.1.weight or output.2.weight); "
            "Cellpose-SAM (cellpose 4) models are not read"
        )
    downs.sort(key=lambda k: int(k.split("res_down_")[1].split(".")[0]))
    nbase = [int(state[downs[0]].shape[1])] + [int(state[k].shape[0]) for k in downs]
    sz = (
        int(state["downsample.down.res_down_0.conv.conv_0.2.weight"].shape[-1])
        if "downsample.down.res_down_0.conv.conv_0.2.weight" in state
        else 3
    )
    network = cpnet(nbase, int(state["output.2.weight"].shape[0]), sz)
    fit(network, state, path, "cellpose", f"CPnet (nbase {nbase})")
    return network.to(device(device_name))


def prepare(params: dict) -> dict:
    from ..errors import ProposeError

    path = need_file("cellpose", "weights", params["weights"], "a cellpose CPnet model file", WHERE)
    if params["label"] not in LABELS:
        raise ProposeError(f"cellpose: label must be one of {', '.join(LABELS)}")
    digest = sha256([path])
    network = cached(load, str(path.resolve()), digest, "cpu")
    if network.output[2].out_channels < 3:
        raise ProposeError(
            f"cellpose: {path} gives {network.output[2].out_channels} outputs; CPnet's are dY, dX, cell probability"
        )
    return {**params, "weights": str(path.resolve()), "weights_sha256": digest}


def channels(pixels: np.ndarray, params: dict, n: int) -> np.ndarray:
    """The network's input: [cyto, nuclear] (cellpose's `channels`), each scaled to its 1st..99th percentile."""

    def pick(c: int) -> np.ndarray:
        if c == 0 or pixels.ndim == 2:
            return pixels.astype(np.float32) if pixels.ndim == 2 else pixels[..., :3].astype(np.float32).mean(-1)
        return pixels[..., c - 1].astype(np.float32)

    def norm(x: np.ndarray) -> np.ndarray:
        lo, hi = np.percentile(x, [1, 99])
        return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)

    out = [norm(pick(params["cyto_channel"]))]
    if n > 1:
        out.append(norm(pick(params["nuclear_channel"])) if params["nuclear_channel"] else np.zeros_like(out[0]))
    return np.stack(out + [np.zeros_like(out[0])] * (n - len(out)))


def masks_from_flows(flows: np.ndarray, cellprob: np.ndarray, params: dict) -> np.ndarray:
    """Labels (0 background) from flows (2, H, W) and the cell probability's logits (H, W)."""
    from scipy import ndimage

    h, w = cellprob.shape
    inside = cellprob > params["cellprob_threshold"]
    ys, xs = np.nonzero(inside)
    if ys.size == 0:
        return np.zeros((h, w), np.int32)
    step = flows * inside / 5.0
    p = np.stack([ys, xs]).astype(np.float32)
    for _ in range(params["niter"]):
        yi = np.clip(np.rint(p[0]).astype(np.int64), 0, h - 1)
        xi = np.clip(np.rint(p[1]).astype(np.int64), 0, w - 1)
        p[0] = np.clip(p[0] + step[0, yi, xi], 0, h - 1)
        p[1] = np.clip(p[1] + step[1, yi, xi], 0, w - 1)
    fy, fx = np.rint(p[0]).astype(np.int64), np.rint(p[1]).astype(np.int64)
    gathered = np.zeros((h, w), bool)
    gathered[fy, fx] = True
    groups, _ = ndimage.label(ndimage.binary_dilation(gathered, iterations=1))
    labels = np.zeros((h, w), np.int32)
    labels[ys, xs] = groups[fy, fx]
    sizes = np.bincount(labels.ravel())
    bad = (sizes < params["min_size"]) | (sizes > params["max_share"] * h * w)
    bad[0] = True
    labels[bad[labels]] = 0
    return labels


def propose(pixels: np.ndarray, values: np.ndarray | None, record: dict, params: dict) -> list[Region]:
    import torch
    from scipy import ndimage

    network = cached(load, params["weights"], params["weights_sha256"], params["device"])
    n_in = network.downsample.down[0].proj[1].in_channels
    x = channels(pixels, params, n_in)
    if float(x.max()) <= 0:
        raise Refused("flat_image", "the image's channels are flat: no cells to find")
    h, w = x.shape[1:]
    scale = float(network.diam_mean.item()) / max(params["diameter"], 1.0)
    scale = min(scale, params["max_side"] / max(h, w))
    if abs(scale - 1) > 1e-3:
        x = ndimage.zoom(x, (1, scale, scale), order=1)
    sh, sw = x.shape[1:]
    ph, pw = -sh % 16, -sw % 16  # four poolings
    x = np.pad(x, ((0, 0), (0, ph), (0, pw)))
    dev = next(network.parameters()).device
    with torch.inference_mode():
        y = network(torch.as_tensor(x[None], dtype=torch.float32, device=dev))[0][0].cpu().numpy()[:, :sh, :sw]
    if (sh, sw) != (h, w):
        y = ndimage.zoom(y[:3], (1, h / sh, w / sw), order=1)[:, :h, :w]
    labels = masks_from_flows(y[:2], y[2], params)
    prob = 1 / (1 + np.exp(-y[2]))
    sizes = np.bincount(labels.ravel())
    keep = [i for i in np.argsort(sizes[1:])[::-1] + 1 if sizes[i] > 0][: params["max_cells"]]
    return [Region(params["label"], labels == i, round(float(prob[labels == i].mean()), 4)) for i in sorted(keep)]
