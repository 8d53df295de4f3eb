"""Readers, issue 34 items 4 and 6: files left out by glob (`exclude:`), labels and facts from file names and
paths (`names` reader), and masks as public datasets ship them (several per image, beside the images, lossy
JPEG, RGB palettes). Each dataset is built in its published naming."""

from pathlib import Path

import numpy as np
from conftest import make_image, rows, run_ingest, write_recipe
from PIL import Image


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
