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
