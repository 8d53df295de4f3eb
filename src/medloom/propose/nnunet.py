"""Any nnU-Net v2 model (or a TotalSegmentator task, which is one) from a results folder the user has: the
trainer's folder (`DatasetNNN_Name/nnUNetTrainer__nnUNetPlans__2d`) holding `plans.json`, `dataset.json` and
`fold_F/checkpoint_final.pth`. The network is built from the plans as nnunetv2's `get_network_from_plans`
does (the configuration the checkpoint names, `architecture.network_class_name` with its `arch_kwargs`, the
classes of `_kw_requires_import` located by name) from `dynamic_network_architectures`, without nnunetv2 itself;
its input channels are dataset.json's `channel_names`, its outputs its `labels`.

2d configurations run on each record (one 2D image): each channel normalised by the plans' scheme
(`sliding.normalise`: `CTNormalization`: clipped to the foreground's 0.5th..99.5th percentile, minus its mean,
over its standard deviation, from `foreground_intensity_properties_per_channel`; `ZScoreNormalization`;
`RescaleTo01`; `RGBTo01`; none), then a sliding window of the plans' patch size (`sliding.sliding_window`:
half-patch steps, Gaussian weights, as nnU-Net's predictor, without mirroring), softmax, the most probable label
per pixel; each foreground label one ROI, named as dataset.json names it. CT models take Hounsfield units (DICOM,
NIfTI), others the record's grey or RGB levels. Pixels are taken at their stored size (the catalog keeps no
spacing): `zoom` rescales them toward the plans' spacing. Score: the mean probability of the label inside its
region.

3d configurations (every TotalSegmentator task) run on the volume a NIfTI slice record belongs to
(`nnunet3d.py`): the volume is read once, predicted once (resampled to the plans' spacing from the header's voxel
spacing and back), and each slice record takes its slice of the labels, oriented as its image; the step keeps a
volume's slices in one part (`by_volume`). Records that are not slices of a volume (plain images, DICOM frames)
are refused (`no_volume`). Region-based models (BraTS-style label tuples) are refused.
"""

from __future__ import annotations

import json
import pydoc
from pathlib import Path

import numpy as np

from ..errors import ProposeError
from . import nnunet3d
from .base import Refused, Region, gray
from .sliding import normalise, sliding_window
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
    if len(info["patch"]) not in (2, 3):
        raise ProposeError(f"nnunet: {folder} holds a configuration of patch {info['patch']}: neither 2d nor 3d")
    if len(info["patch"]) == 3 and params["zoom"] != 1.0:
        raise ProposeError(
            f"nnunet: zoom is for 2d configurations; {folder} holds the {info['configuration']} configuration, which "
            f"resamples each volume to the plans' spacing {info['spacing']} from the file's voxel spacing: leave zoom at 1"
        )
    return {**params, "folder": str(folder.resolve()), "weights_sha256": digest}


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


def by_volume(params: dict) -> bool:
    """Whether this model works on whole volumes (a 3d configuration): the step then keeps each volume's slices
    in one part, and the stage gives `propose` the record's volume."""
    _, info = cached(load, params["folder"], params["fold"], params["checkpoint"], params["weights_sha256"], "cpu")
    return len(info["patch"]) == 3


def propose(pixels: np.ndarray, values: np.ndarray | None, record: dict, params: dict, volume=None) -> list[Region]:
    """`volume`: a function giving the record's volume (`view.render.record_volume`), or None where there is none."""
    network, info = cached(
        load, params["folder"], params["fold"], params["checkpoint"], params["weights_sha256"], params["device"]
    )
    if len(info["patch"]) == 3:
        whole = volume() if volume is not None else None
        if whole is None:
            raise nnunet3d.needs_volume(record)
        key = (params["folder"], params["fold"], params["checkpoint"], params["weights_sha256"])
        best, confidence = nnunet3d.slice_labels(network, whole, info, key)
    else:
        best, confidence = predict_2d(network, pixels, values, info, params)
    regions = []
    for k, name in enumerate(info["labels"][1:], start=1):
        mask = best == k
        if mask.any() and mask.mean() >= params["min_share"]:
            regions.append(Region(name, mask, round(float(confidence[mask].mean()), 4)))
    return regions


def predict_2d(network, pixels: np.ndarray, values: np.ndarray | None, info: dict, params: dict):
    """The most probable label per pixel of one 2D record, and its probability."""
    from scipy import ndimage

    x = inputs(pixels, values, info)
    h, w = x.shape[1:]
    if params["zoom"] != 1.0:
        x = ndimage.zoom(x, (1, params["zoom"], params["zoom"]), order=1)
    prob, _ = sliding_window(network, x.astype(np.float32), info["patch"], len(info["labels"]))
    if prob.shape[1:] != (h, w):
        prob = ndimage.zoom(prob, (1, h / prob.shape[1], w / prob.shape[2]), order=1)[:, :h, :w]
    best = prob.argmax(0)
    return best, np.take_along_axis(prob, best[None], 0)[0]
