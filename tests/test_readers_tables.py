"""Label tables as public datasets publish them (`sources/tables.py`): header-less and broken-header CSV, gzip,
whitespace text, .xlsx, JSON label lists, joins; official split lists and report files (`sources/splitlists.py`,
`sources/captions.py`). Each test builds a small tree in the dataset's published layout."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pytest
from conftest import make_image, rows, run_ingest, write_recipe
from readers_common import quarantine, xrv_data

MAT = dict(modality="X-ray", anatomy="chest", task="disease")


def labels_by_uri(loom: Path) -> dict[str, list[str]]:
    return {r["uri"]: list(r["labels"]) for r in rows(loom, "SELECT uri, labels FROM records")}


def test_nih_bbox_list_real_header_replaced_gzip_and_a_row_too_long(tmp_path):
    """NIH ChestX-ray14's BBox_List_2017.csv: header `Image Index,Finding Label,Bbox [x,y,w,h],,,`, unquoted, so
    nine cells (`Bbox [x`, `y`, `w`, `h]` and three empty ones) over rows of six. Its first rows, as published
    (here gzip-compressed, as torchxrayvision ships it), images under images_001/images/."""
    from medloom.sources.tables import TableSpec, load_table

    with gzip.open(xrv_data() / "BBox_List_2017.csv.gz", "rt", newline="") as f:
        head = [next(f) for _ in range(5)]
    assert head[0].strip() == "Image Index,Finding Label,Bbox [x,y,w,h],,,"
    data = tmp_path / "nih"
    names = [line.split(",")[0] for line in head[1:]]
    for i, name in enumerate(names):
        make_image(data / "images_001" / "images" / name, size=(32, 32), seed=i, mode="L")
    broken = f"{names[0]},Mass,1,2,3,4,5\n"  # seven fields under a header of six
    (data / "BBox_List_2017.csv.gz").write_bytes(gzip.compress("".join([*head, broken]).encode()))
    columns = ["Image Index", "Finding Label", "x", "y", "w", "h"]
    src = dict(name="nih", reader="csv", path=str(data), csv="BBox_List_2017.csv.gz", image_column="Image Index")
    src.update(label_column="Finding Label", **MAT)

    # as published, the box's columns cannot be named: the error says how to name them
    loom, reports = run_ingest(
        write_recipe(tmp_path / "a", [{**src, "box_columns": dict(xmin="x", ymin="y", xmax="w", ymax="h")}])
    )
    assert "BBox_List_2017.csv.gz: column(s) ['x', 'h'] not found" in reports["nih"].error
    assert "the columns are ['Image Index', 'Finding Label', 'Bbox [x', 'y', 'w', 'h]', '', '', '']" in reports["nih"].error
    assert "`header: replace`" in reports["nih"].error

    loom, reports = run_ingest(write_recipe(tmp_path / "b", [{**src, "columns": columns, "header": "replace"}]))
    assert labels_by_uri(loom) == {f"images_001/images/{n}": ["Atelectasis"] for n in names}
    assert quarantine(loom) == [("BBox_List_2017.csv.gz:6", "extra_fields", "input")]

    source = {"name": "nih", "root": str(data), "max_file_bytes": None}
    table = load_table(source, TableSpec(columns=columns, header="replace"), "BBox_List_2017.csv.gz")
    first = head[1].strip().split(",")
    assert table.header == columns and [r.where for r in table.rows] == [f"BBox_List_2017.csv.gz:{i}" for i in range(2, 6)]
    assert [table.rows[0][c] for c in columns] == first


def test_mias_info_txt_whitespace_columns_and_short_rows(tmp_path):
    """mini-MIAS (peipa.essex.ac.uk): Info.txt, no header, fields separated by spaces: reference number,
    background tissue, class of abnormality, severity, x, y, radius; a normal breast (NORM) has the first three
    only (with a trailing space), an image with two abnormalities is on two lines. Images mdbNNN.pgm beside it."""
    data = tmp_path / "all-mias"
    info = (
        "mdb001 G CIRC B 535 425 197\n"
        "mdb002 G CIRC B 522 280 69\n"
        "mdb003 D NORM \n"
        "mdb004 D NORM \n"
        "mdb005 F CIRC B 477 133 30\n"
        "mdb005 F CIRC B 500 168 26\n"
    )
    (data).mkdir()
    (data / "Info.txt").write_text(info)
    for i in range(1, 6):
        make_image(data / f"mdb{i:03d}.pgm", size=(40, 40), seed=i, mode="L")
    columns = ["REFNUM", "BG", "CLASS", "SEVERITY", "X", "Y", "RADIUS"]
    src = dict(name="mias", reader="csv", path=str(data), csv="Info.txt", delimiter="whitespace", columns=columns)
    src.update(image_column="REFNUM", image_template="{value}.pgm", label_column="CLASS", patient_column="BG")
    loom, _ = run_ingest(write_recipe(tmp_path, [dict(src, modality="mammography", anatomy="breast", task="disease")]))
    assert labels_by_uri(loom) == {
        "mdb001.pgm": ["CIRC"],
        "mdb002.pgm": ["CIRC"],
        "mdb003.pgm": ["NORM"],
        "mdb004.pgm": ["NORM"],
        "mdb005.pgm": ["CIRC"],
    }
    assert quarantine(loom) == [("Info.txt:6", "duplicate_row", "warning")]

    from medloom.sources.tables import TableSpec, load_table

    table = load_table({"name": "mias", "root": str(data)}, TableSpec(delimiter="whitespace", columns=columns), "Info.txt")
    assert table.rows[2] == {"REFNUM": "mdb003", "BG": "D", "CLASS": "NORM", "SEVERITY": "", "X": "", "Y": "", "RADIUS": ""}
    assert table.rows[2].where == "Info.txt:3"


def sicap_workbook(path: Path, rows_: list[list]) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Sheet1"  # as pandas' to_excel names it
    for row in rows_:
        sheet.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    book.save(path)


def test_sicapv2_partition_xlsx_one_hot_and_a_missing_sheet(tmp_path):
    """SICAPv2 (prostate histology patches): partition/Test/Test.xlsx, one row per patch: image_name and one-hot
    Gleason columns NC, G3, G4, G5 (and G4C, cribriform); the patches in images/."""
    data = tmp_path / "SICAPv2"
    names = [
        "16B0001851_Block_Region_1_0_0_xini_6803_yini_59786.jpg",
        "16B0001851_Block_Region_1_0_1_xini_7315_yini_59786.jpg",
        "17B0028567_Block_Region_3_2_4_xini_20395_yini_12876.jpg",
    ]
    for i, name in enumerate(names):
        make_image(data / "images" / name, size=(32, 32), seed=i)
    sicap_workbook(
        data / "partition" / "Test" / "Test.xlsx",
        [
            ["image_name", "NC", "G3", "G4", "G5", "G4C"],
            [names[0], 1, 0, 0, 0, 0],
            [names[1], 0, 1, 0, 0, 0],
            [names[2], 0, 0, 1, 0, 1],
            ["missing_patch.jpg", 0, 0, 0, 1, 0],
        ],
    )
    src = dict(name="sicap", reader="csv", path=str(data), csv="partition/Test/Test.xlsx", image_column="image_name")
    src.update(label_columns=["NC", "G3", "G4", "G5"], split="test", modality="pathology", anatomy="prostate", task="cancer")
    loom, reports = run_ingest(write_recipe(tmp_path / "a", [src]))
    assert labels_by_uri(loom) == {f"images/{names[0]}": ["NC"], f"images/{names[1]}": ["G3"], f"images/{names[2]}": ["G4"]}
    assert quarantine(loom) == [("partition/Test/Test.xlsx:5", "missing_file", "input")]

    loom, reports = run_ingest(write_recipe(tmp_path / "b", [dict(src, sheet="Test")]))
    assert reports["sicap"].error == (
        "ValueError: partition/Test/Test.xlsx: no sheet 'Test'; the workbook has the sheets ['Sheet1']: set `sheet:` to one"
    )


def test_chaoyang_json_label_lists(tmp_path):
    """Chaoyang (colon pathology): train.json and test.json, lists of {"name": "train/FILE.JPG", "label": 0-3}
    (0 normal, 1 serrated, 2 adenocarcinoma, 3 adenoma); the images in train/ and test/."""
    data = tmp_path / "chaoyang"
    train = ["train/539451-1-IMG008x021-3.JPG", "train/539451-1-IMG009x022-1.JPG"]
    test = ["test/540129-IMG017x015-2.JPG"]
    for i, name in enumerate(train + test):
        make_image(data / name, size=(32, 32), seed=i, fmt="JPEG")
    listed = [{"name": train[0], "label": 3}, {"name": train[1], "label": 1}, {"name": "train/gone.JPG", "label": 0}]
    (data / "train.json").write_text("[" + ",\n".join(json.dumps(x) for x in listed) + "]")
    (data / "test.json").write_text(json.dumps([{"name": test[0], "label": 2}]))
    names = {"0": "normal", "1": "serrated", "2": "adenocarcinoma", "3": "adenoma"}
    common = dict(reader="csv", path=str(data), image_column="name", label_column="label", label_map=names)
    common.update(modality="pathology", anatomy="colon", task="cancer")
    loom, _ = run_ingest(
        write_recipe(
            tmp_path,
            [
                dict(common, name="cy-train", csv="train.json", split="train"),
                dict(common, name="cy-test", csv="test.json", split="test"),
            ],
        )
    )
    got = {r["uri"]: (list(r["labels"]), r["source_split"]) for r in rows(loom, "SELECT * FROM records")}
    assert got == {train[0]: (["adenoma"], "train"), train[1]: (["serrated"], "train"), test[0]: (["adenocarcinoma"], "test")}
    assert quarantine(loom) == [("train.json:3", "missing_file", "input")]


def test_iu_xray_projections_joined_to_reports(tmp_path):
    """Indiana University chest X-rays (the Kaggle layout): indiana_projections.csv (uid, filename, projection),
    one row per image, and indiana_reports.csv (uid, MeSH, Problems, image, indication, comparison, findings,
    impression), one row per study; images in images/images_normalized/. Joined on uid: Problems give the
    labels, findings the caption, uid the study."""
    data = tmp_path / "iu"
    files = ["1_IM-0001-4001.dcm.png", "1_IM-0001-3001.dcm.png", "2_IM-0652-1001.dcm.png", "3_IM-1384-1001.dcm.png"]
    for i, name in enumerate(files):
        make_image(data / "images" / "images_normalized" / name, size=(32, 32), seed=i, mode="L")
    (data / "indiana_projections.csv").write_text(
        "uid,filename,projection\n1,1_IM-0001-4001.dcm.png,Frontal\n1,1_IM-0001-3001.dcm.png,Lateral\n"
        "2,2_IM-0652-1001.dcm.png,Frontal\n3,3_IM-1384-1001.dcm.png,Frontal\n"
    )
    (data / "indiana_reports.csv").write_text(
        "uid,MeSH,Problems,image,indication,comparison,findings,impression\n"
        "1,normal,normal,Xray Chest PA and Lateral,Positive TB test,None.,The cardiac silhouette and mediastinum "
        "size are within normal limits. There is no pulmonary edema.,Normal chest x-XXXX.\n"
        "2,Cardiomegaly/borderline;Pulmonary Artery/enlarged,Cardiomegaly;Pulmonary Artery,Xray Chest PA and "
        "Lateral,Preop bariatric surgery.,None.,Borderline cardiomegaly. Clear lungs.,No acute pulmonary findings.\n"
        "2,normal,normal,Xray Chest PA and Lateral,,,repeated uid,\n"
    )
    src = dict(name="iu", reader="csv", path=str(data), csv="indiana_projections.csv", image_column="filename")
    src.update(join={"table": "indiana_reports.csv", "on": "uid"}, label_column="Problems", label_separator=";")
    src.update(caption_column="findings", study_column="uid", **MAT)
    recipe = write_recipe(tmp_path, [src])
    recipe.write_text(recipe.read_text().replace("'on': uid", "on: uid"))  # as written by hand: YAML reads `on` as true
    loom, _ = run_ingest(recipe)
    got = {r["uri"].rsplit("/", 1)[1]: (list(r["labels"]), r["caption"]) for r in rows(loom, "SELECT * FROM records")}
    normal = "The cardiac silhouette and mediastinum size are within normal limits. There is no pulmonary edema."
    assert got == {
        files[0]: (["normal"], normal),
        files[1]: (["normal"], normal),
        files[2]: (["Cardiomegaly", "Pulmonary Artery"], "Borderline cardiomegaly. Clear lungs."),
    }
    studies = {r["study_id"] for r in rows(loom, "SELECT study_id FROM records")}
    assert len(studies) == 2 and "1" not in studies  # study ids hashed, as every id
    # uid 3 has no report: a warning naming its row, then no label (the row is kept: `unmatched: drop` drops it)
    assert quarantine(loom) == [
        ("indiana_projections.csv:5", "missing_label", "input"),
        ("indiana_projections.csv:5", "unmatched_join_key", "warning"),
        ("indiana_reports.csv:4", "duplicate_join_key", "warning"),
    ]
    loom, _ = run_ingest(
        write_recipe(tmp_path / "drop", [dict(src, join=[{"table": "indiana_reports.csv", "on": "uid", "unmatched": "drop"}])])
    )
    assert ("indiana_projections.csv:5", "unmatched_join_key", "input") in quarantine(loom)
    assert ("indiana_projections.csv:5", "missing_label", "input") not in quarantine(loom)


def test_table_keys_checked_in_the_recipe(tmp_path):
    from medloom.errors import RecipeError
    from medloom.recipe import load_recipe

    (tmp_path / "d").mkdir()
    src = dict(name="t", reader="csv", path=str(tmp_path / "d"), csv="a.csv", image_column="f", **MAT)
    with pytest.raises(RecipeError) as e:
        load_recipe(write_recipe(tmp_path, [dict(src, header="replace")]))
    assert "`header: replace` needs `columns: [names]`" in str(e.value)
    with pytest.raises(RecipeError) as e:
        load_recipe(write_recipe(tmp_path, [dict(src, columns=["f"], header=True)]))
    assert "say `header: replace`" in str(e.value)


def test_a_zip_with_one_table_and_a_table_outside_the_root(tmp_path):
    """RSNA Pneumonia as torchxrayvision ships it: kaggle_stage_2_train_labels.csv.zip, one member."""
    import zipfile

    from medloom.sources.tables import TableSpec, load_table

    zipped = xrv_data() / "kaggle_stage_2_train_labels.csv.zip"
    data = tmp_path / "rsna"
    data.mkdir()
    (data / zipped.name).write_bytes(zipped.read_bytes())
    table = load_table({"name": "rsna", "root": str(data)}, TableSpec(), zipped.name)
    assert table.header == ["patientId", "x", "y", "width", "height", "Target"]
    assert table.rows[0].where == f"{zipped.name}:2" and len(table.rows) > 1000
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.csv", "x\n1\n")
        z.writestr("b.csv", "x\n2\n")
    (data / "two.zip").write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match=r"two.zip: a .zip is read when it holds one table; this one holds \['a.csv', 'b.csv'\]"):
        load_table({"name": "rsna", "root": str(data)}, TableSpec(), "two.zip")
    (tmp_path / "outside.csv").write_text("x\n1\n")
    with pytest.raises(ValueError, match="outside the source's root"):
        load_table({"name": "rsna", "root": str(data)}, TableSpec(), "../outside.csv")


def test_nih_official_split_lists_with_the_csv_reader(tmp_path):
    """NIH ChestX-ray14: Data_Entry_2017_v2020.csv (its first rows, from torchxrayvision's copy), images under
    images_001/images/, and the official train_val_list.txt / test_list.txt, one file name a line."""
    with gzip.open(xrv_data() / "Data_Entry_2017_v2020.csv.gz", "rt", newline="") as f:
        head = [next(f) for _ in range(6)]
    data = tmp_path / "nih"
    data.mkdir()
    (data / "Data_Entry_2017_v2020.csv").write_text("".join(head))
    names = [line.split(",")[0] for line in head[1:]]
    assert names == ["00000001_000.png", "00000001_001.png", "00000001_002.png", "00000002_000.png", "00000003_001.png"]
    for i, name in enumerate(names):
        make_image(data / "images_001" / "images" / name, size=(32, 32), seed=i, mode="L")
    (data / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n00000001_002.png\n00000002_000.png\n")
    # 00000002_000.png also in the test list: left out; 00000003_000.png listed, no image
    (data / "test_list.txt").write_text("00000003_000.png\n00000003_001.png\n00000002_000.png\n")
    src = dict(name="nih", reader="csv", path=str(data), csv="Data_Entry_2017_v2020.csv", image_column="Image Index")
    src.update(label_column="Finding Labels", label_separator="|", patient_column="Patient ID", **MAT)
    src.update(split_lists={"train": "train_val_list.txt", "test": ["test_list.txt"]})
    loom, _ = run_ingest(write_recipe(tmp_path, [src]))
    got = {r["uri"].rsplit("/", 1)[1]: (list(r["labels"]), r["source_split"]) for r in rows(loom, "SELECT * FROM records")}
    assert got == {
        "00000001_000.png": (["Cardiomegaly"], "train"),
        "00000001_001.png": (["Cardiomegaly", "Emphysema"], "train"),
        "00000001_002.png": (["Cardiomegaly", "Effusion"], "train"),
        "00000003_001.png": (["Hernia"], "test"),
    }
    assert quarantine(loom) == [
        ("test_list.txt:1", "listed_image_missing", "warning"),
        ("test_list.txt:3", "split_conflict", "input"),
    ]


def covid_ct(root: Path) -> Path:
    """COVID-CT (UCSD-AI4H): Images-processed/CT_COVID/*.png and CT_NonCOVID/*.jpg, the split lists in
    Data-split/COVID/{train,val,test}CT_COVID.txt and Data-split/NonCOVID/{train,val,test}CT_NonCOVID.txt."""
    covid = ["2020.01.24.919183-p27-132.png", "2020.01.24.919183-p27-133.png", "2020.02.10.20021584-p6-52%0.png"]
    non = ["0.jpg", "1%0.jpg", "2%1.jpg"]
    for i, name in enumerate(covid):
        make_image(root / "Images-processed" / "CT_COVID" / name, size=(32, 32), seed=i)
    for i, name in enumerate(non):
        make_image(root / "Images-processed" / "CT_NonCOVID" / name, size=(32, 32), seed=10 + i, fmt="JPEG")
    lists = {
        "COVID/trainCT_COVID.txt": covid[:2],
        "COVID/valCT_COVID.txt": [],
        "COVID/testCT_COVID.txt": covid[2:],
        "NonCOVID/trainCT_NonCOVID.txt": ["0.jpg"],
        "NonCOVID/valCT_NonCOVID.txt": ["1%0.jpg"],
        "NonCOVID/testCT_NonCOVID.txt": [],
    }
    for name, listed in lists.items():
        (root / "Data-split" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "Data-split" / name).write_text("".join(f"{n}\n" for n in listed))
    return root


def test_covid_ct_split_lists_with_the_imagefolder_reader(tmp_path):
    data = covid_ct(tmp_path / "COVID-CT")
    split_lists = {
        split: [f"../Data-split/COVID/{split}CT_COVID.txt", f"../Data-split/NonCOVID/{split}CT_NonCOVID.txt"]
        for split in ("train", "val", "test")
    }
    src = dict(name="covid-ct", reader="imagefolder", path=str(data / "Images-processed"), split_lists=split_lists)
    src.update(allowed_roots=[str(data / "Data-split")], modality="CT", anatomy="lung", task="covid-19")
    loom, reports = run_ingest(write_recipe(tmp_path, [src]))
    got = {r["uri"]: (list(r["labels"]), r["source_split"]) for r in rows(loom, "SELECT * FROM records")}
    assert got == {
        "CT_COVID/2020.01.24.919183-p27-132.png": (["CT_COVID"], "train"),
        "CT_COVID/2020.01.24.919183-p27-133.png": (["CT_COVID"], "train"),
        "CT_COVID/2020.02.10.20021584-p6-52%0.png": (["CT_COVID"], "test"),
        "CT_NonCOVID/0.jpg": (["CT_NonCOVID"], "train"),
        "CT_NonCOVID/1%0.jpg": (["CT_NonCOVID"], "val"),
        "CT_NonCOVID/2%1.jpg": (["CT_NonCOVID"], ""),
    }
    assert quarantine(loom) == [("CT_NonCOVID/2%1.jpg", "not_in_split_lists", "warning")]
    loom, reports = run_ingest(write_recipe(tmp_path / "drop", [dict(src, unlisted="drop")]))
    assert len(rows(loom, "SELECT id FROM records")) == 5 and quarantine(loom) == []
    assert reports["covid-ct"].filtered == {"not in the split lists": 1}
    # the lists lie outside the images' folder: without allowed_roots they are not read
    src.pop("allowed_roots")
    loom, reports = run_ingest(write_recipe(tmp_path / "closed", [src]))
    assert "outside the source's root" in reports["covid-ct"].error


def test_shenzhen_clinical_readings_as_captions(tmp_path):
    """Shenzhen chest X-ray set (NLM): ChinaSet_AllFiles/CXR_png/CHNCXR_0001_0.png (the last digit: 1 = TB) and
    ChinaSet_AllFiles/ClinicalReadings/CHNCXR_0001_0.txt, the reading: sex and age, then the finding."""
    data = tmp_path / "ChinaSet_AllFiles"
    stems = ["CHNCXR_0001_0", "CHNCXR_0002_0", "CHNCXR_0327_1"]
    for i, stem in enumerate(stems):
        make_image(data / "CXR_png" / f"{stem}.png", size=(32, 32), seed=i, mode="L")
    (data / "ClinicalReadings").mkdir()
    (data / "ClinicalReadings" / "CHNCXR_0001_0.txt").write_text("male 45yrs\nnormal\n")
    (data / "ClinicalReadings" / "CHNCXR_0327_1.txt").write_text("female 27yrs\nPTB in the left upper field\n")
    src = dict(name="shenzhen", reader="imagefolder", path=str(data), caption_files="ClinicalReadings/{stem}.txt", **MAT)
    loom, reports = run_ingest(write_recipe(tmp_path, [src]))
    got = {r["uri"]: r["caption"] for r in rows(loom, "SELECT uri, caption FROM records")}
    assert got == {
        "CXR_png/CHNCXR_0001_0.png": "male 45yrs\nnormal",
        "CXR_png/CHNCXR_0002_0.png": None,
        "CXR_png/CHNCXR_0327_1.png": "female 27yrs\nPTB in the left upper field",
    }
    assert quarantine(loom) == [("CXR_png/CHNCXR_0002_0.png", "missing_caption_file", "warning")]
    assert reports["shenzhen"].filtered == {"not an image file": 2}
    # read with a byte budget: the start kept, a warning says so
    loom, _ = run_ingest(write_recipe(tmp_path / "cut", [dict(src, caption_max_bytes=12)]))
    got = {r["uri"]: r["caption"] for r in rows(loom, "SELECT uri, caption FROM records")}
    assert got["CXR_png/CHNCXR_0001_0.png"] == "male 45yrs\nn"
    assert [q for q in quarantine(loom) if q[1] == "caption_truncated"] == [
        ("CXR_png/CHNCXR_0001_0.png", "caption_truncated", "warning"),
        ("CXR_png/CHNCXR_0327_1.png", "caption_truncated", "warning"),
    ]


def test_a_workbook_with_title_rows_before_its_header(tmp_path):
    """PH2 (dermoscopy) ships PH2_dataset.xlsx with title rows above the header (`Image Name`, `Histological
    Diagnosis`, ...): `skip_rows:` passes them, and rows keep the spreadsheet's row numbers."""
    from medloom.sources.tables import TableSpec, load_table

    sicap_workbook(
        tmp_path / "PH2_dataset.xlsx",
        [
            ["PH2 Dataset"],
            [],
            [" Image Name ", "Histological Diagnosis", "Common Nevus"],
            ["IMD003", None, "X"],
            ["IMD009", "", 1.0],
        ],
    )
    table = load_table({"name": "ph2", "root": str(tmp_path)}, TableSpec(skip_rows=1), "PH2_dataset.xlsx")
    assert table.header == ["Image Name", "Histological Diagnosis", "Common Nevus"]
    assert [(r.where, dict(r)) for r in table.rows] == [
        ("PH2_dataset.xlsx:4", {"Image Name": "IMD003", "Histological Diagnosis": "", "Common Nevus": "X"}),
        ("PH2_dataset.xlsx:5", {"Image Name": "IMD009", "Histological Diagnosis": "", "Common Nevus": "1"}),
    ]
