"""Ingest reproduces every fact in ../shared/fixtures/images/expected.json (skipped when absent)."""

import shutil
from collections import Counter

import pytest
from conftest import fixture_dir, load_json, make_image, rows, run_ingest, write_recipe


@pytest.fixture(scope="module")
def expected():
    return load_json(fixture_dir("images", "expected.json"))


def test_voc(tmp_path, expected):
    root = fixture_dir("images", "bccd_voc")
    loom, reports = run_ingest(
        write_recipe(
            tmp_path,
            [dict(name="bccd", reader="voc", path=str(root), modality="microscopy", anatomy="blood", task="cell detection")],
        )
    )
    recs = {r["uri"]: r for r in rows(loom, "SELECT * FROM records")}
    quarantine = rows(loom, "SELECT * FROM quarantine")
    for xml, facts in expected["bccd_voc"].items():
        rec = recs[f"JPEGImages/{facts['filename']}"]
        assert [rec["width"], rec["height"]] == facts["size"]
        degenerate = Counter(b[0] for b in facts["degenerate_boxes"])
        assert len(rec["rois"]) == facts["n_objects"] - len(facts["degenerate_boxes"])
        assert Counter(r["label"] for r in rec["rois"]) == Counter(facts["by_class"]) - degenerate
        zero = [q for q in quarantine if q["reason"] == "zero_area_box" and q["path"].endswith(xml)]
        assert len(zero) == len(facts["degenerate_boxes"])
        assert all(q["scope"] == "annotation" and q["record_id"] == rec["id"] for q in zero)
        assert all(0 <= v <= 1 for r in rec["rois"] for v in r["bbox"])
    # ImageSets/Main/test.txt puts these images in the test split
    listed = set((root / "ImageSets" / "Main" / "test.txt").read_text().split())
    for uri, rec in recs.items():
        assert rec["source_split"] == ("test" if uri.split("/")[-1][:-4] in listed else "")
    assert reports["bccd"].quarantined_inputs == 0


def test_voc_box_table_csv(tmp_path, expected):
    root = fixture_dir("images", "bccd_voc")
    facts = expected["bccd_voc_test_csv"]
    loom, reports = run_ingest(
        write_recipe(
            tmp_path,
            [
                dict(
                    name="bccd-csv",
                    reader="csv",
                    path=str(root),
                    csv="test.csv",
                    image_column="filename",
                    label_column="cell_type",
                    box_columns=dict(xmin="xmin", ymin="ymin", xmax="xmax", ymax="ymax"),
                    modality="microscopy",
                    anatomy="blood",
                    task="cell detection",
                )
            ],
        )
    )
    recs = {r["uri"].split("/")[-1][:-4]: r for r in rows(loom, "SELECT * FROM records")}
    q = rows(loom, "SELECT * FROM quarantine")
    zero = Counter(r["record_id"].split("/")[-1][:-4] for r in q if r["reason"] == "zero_area_box")
    for stem, n in facts["rows_for_copied_images"].items():
        assert len(recs[stem]["rois"]) + zero.get(stem, 0) == n
    missing = [r for r in q if r["reason"] == "missing_file"]
    assert len(missing) + len(recs) == facts["images"]  # one row per absent image, not per box row
    # the column order trap: xmin,xmax,ymin,ymax in the file; boxes still have x0<x1, y0<y1 and fit
    x = recs["BloodImage_00007"]
    assert all(b["bbox"][0] < b["bbox"][2] and b["bbox"][1] < b["bbox"][3] for b in x["rois"])


def test_coco(tmp_path, expected):
    root = fixture_dir("images")
    facts = expected["bccd_coco"]
    loom, reports = run_ingest(
        write_recipe(
            tmp_path,
            [
                dict(
                    name="coco",
                    reader="coco",
                    path=str(root),
                    annotations="bccd_coco/bccd_test_cocoformat.json",
                    images_dir="bccd_voc/JPEGImages",
                    modality="microscopy",
                    anatomy="blood",
                    task="cell detection",
                )
            ],
        )
    )
    recs = {r["uri"].split("/")[-1][:-4]: r for r in rows(loom, "SELECT * FROM records")}
    assert sorted(recs) == facts["images_present_here"]
    assert len(recs["BloodImage_00007"]["rois"]) == facts["annotations_for_BloodImage_00007"]
    assert len(recs["BloodImage_00011"]["rois"]) == facts["annotations_for_BloodImage_00011"]
    assert recs["BloodImage_00007"]["label_space"] == sorted(c["name"] for c in facts["categories"])
    missing = rows(loom, "SELECT * FROM quarantine WHERE reason = 'missing_file'")
    assert len(missing) == facts["n_images"] - len(facts["images_present_here"])
    assert reports["coco"].inputs == facts["n_images"]
    annotations_accounted = sum(len(r["rois"]) for r in recs.values()) + sum(
        int(m["message"].split(" with ")[1].split(" ")[0]) for m in missing
    )
    assert annotations_accounted == facts["n_annotations"]


def test_imagefolder(tmp_path, expected):
    root = fixture_dir("images", "bccd_imagefolder", "BCCD_cropped")
    loom, _ = run_ingest(
        write_recipe(
            tmp_path,
            [dict(name="cells", reader="imagefolder", path=str(root), modality="microscopy", anatomy="blood", task="cell type")],
        )
    )
    got = {r["label"]: r["n"] for r in rows(loom, "SELECT labels[1] AS label, count(*) AS n FROM records GROUP BY 1")}
    assert got == expected["bccd_imagefolder"]["classes"]
    assert rows(loom, "SELECT label_space FROM records LIMIT 1")[0]["label_space"] == sorted(got)


def test_messy_label_csv(tmp_path, expected):
    """The real label CSV (unnamed index column, empty and quoted multi-labels) over images we generate."""
    facts = expected["bccd_imagefolder"]["labels_csv"]
    csv_path = fixture_dir("images", "bccd_imagefolder", "labels.csv")
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(csv_path, data / "labels.csv")
    values = [line.split(",")[1] for line in csv_path.read_text().splitlines()[1:]]
    for v in values:
        make_image(data / "JPEGImages" / f"BloodImage_{int(v):05d}.jpg", size=(16, 16), seed=int(v))
    loom, reports = run_ingest(
        write_recipe(
            tmp_path,
            [
                dict(
                    name="labels",
                    reader="csv",
                    path=str(data),
                    csv="labels.csv",
                    image_column="Image",
                    image_template="BloodImage_{value:0>5}.jpg",
                    label_column="Category",
                    label_separator=",",
                    modality="microscopy",
                    anatomy="blood",
                    task="cell type",
                )
            ],
        )
    )
    r = reports["labels"]
    assert r.inputs == facts["data_rows"]
    assert r.reasons == {"missing_label": facts["empty_category_rows"]}
    assert r.records == facts["data_rows"] - facts["empty_category_rows"]
    recs = {x["uri"]: x["labels"] for x in rows(loom, "SELECT uri, labels FROM records")}
    assert recs["JPEGImages/BloodImage_00010.jpg"] == ["NEUTROPHIL", "EOSINOPHIL"]
    assert recs["JPEGImages/BloodImage_00031.jpg"] == ["NEUTROPHIL"]  # "NEUTROPHIL,NEUTROPHIL"
    multi_cells = sum(1 for line in csv_path.read_text().splitlines()[1:] if '"' in line)
    assert multi_cells == facts["multi_label_rows"]


def test_masks(tmp_path, expected):
    root = fixture_dir("images", "isbi2012_em_masks", "train")
    facts = expected["isbi2012_em_masks"]
    loom, _ = run_ingest(
        write_recipe(
            tmp_path,
            [
                dict(
                    name="em",
                    reader="masks",
                    path=str(root),
                    images_dir="image",
                    masks_dir="label",
                    mask_labels={255: "cell"},
                    modality="microscopy",
                    anatomy="cell",
                    task="cell segmentation",
                )
            ],
        )
    )
    recs = rows(loom, "SELECT * FROM records ORDER BY uri")
    assert len(recs) == facts["pairs"]
    import numpy as np
    from PIL import Image

    from medloom.imaging import rle_decode

    for rec in recs:
        assert f"L {rec['width']}x{rec['height']}" == facts["image_mode"] and rec["channels"] == 1
        mask = np.asarray(Image.open(root / "label" / rec["uri"].split("/")[-1]))
        assert sorted(np.unique(mask).tolist()) == facts["label_values"]
        union = np.zeros(mask.shape, bool)
        for roi in rec["rois"]:
            union |= rle_decode(roi["rle"], rec["height"], rec["width"])
        assert (union == (mask == 255)).all()
        assert len(rec["rois"]) > 10 and rec["labels"] == ["cell"]


def test_dicom_fixtures(tmp_path, expected):
    root = fixture_dir("images", "dicom", "pydicom")
    loom, reports = run_ingest(write_recipe(tmp_path, [dict(name="dcm", reader="dicom", path=str(root), task="disease")]))
    recs = {r["uri"]: r for r in rows(loom, "SELECT * FROM records")}
    q = {r["path"]: r for r in rows(loom, "SELECT * FROM quarantine")}
    assert (recs["CT_small.dcm"]["modality"], recs["CT_small.dcm"]["width"], recs["CT_small.dcm"]["height"]) == ("CT", 128, 128)
    assert (recs["MR_small.dcm"]["modality"], recs["MR_small.dcm"]["width"]) == ("MRI", 64)
    assert q["MR_truncated.dcm"]["reason"] == "truncated" and "8130" in q["MR_truncated.dcm"]["message"]
    assert q["no_meta.dcm"]["reason"] == "no_pixel_data"
    if "JPEG2000.dcm" in recs:
        assert (recs["JPEG2000.dcm"]["width"], recs["JPEG2000.dcm"]["height"]) == (256, 1024)
    else:
        assert q["JPEG2000.dcm"]["reason"] == "no_decoder" and "dicom-codecs" in q["JPEG2000.dcm"]["message"]
    assert reports["dcm"].filtered == {"not a DICOM file": 1}  # README.txt
