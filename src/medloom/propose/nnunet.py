"""Any nnU-Net v2 model (or a TotalSegmentator task, which is one) from a results folder the user has: the
trainer's folder (`DatasetNNN_Name/nnUNetTrainer__nnUNetPlans__2d`) holding `plans.json`, `dataset.json` and
`fold_F/checkpoint_final.pth`. The network is built from the plans as nnunetv2's `get_network_from_plans`
does (the configuration the checkpoint names, `architecture.network_class_name` with its `arch_kwargs`, the
classes of `_kw_requires_import` located by name) from `dynamic_network_architectures`, without nnunetv2 itself;
its input channels are dataset.json's `channel_names`, its outputs its `labels`.

A record is one 2D image, so 2d configurations run: each channel normalised by the plans' scheme
(`CTNormalization`: clipped to the foreground's 0.5th..99.5th percentile, minus its mean, over its standard
deviation, from `foreground_intensity_properties_per_channel`; `ZScoreNormalization`; `RescaleTo01`; `RGBTo01`;
none), then a sliding window of the plans' patch size (half-patch steps, Gaussian weights, as nnU-Net's
predictor, without mirroring), softmax, the most probable label per pixel; each foreground label one ROI, named
as dataset.json names it. CT models take Hounsfield units (DICOM, NIfTI), others the record's grey or RGB
levels. Pixels are taken at their stored size (the catalog keeps no spacing): `zoom` rescales them toward the
plans' spacing. Score: the mean probability of the label inside its region.

3d configurations (every TotalSegmentator task) are read, built and their weights checked, then refused with
what is missing: they need a volume, and medloom proposes one 2D record at a time. Region-based models
(BraTS-style label tuples) are refused too.
"""

from __future__ import annotations

import json
import pydoc
from pathlib import Path

import numpy as np

from ..errors import ProposeError
from .base import Refused, Region, gray
from .weights import cached, device, fit, need_folder, sha256, state_dict_of, torch_load

VERSION = "1"
LABELS = ("dataset.json's labels",)
DEFAULTS = {"folder": "", "fold": "0", "checkpoint": "checkpoint_final.pth", "device": "auto", "zoom": 1.0, "min_share": 0.0005}
WHERE = (
    "give nnU-Net's trainer folder (nnUNet_results/DatasetNNN_Name/TRAINER__PLANS__CONFIGURATION, or a "
    "TotalSegmentator task's folder) with plans.json, dataset.json and fold_F/checkpoint_final.pth"
)


def suits(record: dict) -> str | None:
    return None  # any modality: the model's channels and the pixels decide


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise ProposeError(f"nnunet: {path} is missing: {WHERE}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ProposeError(f"nnunet: {path} is not JSON ({e})") from None


def configuration(plans: dict, name: str, path: Path) -> dict:
    """A configuration of the plans with what it inherits (`inherits_from`, as nnunetv2's PlansManager)."""
    configs = plans.get("configurations") or {}
    if name not in configs:
        raise ProposeError(f"nnunet: {path} has no configuration {name!r} (it has: {', '.join(configs) or 'none'})")
    config = dict(configs[name])
    if "inherits_from" in config:
        config = {**configuration(plans, config.pop("inherits_from"), path), **config}
    return config


def labels_of(dataset: dict, path: Path) -> list[str]:
    """Names by output channel (0 background); region-based models are refused."""
    labels = dataset.get("labels") or {}
    if any(isinstance(v, (list, tuple)) and len(v) > 1 for v in labels.values()):
        raise ProposeError(f"nnunet: {path} describes a region-based model (label tuples): not supported")
    by_value = {int(v if not isinstance(v, list) else v[0]): k for k, v in labels.items() if k != "ignore"}
    if not by_value or min(by_value) != 0 or sorted(by_value) != list(range(len(by_value))):
        raise ProposeError(f"nnunet: {path}'s labels must be 0 (background), 1, 2, ...; they are {labels}")
    return [by_value[i] for i in range(len(by_value))]


def build(config: dict, channels: int, outputs: int, plans_path: Path):
    """The network as nnunetv2's `get_network_from_plans` makes it (without deep supervision)."""
    arch = config.get("architecture")
    if not arch:
        raise ProposeError(
            f"nnunet: {plans_path} has no `architecture` in its configuration: plans of nnU-Net before 2.4 "
            "(UNet_class_name) are not read; re-plan the dataset with a current nnunetv2"
        )
    try:
        import dynamic_network_architectures  # noqa: F401
    except ImportError:
        raise ProposeError(
            "nnunet needs dynamic_network_architectures: pip install --no-deps dynamic-network-architectures einops "
            "(--no-deps: its timm requirement would bring torchvision; the U-Nets do not use timm)"
        ) from None
    kwargs = dict(arch["arch_kwargs"])
    for key in arch.get("_kw_requires_import", []):
        if kwargs.get(key) is not None:
            kwargs[key] = pydoc.locate(kwargs[key])
    cls = pydoc.locate(arch["network_class_name"])
    if cls is None:
        raise ProposeError(
            f"nnunet: {arch['network_class_name']} (from {plans_path}) is not in the installed "
            "dynamic_network_architectures (a newer release, or a custom class, may be needed)"
        )
    kwargs["deep_supervision"] = False
    try:
        return cls(input_channels=channels, num_classes=outputs, **kwargs)
    except Exception as e:
        raise ProposeError(
            f"nnunet: {arch['network_class_name']} cannot be built from {plans_path} ({type(e).__name__}: {e})"
        ) from None


def checkpoint_path(folder: Path, params: dict) -> Path:
    fold = params["fold"]
    path = folder / (f"fold_{fold}" if fold != "all" else "fold_all") / params["checkpoint"]
    if not path.is_file():
        folds = sorted(p.name for p in folder.glob("fold_*") if p.is_dir())
        raise ProposeError(
            f"nnunet: {path} is missing: put fold {fold}'s {params['checkpoint']} there "
            f"(this folder has {', '.join(folds) or 'no fold_* folder'}; choose one with --param fold=N)"
        )
    return path


def load(folder: str, fold: str, checkpoint: str, digest: str, device_name: str):
    base = Path(folder)
    plans = read_json(base / "plans.json")
    dataset = read_json(base / "dataset.json")
    path = checkpoint_path(base, {"fold": fold, "checkpoint": checkpoint})
    ckpt = torch_load(path, "nnunet")
    name = (ckpt.get("init_args") or {}).get("configuration") if isinstance(ckpt, dict) else None
    if not name:
        raise ProposeError(f"nnunet: {path} names no configuration (init_args.configuration): not an nnU-Net checkpoint")
    config = configuration(plans, name, base / "plans.json")
    labels = labels_of(dataset, base / "dataset.json")
    channels = dataset.get("channel_names") or dataset.get("modality") or {}
    network = build(config, len(channels), len(labels), base / "plans.json")
    state = {k.removeprefix("_orig_mod."): v for k, v in state_dict_of(ckpt, path, "nnunet").items()}
    fit(
        network,
        state,
        path,
        "nnunet",
        f"the {name} {config['architecture']['network_class_name'].rsplit('.', 1)[-1]} of {base / 'plans.json'}",
    )
    info = {
        "configuration": name,
        "labels": labels,
        "channels": [channels[k] for k in sorted(channels, key=int)],
        "schemes": config.get("normalization_schemes") or [],
        "intensity": plans.get("foreground_intensity_properties_per_channel") or {},
        "patch": [int(p) for p in config["patch_size"]],
        "spacing": config.get("spacing"),
    }
    return network.to(device(device_name)), info


def prepare(params: dict) -> dict:
    folder = need_folder("nnunet", "folder", params["folder"], "an nnU-Net results folder", WHERE)
    files = [folder / "plans.json", folder / "dataset.json", checkpoint_path(folder, params)]
    digest = sha256(files)
    _, info = cached(load, str(folder.resolve()), params["fold"], params["checkpoint"], digest, "cpu")
    if len(info["patch"]) != 2:
        raise ProposeError(
            f"nnunet: {folder} holds the {info['configuration']} configuration (patch {info['patch']} at spacing "
            f"{info['spacing']}; labels {', '.join(info['labels'][1:])}): its network and weights load, but a 3D "
            "network needs a volume and medloom proposes one 2D record at a time. Give a 2d configuration's "
            "folder (TRAINER__PLANS__2d); running 3D models on whole volumes is not built yet"
        )
    return {**params, "folder": str(folder.resolve()), "weights_sha256": digest}


def normalise(image: np.ndarray, scheme: str, props: dict) -> np.ndarray:
    """One channel as nnunetv2's default normalisation schemes make it."""
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


def inputs(pixels: np.ndarray, values: np.ndarray | None, info: dict) -> np.ndarray:
    n = len(info["channels"])
    schemes = info["schemes"] or ["ZScoreNormalization"] * n
    if n == 1:
        if schemes[0] == "CTNormalization" and values is None:
            raise Refused("no_hounsfield_units", "this CT model needs Hounsfield units (DICOM or NIfTI CT)")
        planes = [values if values is not None else gray(pixels)]
    elif n == 3 and pixels.ndim == 3:
        planes = [pixels[..., c] for c in range(3)]
    else:
        raise Refused(
            "channels", f"the model takes {n} channels ({', '.join(map(str, info['channels']))}); this record is one image"
        )
    return np.stack([normalise(p, s, info["intensity"].get(str(i), {})) for i, (p, s) in enumerate(zip(planes, schemes))])


def sliding_window(network, x: np.ndarray, patch: list[int], classes: int) -> np.ndarray:
    """Softmax probabilities (classes, H, W): patches at half-patch steps, each weighted by a Gaussian (sigma an
    eighth of the patch), as nnU-Net's predictor (no mirroring)."""
    import torch

    h, w = x.shape[1:]
    ph, pw = max(patch[0] - h, 0), max(patch[1] - w, 0)
    x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)))
    H, W = x.shape[1:]

    def starts(size: int, p: int) -> list[int]:
        n = int(np.ceil((size - p) / (p * 0.5))) + 1
        return sorted({round(i * (size - p) / max(n - 1, 1)) for i in range(n)})

    gy, gx = (np.exp(-(((np.arange(p) - (p - 1) / 2) / (p / 8)) ** 2) / 2) for p in patch)
    weight = np.outer(gy, gx).astype(np.float32)
    weight = np.maximum(weight / weight.max(), 1e-4)
    logits = np.zeros((classes, H, W), np.float32)
    counts = np.zeros((H, W), np.float32)
    dev = next(network.parameters()).device
    with torch.inference_mode():
        for y0 in starts(H, patch[0]):
            for x0 in starts(W, patch[1]):
                tile = torch.as_tensor(np.ascontiguousarray(x[None, :, y0 : y0 + patch[0], x0 : x0 + patch[1]]), device=dev)
                logits[:, y0 : y0 + patch[0], x0 : x0 + patch[1]] += network(tile)[0].float().cpu().numpy() * weight
                counts[y0 : y0 + patch[0], x0 : x0 + patch[1]] += weight
    logits = (logits / counts)[:, ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w]
    e = np.exp(logits - logits.max(0))
    return e / e.sum(0)


def propose(pixels: np.ndarray, values: np.ndarray | None, record: dict, params: dict) -> list[Region]:
    from scipy import ndimage

    network, info = cached(
        load, params["folder"], params["fold"], params["checkpoint"], params["weights_sha256"], params["device"]
    )
    x = inputs(pixels, values, info)
    h, w = x.shape[1:]
    if params["zoom"] != 1.0:
        x = ndimage.zoom(x, (1, params["zoom"], params["zoom"]), order=1)
    prob = sliding_window(network, x.astype(np.float32), info["patch"], len(info["labels"]))
    if prob.shape[1:] != (h, w):
        prob = ndimage.zoom(prob, (1, h / prob.shape[1], w / prob.shape[2]), order=1)[:, :h, :w]
    best = prob.argmax(0)
    regions = []
    for k, name in enumerate(info["labels"][1:], start=1):
        mask = best == k
        if mask.mean() >= params["min_share"]:
            regions.append(Region(name, mask, round(float(prob[k][mask].mean()), 4)))
    return regions
