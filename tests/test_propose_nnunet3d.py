"""nnU-Net 3d configurations through `medloom propose`, on a real volume: nilearn's MNI152 T1 template (2 mm),
stored in three orientations (RAS, PLS, and with its axes permuted) and sliced by the NIfTI reader, axially and
coronally. The network is a small 3d PlainConvUNet with random weights of the right shapes; the answer is known
by running the same network independently: one plain forward pass over the whole normalised RAS+ volume (the
patch covers it), argmax, and each slice record's ROIs must be its slice of that, oriented as nifti.py's
`display` shows the record. Also: one prediction per volume however the slices fall into parts, a 2D PNG
refused with the reason, and the plans' spacing reached by resampling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, rows, run_ingest, write_recipe
from PIL import Image
from test_propose_adapters import nnunet_arch

torch = pytest.importorskip("torch")
pytest.importorskip("dynamic_network_architectures")
nib = pytest.importorskip("nibabel")

CROP = (96, 112, 88)  # of MNI152's 99 x 117 x 95 (RAS, 2 mm): each a multiple of 4, the toy U-Net's strides
LABELS = {"background": 0, "grey matter": 1, "white matter": 2}


def mni_ras() -> np.ndarray:
    from nilearn import datasets

    data = np.asarray(datasets.load_mni152_template(resolution=2).dataobj, dtype=np.float32)
    return data[: CROP[0], : CROP[1], : CROP[2]]


def network():
    import pydoc

    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    given = nnunet_arch(3)["arch_kwargs"]
    kwargs = {k: pydoc.locate(v) if k in ("conv_op", "norm_op", "nonlin") else v for k, v in given.items()}
    torch.manual_seed(3)
    return PlainConvUNet(input_channels=1, num_classes=len(LABELS), deep_supervision=False, **kwargs)


def nnunet_3d_folder(root: Path, spacing: list[float], patch: list[int]) -> tuple[Path, object]:
    """A 3d_fullres results folder (plans.json, dataset.json, fold_0/checkpoint_final.pth as nnU-Net writes
    them) with random weights; the last layer's bias spread so that every label wins somewhere."""
    plans = {
        "dataset_name": "Dataset998_BrainT1",
        "plans_name": "nnUNetPlans",
        "configurations": {
            "3d_fullres": {
                "normalization_schemes": ["ZScoreNormalization"],
                "use_mask_for_norm": [False],
                "batch_size": 2,
                "patch_size": patch,
                "spacing": spacing,
                "architecture": nnunet_arch(3),
            }
        },
        "foreground_intensity_properties_per_channel": {},
    }
    dataset = {"channel_names": {"0": "T1"}, "labels": LABELS, "numTraining": 8, "file_ending": ".nii.gz"}
    folder = root / "nnUNet_results" / "Dataset998_BrainT1" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset))
    net = network()
    net.eval()
    checkpoint = {
        "network_weights": net.state_dict(),
        "optimizer_state": {},
        "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0, "dataset_json": dataset},
        "trainer_name": "nnUNetTrainer",
    }
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    return folder, net


def zscore(data: np.ndarray) -> np.ndarray:
    return ((data - data.mean()) / data.std()).astype(np.float32)


def forward(net, x_zyx: np.ndarray) -> np.ndarray:
    """Softmax of one plain forward pass over the whole volume (channels first)."""
    with torch.no_grad():
        return torch.softmax(net(torch.from_numpy(np.ascontiguousarray(x_zyx))[None, None])[0], 0).numpy()


def display(slice2d: np.ndarray) -> np.ndarray:
    """The NIfTI reader's documented display of a RAS+ slice: superior/anterior up, the patient's right on the left."""
    return slice2d.T[::-1, ::-1]


@pytest.fixture(scope="module")
def loom(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("nnunet3d")
    ras = nib.Nifti1Image(mni_ras(), np.diag([2.0, 2.0, 2.0, 1.0]))
    ras.affine[:3, 3] = [-98, -134, -72]
    axial = folder / "data" / "axial"
    axial.mkdir(parents=True)
    nib.save(ras, axial / "a_ras.nii.gz")
    ornt = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), nib.orientations.axcodes2ornt("PLS"))
    nib.save(ras.as_reoriented(ornt), axial / "b_pls.nii.gz")
    coronal = folder / "data" / "coronal"
    coronal.mkdir(parents=True)
    ornt = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), nib.orientations.axcodes2ornt("SAL"))
    nib.save(ras.as_reoriented(ornt), coronal / "c_sal.nii.gz")
    png = folder / "data" / "png" / "brain"
    png.mkdir(parents=True)
    Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))).save(png / "slice.png")
    common = {"reader": "nifti", "modality": "MRI", "anatomy": "brain", "task": "organ recognition"}
    sources = [
        {"name": "axial", "path": "data/axial", "axis": "axial", "stride": 7, **common},
        {"name": "coronal", "path": "data/coronal", "axis": "coronal", "stride": 9, **common},
        {"name": "png", "reader": "imagefolder", "path": "data/png", "modality": "MRI", "anatomy": "brain", "task": "disease"},
    ]
    loaded, _ = run_ingest(write_recipe(folder, sources))
    return loaded


def proposed(loom: Path) -> list[dict]:
    return rows(
        loom,
        "SELECT p.*, r.source, r.uri, r.frame, r.width, r.height FROM proposals p JOIN records r USING (id) "
        "WHERE p.method = 'nnunet' ORDER BY p.id",
    )


def check_slices(got: list[dict], labels_ras: np.ndarray, prob_ras: np.ndarray) -> int:
    """Each NIfTI slice record's ROIs are its slice of `labels_ras`, displayed; returns the ROIs checked."""
    from medloom.imaging import rle_decode

    names = {v: k for k, v in LABELS.items()}
    checked = 0
    for row in got:
        if row["source"] == "png":
            continue
        axis = 2 if row["source"] == "axial" else 1
        want = display(np.take(labels_ras, row["frame"], axis=axis))
        assert want.shape == (row["height"], row["width"])
        present = [int(k) for k in np.unique(want) if k != 0]
        if not present:
            assert (row["status"], row["reason"]) == ("refused", "nothing_found")
            continue
        assert row["status"] == "proposed", row["message"]
        assert [r["label"] for r in row["rois"]] == [names[k] for k in present]
        for roi, k in zip(row["rois"], present):
            mask = rle_decode(roi["rle"], row["height"], row["width"])
            assert np.array_equal(mask, want == k), (row["id"], names[k], int((mask != (want == k)).sum()))
            score = display(np.take(prob_ras[k], row["frame"], axis=axis))[want == k].mean()
            assert roi["score"] == pytest.approx(score, abs=2e-3)
            checked += 1
    return checked


def test_3d_model_runs_once_per_volume_on_its_slices_oriented_as_displayed(loom, tmp_path, monkeypatch):
    from medloom.propose import nnunet3d, step

    data = mni_ras()
    folder, net = nnunet_3d_folder(tmp_path, [2.0, 2.0, 2.0], list(CROP[::-1]))  # the file's spacing, patch = volume
    monkeypatch.setattr(step, "PART", 5)  # a volume's 13 axial slices would otherwise span three parts
    nnunet3d.predictions.clear()
    out = cli("propose", loom, "--method", "nnunet", "--param", f"folder={folder}", "--param", "min_share=0", "-w", "1", "-q")
    assert "refused" in out.stdout

    prob_zyx = forward(net, zscore(data).transpose(2, 1, 0))  # independent: whole RAS+ volume in nnU-Net's axis order
    prob_ras = prob_zyx.transpose(0, 3, 2, 1)
    labels_ras = prob_ras.argmax(0)
    shares = np.bincount(labels_ras.ravel(), minlength=3) / labels_ras.size
    assert (shares > 0.01).all(), shares  # every label wins somewhere: the masks have shape to get wrong
    got = proposed(loom)
    assert {r["source"] for r in got} == {"axial", "coronal", "png"}
    assert check_slices(got, labels_ras, prob_ras) >= 40
    assert sum(r["status"] == "proposed" for r in got) == len(got) - 1  # all but the PNG
    # the three files (RAS, PLS, SAL) each predicted once, though their slices were given in parts of 5
    assert sorted(n for n in nnunet3d.predictions.values()) == [1, 1, 1]
    assert sorted(Path(k[0]).name for k in nnunet3d.predictions) == ["a_ras.nii.gz", "b_pls.nii.gz", "c_sal.nii.gz"]
    import pyarrow.parquet as pq

    parts = sorted(pq.read_table(p).num_rows for p in (loom / "proposals" / "parts" / "nnunet").iterdir())
    assert parts == [1, 13, 13, 13]  # one part per volume (none split at 5), the PNG its own

    (png,) = [r for r in got if r["source"] == "png"]
    assert (png["status"], png["reason"]) == ("refused", "no_volume")
    assert png["message"].startswith("a 3d configuration needs a volume: record ")
    assert "ingest the volume as NIfTI" in png["message"]


def test_3d_model_resamples_to_the_plans_spacing_and_back(loom, tmp_path):
    from scipy import ndimage

    from medloom.propose import nnunet3d

    data = mni_ras()
    grid = tuple(n // 2 for n in CROP[::-1])  # 4 mm: half the voxels along each axis
    folder, net = nnunet_3d_folder(tmp_path, [4.0, 4.0, 4.0], list(grid))
    nnunet3d.predictions.clear()
    cli("propose", loom, "--method", "nnunet", "--param", f"folder={folder}", "--param", "min_share=0", "-w", "1", "-q")
    assert sorted(nnunet3d.predictions.values()) == [1, 1, 1]

    x = ndimage.zoom(zscore(data).transpose(2, 1, 0), 0.5, order=1)  # to 4 mm (order 1)
    assert x.shape == grid
    prob = forward(net, x)
    labels = ndimage.zoom(prob.argmax(0), 2, order=0)  # the argmax back to the 2 mm grid (order 0)
    best = ndimage.zoom(prob.max(0), 2, order=0)
    assert labels.shape == CROP[::-1]
    labels_ras = labels.transpose(2, 1, 0)
    prob_ras = np.stack([np.where(labels_ras == k, best.transpose(2, 1, 0), 0) for k in range(3)])
    got = proposed(loom)
    assert check_slices(got, labels_ras, prob_ras) >= 40


def test_canonical_spacing_follows_the_axes_to_ras(tmp_path):
    from medloom.sources.nifti import canonical_spacing

    affine = np.array([[0, 0, -3.0, 0], [2.0, 0, 0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1]])  # stored axes: A, I, L
    img = nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), affine)
    assert canonical_spacing(img) == (3.0, 2.0, 1.0)
    assert canonical_spacing(img) == tuple(float(z) for z in nib.as_closest_canonical(img).header.get_zooms())
