"""The masks reader, more of the layouts public datasets ship: multi-class masks saved as JPEG (`snap:`,
SICAPv2), an image's class from its folder or name beside its masks (`image_labels:`, BUSI, RIM-ONE DL, FIVES),
and DICOM images with DICOM masks (`dicom_masks` reader, Duke Liver Dataset). Each dataset is built in its
published naming."""

from pathlib import Path

import numpy as np
from conftest import cli, make_image, rows, run_ingest, write_recipe
from PIL import Image

SICAP_NAMES = [
    "16B0001851_Block_Region_1_0_0_xini_6803_yini_59786.jpg",
    "16B0001851_Block_Region_1_0_1_xini_7827_yini_59786.jpg",
]


def save(path: Path, array: np.ndarray, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)


def roi_rows(loom: Path) -> dict[str, list[tuple]]:
    """uri -> [(label, bbox in pixels)] from the catalog."""
    got = {}
    for g in rows(loom, "SELECT uri, width, height, rois FROM records"):
        scale = [g["width"], g["height"]] * 2
        got[g["uri"]] = sorted((r["label"], [round(v * k) for v, k in zip(r["bbox"], scale)]) for r in g["rois"])
    return got


def sicapv2(root: Path) -> None:
    """SICAPv2 (Mendeley 9xxm58dvs3): SICAPv2/images/<slide>_Block_Region_<r>_<i>_<j>_xini_<x>_yini_<y>.jpg and
    SICAPv2/masks/ the same name, a greyscale JPEG whose values are the Gleason grade (0 non-cancerous, 3, 4,
    5): JPEG noise moves them by a few levels; partition/Test/Test.xlsx (not read here)."""
    first = np.zeros((64, 96), np.uint8)
    first[8:32, 8:40] = 3
    first[36:60, 50:90] = 4
    second = np.zeros((64, 96), np.uint8)
    second[10:30, 20:70] = 5
    second[40:60, 10:40] = 128  # no grade: far from every declared value
    for name, mask, seed in zip(SICAP_NAMES, [first, second], [1, 2]):
        make_image(root / "images" / name, size=(96, 64), seed=seed)
        save(root / "masks" / name, mask, quality=75)
    (root / "partition" / "Test").mkdir(parents=True)
    (root / "partition" / "Test" / "Test.xlsx").write_bytes(b"")


SICAP = dict(reader="masks", modality="microscopy", anatomy="prostate", task="lesion segmentation")
GRADES = {3: "gleason 3", 4: "gleason 4", 5: "gleason 5"}


def test_snap_sicapv2_gleason_grades_from_jpeg_masks(tmp_path):
    data = tmp_path / "SICAPv2"
    sicapv2(data)
    snap = {"values": [0, 3, 4, 5], "per_region": True}
    source = dict(name="sicap", path=str(data), snap=snap, mask_labels=GRADES, min_region_pixels=20, **SICAP)
    loom, reports = run_ingest(write_recipe(tmp_path, [source]))
    assert (reports["sicap"].records, reports["sicap"].quarantined_inputs) == (2, 0)
    first, second = (f"images/{n}" for n in SICAP_NAMES)
    assert roi_rows(loom) == {
        # drawn: grade 3 at [8, 8, 40, 32], grade 4 at [50, 36, 90, 60]; JPEG noise adds at most a ring of one pixel
        first: [("gleason 3", [8, 8, 40, 32]), ("gleason 4", [50, 36, 91, 60])],
        # drawn: grade 5 at [20, 10, 70, 30]; the block of 128 (no grade) is left out, but JPEG ringing around it
        # comes within a few levels of 3: the warning row below is the sign to look at this mask
        second: [("gleason 3", [9, 57, 40, 63]), ("gleason 5", [19, 9, 71, 31])],
    }
    assert {r["uri"]: r["labels"] for r in rows(loom, "SELECT uri, labels FROM records")} == {
        first: ["gleason 3", "gleason 4"],
        second: ["gleason 3", "gleason 5"],
    }
    q = rows(loom, "SELECT path, reason, scope, message FROM quarantine")
    assert [(x["path"], x["reason"], x["scope"]) for x in q] == [(second, "mask_values_off", "warning")]
    assert q[0]["message"].startswith(
        f"mask masks/{SICAP_NAMES[1]}: 600 of 6144 pixels (9.8%) are more than 16 grey levels from every value "
        "in `snap` [0, 3, 4, 5] (values 107, 121,"
    )
    # nearest value alone: grades one grey level apart are mixed inside a region by the JPEG noise
    plain = dict(source, snap=[0, 3, 4, 5])
    loom, _ = run_ingest(write_recipe(tmp_path / "plain", [plain]))
    assert rows(loom, f"SELECT labels FROM records WHERE uri = '{first}'")[0]["labels"] == [
        "gleason 3",
        "gleason 4",
        "gleason 5",
    ]
    # read as plain values, the noise makes labels of its own
    loom, _ = run_ingest(write_recipe(tmp_path / "raw", [dict(name="sicap", path=str(data), **SICAP)]))
    assert len(rows(loom, f"SELECT labels FROM records WHERE uri = '{first}'")[0]["labels"]) > 4


def test_snap_with_binarize_is_a_recipe_error(tmp_path):
    data = tmp_path / "SICAPv2"
    sicapv2(data)
    source = dict(name="sicap", path=str(data), snap=[0, 3, 4, 5], binarize=128, **SICAP)
    result = cli("ingest", str(write_recipe(tmp_path, [source])), check=False)
    assert result.returncode != 0
    assert "give one of binarize, snap, palette" in result.stdout + result.stderr


def lesion(shape: tuple[int, int], box: tuple[int, int, int, int] | None) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    if box:
        x0, y0, x1, y1 = box
        mask[y0:y1, x0:x1] = 255
    return mask


def test_image_labels_busi_class_from_the_folder_and_tumour_rois_from_the_masks(tmp_path):
    """BUSI (Kaggle): Dataset_BUSI_with_GT/{benign,malignant,normal}/benign (1).png beside benign (1)_mask.png
    (and a second `_mask_1.png`); normal images have empty masks."""
    busi = tmp_path / "Dataset_BUSI_with_GT"
    for rel, box in [
        ("benign/benign (1)", (5, 5, 15, 15)),
        ("malignant/malignant (1)", (20, 10, 40, 30)),
        ("normal/normal (1)", None),
    ]:
        make_image(busi / f"{rel}.png", size=(48, 40), seed=len(rel))
        save(busi / f"{rel}_mask.png", lesion((40, 48), box))
    save(busi / "benign" / "benign (1)_mask_1.png", lesion((40, 48), (30, 20, 40, 30)))
    make_image(busi / "extra" / "extra (1).png", size=(48, 40))  # a folder the pattern does not name
    save(busi / "extra" / "extra (1)_mask.png", lesion((40, 48), None))
    source = dict(
        name="busi",
        reader="masks",
        path=str(busi),
        images_dir=".",
        masks_dir=".",
        mask_pattern="{stem}_mask*.png",
        mask_label="tumor",
        image_labels={"pattern": "^(?P<label>benign|malignant|normal)/"},
        modality="ultrasound",
        anatomy="breast",
        task="lesion segmentation",
    )
    loom, reports = run_ingest(write_recipe(tmp_path, [source]))
    assert (reports["busi"].records, reports["busi"].quarantined_inputs) == (3, 1)
    got = {r["uri"]: r["labels"] for r in rows(loom, "SELECT uri, labels FROM records")}
    # the record's labels: the image's class and its ROIs' labels; the ROIs keep the mask's label only
    assert got == {
        "benign/benign (1).png": ["benign", "tumor"],
        "malignant/malignant (1).png": ["malignant", "tumor"],
        "normal/normal (1).png": ["normal"],
    }
    assert roi_rows(loom) == {
        "benign/benign (1).png": [("tumor", [5, 5, 15, 15]), ("tumor", [30, 20, 40, 30])],
        "malignant/malignant (1).png": [("tumor", [20, 10, 40, 30])],
        "normal/normal (1).png": [],
    }
    q = rows(loom, "SELECT path, reason, message FROM quarantine")
    assert [(x["path"], x["reason"]) for x in q] == [("extra/extra (1).png", "name_not_matched")]
    assert "does not match the image_labels pattern" in q[0]["message"]


def test_image_labels_fives_diagnosis_letter_from_the_name_with_label_map(tmp_path):
    """FIVES (figshare 19688169): train/Original/1_A.png and train/Ground truth/1_A.png, the letter after the
    number the diagnosis (A AMD, D diabetic retinopathy, G glaucoma, N normal)."""
    root = tmp_path / "FIVES A Fundus Image Dataset for AI-based Vessel Segmentation"
    for name in ["1_A.png", "201_D.png", "401_G.png", "601_N.png"]:
        make_image(root / "train" / "Original" / name, size=(40, 40), seed=int(name.split("_")[0]))
        save(root / "train" / "Ground truth" / name, lesion((40, 40), (10, 10, 30, 20)))
    source = dict(
        name="fives",
        reader="masks",
        path=str(root),
        images_dir="train/Original",
        masks=[{"dir": "train/Ground truth", "label": "retinal vessels"}],
        image_labels={"pattern": r"_(?P<label>[ADGN])\.png$", "match": "name"},
        label_map={"A": "age-related macular degeneration", "D": "diabetic retinopathy", "G": "glaucoma", "N": "normal"},
        modality="fundus photography",
        anatomy="eye",
        task="organ segmentation",
    )
    loom, reports = run_ingest(write_recipe(tmp_path, [source]))
    assert (reports["fives"].records, reports["fives"].quarantined_inputs) == (4, 0)
    got = {r["uri"]: r["labels"] for r in rows(loom, "SELECT uri, labels FROM records")}
    assert got == {
        "train/Original/1_A.png": ["age-related macular degeneration", "retinal vessels"],
        "train/Original/201_D.png": ["diabetic retinopathy", "retinal vessels"],
        "train/Original/401_G.png": ["glaucoma", "retinal vessels"],
        "train/Original/601_N.png": ["normal", "retinal vessels"],
    }
    assert all(v == [("retinal vessels", [10, 10, 30, 20])] for v in roi_rows(loom).values())
