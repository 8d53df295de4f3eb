"""JSON annotation files whose findings are parallel lists of labels, boxes and polygons, polygons becoming masks
(ChestX-Det; `sources/findings.py`, `sources/polygons.py`), and rows naming several images, each with its own label
column (ODIR-5K's two eyes per patient). Each test builds a small tree in the dataset's published layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image, rows, run_ingest, write_recipe
from readers_common import quarantine, records

from medloom.imaging import rle_decode

CXR = dict(modality="X-ray", anatomy="chest", task="disease")
SIZE = 1024  # ChestX-Det's images are 1024x1024 PNGs


def union(rois: list[dict], height: int = SIZE, width: int = SIZE) -> np.ndarray:
    out = np.zeros((height, width), dtype=bool)
    for roi in rois:
        out |= rle_decode(roi["rle"], height, width)
    return out


def skimage_polygon(points: list[list[int]], height: int = SIZE, width: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """An independent rasteriser (scikit-image): (the pixels whose centres lie inside, the edges as lines)."""
    draw = pytest.importorskip("skimage.draw")
    inside = np.zeros((height, width), dtype=bool)
    r, c = draw.polygon([p[1] for p in points], [p[0] for p in points], (height, width))
    inside[r, c] = True
    edges = np.zeros((height, width), dtype=bool)
    for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1]):
        r, c = draw.line(y0, x0, y1, x1)
        keep = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        edges[r[keep], c[keep]] = True
    return inside, edges


# a lung-shaped outline as an annotator traces it: concave, edges at every angle
EFFUSION = [[610, 540], [760, 560], [880, 700], [900, 880], [820, 930], [700, 900], [760, 800], [640, 700], [600, 620]]
NODULE = [[233, 666], [258, 666], [258, 693], [233, 693]]  # an axis-aligned rectangle: its mask is known exactly


def chestx_det(root: Path) -> Path:
    """ChestX-Det (Deepwise-AILab/ChestX-Det-Dataset): ChestX_Det_train.json, one JSON list on a single line (2 MB
    as published), objects `{"file_name": "36204.png", "syms": [...], "boxes": [[x1, y1, x2, y2], ...],
    "polygons": [[[x, y], ...], ...]}`, one entry of each list per finding, boxes being the polygons' extremes
    (pixels included); `syms: []` = no finding. The images (train_data.zip) unpack to train/, 1024x1024 PNGs."""
    data = root / "ChestX-Det"
    listed = [
        # two findings, a concave polygon and a rectangle
        {
            "file_name": "36204.png",
            "syms": ["Effusion", "Nodule"],
            "boxes": [[600, 540, 900, 930], [233, 666, 258, 693]],
            "polygons": [EFFUSION, NODULE],
        },
        {"file_name": "36200.png", "syms": [], "boxes": [], "polygons": []},  # a negative
        # a stroke past the right border (clipped, a warning), a polygon of two points (dropped, its box kept)
        {
            "file_name": "36205.png",
            "syms": ["Fracture", "Calcification"],
            "boxes": [[980, 100, 1023, 160], [40, 40, 60, 60]],
            "polygons": [[[980, 100], [1040, 120], [1000, 160]], [[40, 40], [60, 60]]],
        },
        # a polygon wholly off the image, a point that is text
        {
            "file_name": "36206.png",
            "syms": ["Mass", "Nodule"],
            "boxes": [[1100, 10, 1200, 90], [5, 5, 20, 20]],
            "polygons": [[[1100, 10], [1200, 10], [1150, 90]], [[5, 5], ["20", 5], [5, 20]]],
        },
        # three labels, two boxes: cannot be paired
        {
            "file_name": "36207.png",
            "syms": ["Mass", "Nodule", "Effusion"],
            "boxes": [[1, 1, 9, 9], [2, 2, 8, 8]],
            "polygons": [[[1, 1], [9, 1], [9, 9]], [[2, 2], [8, 2], [8, 8]]],
        },
        {"file_name": "99999.png", "syms": [], "boxes": [], "polygons": []},  # no such image
    ]
    for i, item in enumerate(listed[:-1]):
        make_image(data / "train" / item["file_name"], size=(SIZE, SIZE), seed=i, mode="L", fmt="PNG")
    data.mkdir(parents=True, exist_ok=True)
    (data / "ChestX_Det_train.json").write_text(json.dumps(listed))  # one line, as published
    return data


def test_chestx_det_json_boxes_and_polygons_become_masks(tmp_path):
    data = chestx_det(tmp_path)
    src = dict(name="chestx-det", reader="csv", path=str(data), csv="ChestX_Det_train.json", image_column="file_name")
    src.update(findings=dict(labels="syms", boxes="boxes", polygons="polygons"), split="train", **CXR)
    loom, reports = run_ingest(write_recipe(tmp_path / "a", [src]))
    recs = records(loom)
    assert sorted(recs) == ["train/36200.png", "train/36204.png", "train/36205.png", "train/36206.png"]
    table = "ChestX_Det_train.json:1"
    assert quarantine(loom) == [
        (f"{table} (object 3)", "bad_polygon", "annotation"),
        (f"{table} (object 3)", "polygon_clipped", "warning"),
        (f"{table} (object 4)", "bad_polygon", "annotation"),
        (f"{table} (object 4)", "polygon_outside_image", "annotation"),
        (f"{table} (object 5)", "mismatched_findings", "input"),
        (f"{table} (object 6)", "missing_file", "input"),
    ]

    # the concave polygon against scikit-image: every pixel whose centre is inside, and none beyond its edges
    rec = recs["train/36204.png"]
    assert rec["labels"] == ["Effusion", "Nodule"] and (rec["width"], rec["height"]) == (SIZE, SIZE)
    by_label = {r["label"]: r for r in rec["rois"]}
    assert sorted(by_label) == ["Effusion", "Nodule"] and len(rec["rois"]) == 2
    ours = union([by_label["Effusion"]])
    inside, edges = skimage_polygon(EFFUSION)
    assert (ours & ~inside).sum() > 0 and not (inside & ~ours).any() and not (ours & ~(inside | edges)).any()
    xs, ys = [p[0] for p in EFFUSION], [p[1] for p in EFFUSION]
    extent = [min(xs), min(ys), max(xs) + 1, max(ys) + 1]
    assert by_label["Effusion"]["bbox"] == pytest.approx([v / SIZE for v in extent])
    # the rectangle against a mask drawn here: its vertices are pixels, included (ChestX-Det's boxes are its
    # polygons' extremes), so the box [233, 666, 258, 693] is 26x28 pixels
    drawn = np.zeros((SIZE, SIZE), dtype=bool)
    drawn[666:694, 233:259] = True
    assert np.array_equal(union([by_label["Nodule"]]), drawn)
    assert by_label["Nodule"]["bbox"] == pytest.approx([233 / SIZE, 666 / SIZE, 259 / SIZE, 694 / SIZE])
    assert by_label["Nodule"]["area"] == pytest.approx(26 * 28 / SIZE**2)

    assert recs["train/36200.png"]["labels"] == [] and recs["train/36200.png"]["rois"] == []  # a negative, kept

    # clipped to the image; the two-point polygon's finding keeps its published box
    rec = recs["train/36205.png"]
    assert rec["labels"] == ["Fracture", "Calcification"]
    fracture, calcification = sorted(rec["rois"], key=lambda r: r["label"] != "Fracture")
    assert fracture["label"] == "Fracture" and fracture["bbox"][2] == 1.0 and fracture["rle"]
    assert union([fracture])[120, 1023] and union([fracture])[100, 980]
    assert calcification == {
        "label": "Calcification",
        "bbox": pytest.approx([40 / SIZE, 40 / SIZE, 60 / SIZE, 60 / SIZE]),
        "area": pytest.approx(20 * 20 / SIZE**2),
        "rle": [],
    }

    # the polygon off the image is dropped, its label kept; the polygon with text in it gives way to its box
    rec = recs["train/36206.png"]
    assert rec["labels"] == ["Mass", "Nodule"]
    box = pytest.approx([5 / SIZE, 5 / SIZE, 20 / SIZE, 20 / SIZE])
    assert [(r["label"], r["bbox"]) for r in rec["rois"]] == [("Nodule", box)]
    assert reports["chestx-det"].error is None

    messages = {q["reason"]: q["message"] for q in rows(loom, "SELECT * FROM quarantine")}
    assert (
        "finding 1 ('Fracture') of train/36205.png: 1 vertex/vertices off the 1024x1024 image ((1040, 120))"
        in messages["polygon_clipped"]
    )
    assert "syms: 3, boxes: 2, polygons: 2" in messages["mismatched_findings"]


def test_polygons_far_off_the_image_and_findings_checked_in_the_recipe(tmp_path):
    """Coordinates past 32 bits (PIL's fill wraps around on them) draw nothing; `findings:` excludes label_column."""
    from medloom.sources.polygons import polygon_mask

    assert not polygon_mask([[1e9, 5], [2e9, 12], [3e9, 45]], 64, 64).any()
    tall = polygon_mask([[10, -5e9], [20, -5e9], [20, 5e9], [10, 5e9]], 64, 64)
    want = np.zeros((64, 64), dtype=bool)
    want[:, 10:21] = True
    assert np.array_equal(tall, want)

    data = chestx_det(tmp_path)
    src = dict(name="cxd", reader="csv", path=str(data), csv="ChestX_Det_train.json", image_column="file_name")
    src.update(findings=dict(labels="syms"), label_column="syms", **CXR)
    with pytest.raises(Exception, match="leave out label_column"):
        run_ingest(write_recipe(tmp_path / "b", [src]))


ODIR_HEADER = ["ID", "Patient Age", "Patient Sex", "Left-Fundus", "Right-Fundus", "Left-Diagnostic Keywords"]
ODIR_HEADER += ["Right-Diagnostic Keywords", "N", "D", "G", "C", "A", "H", "M", "O"]


def odir(root: Path) -> Path:
    """ODIR-5K (Kaggle's ocular-disease-recognition-odir5k): ODIR-5K/data.xlsx, one row per patient: ID, age, sex,
    the two fundus photographs (`0_left.jpg`, `0_right.jpg` in `Training Images/`), each eye's diagnostic keywords
    (several joined by a Chinese comma，), and one-hot N, D, G, C, A, H, M, O for the patient, not per eye."""
    import openpyxl

    data = root / "ODIR-5K"
    table = [
        ODIR_HEADER,
        [0, 69, "Female", "0_left.jpg", "0_right.jpg", "cataract", "normal fundus", 0, 0, 0, 1, 0, 0, 0, 0],
        [1, 57, "Male", "1_left.jpg", "1_right.jpg", "normal fundus", "normal fundus", 1, 0, 0, 0, 0, 0, 0, 0],
        [
            2,
            42,
            "Male",
            "2_left.jpg",
            "2_right.jpg",
            "laser spot，moderate non proliferative retinopathy",
            "moderate non proliferative retinopathy",
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            1,
        ],
        [4, 53, "Male", "4_left.jpg", "4_right.jpg", "macular epiretinal membrane", None, 0, 1, 0, 0, 0, 0, 0, 1],
        [5, 50, "Female", "5_left.jpg", "5_right.jpg", "normal fundus", "pathological myopia", 0, 0, 0, 0, 0, 0, 1, 0],
    ]
    book = openpyxl.Workbook()
    book.active.title = "Sheet1"
    for row in table:
        book.active.append(row)
    data.mkdir(parents=True)
    book.save(data / "data.xlsx")
    for i, name in enumerate(n for row in table[1:] for n in row[3:5] if n != "5_right.jpg"):
        make_image(data / "Training Images" / name, size=(48, 40), seed=i, fmt="JPEG")
    return data


def test_odir_two_eyes_per_row_each_with_its_keywords(tmp_path):
    data = odir(tmp_path)
    eyes = [
        dict(column="Left-Fundus", label_column="Left-Diagnostic Keywords"),
        dict(column="Right-Fundus", label_column="Right-Diagnostic Keywords"),
    ]
    src = dict(name="odir", reader="csv", path=str(data), csv="data.xlsx", images=eyes, label_separator="，")
    src.update(patient_column="ID", modality="fundus photography", anatomy="eye", task="disease")
    loom, reports = run_ingest(write_recipe(tmp_path / "a", [src]))
    recs = records(loom)
    # each eye its own keywords, as written; the patient's one-hot columns (C for patient 0, D and O for 2) not
    # given to either eye: patient 0's right eye is a normal fundus
    assert {uri: list(r["labels"]) for uri, r in recs.items()} == {
        "Training Images/0_left.jpg": ["cataract"],
        "Training Images/0_right.jpg": ["normal fundus"],
        "Training Images/1_left.jpg": ["normal fundus"],
        "Training Images/1_right.jpg": ["normal fundus"],
        "Training Images/2_left.jpg": ["laser spot", "moderate non proliferative retinopathy"],
        "Training Images/2_right.jpg": ["moderate non proliferative retinopathy"],
        "Training Images/4_left.jpg": ["macular epiretinal membrane"],
        "Training Images/5_left.jpg": ["normal fundus"],
    }
    assert quarantine(loom) == [("data.xlsx:5", "missing_label", "input"), ("data.xlsx:6", "missing_file", "input")]
    message = rows(loom, "SELECT message FROM quarantine WHERE reason = 'missing_label'")[0]["message"]
    assert message.startswith("the row has no label for its 'Right-Fundus'")
    # the two eyes of a patient share the patient (a pseudonym), and say which image of the row they are
    patients = {uri.rsplit("/", 1)[1]: r["patient_id"] for uri, r in recs.items()}
    assert patients["0_left.jpg"] == patients["0_right.jpg"] != patients["1_left.jpg"] == patients["1_right.jpg"]
    assert patients["0_left.jpg"] not in ("", "0")
    assert [json.loads(recs[f"Training Images/0_{side}.jpg"]["meta"]) for side in ("left", "right")] == [
        {"image_column": "Left-Fundus"},
        {"image_column": "Right-Fundus"},
    ]

    # the patient's one-hot columns cannot be given to each eye
    src2 = dict(src, name="odir2", label_columns=["N", "D", "G", "C", "A", "H", "M", "O"])
    with pytest.raises(Exception, match="are the patient's, not each eye's"):
        run_ingest(write_recipe(tmp_path / "b", [src2]))
