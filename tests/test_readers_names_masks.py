"""Readers, issue 34 items 4 and 6: files left out by glob (`exclude:`), labels and facts from file names and
paths (`names` reader), and masks as public datasets ship them (several per image, beside the images, lossy
JPEG, RGB palettes). Each dataset is built in its published naming."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, make_image, rows, run_ingest, write_recipe
from PIL import Image
from readers_common import roi_rows, save_array

from medloom.errors import RecipeError
from medloom.imaging import rle_decode
from medloom.recipe import load_recipe
from medloom.records import salted_id


def isic_task1(root: Path, n: int = 3) -> Path:
    """ISIC 2018 Task 1-2: `ISIC2018_Task1-2_Training_Input/ISIC_0000000.jpg` beside its
    `ISIC_0000000_superpixels.png` (an RGB-encoded superpixel index, no image), the lesion masks in
    `ISIC2018_Task1_Training_GroundTruth/ISIC_0000000_segmentation.png` (0/255)."""
    for i in range(n):
        stem = f"ISIC_{i:07d}"
        make_image(root / "ISIC2018_Task1-2_Training_Input" / f"{stem}.jpg", size=(40, 30), seed=i)
        make_image(root / "ISIC2018_Task1-2_Training_Input" / f"{stem}_superpixels.png", size=(40, 30), seed=100 + i)
        mask = np.zeros((30, 40), np.uint8)
        mask[5:20, 10:30] = 255
        path = root / "ISIC2018_Task1_Training_GroundTruth" / f"{stem}_segmentation.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(path)
    (root / "ISIC2018_Task1-2_Training_Input" / "LICENSE.txt").write_text("CC-BY-NC")
    return root


def isic_source(root: Path, **kw) -> dict:
    return dict(
        name="isic",
        reader="masks",
        path=str(root),
        images_dir="ISIC2018_Task1-2_Training_Input",
        masks_dir="ISIC2018_Task1_Training_GroundTruth",
        mask_pattern="{stem}_segmentation.png",
        mask_label="lesion",
        modality="dermoscopy",
        anatomy="skin",
        task="lesion segmentation",
        **kw,
    )


def test_exclude_leaves_isic_superpixels_out_unread_and_counted(tmp_path):
    data = isic_task1(tmp_path / "isic")
    # an excluded file is never opened: one that cannot even be listed as a file would be quarantined otherwise
    (data / "ISIC2018_Task1-2_Training_Input" / "ISIC_0000009_superpixels.png").symlink_to("nowhere.png")
    loom, reports = run_ingest(write_recipe(tmp_path, [isic_source(data, exclude="*_superpixels.png")]))
    r = reports["isic"]
    assert (r.records, r.quarantined_inputs) == (3, 0)
    assert r.filtered == {"excluded": 4, "not an image file": 1}
    assert r.inputs == 3 + 4 + 1
    got = rows(loom, "SELECT uri, labels FROM records ORDER BY uri")
    assert [g["uri"] for g in got] == [f"ISIC2018_Task1-2_Training_Input/ISIC_{i:07d}.jpg" for i in range(3)]
    assert all(g["labels"] == ["lesion"] for g in got)
    assert rows(loom, "SELECT * FROM quarantine") == []


def test_exclude_by_relative_path_and_for_a_table_reader(tmp_path):
    """ISIC 2018 Task 3: `ISIC2018_Task3_Training_GroundTruth.csv` (`image,MEL,NV,BCC,AKIEC,BKL,DF,VASC`, one-hot
    `1.0`/`0.0`); a glob with `/` is on the path from the root; a file the table names is left out too."""
    root = tmp_path / "isic3"
    header = "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC"
    lines = [header]
    for i, cls in enumerate(["NV", "MEL", "NV", "BKL"]):
        stem = f"ISIC_{24306 + i:07d}"
        make_image(root / "ISIC2018_Task3_Training_Input" / f"{stem}.jpg", size=(32, 24), seed=i)
        lines.append(",".join([stem, *("1.0" if c == cls else "0.0" for c in header.split(",")[1:])]))
    (root / "ISIC2018_Task3_Training_GroundTruth.csv").write_text("\n".join(lines) + "\n")
    source = dict(
        name="isic3",
        reader="csv",
        path=str(root),
        csv="ISIC2018_Task3_Training_GroundTruth.csv",
        image_column="image",
        image_template="ISIC2018_Task3_Training_Input/{value}.jpg",
        label_columns=header.split(",")[1:],
        exclude=["ISIC2018_Task3_Training_Input/ISIC_002430[67].jpg", "nothing-*.png"],
        modality="dermoscopy",
        anatomy="skin",
        task="disease",
    )
    loom, reports = run_ingest(write_recipe(tmp_path, [source]))
    r = reports["isic3"]
    assert (r.records, r.filtered, r.quarantined_inputs) == (2, {"excluded": 2}, 0)
    got = rows(loom, "SELECT uri, labels FROM records ORDER BY uri")
    assert [(Path(g["uri"]).name, g["labels"]) for g in got] == [("ISIC_0024308.jpg", ["NV"]), ("ISIC_0024309.jpg", ["BKL"])]


# ---- labels and facts from names and paths (`names`) ---------------------------------------------------------


def names_source(name: str, root: Path, pattern: str, **kw) -> dict:
    return dict(name=name, reader="names", path=str(root), pattern=pattern, **kw)


def test_names_acrima_shenzhen_montgomery_labels_from_the_file_name(tmp_path):
    # ACRIMA (fundus, glaucoma): Database/Images/Im001_ACRIMA.jpg is normal, Im311_g_ACRIMA.jpg glaucomatous
    acrima = tmp_path / "ACRIMA" / "Database" / "Images"
    for name in ("Im001_ACRIMA.jpg", "Im002_ACRIMA.jpg", "Im311_g_ACRIMA.jpg"):
        make_image(acrima / name, size=(40, 40), seed=len(name) + int(name[2:5]))
    # Shenzhen: ChinaSet_AllFiles/CXR_png/CHNCXR_0001_0.png (0 normal, 1 tuberculosis), readings as .txt beside;
    # Montgomery: MontgomerySet/CXR_png/MCUCXR_0001_0.png and its lung masks under ManualMask/, same names
    china = tmp_path / "ChinaSet_AllFiles"
    for i, name in enumerate(["CHNCXR_0001_0.png", "CHNCXR_0327_1.png"]):
        make_image(china / "CXR_png" / name, size=(48, 40), seed=10 + i, mode="L")
        (china / "ClinicalReadings").mkdir(exist_ok=True)
        reading = ["male 45yrs\nnormal\n", "female 30yrs\nPTB in the left upper field\n"][i]
        (china / "ClinicalReadings" / name.replace(".png", ".txt")).write_text(reading)
    mont = tmp_path / "MontgomerySet"
    for i, name in enumerate(["MCUCXR_0001_0.png", "MCUCXR_0104_1.png"]):
        make_image(mont / "CXR_png" / name, size=(48, 40), seed=20 + i, mode="L")
        for side in ("leftMask", "rightMask"):
            make_image(mont / "ManualMask" / side / name, size=(48, 40), seed=30 + i, mode="L")
    cxr = dict(modality="X-ray", anatomy="chest", task="disease", label_map={"0": "normal", "1": "tuberculosis"})
    tb = r"^(?:CHN|MCU)CXR_(?P<number>\d{4})_(?P<label>[01])\.png$"
    loom, reports = run_ingest(
        write_recipe(
            tmp_path,
            [
                names_source(
                    "acrima",
                    tmp_path / "ACRIMA",
                    r"^Im(?P<number>\d+)_(?P<label>g_)?ACRIMA\.jpg$",
                    label_map={"g_": "glaucoma", "": "normal"},
                    modality="fundus photography",
                    anatomy="eye",
                    task="disease",
                ),
                names_source("shenzhen", china, tb, caption_files="ClinicalReadings/{stem}.txt", **cxr),
                names_source("montgomery", mont, tb, exclude="ManualMask/*", **cxr),
            ],
        )
    )
    assert (reports["shenzhen"].records, reports["shenzhen"].filtered) == (2, {"not an image file": 2})
    assert (reports["montgomery"].records, reports["montgomery"].filtered) == (2, {"excluded": 4})
    got = {(g["source"], g["uri"]): (g["labels"], json.loads(g["meta"])) for g in rows(loom, "SELECT * FROM records")}
    assert got == {
        ("acrima", "Database/Images/Im001_ACRIMA.jpg"): (["normal"], {"number": "001"}),
        ("acrima", "Database/Images/Im002_ACRIMA.jpg"): (["normal"], {"number": "002"}),
        ("acrima", "Database/Images/Im311_g_ACRIMA.jpg"): (["glaucoma"], {"number": "311"}),
        ("shenzhen", "CXR_png/CHNCXR_0001_0.png"): (["normal"], {"number": "0001"}),
        ("shenzhen", "CXR_png/CHNCXR_0327_1.png"): (["tuberculosis"], {"number": "0327"}),
        ("montgomery", "CXR_png/MCUCXR_0001_0.png"): (["normal"], {"number": "0001"}),
        ("montgomery", "CXR_png/MCUCXR_0104_1.png"): (["tuberculosis"], {"number": "0104"}),
    }
    assert rows(loom, "SELECT * FROM quarantine") == []
    readings = {r["uri"]: r["caption"] for r in rows(loom, "SELECT uri, caption FROM records WHERE source = 'shenzhen'")}
    assert readings == {
        "CXR_png/CHNCXR_0001_0.png": "male 45yrs\nnormal",
        "CXR_png/CHNCXR_0327_1.png": "female 30yrs\nPTB in the left upper field",
    }
    space = rows(loom, "SELECT DISTINCT label_space FROM records WHERE source = 'acrima'")
    assert space == [{"label_space": ["glaucoma", "normal"]}]


def breakhis(root: Path) -> Path:
    """BreakHis v1: BreaKHis_v1/histology_slides/breast/{benign,malignant}/SOB/SUBTYPE/SOB_B_A_14-22549AB/40X/
    SOB_B_A-14-22549AB-40-001.png: class, tumour subtype, the patient's slide and the magnification."""
    breast = root / "BreaKHis_v1" / "histology_slides" / "breast"
    files = [
        "benign/SOB/adenosis/SOB_B_A_14-22549AB/40X/SOB_B_A-14-22549AB-40-001.png",
        "benign/SOB/adenosis/SOB_B_A_14-22549AB/100X/SOB_B_A-14-22549AB-100-001.png",
        "malignant/SOB/ductal_carcinoma/SOB_M_DC_14-16716/400X/SOB_M_DC-14-16716-400-013.png",
    ]
    for i, f in enumerate(files):
        make_image(breast / f, size=(70, 46), seed=40 + i)
    return root


def test_names_breakhis_class_subtype_patient_and_magnification_from_the_path(tmp_path):
    data = breakhis(tmp_path / "breakhis")
    pattern = (
        r"/(?P<label>benign|malignant)/SOB/(?P<subtype>[a-z_]+)/SOB_[BM]_[A-Z]+_(?P<patient>[0-9A-Z-]+)/"
        r"(?P<magnification>\d+)X/SOB_[BM]_[A-Z]+-[0-9A-Z-]+-\d+-(?P<image>\d+)\.png$"
    )
    source = names_source(
        "breakhis",
        data,
        pattern,
        match="path",
        labels=["label", "subtype"],
        label_map={"ductal_carcinoma": "ductal carcinoma"},
        modality="pathology",
        anatomy="breast",
        task="cancer",
    )
    loom, reports = run_ingest(write_recipe(tmp_path, [source]))
    assert reports["breakhis"].records == 3
    got = sorted(rows(loom, "SELECT id, uri, labels, patient_id, meta FROM records"), key=lambda g: g["uri"])
    assert [(g["labels"], json.loads(g["meta"])) for g in got] == [
        (["benign", "adenosis"], {"magnification": "100", "image": "001"}),
        (["benign", "adenosis"], {"magnification": "40", "image": "001"}),
        (["malignant", "ductal carcinoma"], {"magnification": "400", "image": "013"}),
    ]
    assert [g["patient_id"] for g in got] == [salted_id("test-salt", p) for p in ("14-22549AB", "14-22549AB", "14-16716")]
    # the slide id is in the path: record ids are keyed hashes of it, the catalog's uri keeps the path
    assert not any("22549" in g["id"] or "16716" in g["id"] for g in got)
    assert got[0]["uri"].endswith("SOB_B_A-14-22549AB-100-001.png")


def palm(root: Path) -> Path:
    """PALM (iChallenge pathologic myopia): PALM-Training400/N0001.jpg normal, H0001.jpg high myopia,
    P0001.jpg pathologic myopia."""
    for i, name in enumerate(["N0001.jpg", "H0001.jpg", "P0001.jpg", "P0002.jpg"]):
        make_image(root / "PALM-Training400" / name, size=(50, 50), seed=60 + i)
    return root


PALM = dict(
    label_map={"N": "normal", "H": "high myopia", "P": "pathologic myopia"},
    modality="fundus photography",
    anatomy="eye",
    task="disease",
)


def test_names_palm_prefix_and_a_file_the_pattern_does_not_match(tmp_path):
    data = palm(tmp_path / "palm")
    (data / "PALM-Training400" / "N0001 (1).jpg").write_bytes((data / "PALM-Training400" / "N0001.jpg").read_bytes())
    loom, reports = run_ingest(write_recipe(tmp_path, [names_source("palm", data, r"^(?P<label>[NHP])\d{4}\.jpg$", **PALM)]))
    r = reports["palm"]
    assert (r.records, r.quarantined_inputs, r.error) == (4, 1, None)
    got = {g["uri"]: g["labels"] for g in rows(loom, "SELECT uri, labels FROM records")}
    assert got == {
        "PALM-Training400/N0001.jpg": ["normal"],
        "PALM-Training400/H0001.jpg": ["high myopia"],
        "PALM-Training400/P0001.jpg": ["pathologic myopia"],
        "PALM-Training400/P0002.jpg": ["pathologic myopia"],
    }
    assert [(q["path"], q["reason"]) for q in rows(loom, "SELECT * FROM quarantine")] == [
        ("PALM-Training400/N0001 (1).jpg", "name_not_matched")
    ]


def test_names_a_pattern_that_matches_nothing_fails_the_source_and_the_command(tmp_path):
    data = palm(tmp_path / "palm")
    recipe = write_recipe(tmp_path, [names_source("palm", data, r"^(?P<label>[nhp])\d{4}\.jpg$", **PALM)])
    _, reports = run_ingest(recipe)
    assert "matches none of the 4 image file names" in reports["palm"].error
    assert "'PALM-Training400/H0001.jpg'" in reports["palm"].error
    proc = cli("ingest", str(recipe), "-q", check=False)
    assert proc.returncode == 1 and "no records from source(s) palm" in proc.stderr, proc.stderr


def test_names_split_from_the_folder_and_recipe_errors(tmp_path):
    """ISIC 2018 Task 3 folders name the split: ISIC2018_Task3_{Training,Validation,Test}_Input/ISIC_0024306.jpg."""
    root = tmp_path / "isic3"
    for i, split in enumerate(["Training", "Validation", "Test"]):
        make_image(root / f"ISIC2018_Task3_{split}_Input" / f"ISIC_{24306 + i:07d}.jpg", size=(30, 30), seed=i)
    common = dict(match="path", modality="dermoscopy", anatomy="skin", task="disease")
    pattern = r"^ISIC2018_Task3_(?P<split>\w+?)_Input/ISIC_\d{7}\.jpg$"
    loom, reports = run_ingest(write_recipe(tmp_path, [names_source("isic3", root, pattern, **common)]))
    got = {g["uri"].split("/")[0]: (g["source_split"], g["labels"], g["meta"]) for g in rows(loom, "SELECT * FROM records")}
    assert got == {
        "ISIC2018_Task3_Training_Input": ("train", [], None),
        "ISIC2018_Task3_Validation_Input": ("val", [], None),
        "ISIC2018_Task3_Test_Input": ("test", [], None),
    }
    bad = [names_source("a", root, "^(?P<label>[NHP]", **common), names_source("b", root, pattern, labels=["grade"], **common)]
    with pytest.raises(RecipeError) as e:
        load_recipe(write_recipe(tmp_path / "bad", bad))
    assert "sources[0] (a): pattern: Value error, not a regular expression: missing ), unterminated subpattern" in str(e.value)
    assert (
        "sources[1] (b): options: Value error, labels ['grade'] are not named groups of the pattern (its groups: ['split'])"
        in str(e.value)
    )


# ---- masks as they come (`masks`) ----------------------------------------------------------------------------


SEG = dict(modality="X-ray", anatomy="chest", task="organ segmentation")


def test_masks_montgomery_left_and_right_lung_folders(tmp_path):
    """Montgomery: MontgomerySet/CXR_png/MCUCXR_0001_0.png, its lungs in ManualMask/leftMask/MCUCXR_0001_0.png and
    ManualMask/rightMask/MCUCXR_0001_0.png (0/255, same name, same size)."""
    mont = tmp_path / "MontgomerySet"
    for i, name in enumerate(["MCUCXR_0001_0.png", "MCUCXR_0104_1.png"]):
        make_image(mont / "CXR_png" / name, size=(48, 40), seed=i, mode="L")
        left, right = np.zeros((40, 48), np.uint8), np.zeros((40, 48), np.uint8)
        left[5:35, 26:44] = 255  # the patient's left lung is on the image's right
        right[6 + i : 34, 4:20] = 255
        save_array(mont / "ManualMask" / "leftMask" / name, left)
        save_array(mont / "ManualMask" / "rightMask" / name, right)
    masks = [{"dir": "ManualMask/leftMask", "label": "left lung"}, {"dir": "ManualMask/rightMask", "label": "right lung"}]
    source = dict(name="mont", reader="masks", path=str(mont), images_dir="CXR_png", masks=masks, **SEG)
    loom, reports = run_ingest(write_recipe(tmp_path, [source]))
    assert (reports["mont"].records, reports["mont"].quarantined_inputs) == (2, 0)
    assert roi_rows(loom) == {
        "CXR_png/MCUCXR_0001_0.png": [("left lung", [26, 5, 44, 35]), ("right lung", [4, 6, 20, 34])],
        "CXR_png/MCUCXR_0104_1.png": [("left lung", [26, 5, 44, 35]), ("right lung", [4, 7, 20, 34])],
    }
    got = rows(loom, "SELECT DISTINCT labels, label_space FROM records")
    assert got == [{"labels": ["left lung", "right lung"], "label_space": ["left lung", "right lung"]}]


def test_masks_edd2020_one_file_per_class_overlapping(tmp_path):
    """EDD2020: originalImages/EDD2020_ACB0001.jpg, masks/EDD2020_ACB0001_BE.tif, ..._suspicious.tif, ..._HGD.tif,
    ..._cancer.tif, ..._polyp.tif, a file only for the classes present; the classes overlap."""
    root = tmp_path / "EDD2020_release-I_2020-01-15"
    make_image(root / "originalImages" / "EDD2020_ACB0001.jpg", size=(48, 40), seed=1)
    make_image(root / "originalImages" / "EDD2020_ACB0002.jpg", size=(48, 40), seed=2)  # no mask of any class
    be, suspicious = np.zeros((40, 48), np.uint8), np.zeros((40, 48), np.uint8)
    be[4:30, 4:40] = 255
    suspicious[10:20, 10:20] = 255  # inside the Barrett's region
    save_array(root / "masks" / "EDD2020_ACB0001_BE.tif", be)
    save_array(root / "masks" / "EDD2020_ACB0001_suspicious.tif", suspicious)
    classes = ["BE", "suspicious", "HGD", "cancer", "polyp"]
    source = dict(
        name="edd",
        reader="masks",
        path=str(root),
        images_dir="originalImages",
        masks=[{"pattern": f"{{stem}}_{c}.tif", "label": c} for c in classes],
        modality="endoscopy",
        anatomy="esophagus",
        task="lesion segmentation",
    )
    loom, reports = run_ingest(write_recipe(tmp_path, [source]))
    assert roi_rows(loom) == {"originalImages/EDD2020_ACB0001.jpg": [("BE", [4, 4, 40, 30]), ("suspicious", [10, 10, 20, 20])]}
    q = rows(loom, "SELECT path, reason, message FROM quarantine")
    assert [(x["path"], x["reason"]) for x in q] == [("originalImages/EDD2020_ACB0002.jpg", "missing_mask")]
    assert "masks/{stem}_BE.tif" in q[0]["message"]
    assert rows(loom, "SELECT label_space FROM records")[0]["label_space"] == sorted(classes)


def test_masks_busi_beside_their_images_merge_and_a_wrong_size_is_quarantined(tmp_path):
    """BUSI: Dataset_BUSI_with_GT/benign/benign (1).png beside benign (1)_mask.png and benign (1)_mask_1.png (a
    second mask of the same image), normal/normal (1).png with an empty mask."""
    busi = tmp_path / "Dataset_BUSI_with_GT"
    make_image(busi / "benign" / "benign (1).png", size=(48, 40), seed=1)
    make_image(busi / "benign" / "benign (10).png", size=(48, 40), seed=10)
    make_image(busi / "malignant" / "malignant (1).png", size=(48, 40), seed=2)
    make_image(busi / "normal" / "normal (1).png", size=(48, 40), seed=3)
    first, second, other = (np.zeros((40, 48), np.uint8) for _ in range(3))
    first[5:15, 5:15] = 255
    second[10:20, 12:25] = 255  # overlaps the first: one lesion drawn in two files
    other[30:35, 40:45] = 255
    save_array(busi / "benign" / "benign (1)_mask.png", first)
    save_array(busi / "benign" / "benign (1)_mask_1.png", second)
    save_array(busi / "benign" / "benign (10)_mask.png", other)
    save_array(busi / "malignant" / "malignant (1)_mask.png", np.zeros((30, 48), np.uint8))
    save_array(busi / "normal" / "normal (1)_mask.png", np.zeros((40, 48), np.uint8))
    source = dict(
        name="busi",
        reader="masks",
        path=str(busi),
        images_dir=".",
        masks_dir=".",
        mask_pattern="{stem}_mask*.png",
        mask_label="tumor",
        modality="ultrasound",
        anatomy="breast",
        task="lesion segmentation",
    )
    loom, reports = run_ingest(write_recipe(tmp_path, [source]))
    r = reports["busi"]
    assert (r.records, r.quarantined_inputs, r.filtered) == (3, 1, {"mask file": 5})
    assert roi_rows(loom) == {
        "benign/benign (1).png": [("tumor", [5, 5, 25, 20])],
        "benign/benign (10).png": [("tumor", [40, 30, 45, 35])],
        "normal/normal (1).png": [],
    }
    q = rows(loom, "SELECT path, reason, message FROM quarantine")
    assert [(x["path"], x["reason"]) for x in q] == [("malignant/malignant (1).png", "mask_mismatch")]
    assert "mask malignant/malignant (1)_mask.png is 48x30, image is 48x40" in q[0]["message"]


def kvasir(root: Path, jpeg_quality: int = 75) -> np.ndarray:
    """Kvasir-SEG: Kvasir-SEG/images/cju0qkwl35piu0993l0dewei2.jpg and Kvasir-SEG/masks/ the same name, the
    mask an RGB JPEG (white polyp on black): JPEG noise makes many grey values around the region."""
    name = "cju0qkwl35piu0993l0dewei2.jpg"
    make_image(root / "images" / name, size=(96, 80), seed=7)
    yy, xx = np.mgrid[0:80, 0:96]
    drawn = ((xx - 45) / 30.0) ** 2 + ((yy - 38) / 22.0) ** 2 <= 1
    rgb = np.repeat((drawn * 255).astype(np.uint8)[..., None], 3, axis=2)
    save_array(root / "masks" / name, rgb, quality=jpeg_quality)
    return drawn


def covered(loom: Path, drawn: np.ndarray) -> float:
    """IoU of the drawn region and the union of the record's ROI masks."""
    got = np.zeros_like(drawn)
    for roi in rows(loom, "SELECT rois FROM records")[0]["rois"]:
        if roi["label"] == "polyp":
            got |= rle_decode(roi["rle"], *drawn.shape)
    return float((got & drawn).sum() / (got | drawn).sum())


def test_masks_kvasir_jpeg_masks_binarized(tmp_path):
    drawn = kvasir(tmp_path / "Kvasir-SEG")
    common = dict(reader="masks", path=str(tmp_path / "Kvasir-SEG"), mask_label="polyp", modality="endoscopy", anatomy="colon")
    common["task"] = "lesion segmentation"
    loom, reports = run_ingest(write_recipe(tmp_path / "cut", [dict(name="kvasir", binarize=128, **common)]))
    assert covered(loom, drawn) >= 0.98
    assert rows(loom, "SELECT labels FROM records") == [{"labels": ["polyp"]}]
    assert rows(loom, "SELECT * FROM quarantine") == []
    # without a threshold the JPEG's grey values are labels of their own: the region falls apart
    loom, _ = run_ingest(write_recipe(tmp_path / "raw", [dict(name="kvasir", **common)]))
    assert covered(loom, drawn) < 0.9
    assert len(rows(loom, "SELECT labels FROM records")[0]["labels"]) > 10  # polyp, label_3, label_4, ...


def test_masks_m2caiseg_rgb_palette_and_colours_outside_it(tmp_path):
    """m2caiSeg (laparoscopic scene segmentation): train/images/*.jpg and train/groundtruth/*.png with the same
    stem, RGB masks coloured by class; a colour that is not in the recipe's palette is a row, its pixels left out."""
    root = tmp_path / "m2caiSeg dataset" / "train"
    make_image(root / "images" / "1.jpg", size=(48, 40), seed=1)
    mask = np.zeros((40, 48, 3), np.uint8)
    mask[2:12, 2:20] = (255, 0, 0)
    mask[20:30, 30:46] = (0, 255, 0)
    mask[35:38, 5:8] = (12, 34, 56)  # not in the palette
    save_array(root / "groundtruth" / "1.png", mask)
    source = dict(
        name="m2cai",
        reader="masks",
        path=str(root),
        images_dir="images",
        masks_dir="groundtruth",
        palette={"#FF0000": "grasper", "#00ff00": "liver"},
        modality="endoscopy",
        anatomy="abdomen",
        task="organ segmentation",
    )
    loom, reports = run_ingest(write_recipe(tmp_path, [source]))
    assert roi_rows(loom) == {"images/1.jpg": [("grasper", [2, 2, 20, 12]), ("liver", [30, 20, 46, 30])]}
    q = rows(loom, "SELECT path, reason, scope, message FROM quarantine")
    assert [(x["path"], x["reason"], x["scope"]) for x in q] == [("images/1.jpg", "colour_outside_palette", "annotation")]
    assert "groundtruth/1.png: 1 colour(s) not in the palette: #0c2238 (9 px)" in q[0]["message"]
    bad = dict(source, name="bad", palette={"red": "grasper"})
    with pytest.raises(RecipeError, match=r"palette colours \['red'\] are not #rrggbb"):
        load_recipe(write_recipe(tmp_path / "bad", [bad]))


def test_masks_refuge_disc_and_cup_from_one_map(tmp_path):
    """REFUGE: REFUGE-Training400/Training400/Glaucoma/g0001.jpg and Annotation-Training400/Disc_Cup_Masks/Glaucoma/
    g0001.bmp (255 background, 128 the disc around the cup, 0 the cup): the disc is 0 and 128, the cup 0."""
    root = tmp_path / "REFUGE"
    make_image(root / "REFUGE-Training400" / "Training400" / "Glaucoma" / "g0001.jpg", size=(48, 40), seed=1)
    disc_cup = np.full((40, 48), 255, np.uint8)
    disc_cup[10:30, 14:34] = 128
    disc_cup[15:25, 20:28] = 0
    save_array(root / "Annotation-Training400" / "Disc_Cup_Masks" / "Glaucoma" / "g0001.bmp", disc_cup)
    folder = "Annotation-Training400/Disc_Cup_Masks"
    source = dict(
        name="refuge",
        reader="masks",
        path=str(root),
        images_dir="REFUGE-Training400/Training400",
        masks=[
            {"dir": folder, "pattern": "{stem}.bmp", "label": "optic disc", "values": [0, 128]},
            {"dir": folder, "pattern": "{stem}.bmp", "label": "optic cup", "values": [0]},
        ],
        modality="fundus photography",
        anatomy="eye",
        task="organ segmentation",
    )
    loom, reports = run_ingest(write_recipe(tmp_path, [source]))
    assert roi_rows(loom) == {
        "REFUGE-Training400/Training400/Glaucoma/g0001.jpg": [("optic cup", [20, 15, 28, 25]), ("optic disc", [14, 10, 34, 30])]
    }
    assert rows(loom, "SELECT * FROM quarantine") == []
