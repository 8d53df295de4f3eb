import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import cli, rows, run_ingest, write_recipe
from pydicom.data import get_testdata_file


@pytest.fixture(scope="module")
def dicom_loom(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dicom")
    data = tmp / "data"
    data.mkdir()
    for name in [
        "RG1_UNCR.dcm",
        "emri_small.dcm",
        "OBXXXX1A_2frame.dcm",
        "US1_UNCR.dcm",
        "693_UNCR.dcm",
        "emri_small_jpeg_ls_lossless.dcm",
        "liver.dcm",
    ]:
        shutil.copy(get_testdata_file(name), data / name)
    shutil.copy(get_testdata_file("CT_small.dcm"), data / "IM000001")  # no extension: found by DICM marker
    (data / "notes.txt").write_text("not dicom")
    loom, reports = run_ingest(write_recipe(tmp, [dict(name="d", reader="dicom", path=str(data), task="disease")]))
    return loom, reports["d"]


def test_dicom_tags_map_through_vocabulary(dicom_loom):
    loom, _ = dicom_loom
    recs = {r["uri"]: r for r in rows(loom, "SELECT * FROM records WHERE frame <= 0")}
    assert (recs["RG1_UNCR.dcm"]["modality"], recs["RG1_UNCR.dcm"]["anatomy"]) == ("X-ray", "chest")
    assert (recs["emri_small.dcm"]["modality"], recs["emri_small.dcm"]["anatomy"]) == ("MRI", "brain")
    assert recs["US1_UNCR.dcm"]["modality"] == "ultrasound" and recs["US1_UNCR.dcm"]["channels"] == 3
    assert recs["IM000001"]["modality"] == "CT"


def test_monochrome1_and_windows(dicom_loom):
    loom, _ = dicom_loom
    cr = rows(loom, "SELECT render, width, height FROM records WHERE uri = 'RG1_UNCR.dcm'")[0]
    assert cr["render"]["invert"] is True and cr["render"]["window_source"] == "tags"
    assert (cr["width"], cr["height"]) == (1841, 1955)
    ct = rows(loom, "SELECT render FROM records WHERE uri = '693_UNCR.dcm'")[0]["render"]
    assert ct["invert"] is False and ct["window_width"] > 0


def test_multiframe_gives_one_record_per_frame(dicom_loom):
    loom, _ = dicom_loom
    frames = rows(loom, "SELECT id, frame FROM records WHERE uri = 'emri_small.dcm' ORDER BY frame")
    assert [f["frame"] for f in frames] == list(range(10))
    assert frames[3]["id"] == frames[0]["id"][:-5] + "00003" and "emri" not in frames[3]["id"]  # a pseudonym
    assert len({r["pixel_hash"] for r in rows(loom, "SELECT pixel_hash FROM records WHERE uri = 'emri_small.dcm'")}) == 10
    assert len(rows(loom, "SELECT 1 FROM records WHERE uri = 'OBXXXX1A_2frame.dcm'")) == 2


def test_patient_ids_are_salted_hashes(dicom_loom):
    import pydicom

    loom, _ = dicom_loom
    raw = str(pydicom.dcmread(get_testdata_file("CT_small.dcm")).PatientID)
    rec = rows(loom, "SELECT patient_id, study_id, meta FROM records WHERE uri = 'IM000001'")[0]
    assert rec["patient_id"] and rec["patient_id"] != raw and raw not in rec["meta"]
    assert len(rec["patient_id"]) == 20 and rec["study_id"]


def test_undecodable_and_non_image_objects_are_quarantined(dicom_loom):
    loom, report = dicom_loom
    q = {r["path"]: r for r in rows(loom, "SELECT * FROM quarantine")}
    assert q["liver.dcm"]["reason"] == "not_an_image"
    try:
        import libjpeg  # noqa: F401
    except ImportError:
        assert q["emri_small_jpeg_ls_lossless.dcm"]["reason"] == "no_decoder"
        assert "JPEG-LS" in q["emri_small_jpeg_ls_lossless.dcm"]["message"]
        assert "medloom[dicom-codecs]" in q["emri_small_jpeg_ls_lossless.dcm"]["message"]
    assert report.filtered == {"not a DICOM file": 1}
    assert report.inputs == report.inputs_ok + report.quarantined_inputs + 1


def _volume(path, shape=(20, 24, 16), affine=None, seed=0, mask=False):
    rng = np.random.default_rng(seed)
    if mask:
        data = np.zeros(shape, np.uint8)
        data[5:12, 6:14, 4:7] = 1
        data[14:17, 3:6, 5] = 2
    else:
        data = (rng.normal(500, 100, shape)).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0]) if affine is None else affine), path)


def test_nifti_slicing_with_masks(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "seg").mkdir()
    _volume(tmp_path / "img" / "a.nii.gz")
    _volume(tmp_path / "seg" / "a.nii.gz", mask=True)
    _volume(tmp_path / "img" / "b.nii.gz", seed=1)
    _volume(tmp_path / "seg" / "b.nii.gz", mask=True, affine=np.diag([1.0, 1.0, 1.0, 1.0]))  # disagrees
    loom, reports = run_ingest(
        write_recipe(
            tmp_path,
            [
                dict(
                    name="vol",
                    reader="nifti",
                    path=str(tmp_path / "img"),
                    masks_dir="../seg",
                    only_mask_slices=True,
                    mask_labels={1: "tumor", 2: "edema"},
                    modality="MRI",
                    anatomy="brain",
                    task="lesion segmentation",
                )
            ],
        )
    )
    recs = rows(loom, "SELECT * FROM records ORDER BY frame")
    assert [r["frame"] for r in recs] == [4, 5, 6]  # axial slices with mask content
    assert recs[0]["id"] == "vol/a_nii_gz/00004"
    assert (recs[0]["width"], recs[0]["height"]) == (20, 24)
    assert recs[1]["labels"] == ["edema", "tumor"] and recs[0]["labels"] == ["tumor"]
    assert recs[0]["render"]["axis"] == 2 and recs[0]["render"]["window_source"] == "percentiles"
    q = rows(loom, "SELECT * FROM quarantine")
    assert [(x["path"], x["reason"]) for x in q] == [("b.nii.gz", "mask_mismatch")]
    assert "affine" in q[0]["message"]


def test_nifti_stride_and_axis(tmp_path):
    _volume(tmp_path / "v.nii")
    loom, _ = run_ingest(
        write_recipe(
            tmp_path,
            [
                dict(
                    name="v",
                    reader="nifti",
                    path=str(tmp_path / "v.nii"),
                    axis="coronal",
                    stride=5,
                    window=[500, 400],
                    modality="CT",
                    anatomy="abdomen",
                    task="disease",
                )
            ],
        )
    )
    recs = rows(loom, "SELECT frame, width, height, render FROM records ORDER BY frame")
    assert [r["frame"] for r in recs] == [0, 5, 10, 15, 20]
    assert (recs[0]["width"], recs[0]["height"]) == (20, 16)
    assert recs[0]["render"]["window_source"] == "recipe"


def test_mni152_from_nilearn(tmp_path):
    from nilearn import datasets

    nib.save(datasets.load_mni152_template(resolution=2), tmp_path / "mni.nii.gz")
    loom, _ = run_ingest(
        write_recipe(
            tmp_path,
            [
                dict(
                    name="mni",
                    reader="nifti",
                    path=str(tmp_path / "mni.nii.gz"),
                    stride=20,
                    modality="MRI",
                    anatomy="brain",
                    task="organ recognition",
                )
            ],
        )
    )
    recs = rows(loom, "SELECT width, height FROM records")
    assert len(recs) >= 4 and all(r["width"] > 50 for r in recs)


def test_enhanced_multiframe_ct_reads_rescale_window_and_spacing_from_its_functional_groups(tmp_path):
    """pydicom's eCT_Supplemental.dcm keeps rescale (intercept -1024) and its window (49/102) only in the
    shared functional groups: frames render in Hounsfield units through that window, in ingest and export."""
    import pydicom

    from medloom.catalog import read_manifest
    from medloom.view.render import record_image, render_sources

    (tmp_path / "data").mkdir()
    shutil.copy(get_testdata_file("eCT_Supplemental.dcm"), tmp_path / "data" / "ect.dcm")
    loom, reports = run_ingest(write_recipe(tmp_path, [dict(name="e", reader="dicom", path="data", task="disease")]))
    assert reports["e"].records == 2
    ds = pydicom.dcmread(get_testdata_file("eCT_Supplemental.dcm"))
    sources = {"sources": render_sources(read_manifest(loom))}
    for rec in rows(loom, "SELECT * FROM records ORDER BY frame"):
        assert rec["anatomy"] == "brain"  # its Frame Anatomy's coded region: it has no Body Part Examined
        assert (rec["render"]["window_center"], rec["render"]["window_width"]) == (49.0, 102.0)
        assert rec["render"]["window_source"] == "tags"
        assert '"PixelSpacing": [0.388672, 0.388672]' in rec["meta"]
        hu = ds.pixel_array[rec["frame"]].astype(np.float64) - 1024.0  # slope 1, intercept -1024
        expected = np.clip((hu - (49 - 51)) * 255 / 102, 0, 255).astype(np.uint8)
        got = np.asarray(record_image(rec, sources, {}))
        assert np.abs(got.astype(int) - expected).max() <= 1
        assert len(np.unique(got)) > 64  # a grey CT, not the near-binary image of raw values


def test_the_demo_dicom_sources_say_what_their_images_show(tmp_path):
    """The demo's MAT facts are true of its images: the head CTs are brain, the spine CT spine, the shoulder MR
    an upper limb, the ultrasounds a lymph node and an obstetric scan; no CT is called abdomen."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_demo", Path(__file__).parents[1] / "examples/demo/build_demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    demo.gather(tmp_path)
    (tmp_path / "recipe.yaml").write_text(demo.RECIPE)
    names = [line.split(": ")[1] for line in demo.RECIPE.splitlines() if line.startswith("  - name: ")]
    dicom = [n for n in names if n.startswith(("cr-", "ct", "mr", "ultrasound"))]
    cli("ingest", tmp_path / "recipe.yaml", "-q", *(a for n in dicom for a in ("--source", n)))
    got = {(r["uri"], r["modality"], r["anatomy"]) for r in rows(tmp_path / "loom", "SELECT uri, modality, anatomy FROM records")}
    assert got == {
        ("RG1_UNCR.dcm", "X-ray", "chest"),
        ("RG3_UNCR.dcm", "X-ray", "lower limb"),
        ("693_UNCR.dcm", "CT", "brain"),
        ("eCT_Supplemental.dcm", "CT", "brain"),
        ("CT_small.dcm", "CT", "spine"),
        ("emri_small.dcm", "MRI", "brain"),
        ("MR2_UNCR.dcm", "MRI", "upper limb"),
        ("MR_small.dcm", "MRI", "unknown"),
        ("US1_UNCR.dcm", "ultrasound", "lymph node"),
        ("OBXXXX1A_2frame.dcm", "ultrasound", "pelvis"),
    }
