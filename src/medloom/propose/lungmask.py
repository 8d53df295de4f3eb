"""Lungs in CT by lungmask's U-Net (Hofmanninger et al. 2020) with the weights file the user has: R231
(`unet_r231-d5d2fc3d.pth`: right and left lung), R231CovidWeb, or LTRCLobes (five lobes); which one is read from
the file's last layer. Each slice as lungmask prepares it: Hounsfield units clipped to -1024..600, cropped to
the body's box, resized to 256 x 256, scaled by (HU + 1024) / 1624; the class of highest probability, each
label's largest part with holes filled (lungmask's post-processing, per slice), resized back into the box.
Needs HU (DICOM or NIfTI CT), as lung-ct does. Score: the mean probability of the region's class inside it.

The network is written here after lungmask's `lungmask/resunet.py` (JoHof/lungmask 0.2.22, Apache-2.0: `UNet`
with depth 5, wf 6, padding, batch norm, bilinear upsampling, no residuals, as `mask.get_model` builds it), with
the same parameter names, so lungmask's released state dicts load as they are; lungmask itself is not imported
(it needs SimpleITK and would download weights when given none).
"""

from __future__ import annotations

import numpy as np

from .base import Refused, Region, filled, largest, refuse_modality
from .weights import cached, device, fit, need_file, sha256, state_dict_of, torch_load

VERSION = "1"
LABELS = (
    "right lung",
    "left lung",
    "left upper lobe",
    "left lower lobe",
    "right upper lobe",
    "right middle lobe",
    "right lower lobe",
)
DEFAULTS = {"weights": "", "device": "auto", "tissue_hu": -500.0, "min_share": 0.002}
CLASSES = {
    3: ("right lung", "left lung"),  # R231, R231CovidWeb
    6: ("left upper lobe", "left lower lobe", "right upper lobe", "right middle lobe", "right lower lobe"),  # LTRCLobes
}
SIZE = 256
WHERE = (
    "give lungmask's released state dict, e.g. unet_r231-d5d2fc3d.pth from the lungmask project's v0.0 release "
    "(or a file saved with torch.save(model.state_dict()) from lungmask.mask.get_model)"
)


def suits(record: dict) -> str | None:
    from .lung_ct import suits as lung_suits

    return refuse_modality(record, ("CT",), "lungmask") or lung_suits(record)


def unet(n_classes: int):
    """lungmask's UNet(n_classes, padding=True, depth=5, up_mode="upsample", batch_norm=True, residual=False)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class ConvBlock(nn.Module):
        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            # unused without residuals, but in lungmask's state dicts
            self.residual_input_conv = nn.Conv2d(cin, cout, kernel_size=1)
            self.residual_batchnorm = nn.BatchNorm2d(cout)
            self.block = nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.ReLU(),
                nn.BatchNorm2d(cout),
                nn.Conv2d(cout, cout, 3, padding=1),
                nn.ReLU(),
                nn.BatchNorm2d(cout),
            )

        def forward(self, x):
            return self.block(x)

    class UpBlock(nn.Module):
        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.residual_input_conv = nn.Conv2d(cin, cout, kernel_size=1)
            self.residual_batchnorm = nn.BatchNorm2d(cout)
            self.up = nn.Sequential(nn.Upsample(mode="bilinear", scale_factor=2), nn.Conv2d(cin, cout, kernel_size=1))
            self.conv_block = ConvBlock(cin, cout)

        def forward(self, x, bridge):
            up = self.up(x)
            dy, dx = (bridge.shape[2] - up.shape[2]) // 2, (bridge.shape[3] - up.shape[3]) // 2
            bridge = bridge[:, :, dy : dy + up.shape[2], dx : dx + up.shape[3]]
            return self.conv_block(torch.cat([up, bridge], 1))

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            widths = [2 ** (6 + i) for i in range(5)]
            self.down_path = nn.ModuleList(ConvBlock(cin, cout) for cin, cout in zip([1, *widths[:-1]], widths))
            self.up_path = nn.ModuleList(UpBlock(widths[i + 1], widths[i]) for i in reversed(range(4)))
            self.last = nn.Conv2d(widths[0], n_classes, kernel_size=1)
            self.softmax = nn.LogSoftmax(dim=1)

        def forward(self, x):
            blocks = []
            for i, down in enumerate(self.down_path):
                x = down(x)
                if i != len(self.down_path) - 1:
                    blocks.append(x)
                    x = F.avg_pool2d(x, 2)
            for i, up in enumerate(self.up_path):
                x = up(x, blocks[-i - 1])
            return self.softmax(self.last(x))

    return UNet()


def load(path: str, digest: str, device_name: str):
    state = state_dict_of(torch_load(path, "lungmask"), path, "lungmask")
    n = len(list(state.values())[-1])  # as lungmask.mask.get_model reads it
    if n not in CLASSES:
        raise_fit(path, f"its last layer has {n} classes; lungmask's models have 3 (R231) or 6 (LTRCLobes)")
    network = unet(n)
    fit(network, state, path, "lungmask", f"lungmask's U-Net ({n} classes)")
    return network.to(device(device_name))


def raise_fit(path, why: str):
    from ..errors import ProposeError

    raise ProposeError(f"lungmask: {path} is not a lungmask model: {why}")


def prepare(params: dict) -> dict:
    path = need_file("lungmask", "weights", params["weights"], "lungmask's U-Net weights (a .pth state dict)", WHERE)
    digest = sha256([path])
    cached(load, str(path.resolve()), digest, "cpu")  # fails here, before any record, when the file does not fit
    return {**params, "weights": str(path.resolve()), "weights_sha256": digest}


def propose(pixels: np.ndarray, values: np.ndarray | None, record: dict, params: dict) -> list[Region]:
    import torch
    from scipy import ndimage

    from .body import body_from_hu

    if values is None or float(values.min()) > -500:
        raise Refused("no_hounsfield_units", "lungmask needs Hounsfield units (DICOM or NIfTI CT); these values are not HU")
    network = cached(load, params["weights"], params["weights_sha256"], params["device"])
    hu = np.clip(values.astype(np.float32), -1024, 600)
    body = body_from_hu(hu, params["tissue_hu"])
    if not body.any():
        raise Refused("no_body", "no body in this slice (tissue above -500 HU covers nothing)")
    ys, xs = np.nonzero(body)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = hu[y0:y1, x0:x1]
    x = ndimage.zoom(crop, np.array([SIZE, SIZE]) / np.array(crop.shape), order=1)
    x = (np.minimum(x, 600) + 1024) / 1624
    dev = next(network.parameters()).device
    with torch.inference_mode():
        prob = network(torch.as_tensor(x[None, None], dtype=torch.float32, device=dev)).exp()[0].cpu().numpy()
    classes = prob.argmax(0)
    names = CLASSES[prob.shape[0]]
    regions = []
    for k, name in enumerate(names, start=1):
        small = filled(largest(classes == k))
        if not small.any():
            continue
        score = round(float(prob[k][small].mean()), 4)
        back = ndimage.zoom(small.astype(np.uint8), np.array(crop.shape) / np.array(small.shape), order=0).astype(bool)
        mask = np.zeros(values.shape, bool)
        mask[y0 : y0 + back.shape[0], x0 : x0 + back.shape[1]] = back[: y1 - y0, : x1 - x0]
        if mask.mean() >= params["min_share"]:
            regions.append(Region(name, mask, score))
    return regions
