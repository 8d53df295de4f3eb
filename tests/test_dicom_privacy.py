"""`export --format dicom` privacy (issue 31, items 11 and 12): no free text survives in a kept attribute, and
burned-in text is found in any colour or grey, anywhere in the image, on any checked frame. Real pydicom files
throughout; markers and text are planted into them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import cli, rows, run_ingest, write_recipe
from PIL import Image, ImageDraw, ImageFont
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

MARKER = b"ZZMARKER"
TEXT_VRS = frozenset("AE AS CS DA DS DT IS LO LT PN SH ST TM UC UI UR UT".split())
# what pydicom needs to decode the pixels: a marker there leaves no image to export (ingest quarantines the file)
DECODING = {"PhotometricInterpretation", "NumberOfFrames", "TransferSyntaxUID"}
# one attribute of every text VR the files may lack, and the free-text ones the export used to keep
ADDED = {
    "PatientAge": "040Y",
    "RetrieveAETitle": "AE",
    "ImageComments": "x",
    "InstitutionAddress": "x",
    "TextValue": "x",
    "PixelDataProviderURL": "x",
    "StrainAdditionalInformation": "x",
    "RescaleType": "HU",
    "ConvolutionKernel": "B30f",
    "StackID": "1",
    "ImagedNucleus": "1H",
    "LUTExplanation": "x",
    "WindowCenterWidthExplanation": "x",
    "AcquisitionDateTime": "20200101120000",
    "StudyTime": "120000",
    "BurnedInAnnotation": "NO",
    "BodyPartExamined": "CHEST",
    "ScanOptions": "HELICAL MODE",
}


def _plant(ds, planted: list[str], where: str = "") -> None:
    """A marker, numbered, as the raw value of every text attribute (in sequences too)."""
    for elem in list(ds):
        if elem.VR == "SQ":
            for k, item in enumerate(elem.value):
                _plant(item, planted, f"{where}{elem.keyword}[{k}].")
        elif elem.VR in TEXT_VRS and elem.keyword not in DECODING:
            value = MARKER + b"%04d" % len(planted)
            planted.append(where + (elem.keyword or str(elem.tag)))
            ds._dict[elem.tag] = RawDataElement(elem.tag, elem.VR, len(value), value, 0, False, True)


def _planted_copy(name: str, out: Path, planted: list[str]) -> None:
    ds = pydicom.dcmread(get_testdata_file(name))
    for keyword, value in ADDED.items():
        if keyword not in ds:
            ds.add_new(tag_for_keyword(keyword), dictionary_VR(tag_for_keyword(keyword)), value)
    block = ds.private_block(0x0009, "MEDLOOM TEST", create=True)
    for offset, vr in enumerate(("LO", "SH", "UT", "PN", "DS")):
        block.add_new(0x10 + offset, vr, "1")
    inner = Dataset()
    inner.add_new(0x00091010, "LO", "x")  # a private tag inside a private sequence
    ds.add_new(0x00091020, "SQ", Sequence([inner]))
    for keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        if keyword in ds:  # private tags inside the functional groups of an enhanced multi-frame file
            ds[keyword][0].private_block(0x0011, "MEDLOOM TEST", create=True).add_new(0x10, "SH", "x")
    for item in ds.get("PerFrameFunctionalGroupsSequence", []):
        item.FrameContentSequence[0].FrameAcquisitionDateTime = "20200101120000"
    _plant(ds, planted)
    _plant(ds.file_meta, planted, "meta.")
    ds.preamble = MARKER * 16
    ds.save_as(out / name)


REAL = ("CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "eCT_Supplemental.dcm", "US1_UNCR.dcm", "OBXXXX1A.dcm")


def test_no_marker_planted_in_any_text_attribute_reaches_a_dicom_copy(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    planted: list[str] = []
    for name in REAL:
        _planted_copy(name, data, planted)
    assert len(planted) > 500 and all(MARKER in p.read_bytes() for p in data.iterdir())
    kinds = {p.split(".")[-1] for p in planted}
    assert {
        "RescaleType",
        "ConvolutionKernel",
        "StackID",
        "LUTExplanation",
        "SOPClassUID",
        "StudyTime",
        "FrameAcquisitionDateTime",
        "ImplementationVersionName",
    } <= kinds
    recipe = write_recipe(tmp_path, [dict(name="dcm", reader="dicom", path=str(data), task="disease")])
    ingest = cli("ingest", recipe, "-q")
    proc = cli("export", tmp_path / "loom", "--format", "dicom", "--out", tmp_path / "d", "--burned-in", "flag", "--json")
    report = json.loads(proc.stdout)
    assert report["files"] == len(REAL), report  # every planted file is exported, the ultrasounds flagged
    assert len(report["flagged_burned_in"]) == 2
    assert not report["failed"]
    leaks = [
        (str(p), planted[int(number)] if number.isdigit() else number.decode())
        for p in (tmp_path / "d").rglob("*")
        if p.is_file()
        for number in _markers(p.read_bytes())
    ]
    assert not leaks, leaks  # (file, attribute) of every marker found in an exported byte
    for text in (proc.stdout, proc.stderr, ingest.stdout, ingest.stderr):  # nor on the console (pydicom's warnings)
        assert MARKER.decode() not in text
    originals = {pydicom.dcmread(data / n).pixel_array.shape: n for n in REAL}
    for path in sorted((tmp_path / "d").rglob("*.dcm")):
        copy = pydicom.dcmread(path)  # still an image, the same one
        np.testing.assert_array_equal(copy.pixel_array, pydicom.dcmread(data / originals[copy.pixel_array.shape]).pixel_array)


def _markers(data: bytes) -> list[bytes]:
    """The number after every marker in `data`."""
    found, at = [], data.find(MARKER)
    while at >= 0:
        found.append(data[at + len(MARKER) : at + len(MARKER) + 4])
        at = data.find(MARKER, at + 1)
    return found


def test_kept_text_attributes_hold_only_vocabulary_numbers_dates_and_uids():
    from medloom.export.dicom import deidentify, new_uid

    ds = pydicom.dcmread(get_testdata_file("eCT_Supplemental.dcm"))
    frame = ds.PerFrameFunctionalGroupsSequence[0]
    frame.FrameContentSequence[0].StackID = "STACK OF DOE"
    frame.PixelValueTransformationSequence = Sequence([Dataset()])
    frame.PixelValueTransformationSequence[0].update(
        {"RescaleType": "HU", "RescaleSlope": "1", "RescaleIntercept": "-1024", "LUTExplanation": "DOE"}
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "DR DOE"]
    ds.BodyPartExamined, ds.ConvolutionKernel, ds.AcquisitionDateTime = "HEAD", "B30f", "20200102030405.5+0100"
    ds.ContentTime, ds.SeriesTime, ds.PatientOrientation = "101010", "DOE", ["L", "DOE"]
    ds.FrameOfReferenceUID, ds.ScanOptions = "1.2.3.4", ["AXIAL MODE", "DOE"]
    ds.ContentDate, ds.StudyDate = "20200101DOE", "20200101"
    shared = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    shared.RescaleType = "DOE"
    deidentify(ds, "salt")
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"] and ds.BodyPartExamined == "HEAD"
    assert "ConvolutionKernel" not in ds and "SeriesTime" not in ds and "PatientOrientation" not in ds
    assert ds.ContentTime == "101010" and ds.ScanOptions == "AXIAL MODE" and ds.Modality == "CT"
    assert "ContentDate" not in ds and len(ds.StudyDate) == 8 and ds.StudyDate < "20200101"
    assert ds.AcquisitionDateTime.endswith("030405.5+0100") and not ds.AcquisitionDateTime.startswith("20200102")
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2.1"  # a standard UID stays
    assert ds.FrameOfReferenceUID == new_uid("salt", "1.2.3.4")
    item = ds.PerFrameFunctionalGroupsSequence[0]
    assert "StackID" not in item.FrameContentSequence[0]
    assert item.PixelValueTransformationSequence[0].RescaleType == "HU"
    assert "LUTExplanation" not in item.PixelValueTransformationSequence[0]
    assert ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0].RescaleType == "US"
    assert ds.PerFrameFunctionalGroupsSequence[1].FrameContentSequence[0].StackID == "1"  # a number stays


# ---- burned-in text (item 12) ----------------------------------------------------------------------------------

BITMAP = ImageFont.load_default_imagefont()


def _text_mask(shape: tuple[int, int], where: str, text: str = "DOE^JOHN 1961-02-03") -> np.ndarray:
    canvas = Image.new("L", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(canvas)
    _, _, right, bottom = draw.textbbox((0, 0), text, font=BITMAP)
    xy = ((shape[1] - right) // 2, (shape[0] - bottom) // 2) if where == "centre" else (6, 6)
    draw.text(xy, text, fill=255, font=BITMAP)
    return np.asarray(canvas) > 0


def _texted_files(folder: Path) -> None:
    """A real CT with text where the old border check did not look: yellow on an RGB copy and mid-grey on the
    CT, both in the centre; white on the last of three frames (the old check read the middle one)."""
    from medloom.sources.dicom import display_frame

    folder.mkdir(parents=True)
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    grey = np.kron(display_frame(ct, ct.pixel_array)[0], np.ones((4, 4), np.uint8))
    rgb = np.repeat(grey[..., None], 3, axis=2)
    rgb[_text_mask(grey.shape, "centre")] = (255, 255, 0)
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for keyword in ("RescaleIntercept", "RescaleSlope"):
        del ds[keyword]
    ds.Rows, ds.Columns, ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.PlanarConfiguration = 512, 512, "RGB", 3, 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData, ds.SOPInstanceUID = rgb.tobytes(), ds.SOPInstanceUID + ".1"
    ds.save_as(folder / "yellow_centre.dcm")
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    raw = np.kron(ds.pixel_array, np.ones((4, 4), ds.pixel_array.dtype))
    raw[_text_mask(raw.shape, "centre")] = 40 + 1024  # 40 HU: mid-grey under the window below
    ds.Rows, ds.Columns, ds.WindowCenter, ds.WindowWidth = 512, 512, 40, 400
    ds.PixelData, ds.SOPInstanceUID = raw.tobytes(), ds.SOPInstanceUID + ".2"
    ds.save_as(folder / "grey_centre.dcm")
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    frames = np.stack([np.kron(ds.pixel_array, np.ones((4, 4), ds.pixel_array.dtype))] * 3)
    frames[2][_text_mask(frames.shape[1:], "top left")] = frames.max()
    ds.Rows, ds.Columns, ds.NumberOfFrames = 512, 512, 3
    ds.PixelData, ds.SOPInstanceUID = frames.tobytes(), ds.SOPInstanceUID + ".3"
    ds.save_as(folder / "last_frame.dcm")
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "clean.dcm")


def test_burned_in_text_in_colour_grey_centre_or_another_frame_is_found(tmp_path):
    from medloom.export.dicom import export_dicom

    _texted_files(tmp_path / "data")
    loom, _ = run_ingest(write_recipe(tmp_path, [dict(name="dcm", reader="dicom", path=str(tmp_path / "data"), task="disease")]))
    report = export_dicom(loom, tmp_path / "d", quiet=True)
    file_of = {r["id"]: r["uri"].replace(".", "_") for r in rows(loom, "SELECT id, uri FROM records")}  # ids are
    # pseudonyms: the catalog's uri names the file
    reasons = {file_of[e["records"][0]]: e["reason"] for e in report.excluded_burned_in}
    assert sorted(reasons) == ["grey_centre_dcm", "last_frame_dcm", "yellow_centre_dcm"], report
    assert reasons["last_frame_dcm"].startswith("text-like marks in the image (frame 2, rows ")
    assert "frame 0, rows 25" in reasons["grey_centre_dcm"]  # the centre line, rows 252-259
    assert report.files == 1 and not report.failed
    # checking fewer frames is the user's choice: a budget of 1 reads the first frame only
    flagged = export_dicom(loom, tmp_path / "f", burned_in="flag", burned_in_frames=1, quiet=True)
    assert flagged.files == 4 and len(flagged.flagged_burned_in) == 2
    copies = [pydicom.dcmread(p) for p in (tmp_path / "f").rglob("*.dcm")]
    assert sorted(str(c.get("BurnedInAnnotation", "")) for c in copies) == ["", "", "YES", "YES"]


def test_frames_checked_follow_the_stated_rule():
    from medloom.export.burned_in import frames_to_check

    assert frames_to_check(10) == list(range(10)) and frames_to_check(32) == list(range(32))
    sample = frames_to_check(120)
    assert len(sample) == 32 and sample[0] == 0 and sample[-1] == 119
    assert max(np.diff(sample)) - min(np.diff(sample)) <= 1  # evenly spaced
    assert frames_to_check(120, 0) == list(range(120)) and frames_to_check(5, 1) == [0]


def test_burned_in_ocr_needs_tesseract_and_says_how_to_get_it(tmp_path):
    _texted_files(tmp_path / "data")
    run_ingest(write_recipe(tmp_path, [dict(name="dcm", reader="dicom", path=str(tmp_path / "data"), task="disease")]))
    (tmp_path / "bin").mkdir()
    proc = cli(
        "export",
        tmp_path / "loom",
        "--format",
        "dicom",
        "--out",
        tmp_path / "d",
        "--burned-in-ocr",
        env={"PATH": str(tmp_path / "bin")},
        check=False,
    )
    assert proc.returncode == 2 and "tesseract" in proc.stderr and "apt-get install tesseract-ocr" in proc.stderr
    assert not (tmp_path / "d").exists() or not list((tmp_path / "d").rglob("*.dcm"))


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract is not installed")
def test_ocr_reads_large_type_the_heuristic_leaves():
    from medloom.export.burned_in import scan, tesseract, text_box
    from medloom.sources.dicom import display_frame

    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    image = Image.fromarray(np.kron(display_frame(ct, ct.pixel_array)[0], np.ones((4, 4), np.uint8)))
    ImageDraw.Draw(image).text((20, 420), "JOHN DOE", fill=255, font=ImageFont.load_default(72))
    frame = np.asarray(image)
    assert text_box(frame) is None  # glyphs 50+ pixels high: over the heuristic's line height
    found = scan(1, lambda _: frame, ocr=tesseract())
    assert found is not None and found.how == "ocr" and found.reason() == "text read by OCR (frame 0)"
