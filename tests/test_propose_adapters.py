"""Expert-model adapters of `medloom propose` (lungmask, cellpose, nnunet, sam) through the CLI, with weights of
the right shapes made by the test (random, then the last layer set so the answer is known): proposals carry
method, version, parameters and the weights' hash; missing weights are refused before any record is read,
naming the file; weights that do not fit the network are a clear error.

Sources: pydicom's CT_small.dcm (an axial CT slice, HU through its rescale intercept) read by the dicom reader;
a CT slice saved as PNG (a Kaggle-style classification folder: no HU); a fluorescence-microscopy-style PNG of
bright cells in an imagefolder; chest radiographs with RSNA-style boxes (`patientId,x,y,width,height,Target`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, rows, run_ingest, write_recipe
from PIL import Image

torch = pytest.importorskip("torch")


def cells_image(path: Path) -> None:
    yy, xx = np.mgrid[0:64, 0:64]
    img = np.full((64, 64), 10.0)
    for cy, cx in ((16, 16), (20, 44), (46, 30)):
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= 36] = 200
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img.astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def loom(tmp_path_factory) -> Path:
    pydicom_data = pytest.importorskip("pydicom.data")
    folder = tmp_path_factory.mktemp("adapters")
    ct = folder / "data" / "ct"
    ct.mkdir(parents=True)
    shutil.copy(pydicom_data.get_testdata_file("CT_small.dcm"), ct / "CT_small.dcm")
    png = folder / "data" / "ct-png" / "covid"
    png.mkdir(parents=True)
    Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))).save(png / "slice1.png")
    cells_image(folder / "data" / "cells" / "hela" / "cells1.png")
    rsna = folder / "data" / "rsna"
    rsna.mkdir(parents=True)
    for pid in ("p1", "p2"):
        Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(rsna / f"{pid}.png")
    (rsna / "stage_2_train_labels.csv").write_text(
        "patientId,x,y,width,height,Target\np1,8,8,20,24,1\np1,36,10,20,30,1\np2,,,,,0\n"
    )
    sources = [
        {"name": "ct", "reader": "dicom", "path": "data/ct", "anatomy": "chest", "task": "disease"},
        {
            "name": "ct-png",
            "reader": "imagefolder",
            "path": "data/ct-png",
            "modality": "CT",
            "anatomy": "lung",
            "task": "disease",
        },
        {
            "name": "cells",
            "reader": "imagefolder",
            "path": "data/cells",
            "modality": "microscopy",
            "anatomy": "cell",
            "task": "disease",
        },
        {
            "name": "rsna",
            "reader": "csv",
            "path": "data/rsna",
            "csv": "stage_2_train_labels.csv",
            "image_column": "patientId",
            "image_template": "{value}.png",
            "label_column": "Target",
            "label_map": {"0": "normal", "1": "pneumonia"},
            "box_columns": {"format": "xywh", "x": "x", "y": "y", "width": "width", "height": "height"},
            "modality": "X-ray",
            "anatomy": "chest",
            "task": "disease",
        },
    ]
    loaded, _ = run_ingest(write_recipe(folder, sources))
    return loaded


def proposals(loom: Path, method: str) -> dict[str, dict]:
    return {r["id"].split("/")[0]: r for r in rows(loom, f"SELECT * FROM proposals WHERE method = '{method}' ORDER BY id")}


def constant_last(network, layer, bias: list[float]) -> None:
    """Random weights everywhere, then the last layer answers `bias` at every pixel: a known answer."""
    torch.manual_seed(0)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.copy_(torch.tensor(bias))


def test_lungmask_runs_end_to_end_and_refuses_missing_or_unfit_weights(loom, tmp_path):
    from medloom.propose.lungmask import unet

    network = unet(3)
    constant_last(network, network.last, [0.0, 5.0, 0.0])  # class 1 (right lung) everywhere
    weights = tmp_path / "unet_r231.pth"
    torch.save(network.state_dict(), weights)
    missing = cli("propose", loom, "--method", "lungmask", check=False)
    assert missing.returncode == 2 and "lungmask needs --param weights=PATH" in " ".join(missing.stderr.split())
    gone = cli("propose", loom, "--method", "lungmask", "--param", f"weights={tmp_path / 'nope.pth'}", check=False)
    assert gone.returncode == 2 and "nope.pth' is not a file" in " ".join(gone.stderr.split())
    assert not (loom / "proposals" / "parts" / "lungmask").exists()  # refused before any record was read
    state = network.state_dict()
    state["last.weight"] = torch.zeros(3, 32, 1, 1)
    torch.save(state, tmp_path / "bad.pth")
    bad = cli("propose", loom, "--method", "lungmask", "--param", f"weights={tmp_path / 'bad.pth'}", check=False)
    assert bad.returncode == 2 and "1 wrong shape: last.weight (3, 32, 1, 1) (expected (3, 64, 1, 1))" in " ".join(
        bad.stderr.split()
    )
    out = cli("propose", loom, "--method", "lungmask", "--param", f"weights={weights}", "-w", "1", "-q")
    assert "lungmask (version 1)" in out.stdout
    got = proposals(loom, "lungmask")
    ct = got["ct"]
    assert ct["status"] == "proposed" and ct["version"] == "1"
    params = json.loads(ct["params"])
    assert params["weights"] == str(weights.resolve()) and len(params["weights_sha256"]) == 16
    (roi,) = ct["rois"]
    assert (roi["label"], roi["method"], roi["roi_source"]) == ("right lung", "lungmask", "proposal")
    assert roi["score"] == pytest.approx(np.exp(5) / (np.exp(5) + 2), abs=1e-3) and roi["area"] > 0.3
    assert (got["ct-png"]["status"], got["ct-png"]["reason"]) == ("refused", "no_hounsfield_units")
    assert (got["cells"]["status"], got["cells"]["reason"]) == ("refused", "not_suited")


def test_cellpose_flows_to_masks_and_end_to_end(loom, tmp_path):
    from medloom.propose.cellpose import DEFAULTS, cpnet, masks_from_flows

    # two discs whose flows point at their centres: two masks, each its disc
    yy, xx = np.mgrid[0:40, 0:40]
    flows, prob = np.zeros((2, 40, 40), np.float32), np.full((40, 40), -5.0, np.float32)
    for cy, cx in ((10, 10), (28, 26)):
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 25
        prob[disc] = 5
        flows[0][disc], flows[1][disc] = np.sign(cy - yy[disc]) * 5, np.sign(cx - xx[disc]) * 5
    labels = masks_from_flows(flows, prob, {**DEFAULTS, "min_size": 5})
    assert len(np.unique(labels)) == 3 and (labels[prob <= 0] == 0).all()
    for cy, cx in ((10, 10), (28, 26)):
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 25
        assert len(np.unique(labels[disc])) == 1 and labels[cy, cx] > 0

    network = cpnet([2, 8, 16, 32, 64], 3)
    constant_last(network, network.output[2], [0.0, 0.0, 3.0])  # no flow, cell probability 3 everywhere
    weights = tmp_path / "cyto3"
    torch.save(network.state_dict(), weights)
    cli("propose", loom, "--method", "cellpose", "--param", f"weights={weights}", "--param", "max_share=1.0", "-w", "1", "-q")
    got = proposals(loom, "cellpose")
    cells = got["cells"]
    assert cells["status"] == "proposed" and json.loads(cells["params"])["diameter"] == 30.0
    (roi,) = cells["rois"]  # no flow: every pixel stays where it is, one touching group
    assert (roi["label"], roi["method"], roi["area"]) == ("cell", "cellpose", 1.0)
    assert roi["score"] == pytest.approx(1 / (1 + np.exp(-3)), abs=1e-3)
    assert (got["ct"]["status"], got["ct"]["reason"]) == ("refused", "not_suited")
    from medloom.propose.lungmask import unet

    torch.save(unet(3).state_dict(), tmp_path / "lung.pth")
    wrong = cli("propose", loom, "--method", "cellpose", "--param", f"weights={tmp_path / 'lung.pth'}", check=False)
    assert wrong.returncode == 2 and "is not a CPnet state dict" in " ".join(wrong.stderr.split())


def tiny_sam(folder: Path, hidden: int = 32) -> None:
    """A transformers SamModel of SAM's structure at a toy size (image 64, patches of 8), random weights."""
    from transformers import SamConfig, SamMaskDecoderConfig, SamModel, SamPromptEncoderConfig, SamVisionConfig

    torch.manual_seed(0)
    vision = SamVisionConfig(
        hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2, image_size=64, patch_size=8, output_channels=16
    )
    vision.update({"window_size": 4, "global_attn_indexes": [1], "mlp_dim": 64, "num_pos_feats": 8})
    prompt = SamPromptEncoderConfig(hidden_size=16, image_size=64, patch_size=8, mask_input_channels=4)
    decoder = SamMaskDecoderConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, mlp_dim=32, iou_head_hidden_dim=16)
    config = SamConfig(
        vision_config=vision.to_dict(), prompt_encoder_config=prompt.to_dict(), mask_decoder_config=decoder.to_dict()
    )
    SamModel(config).save_pretrained(folder)


def test_sam_prompted_by_the_records_boxes(loom, tmp_path):
    pytest.importorskip("transformers")
    folder = tmp_path / "sam-vit-tiny"
    tiny_sam(folder)
    cli("propose", loom, "--method", "sam", "--param", f"folder={folder}", "-w", "1", "-q")
    got = {r["id"]: r for r in rows(loom, "SELECT * FROM proposals WHERE method = 'sam' ORDER BY id")}
    boxes = {r["id"]: r["rois"] for r in rows(loom, "SELECT id, rois FROM records WHERE source = 'rsna'")}
    with_boxes = [i for i, b in boxes.items() if b]
    assert len(with_boxes) == 1 and len(boxes[with_boxes[0]]) == 2  # p1: two pneumonia boxes; p2: Target 0
    p1 = got[with_boxes[0]]
    assert p1["status"] == "proposed" and json.loads(p1["params"])["weights_sha256"]
    assert [(r["label"], r["method"], r["roi_source"]) for r in p1["rois"]] == [("pneumonia", "sam", "proposal")] * 2
    assert all(0 <= r["score"] <= 1 for r in p1["rois"])
    others = {(p["status"], p["reason"]) for i, p in got.items() if i != with_boxes[0]}
    assert others == {("refused", "not_suited")}  # no box to prompt with (p2, the CTs, the cells)
    (folder / "config.json").rename(tmp_path / "config.json")
    gone = cli("propose", loom, "--method", "sam", "--param", f"folder={folder}", check=False)
    assert gone.returncode == 2 and "config.json is missing" in " ".join(gone.stderr.split())
    wide = tmp_path / "wide"
    tiny_sam(wide, hidden=48)
    (tmp_path / "config.json").rename(wide / "config.json")  # a 32-wide config over 48-wide weights
    bad = cli("propose", loom, "--method", "sam", "--param", f"folder={wide}", check=False)
    assert bad.returncode == 2 and "do not fit its config.json's SamModel: 30 mismatched keys" in " ".join(bad.stderr.split())


def nnunet_arch(dim: int) -> dict:
    """A toy PlainConvUNet's plans entry (`architecture`) in 2 or 3 dimensions, as nnU-Net 2.4+ writes it."""
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": 3,
            "features_per_stage": [4, 8, 16],
            "conv_op": f"torch.nn.modules.conv.Conv{dim}d",
            "kernel_sizes": [[3] * dim] * 3,
            "strides": [[1] * dim, [2] * dim, [2] * dim],
            "n_conv_per_stage": [2, 2, 2],
            "n_conv_per_stage_decoder": [2, 2],
            "conv_bias": True,
            "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dim}d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def nnunet_folder(root: Path, configuration: str = "2d") -> Path:
    """An nnU-Net v2 results folder in its real layout (nnUNet_results/Dataset.../TRAINER__PLANS__CONF with
    plans.json, dataset.json, fold_0/checkpoint_final.pth as nnUNetTrainer.save_checkpoint writes it), a toy
    PlainConvUNet whose last layer says `lung` everywhere."""
    pytest.importorskip("dynamic_network_architectures")
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    common = {"normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False], "batch_size": 2}
    plans = {
        "dataset_name": "Dataset999_ChestCT",
        "plans_name": "nnUNetPlans",
        "configurations": {
            "2d": {**common, "patch_size": [48, 48], "spacing": [0.7, 0.7], "architecture": nnunet_arch(2)},
            "3d_fullres": {**common, "patch_size": [16, 32, 32], "spacing": [1.5, 1.5, 1.5], "architecture": nnunet_arch(3)},
        },
        "foreground_intensity_properties_per_channel": {
            "0": {
                "max": 1500.0,
                "mean": -200.0,
                "median": -100.0,
                "min": -1024.0,
                "percentile_00_5": -1000.0,
                "percentile_99_5": 900.0,
                "std": 350.0,
            }
        },
    }
    dataset = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "lung": 1, "vertebra": 2},
        "numTraining": 8,
        "file_ending": ".nii.gz",
    }
    folder = root / "nnUNet_results" / "Dataset999_ChestCT" / f"nnUNetTrainer__nnUNetPlans__{configuration}"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset))
    kwargs = plans["configurations"][configuration]["architecture"]["arch_kwargs"]
    import pydoc

    built = {k: pydoc.locate(v) if k in ("conv_op", "norm_op", "nonlin") else v for k, v in kwargs.items()}
    torch.manual_seed(0)
    network = PlainConvUNet(input_channels=1, num_classes=3, deep_supervision=False, **built)
    constant_last(network, network.decoder.seg_layers[-1], [0.0, 4.0, 0.0])
    checkpoint = {
        "network_weights": network.state_dict(),
        "optimizer_state": {},
        "grad_scaler_state": None,
        "logging": {"mean_fg_dice": [np.float64(0.5)], "ema_fg_dice": [np.float64(0.5)]},
        "_best_ema": np.float64(0.5),
        "current_epoch": 1000,
        "init_args": {
            "plans": plans,
            "configuration": configuration,
            "fold": 0,
            "dataset_json": dataset,
            "device": torch.device("cpu"),
        },
        "trainer_name": "nnUNetTrainer",
        "inference_allowed_mirroring_axes": (0, 1),
    }
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    return folder


def test_nnunet_results_folder_2d_runs_3d_needs_a_volume(loom, tmp_path):
    folder = nnunet_folder(tmp_path)
    cli("propose", loom, "--method", "nnunet", "--param", f"folder={folder}", "-w", "1", "-q")
    got = proposals(loom, "nnunet")
    ct = got["ct"]
    assert ct["status"] == "proposed" and json.loads(ct["params"])["fold"] == "0"
    (roi,) = ct["rois"]
    assert (roi["label"], roi["method"], roi["area"]) == ("lung", "nnunet", 1.0)
    assert roi["score"] == pytest.approx(np.exp(4) / (np.exp(4) + 2), abs=1e-3)
    assert (got["ct-png"]["status"], got["ct-png"]["reason"]) == ("refused", "no_hounsfield_units")  # CT normalisation
    fold = cli("propose", loom, "--method", "nnunet", "--param", f"folder={folder}", "--param", "fold=1", check=False)
    assert (
        fold.returncode == 2
        and "fold_1/checkpoint_final.pth is missing" in fold.stderr
        and "this folder has fold_0" in fold.stderr
    )
    three = nnunet_folder(tmp_path / "3d", "3d_fullres")  # runs on volumes (test_propose_nnunet3d.py): none here
    cli("propose", loom, "--method", "nnunet", "--param", f"folder={three}", "-w", "1", "-q")
    got = proposals(loom, "nnunet")
    assert {(p["status"], p["reason"]) for p in got.values()} == {("refused", "no_volume")}
    assert got["ct"]["message"].startswith("a 3d configuration needs a volume: record ")  # a DICOM frame
    zoomed = cli("propose", loom, "--method", "nnunet", "--param", f"folder={three}", "--param", "zoom=0.5", check=False)
    assert zoomed.returncode == 2 and "zoom is for 2d configurations" in " ".join(zoomed.stderr.split())
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "lung": 1}}))
    unfit = cli("propose", loom, "--method", "nnunet", "--param", f"folder={folder}", check=False)
    assert unfit.returncode == 2 and "decoder.seg_layers.1.weight (3, 4, 1, 1) (expected (2, 4, 1, 1))" in " ".join(
        unfit.stderr.split()
    )
