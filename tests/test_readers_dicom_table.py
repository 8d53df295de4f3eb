"""DICOM files labelled by a table (the dicom reader's `table:`): RSNA Pneumonia's boxes keyed by file name or
Patient ID, SIIM-ACR Pneumothorax's run-length masks keyed by SOP Instance UID, a VinDr-style box table keyed by
image id. The DICOM files are pydicom's own test images (CT_small, MR_small) copied under the datasets' real
folder names, with the UIDs, patient ids and sizes the published rows need; the rows are the first rows of the
tables torchxrayvision ships (never imported: it needs torchvision)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import cli, rows, run_ingest, write_recipe
from pydicom.data import get_testdata_file
from readers_common import boxes, norm, quarantine, records, reference_rle2mask, regions, table_lines

from medloom.errors import RecipeError
from medloom.imaging import rle_decode
from medloom.recipe import load_recipe
from medloom.records import salted_id

SALT = "test-salt"  # conftest's write_recipe


def make_dicom(path: Path, base: str, size: tuple[int, int], *, sop: str, patient: str, shade: int) -> None:
    """A copy of one of pydicom's test files at `size` (width, height: its pixels tiled or cut), with its own SOP
    Instance UID and Patient ID; `shade` keeps the pixel hashes apart."""
    ds = pydicom.dcmread(get_testdata_file(base))
    arr = ds.pixel_array
    w, h = size
    tiled = np.tile(arr, (-(-h // arr.shape[0]), -(-w // arr.shape[1])))[:h, :w]
    ds.Rows, ds.Columns = h, w
    ds.PixelData = (tiled.astype(np.int64) + shade).astype(arr.dtype).tobytes()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.PatientID = patient
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)


def dicom_source(path: Path, table: dict, **kw) -> dict:
    return dict(
        name=kw.pop("name"), reader="dicom", path=str(path), modality="X-ray", anatomy="chest", task="disease", table=table, **kw
    )


# ---- RSNA Pneumonia: stage_2_train_images/{patientId}.dcm, boxes keyed by patientId ---------------------------


def rsna_tree(data: Path) -> tuple[list[str], str, list[str]]:
    """RSNA Pneumonia Detection as downloaded: stage_2_train_labels.csv (`patientId,x,y,width,height,Target`, a
    row per box, one row with empty box cells and Target 0 for a negative) beside stage_2_train_images/ with one
    1024x1024 DICOM per patient, `{patientId}.dcm`, whose PatientID is the patientId. The last patient of the
    rows taken has no file here; one file has no row."""
    lines = table_lines("kaggle_stage_2_train_labels.csv.zip")[:12]
    assert lines[0] == "patientId,x,y,width,height,Target"
    data.mkdir()
    (data / "stage_2_train_labels.csv").write_text("\n".join(lines) + "\n")
    ids = list(dict.fromkeys(line.split(",")[0] for line in lines[1:]))
    assert len(ids) == 9 and lines[11].startswith(ids[-1])  # the last patient: one row, line 12
    extra = "ffffffff-0000-4000-8000-000000000000"
    for i, pid in enumerate([*ids[:-1], extra]):
        make_dicom(
            data / "stage_2_train_images" / f"{pid}.dcm",
            ("CT_small.dcm", "MR_small.dcm")[i % 2],
            (1024, 1024),
            sop=f"1.2.826.0.1.3680043.8.498.{i + 1}",
            patient=pid,
            shade=i,
        )
    return ids, extra, lines[1:]


@pytest.mark.parametrize("key", ["file", "patient_id"])
def test_rsna_boxes_negatives_and_pseudonymous_ids(tmp_path, key):
    data = tmp_path / "rsna"
    ids, extra, body = rsna_tree(data)
    table = dict(
        csv="stage_2_train_labels.csv",
        key=key,
        image_column="patientId",
        label_column="Target",
        box_columns=dict(format="xywh", x="x", y="y", width="width", height="height"),
        **({"image_template": "{value}.dcm"} if key == "file" else {}),
    )
    recipe = write_recipe(tmp_path, [dicom_source(data, table, name="rsna", label_map={"0": "normal", "1": "pneumonia"})])
    loom, reports = run_ingest(recipe)
    recs = records(loom)
    assert reports["rsna"].records == 8 and set(recs) == {f"stage_2_train_images/{pid}.dcm" for pid in ids[:-1]}
    expected: dict[str, list] = {pid: [] for pid in ids}
    for line in body:
        pid, x, y, w, h, target = line.split(",")
        if target == "1":
            x, y, w, h = float(x), float(y), float(w), float(h)
            expected[pid].append(("pneumonia", norm([x, y, x + w, y + h], 1024, 1024)))
    for pid in ids[:-1]:
        rec = recs[f"stage_2_train_images/{pid}.dcm"]
        assert (rec["width"], rec["height"]) == (1024, 1024)
        assert boxes(rec) == sorted(expected[pid])
        assert rec["labels"] == (["pneumonia"] if expected[pid] else ["normal"])
        # the patientId names the file and the header: only its keyed hash reaches the record
        assert rec["patient_id"] == salted_id(SALT, pid)
        assert pid not in rec["id"] and pid not in (rec["meta"] or "") and rec["caption"] is None
    assert sorted(len(v) for v in expected.values()) == [0] * 7 + [2, 2]
    missing = "missing_file" if key == "file" else "no_dicom_for_row"
    assert quarantine(loom) == [
        (f"stage_2_train_images/{extra}.dcm", "no_table_row", "input"),
        ("stage_2_train_labels.csv:12", missing, "input"),
    ]
    if key == "patient_id":  # a header key's value is not written into the quarantine row
        (row,) = rows(loom, f"SELECT * FROM quarantine WHERE reason = '{missing}'")
        assert ids[-1] not in row["message"] and "PatientID" in row["message"]
        return
    out = tmp_path / "wds"
    cli("export", loom, "--format", "webdataset", "--out", out)
    names = []
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                names.append(member.name)
                if member.name.endswith(".json"):
                    sample = json.load(io.TextIOWrapper(tar.extractfile(member)))
                    assert not any(pid in json.dumps(sample) for pid in ids)
    assert len([n for n in names if n.endswith(".json")]) == 8
    assert not [n for n in names for pid in ids if pid in n]


# ---- SIIM-ACR Pneumothorax: masks keyed by SOP Instance UID --------------------------------------------------


def test_siim_masks_keyed_by_sop_instance_uid(tmp_path):
    """SIIM-ACR Pneumothorax as downloaded: train-rle.csv (`ImageId, EncodedPixels`, the second name with a leading
    space; ImageId is the SOP Instance UID; relative column-major runs, `-1` for none, a row per pneumothorax)
    beside dicom-images-train/{study uid}/{series uid}/{SOPInstanceUID}.dcm, 1024x1024. The join reads each
    file's header; a row whose image is absent and a file with no row are quarantined."""
    rle2mask = reference_rle2mask()
    lines = table_lines("siim-pneumothorax-train-rle.csv.gz")
    assert lines[0] == "ImageId, EncodedPixels"
    by_image: dict[str, list[str]] = {}
    for line in lines[1:]:
        by_image.setdefault(line.split(",")[0], []).append(line.split(",", 1)[1])
    several = next(i for i, cells in by_image.items() if len(cells) >= 3)
    chosen = list(dict.fromkeys([*list(by_image)[:6], several]))
    absent = next(i for i in by_image if i not in chosen)
    body = [f"{i},{cell}" for i in [*chosen, absent] for cell in by_image[i]]
    data = tmp_path / "siim"
    data.mkdir()
    (data / "train-rle.csv").write_text(lines[0] + "\n" + "\n".join(body) + "\n")
    unlisted = "1.2.276.0.7230010.3.1.4.8323329.1.1517875100.1"

    def file_of(uid: str) -> str:  # SIIM's study and series UIDs differ from the SOP's in one component
        return f"dicom-images-train/{uid.replace('.3.1.4.', '.3.1.2.')}/{uid.replace('.3.1.4.', '.3.1.3.')}/{uid}.dcm"

    for n, uid in enumerate([*chosen, unlisted]):
        make_dicom(data / file_of(uid), ("MR_small.dcm", "CT_small.dcm")[n % 2], (1024, 1024), sop=uid, patient=f"{n}", shade=n)
    spec = dict(column=" EncodedPixels", order="column", form="relative", start=0, label="pneumothorax")
    table = dict(csv="train-rle.csv", key="sop_instance_uid", image_column="ImageId", rle_column=spec)
    loom, reports = run_ingest(write_recipe(tmp_path, [dicom_source(data, table, name="siim")]))
    recs = {r["uri"].rsplit("/", 1)[1][: -len(".dcm")]: r for r in records(loom).values()}
    assert reports["siim"].records == len(chosen) and set(recs) == set(chosen)
    absent_line = 2 + body.index(f"{absent},{by_image[absent][0]}")
    assert quarantine(loom) == sorted(
        [(file_of(unlisted), "no_table_row", "input"), (f"train-rle.csv:{absent_line}", "no_dicom_for_row", "input")]
    )
    positives = 0
    for uid in chosen:
        rec = recs[uid]
        assert uid not in rec["id"]
        cells = [c.strip() for c in by_image[uid] if c.strip() != "-1"]
        if not cells:
            assert rec["labels"] == [] and rec["rois"] == []
            continue
        positives += 1
        want = [rle2mask(cell, 1024, 1024).T.astype(bool) for cell in cells]
        got = [rle_decode(roi["rle"], 1024, 1024) for roi in rec["rois"]]
        assert rec["labels"] == ["pneumothorax"] and len(got) == sum(regions(m) for m in want)
        assert np.array_equal(np.logical_or.reduce(got), np.logical_or.reduce(want))
        for roi in rec["rois"]:
            ys, xs = np.nonzero(rle_decode(roi["rle"], 1024, 1024))
            assert roi["bbox"] == [xs.min() / 1024, ys.min() / 1024, (xs.max() + 1) / 1024, (ys.max() + 1) / 1024]
    assert positives >= 2 and len(recs[several]["rois"]) >= 3


# ---- VinDr: train/{image_id}.dicom, boxes in annotations.csv -------------------------------------------------

VINDR_HEADER = "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max"


def test_vindr_style_boxes_on_files_of_different_sizes(tmp_path):
    """VinDr-CXR / SpineXR / PCXR's layout: train/{image_id}.dicom and an annotations table
    (`image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max`, corners in pixels, a row per radiologist's box,
    "No finding" rows with empty box cells). Files of 128x128 and 48x64 (width x height: a box read with x and y
    swapped lands elsewhere); a test/ file with no row is kept unlabelled with `unmatched: keep`."""
    a, b, c, t = "a" * 32, "b" * 32, "c" * 32, "d" * 32
    table = [
        VINDR_HEADER,
        f"{a},Aortic enlargement,0,R8,60,10,100,40",
        f"{a},Cardiomegaly,3,R9,20.5,70,110,120",
        f"{b},Nodule/Mass,8,R10,10,20,30,50",
        f"{b},No finding,14,R11,,,,",
        f"{c},No finding,14,R8,,,,",
        f"{c},No finding,14,R9,,,,",
        f"{b},Pleural effusion,10,R10,50,60,90,90",  # outside the 48x64 image: dropped at decode
    ]
    data = tmp_path / "vindr"
    data.mkdir()
    (data / "annotations.csv").write_text("\n".join(table) + "\n")
    sizes = {a: (128, 128), b: (48, 64), c: (64, 64)}
    for n, (image, size) in enumerate(sizes.items()):
        base = "CT_small.dcm" if size == (128, 128) else "MR_small.dcm"
        make_dicom(data / "train" / f"{image}.dicom", base, size, sop=f"1.2.3.{n}", patient=f"P{n}", shade=n)
    make_dicom(data / "test" / f"{t}.dicom", "MR_small.dcm", (64, 64), sop="1.2.3.9", patient="P9", shade=9)
    spec = dict(
        csv="annotations.csv",
        image_column="image_id",
        image_template="{value}.dicom",
        label_column="class_name",
        box_columns=dict(xmin="x_min", ymin="y_min", xmax="x_max", ymax="y_max"),
        unmatched="keep",
    )
    loom, reports = run_ingest(write_recipe(tmp_path, [dicom_source(data, spec, name="vindr")]))
    recs = records(loom)
    assert reports["vindr"].records == 4
    ra, rb, rc = (recs[f"train/{i}.dicom"] for i in (a, b, c))
    assert (ra["width"], ra["height"], rb["width"], rb["height"]) == (128, 128, 48, 64)
    assert boxes(ra) == [
        ("Aortic enlargement", norm([60, 10, 100, 40], 128, 128)),
        ("Cardiomegaly", norm([20.5, 70, 110, 120], 128, 128)),
    ]
    assert ra["labels"] == ["Aortic enlargement", "Cardiomegaly"]
    assert boxes(rb) == [("Nodule/Mass", norm([10, 20, 30, 50], 48, 64))]
    assert rb["labels"] == ["Nodule/Mass", "No finding", "Pleural effusion"]
    assert rc["labels"] == ["No finding"] and rc["rois"] == []
    kept = recs[f"test/{t}.dicom"]
    assert kept["labels"] == [] and kept["rois"] == []
    assert quarantine(loom) == [(f"train/{b}.dicom", "box_outside_image", "annotation")]
    # the header's modality and the table's labels meet in one record; no table cell is copied into meta
    assert json.loads(ra["meta"])["Modality"] == "CT" and "R8" not in ra["meta"]


def test_table_keys_are_checked_in_the_recipe(tmp_path):
    (tmp_path / "d").mkdir()
    table = dict(csv="t.csv", key="sop_instance_uid", image_column="ImageId", image_template="{value}.dcm")
    with pytest.raises(RecipeError, match="image_template builds file names; with key: sop_instance_uid"):
        load_recipe(write_recipe(tmp_path, [dicom_source(tmp_path / "d", table, name="s")]))
    table = dict(csv="t.csv", image_column="ImageId", unmatched="drop")
    with pytest.raises(RecipeError, match=r"table\.unmatched"):
        load_recipe(write_recipe(tmp_path, [dicom_source(tmp_path / "d", table, name="s")]))


def test_header_keys_read_only_inside_the_root_and_within_the_budget(tmp_path):
    """key: patient_id reads each file's header at scan time: a link to a file outside the root is not read (an
    `outside_root` row), and a Patient ID past `header_bytes` is not found (the file is then named by no row)."""
    data = tmp_path / "d"
    make_dicom(data / "a.dcm", "CT_small.dcm", (128, 128), sop="1.2.3.1", patient="PAT-A", shade=1)
    make_dicom(tmp_path / "elsewhere" / "b.dcm", "MR_small.dcm", (64, 64), sop="1.2.3.2", patient="PAT-B", shade=2)
    (data / "b.dcm").symlink_to(tmp_path / "elsewhere" / "b.dcm")
    (data / "labels.csv").write_text("patient,finding\nPAT-A,effusion\nPAT-B,nodule\nPAT-A,cardiomegaly\n")
    table = dict(csv="labels.csv", key="patient_id", image_column="patient", label_column="finding")
    loom, reports = run_ingest(write_recipe(tmp_path / "r1", [dicom_source(data, table, name="t")]))
    recs = records(loom)
    assert list(recs) == ["a.dcm"] and recs["a.dcm"]["labels"] == ["effusion", "cardiomegaly"]
    assert recs["a.dcm"]["patient_id"] == salted_id(SALT, "PAT-A")
    assert quarantine(loom) == [
        ("b.dcm", "outside_root", "input"),
        ("labels.csv:3", "no_dicom_for_row", "input"),
        ("labels.csv:4", "duplicate_row", "warning"),
    ]
    # rows are named by their line, never by the Patient ID they hold
    assert not [q for q in rows(loom, "SELECT * FROM quarantine") if "PAT-" in q["message"]]
    (data / "b.dcm").unlink()
    (data / "labels.csv").write_text("patient,finding\nPAT-A,effusion\n")
    loom, reports = run_ingest(write_recipe(tmp_path / "r2", [dicom_source(data, dict(table, header_bytes=300), name="t")]))
    assert reports["t"].records == 0
    assert quarantine(loom) == [("a.dcm", "no_table_row", "input"), ("labels.csv:2", "no_dicom_for_row", "input")]
