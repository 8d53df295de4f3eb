"""The csv reader's table family, more of the published layouts: several tables per source, each with its split
and image folder (RFMiD), label lists written as text in a cell (VinDr-Mammo's `finding_categories`), and ids that
are not file names, mapped to a file by a regex and a glob (UW-Madison GI Tract). Each test builds a small tree in
the dataset's published layout (`sources/locate.py`, `sources/rows.py`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import make_image, rows, run_ingest, write_recipe
from test_readers_dicom_table import make_dicom

from medloom.errors import RecipeError
from medloom.imaging import rle_decode
from medloom.recipe import load_recipe


def quarantine(loom: Path) -> list[tuple[str, str, str]]:
    return sorted((q["path"], q["reason"], q["scope"]) for q in rows(loom, "SELECT * FROM quarantine"))


def records(loom: Path) -> dict[str, dict]:
    return {r["uri"]: r for r in rows(loom, "SELECT * FROM records")}


# ---- RFMiD: three tables, each beside its image folder -----------------------------------------------------------

# RFMiD's label tables (Kaggle / RIADD 2021 layout): ID, Disease_Risk and 45 one-hot disease columns
RFMID_DISEASES = (
    "DR,ARMD,MH,DN,MYA,BRVO,TSLN,ERM,LS,MS,CSR,ODC,CRVO,TV,AH,ODP,ODE,ST,AION,PT,RT,RS,CRS,EDN,RPEC,MHL,RP,CWS,CB,"
    "ODPM,PRH,MNF,HR,CRAO,TD,CME,PTCR,CF,VH,MCA,VS,BRAO,PLQ,HPED,CL"
).split(",")


def rfmid_row(image_id: int, *diseases: str) -> str:
    risk = "1" if diseases else "0"
    return ",".join([str(image_id), risk, *("1" if d in diseases else "0" for d in RFMID_DISEASES)])


def rfmid(root: Path) -> Path:
    """RFMiD (RIADD 2021, as unpacked from Kaggle): Training_Set/RFMiD_Training_Labels.csv beside
    Training_Set/Training/1.png ..., Evaluation_Set/RFMiD_Validation_Labels.csv beside Evaluation_Set/Validation/,
    Test_Set/RFMiD_Testing_Labels.csv beside Test_Set/Test/. Every set numbers its images from 1: `1.png` is in all
    three folders, and a bare basename cannot tell them apart."""
    data = root / "RFMiD"
    header = ",".join(["ID", "Disease_Risk", *RFMID_DISEASES])
    sets = {
        "Training_Set": ("RFMiD_Training_Labels.csv", "Training", [rfmid_row(1, "DR"), rfmid_row(2, "MH", "ODC")]),
        "Evaluation_Set": ("RFMiD_Validation_Labels.csv", "Validation", [rfmid_row(1, "ARMD")]),
        "Test_Set": ("RFMiD_Testing_Labels.csv", "Test", [rfmid_row(1, "TSLN"), rfmid_row(2, "DN")]),
    }
    seed = 0
    for folder, (table, images, lines) in sets.items():
        (data / folder).mkdir(parents=True)
        (data / folder / table).write_text("\n".join([header, *lines]) + "\n")
        for line in lines:
            image_id = line.split(",")[0]
            if (folder, image_id) != ("Test_Set", "2"):  # its image is missing from the download
                seed += 1
                make_image(data / folder / images / f"{image_id}.png", size=(32, 32), seed=seed)
    return data


RFMID_TABLES = [
    {"table": "Training_Set/RFMiD_Training_Labels.csv", "split": "train", "image_dir": "Training_Set/Training"},
    {"table": "Evaluation_Set/RFMiD_Validation_Labels.csv", "split": "val", "image_dir": "Evaluation_Set/Validation"},
    {"table": "Test_Set/RFMiD_Testing_Labels.csv", "split": "test", "image_dir": "Test_Set/Test"},
]


def rfmid_source(data: Path, tables: list[dict]) -> dict:
    return dict(
        name="rfmid",
        reader="csv",
        path=str(data),
        csv=tables,
        image_column="ID",
        image_template="{value}.png",
        label_columns=RFMID_DISEASES,
        modality="fundus photography",
        anatomy="eye",
        task="disease",
    )


def test_rfmid_three_tables_each_with_its_split_and_image_folder(tmp_path):
    data = rfmid(tmp_path)
    loom, reports = run_ingest(write_recipe(tmp_path, [rfmid_source(data, RFMID_TABLES)]))
    got = {uri: (sorted(r["labels"]), r["source_split"]) for uri, r in records(loom).items()}
    assert got == {
        "Training_Set/Training/1.png": (["DR"], "train"),
        "Training_Set/Training/2.png": (["MH", "ODC"], "train"),
        "Evaluation_Set/Validation/1.png": (["ARMD"], "val"),
        "Test_Set/Test/1.png": (["TSLN"], "test"),
    }
    # the missing image is named by its own table's line (and looked for in its own folder only)
    assert quarantine(loom) == [("Test_Set/RFMiD_Testing_Labels.csv:3", "missing_file", "input")]
    message = rows(loom, "SELECT message FROM quarantine")[0]["message"]
    assert "'2.png'" in message and "Test_Set/Test" in message
    assert reports["rfmid"].error is None


def test_table_parts_checked_in_the_recipe(tmp_path):
    data = rfmid(tmp_path)
    bad = [dict(RFMID_TABLES[0], image_dir="../elsewhere")]
    with pytest.raises(RecipeError, match="image_dir '../elsewhere' must be a folder under the source root"):
        load_recipe(write_recipe(tmp_path, [rfmid_source(data, bad)]))
    with pytest.raises(RecipeError, match="'holdout' is not a split name"):
        load_recipe(write_recipe(tmp_path, [rfmid_source(data, [dict(RFMID_TABLES[0], split="holdout")])]))
    # a folder that is not there: the source fails, naming it
    gone = [dict(RFMID_TABLES[0], image_dir="Training_Set/Train")]
    _, reports = run_ingest(write_recipe(tmp_path, [rfmid_source(data, gone)]))
    assert "image_dir 'Training_Set/Train': no such folder" in reports["rfmid"].error


# ---- VinDr-Mammo: finding_categories as Python-list text -------------------------------------------------------

MAMMO_HEADER = (
    "study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,breast_density,"
    "finding_categories,finding_birads,xmin,ymin,xmax,ymax,split"
)


def test_vindr_mammo_finding_categories_as_list_text(tmp_path):
    """VinDr-Mammo (PhysioNet 1.0.0): images/{study_id}/{image_id}.dicom and finding_annotations.csv, one row per
    finding, its categories a Python list written as text (`"['Mass', 'Suspicious Calcification']"`, quoted for
    the CSV), `['No Finding']` rows with empty boxes, the split `training` / `test`. A JSON list is read too; a
    cell that is not a list of strings quarantines its row, naming the table's line."""
    s1, s2, s3 = "a" * 32, "b" * 32, "c" * 32
    i1, i2, i3, i4 = "1" * 32, "2" * 32, "3" * 32, "4" * 32
    common = "L,CC,64,48,BI-RADS 4,DENSITY C"
    table = [
        MAMMO_HEADER,
        f"{s1},x,{i1},{common},\"['Mass', 'Suspicious Calcification']\",BI-RADS 4,10.5,8.0,30.5,28.0,training",
        f"{s1},x,{i1},{common},['Architectural Distortion'],BI-RADS 3,2,2,12,12,training",
        f"{s2},x,{i2},{common},['No Finding'],,,,,,test",
        f'{s2},x,{i3},{common},"[""Focal Asymmetry""]",BI-RADS 3,20,20,40,40,test',  # a JSON list
        f"{s3},x,{i4},{common},Mass,BI-RADS 4,1,1,5,5,training",  # not a list
        f"{s3},x,{i4},{common},\"['Mass', 3]\",BI-RADS 4,1,1,5,5,training",  # not strings
        f"{s3},x,{i4},{common},\"__import__('os').system('true')\",BI-RADS 4,1,1,5,5,training",  # not a literal
    ]
    data = tmp_path / "vindr-mammo"
    data.mkdir()
    (data / "finding_annotations.csv").write_text("\n".join(table) + "\n")
    for n, (study, image) in enumerate([(s1, i1), (s2, i2), (s2, i3), (s3, i4)]):
        path = data / "images" / study / f"{image}.dicom"
        make_dicom(path, "MR_small.dcm", (48, 64), sop=f"1.2.3.{n}", patient=f"P{n}", shade=n)
    spec = dict(
        csv="finding_annotations.csv",
        image_column="image_id",
        image_template="{value}.dicom",
        label_column="finding_categories",
        label_format="list",
        box_columns=dict(xmin="xmin", ymin="ymin", xmax="xmax", ymax="ymax"),
        split_column="split",
    )
    source = dict(name="mammo", reader="dicom", path=str(data), modality="X-ray", anatomy="breast", task="disease", table=spec)
    loom, _ = run_ingest(write_recipe(tmp_path, [source]))
    got = {uri.split("/")[-1][:4]: r for uri, r in records(loom).items()}
    assert {k: (sorted(r["labels"]), r["source_split"]) for k, r in got.items()} == {
        "1111": (["Architectural Distortion", "Mass", "Suspicious Calcification"], "train"),
        "2222": (["No Finding"], "test"),
        "3333": (["Focal Asymmetry"], "test"),
    }
    # the box of two categories is an ROI of each; boxes in pixels of the 48x64 (width x height) image
    boxes = sorted((r["label"], [round(v, 4) for v in r["bbox"]]) for r in got["1111"]["rois"])
    assert boxes == [
        ("Architectural Distortion", [round(2 / 48, 4), round(2 / 64, 4), 0.25, 0.1875]),
        ("Mass", [round(10.5 / 48, 4), 0.125, round(30.5 / 48, 4), 0.4375]),
        ("Suspicious Calcification", [round(10.5 / 48, 4), 0.125, round(30.5 / 48, 4), 0.4375]),
    ]
    assert got["2222"]["rois"] == []
    assert quarantine(loom) == [
        ("finding_annotations.csv:6", "bad_label_list", "input"),
        ("finding_annotations.csv:7", "bad_label_list", "input"),
        ("finding_annotations.csv:8", "bad_label_list", "input"),
    ]  # the image whose every row was quarantined has no record: its rows say why
    messages = {q["path"]: q["message"] for q in rows(loom, "SELECT path, message FROM quarantine")}
    assert "column 'finding_categories'" in messages["finding_annotations.csv:6"]
    assert "holds 3, a int" in messages["finding_annotations.csv:7"]
    assert "is not a list written as text" in messages["finding_annotations.csv:8"]


def test_label_list_needs_a_label_column(tmp_path):
    source = dict(name="x", reader="csv", path=str(tmp_path), csv="t.csv", image_column="a", label_format="list")
    source.update(label_columns=["b"], modality="X-ray", anatomy="chest", task="disease")
    with pytest.raises(RecipeError, match="`label_format: list` applies to label_column cells"):
        load_recipe(write_recipe(tmp_path, [source]))


# ---- UW-Madison GI Tract: ids that are not file names -----------------------------------------------------------

UW_PATTERN = {
    "match": r"^(?P<case>case\d+)_(?P<day>day\d+)_slice_(?P<slice>\d+)$",
    "glob": "{case}/{case}_{day}/scans/slice_{slice}_*.png",
}


def test_uw_madison_ids_mapped_by_a_regex_and_a_glob(tmp_path):
    """UW-Madison GI Tract Image Segmentation (Kaggle): train.csv `id,class,segmentation`, three rows per slice
    (large_bowel, small_bowel, stomach), masks as row-major 1-based absolute runs, empty = no mask; ids
    `case123_day20_slice_0001` name train/case123/case123_day20/scans/slice_0001_266_266_1.50_1.50.png, the size
    and spacing suffix varying per scan (here 32x32 images named as 266x266 and 360x310 slices are)."""
    data = tmp_path / "uw-madison"
    scans = data / "train" / "case123" / "case123_day20" / "scans"
    make_image(scans / "slice_0001_266_266_1.50_1.50.png", size=(32, 32), seed=1, mode="L")
    make_image(scans / "slice_0065_266_266_1.50_1.50.png", size=(32, 32), seed=2, mode="L")
    other = data / "train" / "case9" / "case9_day22" / "scans"
    make_image(other / "slice_0003_360_310_1.50_1.50.png", size=(32, 32), seed=3, mode="L")
    make_image(other / "slice_0003_266_266_1.50_1.50.png", size=(32, 32), seed=4, mode="L")  # two files: ambiguous
    (data / "train" / "case123" / "case123_day20" / "scans" / ".slice_0001_x.png").write_bytes(b"")  # hidden: skipped
    table = [
        "id,class,segmentation",
        "case123_day20_slice_0001,large_bowel,",
        "case123_day20_slice_0001,small_bowel,",
        "case123_day20_slice_0001,stomach,",
        "case123_day20_slice_0065,large_bowel,",
        "case123_day20_slice_0065,small_bowel,100 4 132 4",
        "case123_day20_slice_0065,stomach,5 3 37 3",
        "case9_day22_slice_0003,stomach,",
        "case77_day0_slice_0012,stomach,",  # not in this download
        "case77_day0_slice_0012,large_bowel,",
        "case1_slice_0001,stomach,",  # not an id of the pattern
    ]
    (data / "train.csv").write_text("\n".join(table) + "\n")
    source = dict(
        name="uw",
        reader="csv",
        path=str(data),
        csv="train.csv",
        image_column="id",
        image_pattern=dict(UW_PATTERN, glob="train/" + UW_PATTERN["glob"]),
        label_column="class",
        rle_column=dict(column="segmentation", order="row", form="absolute", start=1),
        modality="MRI",
        anatomy="abdomen",
        task="organ segmentation",
    )
    loom, _ = run_ingest(write_recipe(tmp_path, [source]))
    got = records(loom)
    first = "train/case123/case123_day20/scans/slice_0001_266_266_1.50_1.50.png"
    second = "train/case123/case123_day20/scans/slice_0065_266_266_1.50_1.50.png"
    assert sorted(got) == [first, second]
    assert list(got[first]["labels"]) == [] and list(got[first]["rois"]) == []  # three empty masks: a negative
    assert sorted(got[second]["labels"]) == ["small_bowel", "stomach"]
    masks = {r["label"]: rle_decode(r["rle"], 32, 32) for r in got[second]["rois"]}
    stomach = np.zeros((32, 32), dtype=bool)
    stomach[0:2, 4:7] = True  # pixels 5-7 and 37-39, counted from 1 along the rows
    bowel = np.zeros((32, 32), dtype=bool)
    bowel[3:5, 3:7] = True  # pixels 100-103 and 132-135
    assert np.array_equal(masks["stomach"], stomach) and np.array_equal(masks["small_bowel"], bowel)
    assert quarantine(loom) == [
        ("train.csv:11", "id_not_matched", "input"),
        ("train.csv:8", "ambiguous_file", "input"),
        ("train.csv:9", "missing_file", "input"),
    ]
    messages = {q["path"]: q["message"] for q in rows(loom, "SELECT path, message FROM quarantine")}
    assert "2 files match 'train/case9/case9_day22/scans/slice_0003_*.png'" in messages["train.csv:8"]
    assert messages["train.csv:9"].endswith("(2 rows)")


def test_image_pattern_checked_in_the_recipe(tmp_path):
    base = dict(name="uw", reader="csv", path=str(tmp_path), csv="train.csv", image_column="id", label_column="class")
    base.update(modality="MRI", anatomy="abdomen", task="organ segmentation")
    cases = [
        (dict(UW_PATTERN, glob="../{case}/*.png"), "must be a relative path under the folder, without `..`"),
        (dict(UW_PATTERN, glob="/data/{case}/*.png"), "must be a relative path"),
        (dict(UW_PATTERN, glob="{case}/{patient}_*.png"), r"uses \{patient\}, not named groups of match"),
        (dict(UW_PATTERN, match="case(\\d+"), "image_pattern.match is not a regex"),
    ]
    for pattern, message in cases:
        with pytest.raises(RecipeError, match=message):
            load_recipe(write_recipe(tmp_path, [dict(base, image_pattern=pattern)]))
    with pytest.raises(RecipeError, match="either image_template .* or image_pattern"):
        load_recipe(write_recipe(tmp_path, [dict(base, image_pattern=UW_PATTERN, image_template="{value}.png")]))
