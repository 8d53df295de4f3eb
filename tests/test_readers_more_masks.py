"""The masks reader, more of the layouts public datasets ship: multi-class masks saved as JPEG (`snap:`,
SICAPv2), an image's class from its folder or name beside its masks (`image_labels:`, BUSI, RIM-ONE DL, FIVES),
and DICOM images with DICOM masks (`dicom_masks` reader, Duke Liver Dataset). Each dataset is built in its
published naming."""

from pathlib import Path

import numpy as np
from conftest import cli, make_image, rows, run_ingest, write_recipe
from readers_common import roi_rows, save_array

SICAP_NAMES = [
    "16B0001851_Block_Region_1_0_0_xini_6803_yini_59786.jpg",
    "16B0001851_Block_Region_1_0_1_xini_7827_yini_59786.jpg",
]


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
        save_array(root / "masks" / name, mask, quality=75)
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
        save_array(busi / f"{rel}_mask.png", lesion((40, 48), box))
    save_array(busi / "benign" / "benign (1)_mask_1.png", lesion((40, 48), (30, 20, 40, 30)))
    make_image(busi / "extra" / "extra (1).png", size=(48, 40))  # a folder the pattern does not name
    save_array(busi / "extra" / "extra (1)_mask.png", lesion((40, 48), None))
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
        save_array(root / "train" / "Ground truth" / name, lesion((40, 40), (10, 10, 30, 20)))
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


def dicom_slice(path: Path, pixels: np.ndarray, patient: str, series_uid: str, number: int) -> None:
    """An MR slice as the Duke Liver Dataset ships them: one single-frame DICOM file per slice."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.PatientID, ds.PatientName = patient, "Example^Patient"
    ds.SeriesInstanceUID = series_uid
    ds.InstanceNumber = number
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[str(path)])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def duke_liver(root: Path) -> None:
    """Duke Liver Dataset (Zenodo 7774566, Segmentation.zip): Segmentation/<patient>/<series>/images/*.dicom and
    .../masks/*.dicom, one file per slice, a mask slice with its image slice's name; masks binary (liver 1).
    The slice file names here are ours (public loaders pair the two folders' sorted lists)."""
    rng = np.random.default_rng(0)
    for patient, series, liver in [("0004", "13", [(4, 6, 20, 18), None]), ("0007", "5", [(10, 2, 30, 12), (0, 0, 8, 8)])]:
        uid = f"1.2.826.0.1.3680043.8.498.{int(patient)}.{series}"
        for number, box in enumerate(liver, start=1):
            folder = root / "Segmentation" / patient / series
            dicom_slice(folder / "images" / f"{number:05d}.dicom", rng.integers(0, 900, (24, 32)), patient, uid, number)
            mask = np.zeros((24, 32), np.uint16)
            if box:
                x0, y0, x1, y1 = box
                mask[y0:y1, x0:x1] = 1
            dicom_slice(folder / "masks" / f"{number:05d}.dicom", mask, patient, uid, number)


DUKE = dict(reader="dicom_masks", mask_pattern="../masks/{name}", mask_label="liver", task="organ segmentation")


def test_dicom_masks_duke_liver_slices_paired_by_name_with_pseudonymous_ids(tmp_path):
    data = tmp_path / "duke"
    duke_liver(data)
    extra = data / "Segmentation" / "0007" / "5" / "images" / "00003.dicom"  # a slice without its mask
    dicom_slice(extra, np.ones((24, 32)), "0007", "1.2.3", 3)
    source = dict(name="duke", path=str(data / "Segmentation"), anatomy="liver", **DUKE)
    loom, reports = run_ingest(write_recipe(tmp_path, [source]))
    r = reports["duke"]
    assert (r.records, r.quarantined_inputs, r.filtered) == (4, 1, {"mask file": 4})
    got = rows(loom, "SELECT id, uri, patient_id, modality, anatomy, labels, frame, render FROM records ORDER BY uri")
    assert [g["uri"] for g in got] == [
        "0004/13/images/00001.dicom",
        "0004/13/images/00002.dicom",
        "0007/5/images/00001.dicom",
        "0007/5/images/00002.dicom",
    ]
    assert [g["labels"] for g in got] == [["liver"], [], ["liver"], ["liver"]]
    assert {(g["modality"], g["anatomy"], g["frame"]) for g in got} == {("MRI", "liver", -1)}
    assert all(g["render"]["window_source"] for g in got)
    # privacy as for the dicom reader: ids are keyed hashes, never the patient folders or the header's ids
    assert all("0004" not in g["id"] and "0007" not in g["id"] and "images" not in g["id"] for g in got)
    assert len({g["patient_id"] for g in got}) == 2 and not {g["patient_id"] for g in got} & {"0004", "0007"}
    assert roi_rows(loom) == {
        "0004/13/images/00001.dicom": [("liver", [4, 6, 20, 18])],
        "0004/13/images/00002.dicom": [],
        "0007/5/images/00001.dicom": [("liver", [10, 2, 30, 12])],
        "0007/5/images/00002.dicom": [("liver", [0, 0, 8, 8])],
    }
    q = rows(loom, "SELECT path, reason FROM quarantine")
    assert [(x["path"], x["reason"]) for x in q] == [("0007/5/images/00003.dicom", "missing_mask")]
    # the exported image is the DICOM frame rendered with its stored window
    run = cli("export", loom, "--out", tmp_path / "export", "-q")
    assert "exported 4 + filtered 0 + quarantined 0" in " ".join(run.stdout.split())


def test_dicom_masks_wrong_size_mask_is_quarantined(tmp_path):
    data = tmp_path / "duke"
    duke_liver(data)
    mask = data / "Segmentation" / "0004" / "13" / "masks" / "00002.dicom"
    dicom_slice(mask, np.zeros((20, 32)), "0004", "1.2.3", 2)
    source = dict(name="duke", path=str(data / "Segmentation"), anatomy="liver", **DUKE)
    loom, reports = run_ingest(write_recipe(tmp_path, [source]))
    assert reports["duke"].records == 3
    q = rows(loom, "SELECT path, reason, message FROM quarantine")
    assert [(x["path"], x["reason"]) for x in q] == [("0004/13/images/00002.dicom", "mask_mismatch")]
    assert "is 32x20 x 1 frame(s), image is 32x24 x 1 frame(s)" in q[0]["message"]
