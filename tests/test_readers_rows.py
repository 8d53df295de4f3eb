"""The label table's rows (csv reader): box conventions, negatives and several rows per image, run-length masks,
uncertain one-hot labels; each on real rows of the public tables torchxrayvision ships (never imported: it needs
torchvision), in the dataset's own layout, with small images made here under the names the rows list."""

from __future__ import annotations

import ast
import csv
import gzip
import importlib.util
import io
import json
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import rows, run_ingest, write_recipe
from PIL import Image
from scipy import ndimage

from medloom.errors import RecipeError
from medloom.imaging import rle_decode
from medloom.recipe import load_recipe


def xrv_data() -> Path:
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("torchxrayvision (its public label tables) is not installed")
    return Path(spec.submodule_search_locations[0]) / "data"


def table_lines(name: str) -> list[str]:
    """The lines of one of torchxrayvision's tables, as published."""
    path = xrv_data() / name
    if name.endswith(".zip"):
        with zipfile.ZipFile(path) as z:
            text = z.read(z.namelist()[0]).decode()
    else:
        text = gzip.decompress(path.read_bytes()).decode()
    return text.splitlines()


def blank(path: Path, size: tuple[int, int], shade: int) -> None:
    """A plain grey image (cheap at the real sizes, 1024x1024 and more; the shade keeps their hashes apart)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, shade).save(path)


def source(path: Path, **kw) -> dict:
    return dict(path=str(path), reader="csv", modality="X-ray", anatomy="chest", task="disease", **kw)


def records(loom: Path) -> dict[str, dict]:
    return {r["uri"]: r for r in rows(loom, "SELECT * FROM records")}


def quarantine(loom: Path) -> list[tuple]:
    return sorted((q["path"], q["reason"], q["scope"]) for q in rows(loom, "SELECT * FROM quarantine"))


def boxes(rec: dict) -> list[tuple[str, list[float]]]:
    return sorted((r["label"], [round(v, 6) for v in r["bbox"]]) for r in rec["rois"])


def norm(box: list[float], w: int, h: int) -> list[float]:
    return [round(box[0] / w, 6), round(box[1] / h, 6), round(box[2] / w, 6), round(box[3] / h, 6)]


# ---- box conventions ------------------------------------------------------------------------------------


def test_nih_bbox_list_xywh(tmp_path):
    """NIH ChestX-ray14's BBox_List_2017.csv: `Image Index,Finding Label,Bbox [x,y,w,h],,,` - x, y, width,
    height in pixels of the 1024x1024 PNGs under images/, one row per box. Its header leaves three columns
    unnamed (y, w, h), which a table cannot be read by: the copy here names them."""
    lines = table_lines("BBox_List_2017.csv.gz")
    assert lines[0].startswith("Image Index,Finding Label,Bbox [x,y,w,h],,,")
    body = lines[1:4]
    data = tmp_path / "nih"
    (data).mkdir()
    (data / "BBox_List_2017.csv").write_text("Image Index,Finding Label,x,y,w,h\n" + "\n".join(body) + "\n")
    for i, line in enumerate(body):
        blank(data / "images" / line.split(",")[0], (1024, 1024), 10 + i)
    spec = dict(format="xywh", x="x", y="y", width="w", height="h")
    loom, reports = run_ingest(
        write_recipe(
            tmp_path,
            [
                source(
                    data,
                    name="nih-boxes",
                    csv="BBox_List_2017.csv",
                    image_column="Image Index",
                    label_column="Finding Label",
                    box_columns=spec,
                )
            ],
        )
    )
    recs = records(loom)
    assert reports["nih-boxes"].records == 3 and quarantine(loom) == []
    for line in body:
        name, label, x, y, w, h = line.split(",")
        x, y, w, h = float(x), float(y), float(w), float(h)
        rec = recs[f"images/{name}"]
        assert rec["labels"] == [label]
        assert boxes(rec) == [(label, norm([x, y, x + w, y + h], 1024, 1024))]


def test_rsna_xywh_negatives_and_several_rows_per_image(tmp_path):
    """RSNA Pneumonia Detection's stage_2_train_labels.csv: `patientId,x,y,width,height,Target`; a patient with
    Target 0 has one row with empty box cells (a negative), one with opacities a row per box. Images: the
    1024x1024 PNG conversions of stage_2_train_images/{patientId}.dcm."""
    lines = table_lines("kaggle_stage_2_train_labels.csv.zip")
    assert lines[0] == "patientId,x,y,width,height,Target"
    body = lines[1:12]
    data = tmp_path / "rsna"
    data.mkdir()
    (data / "stage_2_train_labels.csv").write_text("\n".join(lines[:12]) + "\n")
    ids = list(dict.fromkeys(line.split(",")[0] for line in body))
    for i, pid in enumerate(ids):
        blank(data / "stage_2_train_images" / f"{pid}.png", (1024, 1024), 10 + i)
    loom, reports = run_ingest(
        write_recipe(
            tmp_path,
            [
                source(
                    data,
                    name="rsna",
                    csv="stage_2_train_labels.csv",
                    image_column="patientId",
                    image_template="{value}.png",
                    label_column="Target",
                    label_map={"0": "normal", "1": "pneumonia"},
                    box_columns=dict(format="xywh", x="x", y="y", width="width", height="height"),
                )
            ],
        )
    )
    recs = records(loom)
    assert reports["rsna"].records == len(ids) == 9 and quarantine(loom) == []
    expected: dict[str, list] = {pid: [] for pid in ids}
    for line in body:
        pid, x, y, w, h, target = line.split(",")
        if target == "1":
            x, y, w, h = float(x), float(y), float(w), float(h)
            expected[pid].append(("pneumonia", norm([x, y, x + w, y + h], 1024, 1024)))
    for pid in ids:
        rec = recs[f"stage_2_train_images/{pid}.png"]
        assert boxes(rec) == sorted(expected[pid])
        assert rec["labels"] == (["pneumonia"] if expected[pid] else ["normal"])
    # the two patients with opacities each have two boxes, the others none
    assert sorted(len(v) for v in expected.values()) == [0] * 7 + [2, 2]


def test_vindr_xyxy_with_no_finding_rows(tmp_path):
    """VinDr-CXR's train.csv: `image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max`, corners in pixels,
    several radiologists (rows) per image; "No finding" rows have empty box cells. Images: PNG conversions of
    train/{image_id}.dicom (the originals are 2000-3000 pixels a side)."""
    lines = table_lines("vinbigdata-train.csv.gz")
    assert lines[0] == "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max"
    by_image: dict[str, list[str]] = {}
    for line in lines[1:]:
        by_image.setdefault(line.split(",")[0], []).append(line)
    # the first image read as normal by every radiologist, and the first two with boxes
    normal = next(i for i, ls in by_image.items() if all(",No finding," in x for x in ls))
    found = [i for i, ls in by_image.items() if not any(",No finding," in x for x in ls)][:2]
    chosen = [normal, *found]
    body = [line for i in chosen for line in by_image[i]]
    data = tmp_path / "vindr"
    data.mkdir()
    (data / "train.csv").write_text(lines[0] + "\n" + "\n".join(body) + "\n")
    size = (3000, 3000)
    for i, image in enumerate(chosen):
        blank(data / "train" / f"{image}.png", size, 10 + i)
    loom, reports = run_ingest(
        write_recipe(
            tmp_path,
            [
                source(
                    data,
                    name="vindr",
                    csv="train.csv",
                    image_column="image_id",
                    image_template="train/{value}.png",
                    label_column="class_name",
                    box_columns=dict(xmin="x_min", ymin="y_min", xmax="x_max", ymax="y_max"),  # xyxy, the default
                )
            ],
        )
    )
    recs = records(loom)
    assert reports["vindr"].records == 3 and quarantine(loom) == []
    rec = recs[f"train/{normal}.png"]
    assert rec["labels"] == ["No finding"] and rec["rois"] == []
    for image in found:
        want = []
        for line in by_image[image]:
            _, label, _, _, x0, y0, x1, y1 = line.split(",")
            want.append((label, norm([float(x0), float(y0), float(x1), float(y1)], *size)))
        rec = recs[f"train/{image}.png"]
        assert boxes(rec) == sorted(want) and len(rec["rois"]) == len(by_image[image]) >= 2
        assert set(rec["labels"]) == {label for label, _ in want}


def test_mias_circles_from_the_bottom_left_corner(tmp_path):
    """MIAS (mini-MIAS) Info.txt: reference, tissue, class, severity, x, y of the abnormality's centre and the
    radius of a circle enclosing it, in pixels of the 1024x1024 PGM images, with the origin at the BOTTOM-left
    corner; NORM rows stop after the class. Info.txt has no header and is space-separated: the header line
    here stands in until tables without one can be read."""
    info = "REFNUM BG CLASS SEVERITY X Y RADIUS\nmdb001 G CIRC B 535 425 197\nmdb003 D NORM\nmdb005 F CIRC B 477 133 30\nmdb005 F CIRC B 500 168 26\n"
    data = tmp_path / "mias"
    data.mkdir()
    (data / "Info.txt").write_text(info)
    for i, ref in enumerate(("mdb001", "mdb003", "mdb005")):
        blank(data / f"{ref}.pgm", (1024, 1024), 10 + i)
    circles = dict(format="circle", cx="X", cy="Y", radius="RADIUS", y_origin="bottom")
    loom, reports = run_ingest(
        write_recipe(
            tmp_path,
            [
                dict(
                    source(data, name="mias", csv="Info.txt", image_column="REFNUM", image_template="{value}.pgm"),
                    anatomy="breast",
                    modality="mammography",
                    delimiter=" ",
                    label_column="CLASS",
                    box_columns=circles,
                )
            ],
        )
    )
    recs = records(loom)
    assert reports["mias"].records == 3 and quarantine(loom) == []

    def circle(x, y, r):  # y up from the bottom -> a box with y down from the top
        return norm([x - r, 1024 - (y + r), x + r, 1024 - (y - r)], 1024, 1024)

    assert boxes(recs["mdb001.pgm"]) == [("CIRC", circle(535, 425, 197))]
    assert boxes(recs["mdb005.pgm"]) == sorted([("CIRC", circle(477, 133, 30)), ("CIRC", circle(500, 168, 26))])
    assert recs["mdb003.pgm"]["labels"] == ["NORM"] and recs["mdb003.pgm"]["rois"] == []


def test_centre_boxes_normalised_and_bad_rows(tmp_path):
    """A YOLO-like table (centre, size, normalised); a row with some box cells empty or not numbers is a bad box
    naming the table's line, the image kept."""
    data = tmp_path / "t"
    data.mkdir()
    (data / "boxes.csv").write_text(
        "file,cls,cx,cy,w,h\na.png,nodule,0.5,0.5,0.2,0.4\na.png,nodule,0.1,,0.1,0.1\nb.png,mass,x,0.5,0.1,0.1\n"
    )
    blank(data / "a.png", (200, 100), 10)
    blank(data / "b.png", (200, 100), 20)
    spec = dict(format="cxcywh", cx="cx", cy="cy", width="w", height="h", normalized=True)
    loom, _ = run_ingest(
        write_recipe(tmp_path, [source(data, name="t", csv="boxes.csv", image_column="file", label_column="cls", box_columns=spec)])
    )
    recs = records(loom)
    assert boxes(recs["a.png"]) == [("nodule", [0.4, 0.3, 0.6, 0.7])]
    assert recs["b.png"]["rois"] == []
    assert quarantine(loom) == [
        ("b.png", "all_boxes_dropped", "warning"),
        ("boxes.csv:3", "bad_box", "annotation"),
        ("boxes.csv:4", "bad_box", "annotation"),
    ]


def test_box_formats_say_which_columns_they_need(tmp_path):
    (tmp_path / "d").mkdir()
    for spec, words in [
        (dict(format="xywh", x="x", y="y", width="w"), "format xywh reads the columns x, y, width, height; name height"),
        (dict(format="xywh", x="x", y="y", width="w", height="h", xmax="x1"), "xmax belong to another format"),
        (dict(format="circle", cx="x", cy="y", radius="r", normalized=True), "a circle's radius is in pixels"),
    ]:
        recipe = write_recipe(tmp_path, [source(tmp_path / "d", name="s", csv="t.csv", image_column="f", box_columns=spec)])
        with pytest.raises(RecipeError, match=words.replace("(", r"\(")):
            load_recipe(recipe)
