"""The label table's rows (csv reader): box conventions, negatives and several rows per image, run-length masks,
uncertain one-hot labels; each on real rows of the public tables torchxrayvision ships (never imported: it needs
torchvision), in the dataset's own layout, with small images made here under the names the rows list."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import rows, run_ingest, write_recipe
from PIL import Image
from readers_common import boxes, norm, quarantine, records, reference_rle2mask, regions, roi_masks, table_lines

from medloom.errors import RecipeError
from medloom.imaging import rle_decode
from medloom.recipe import load_recipe


def blank(path: Path, size: tuple[int, int], shade: int) -> None:
    """A plain grey image (cheap at the real sizes, 1024x1024 and more; the shade keeps their hashes apart)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, shade).save(path)


def source(path: Path, **kw) -> dict:
    return dict(path=str(path), reader="csv", modality="X-ray", anatomy="chest", task="disease", **kw)


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
    info = (
        "REFNUM BG CLASS SEVERITY X Y RADIUS\n"
        "mdb001 G CIRC B 535 425 197\nmdb003 D NORM\nmdb005 F CIRC B 477 133 30\nmdb005 F CIRC B 500 168 26\n"
    )
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
        write_recipe(
            tmp_path, [source(data, name="t", csv="boxes.csv", image_column="file", label_column="cls", box_columns=spec)]
        )
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


# ---- run-length masks in a table ------------------------------------------------------------------------


def test_siim_relative_column_major_runs_against_torchxrayvision(tmp_path):
    """SIIM-ACR Pneumothorax's train-rle.csv: `ImageId, EncodedPixels` (the second name begins with a space),
    runs in Kaggle's relative form (each start counted from the end of the previous run, pixels numbered top to
    bottom then left to right), `-1` for no pneumothorax, a row per region. Images: 1024x1024 PNG conversions of
    the DICOM files, named by ImageId."""
    rle2mask = reference_rle2mask()
    lines = table_lines("siim-pneumothorax-train-rle.csv.gz")
    assert lines[0] == "ImageId, EncodedPixels"
    by_image: dict[str, list[str]] = {}
    for line in lines[1:]:
        by_image.setdefault(line.split(",")[0], []).append(line.split(",", 1)[1])
    first = list(by_image)[:6]
    several = next(i for i, cells in by_image.items() if len(cells) >= 3)  # an image with several masks
    chosen = list(dict.fromkeys([*first, several]))
    body = [f"{i},{cell}" for i in chosen for cell in by_image[i]]
    data = tmp_path / "siim"
    data.mkdir()
    (data / "train-rle.csv").write_text(lines[0] + "\n" + "\n".join(body) + "\n")
    for n, image in enumerate(chosen):
        blank(data / "png" / f"{image}.png", (1024, 1024), 10 + n)
    spec = dict(column=" EncodedPixels", order="column", form="relative", start=0, label="pneumothorax")
    loom, reports = run_ingest(
        write_recipe(
            tmp_path,
            [
                source(
                    data, name="siim", csv="train-rle.csv", image_column="ImageId", image_template="{value}.png", rle_column=spec
                )
            ],
        )
    )
    recs = records(loom)
    assert reports["siim"].records == len(chosen) and quarantine(loom) == []
    positives = 0
    for image in chosen:
        rec = recs[f"png/{image}.png"]
        cells = [c.strip() for c in by_image[image] if c.strip() != "-1"]
        if not cells:  # no pneumothorax: the image is a negative
            assert rec["labels"] == [] and rec["rois"] == []
            continue
        positives += 1
        # each row (SIIM: one pneumothorax, rows may overlap) gives the ROIs of its own connected regions
        want = [rle2mask(cell, 1024, 1024).T.astype(bool) for cell in cells]
        got = [rle_decode(roi["rle"], 1024, 1024) for roi in rec["rois"]]
        assert rec["labels"] == ["pneumothorax"] and {r["label"] for r in rec["rois"]} == {"pneumothorax"}
        assert len(got) == sum(regions(m) for m in want)
        assert np.array_equal(np.logical_or.reduce(got), np.logical_or.reduce(want))
        if all(regions(m) == 1 for m in want):
            assert sorted(m.tobytes() for m in got) == sorted(m.tobytes() for m in want)
        for roi in rec["rois"]:
            ys, xs = np.nonzero(rle_decode(roi["rle"], 1024, 1024))
            assert roi["bbox"] == [xs.min() / 1024, ys.min() / 1024, (xs.max() + 1) / 1024, (ys.max() + 1) / 1024]
    assert positives >= 2 and len(recs[f"png/{several}.png"]["rois"]) >= 3
    masks = [rle_decode(r["rle"], 1024, 1024) for r in recs[f"png/{several}.png"]["rois"]]
    assert (masks[0] & masks[1]).any()  # its rows overlap (and stay apart: one ROI each)


def uw_encode(mask: np.ndarray) -> str:
    """UW-Madison's train.csv convention, written here from its description: pixels numbered left to right then
    top to bottom (row-major), runs as absolute start, length pairs, the first pixel numbered 1."""
    flat = np.concatenate([[0], mask.flatten().astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[::2], edges[1::2]
    return " ".join(f"{s + 1} {e - s}" for s, e in zip(starts, ends))


def test_uw_madison_row_major_runs_negatives_and_bad_rows(tmp_path):
    """UW-Madison GI Tract's train.csv: `id,class,segmentation`, a row per slice and organ (large_bowel,
    small_bowel, stomach), runs row-major, absolute, 1-based; an empty cell where the organ is not on the slice.
    Slices are 266x266 PNGs (the published ones are named slice_0001_266_266_1.50_1.50.png in
    train/case123/case123_day20/scans/; here each is named by its id)."""
    h, w = 266, 266
    yy, xx = np.mgrid[0:h, 0:w]
    large = ((yy >= 20) & (yy < 60) & (xx >= 30) & (xx < 200)) | ((yy >= 100) & (yy < 120) & (xx >= 10) & (xx < 40))
    stomach = (yy - 180) ** 2 + (xx - 150) ** 2 < 40**2
    s1, s2, s3 = "case123_day20_slice_0001", "case123_day20_slice_0002", "case123_day20_slice_0003"
    table = [
        "id,class,segmentation",
        f"{s1},large_bowel,{uw_encode(large)}",
        f"{s1},small_bowel,",
        f"{s1},stomach,{uw_encode(stomach)}",
        f"{s2},large_bowel,",
        f"{s2},small_bowel,",
        f"{s2},stomach,",
        f"{s3},large_bowel,{uw_encode(large)}",
        f"{s3},small_bowel,70750 20",  # past the 266x266 slice's last pixel (70756)
        f"{s3},stomach,5 3 9",  # an odd count of numbers
    ]
    data = tmp_path / "uwmgi"
    data.mkdir()
    (data / "train.csv").write_text("\n".join(table) + "\n")
    for n, image in enumerate((s1, s2, s3)):
        blank(data / "train" / f"{image}.png", (w, h), 10 + n)
    spec = dict(column="segmentation", order="row", form="absolute", start=1)
    loom, reports = run_ingest(
        write_recipe(
            tmp_path,
            [
                dict(
                    source(data, name="uwmgi", csv="train.csv", image_column="id", image_template="{value}.png"),
                    modality="MRI",
                    anatomy="abdomen",
                    task="organ segmentation",
                    label_column="class",
                    rle_column=spec,
                )
            ],
        )
    )
    recs = records(loom)
    assert reports["uwmgi"].records == 3
    one = recs[f"train/{s1}.png"]
    assert one["labels"] == ["large_bowel", "stomach"]
    got = roi_masks(one)
    assert np.array_equal(got["large_bowel"], large) and np.array_equal(got["stomach"], stomach)
    assert sorted(r["label"] for r in one["rois"]) == ["large_bowel", "large_bowel", "stomach"]
    assert recs[f"train/{s2}.png"]["labels"] == [] and recs[f"train/{s2}.png"]["rois"] == []
    three = recs[f"train/{s3}.png"]
    assert three["labels"] == ["large_bowel"] and np.array_equal(roi_masks(three)["large_bowel"], large)
    assert quarantine(loom) == [("train.csv:10", "bad_rle", "annotation"), ("train.csv:9", "rle_outside_image", "annotation")]
    q = {x["reason"]: x for x in rows(loom, "SELECT * FROM quarantine")}
    assert (
        q["rle_outside_image"]["record_id"] == three["id"]
        and "pixel 70769 (the first counted as 1)" in q["rle_outside_image"]["message"]
    )


def test_rle_keys_are_required(tmp_path):
    (tmp_path / "d").mkdir()
    recipe = write_recipe(
        tmp_path, [source(tmp_path / "d", name="s", csv="t.csv", image_column="f", rle_column=dict(column="EncodedPixels"))]
    )
    with pytest.raises(RecipeError) as e:
        load_recipe(recipe)
    assert all(f"rle_column.{k}: Field required" in str(e.value) for k in ("order", "form", "start"))


# ---- uncertain one-hot labels ---------------------------------------------------------------------------

CHEXPERT_CLASSES = [
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
]


def chexpert_tree(root: Path) -> list[dict]:
    """CheXpert-v1.0-small as downloaded: train.csv beside train/patientNNNNN/studyN/viewN_*.jpg, its `Path`
    column starting with the folder's own name; one-hot cells 1.0 (present), 0.0 (absent), -1.0 (uncertain),
    blank (not mentioned). The first rows of the real table."""
    lines = table_lines("chexpert_train.csv.gz")[:7]
    assert lines[0].startswith("Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,")
    (root / "CheXpert-v1.0-small").mkdir(parents=True)
    (root / "CheXpert-v1.0-small" / "train.csv").write_text("\n".join(lines) + "\n")
    table = list(csv.DictReader(lines))
    for i, row in enumerate(table):
        image = root / row["Path"]
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (320, 390), 10 + i).save(image, "JPEG")
    return table


def test_chexpert_uncertain_labels_under_each_policy(tmp_path):
    data = tmp_path / "chexpert"
    table = chexpert_tree(data)
    two = next(r for r in table if "patient00002/study2" in r["Path"])
    assert [c for c in CHEXPERT_CLASSES if two[c] == "-1.0"] == [
        "Cardiomegaly",
        "Edema",
        "Consolidation",
        "Atelectasis",
        "Pleural Effusion",
    ]
    for policy in ("positive", "negative", "ignore", "keep"):
        here = tmp_path / policy
        spec = source(
            data,
            name="chexpert",
            csv="CheXpert-v1.0-small/train.csv",
            image_column="Path",
            label_columns=CHEXPERT_CLASSES,
            uncertain=policy,
            empty_labels="keep",
        )
        loom, reports = run_ingest(write_recipe(here, [spec]))
        recs = records(loom)
        assert reports["chexpert"].records == len(table) and quarantine(loom) == []
        for row in table:
            rec = recs[row["Path"]]
            present = [c for c in CHEXPERT_CLASSES if row[c] == "1.0"]
            uncertain = [c for c in CHEXPERT_CLASSES if row[c] == "-1.0"]
            want = {
                "positive": present + uncertain,
                "negative": present,
                "ignore": present,
                "keep": present + [f"{c} (uncertain)" for c in uncertain],
            }[policy]
            assert sorted(rec["labels"]) == sorted(want), (policy, row["Path"])
            # what was uncertain, and what the loom made of it, stays in the record's meta
            assert json.loads(rec["meta"]) == {"uncertain": uncertain, "uncertain_policy": policy}
        if policy == "keep":
            assert "Edema (uncertain)" in rows(loom, "SELECT label_space FROM records LIMIT 1")[0]["label_space"]


def test_uncertain_cells_need_a_policy(tmp_path):
    data = tmp_path / "chexpert"
    chexpert_tree(data)
    spec = source(data, name="chexpert", csv="CheXpert-v1.0-small/train.csv", image_column="Path", label_columns=CHEXPERT_CLASSES)
    loom, reports = run_ingest(write_recipe(tmp_path, [spec]))
    error = reports["chexpert"].error
    assert "train.csv:3: column 'Cardiomegaly' holds '-1.0', an uncertain label" in error
    assert "`uncertain:` (positive, negative, ignore, keep)" in error and reports["chexpert"].records == 0
