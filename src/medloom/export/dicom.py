"""`export --format dicom`: de-identified copies of the DICOM files behind the selected records.

De-identification follows the Basic Application Level Confidentiality Profile (DICOM PS3.15 Annex E) with
the "Retain Longitudinal Temporal Information with Modified Dates" option, done as an allow-list: an
attribute is kept only when it is known to describe the image and not the person (pixel description,
geometry, acquisition physics, windows and look-up tables); everything else, private attributes,
overlays, curves, icons and the file preamble included, is removed. A kept attribute's value is kept only
in a form that cannot carry free text, by its value representation:

- code strings and the few LO/SH attributes kept (Modality, Image Type, Body Part Examined, Rescale Type,
  Stack ID, ...): each value must be in the attribute's fixed vocabulary (`dicom_terms`: the standard's
  defined terms); other values are dropped, or the attribute is (Rescale Type and Modality LUT Type
  become US, "unspecified");
- numbers (DS, IS): kept only when every value is a number;
- dates (DA, the date part of DT): shifted by a per-patient number of days (1 to 3650, from the salted
  hash), so intervals between a patient's studies survive; times (TM, the rest of DT) kept when they are
  times; anything else is dropped;
- UIDs: a standard UID (a SOP class, a transfer syntax) stays; every other one (study, series, instance,
  frame of reference, a private SOP class) becomes `2.25.<number>`, a salted hash of the original, so
  references between the copies still hold;
- every other text (LO, SH, LT, ST, UT, PN, UC, UR, AE, AS: explanations, kernels, names) and any
  attribute of unknown representation (UN): removed.

Then the attributes an image object must carry are written back with values that identify no one:
Patient's Name and Patient ID become one pseudonym per patient, the salted hash the catalog already
stores (records of one patient stay together and nobody without the loom's salt can go back); Referring
Physician's Name, Accession Number, Study ID, birth date and sex are empty (the profile's Z). What was
done is recorded in the copies: Patient Identity Removed = YES, De-identification Method, the
De-identification Method Code Sequence (113100 Basic Application Confidentiality Profile, 113107 Retain
Longitudinal Temporal Information Modified Dates Option) and Longitudinal Temporal Information Modified;
the file meta header is written afresh.

Pixels are copied as they are: text burned into them cannot be removed here. A file whose Burned In
Annotation is YES, or whose frames show text-like marks (`burned_in`: any colour, anywhere, every frame
up to a budget; optionally OCR), is excluded (or, with `--burned-in flag`, exported with Burned In
Annotation = YES and listed as flagged); never exported silently.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import catalog
from ..errors import DicomExportError
from ..locks import hold
from ..records import salted_id
from ..sources.dicom import is_number, quiet_values, values_of
from . import open_output_folder
from .burned_in import MAX_FRAMES
from .dicom_terms import IMAGE_TYPE_HEAD, PLACEHOLDER, VOCABULARY, allowed

KEEP = frozenset(
    {
        # SOP common, general image and series (non-identifying parts)
        "SOPClassUID",
        "SpecificCharacterSet",
        "Modality",
        "ImageType",
        "BodyPartExamined",
        "ViewPosition",
        "Laterality",
        "ImageLaterality",
        "PatientOrientation",
        "PatientPosition",
        "SeriesNumber",
        "InstanceNumber",
        "AcquisitionNumber",
        "LossyImageCompression",
        "LossyImageCompressionRatio",
        "LossyImageCompressionMethod",
        "PresentationIntentType",
        "ScanOptions",
        "ConversionType",
        # dates and times (dates are shifted, times kept)
        "StudyDate",
        "SeriesDate",
        "AcquisitionDate",
        "ContentDate",
        "StudyTime",
        "SeriesTime",
        "AcquisitionTime",
        "ContentTime",
        "AcquisitionDateTime",
        # image pixel module
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "PlanarConfiguration",
        "PixelAspectRatio",
        "NumberOfFrames",
        "FrameIncrementPointer",
        "FrameTime",
        "PixelData",
        "FloatPixelData",
        "DoubleFloatPixelData",
        "SmallestImagePixelValue",
        "LargestImagePixelValue",
        "RedPaletteColorLookupTableDescriptor",
        "GreenPaletteColorLookupTableDescriptor",
        "BluePaletteColorLookupTableDescriptor",
        "RedPaletteColorLookupTableData",
        "GreenPaletteColorLookupTableData",
        "BluePaletteColorLookupTableData",
        "SegmentedRedPaletteColorLookupTableData",
        "SegmentedGreenPaletteColorLookupTableData",
        "SegmentedBluePaletteColorLookupTableData",
        # geometry
        "PixelSpacing",
        "ImagerPixelSpacing",
        "SliceThickness",
        "SpacingBetweenSlices",
        "ImageOrientationPatient",
        "ImagePositionPatient",
        "SliceLocation",
        "PixelSpacingCalibrationType",
        # value transforms
        "RescaleIntercept",
        "RescaleSlope",
        "RescaleType",
        "WindowCenter",
        "WindowWidth",
        "VOILUTFunction",
        "VOILUTSequence",
        "ModalityLUTSequence",
        "LUTDescriptor",
        "LUTData",
        "ModalityLUTType",
        "PresentationLUTShape",
        "BurnedInAnnotation",
        "RecognizableVisualFeatures",
        # acquisition physics
        "KVP",
        "ExposureTime",
        "XRayTubeCurrent",
        "Exposure",
        "EchoTime",
        "RepetitionTime",
        "InversionTime",
        "FlipAngle",
        "MagneticFieldStrength",
        "ScanningSequence",
        "SequenceVariant",
        "MRAcquisitionType",
        "EchoTrainLength",
        "ImagingFrequency",
        "ImagedNucleus",
        "NumberOfAverages",
        "DistanceSourceToDetector",
        "DistanceSourceToPatient",
        "EstimatedRadiographicMagnificationFactor",
        "FieldOfViewShape",
        "FieldOfViewDimensions",
        "UltrasoundColorDataPresent",
        # enhanced multi-frame: the functional groups, filtered by this same list inside
        "SharedFunctionalGroupsSequence",
        "PerFrameFunctionalGroupsSequence",
        "PixelMeasuresSequence",
        "PlanePositionSequence",
        "PlaneOrientationSequence",
        "PixelValueTransformationSequence",
        "FrameVOILUTSequence",
        "FrameContentSequence",
        "FrameAcquisitionDateTime",
        "FrameReferenceDateTime",
        "InStackPositionNumber",
        "TemporalPositionIndex",
        "StackID",
        "DimensionIndexValues",
    }
)
REPLACED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
EMPTY = ("ReferringPhysicianName", "AccessionNumber", "StudyID", "PatientBirthDate", "PatientSex")
METHOD = [
    "medloom: PS3.15 E.1 basic profile as an allow-list",
    "pseudonymous patient ids and UIDs (salted hashes)",
    "dates shifted per patient (1-3650 days)",
]  # LO: 64 characters a value
BURNED_IN_CHOICES = ("exclude", "flag")
TEXT_VRS = frozenset("AE AS CS DA DS DT IS LO LT PN SH ST TM UC UI UR UT".split())
TIME = re.compile(r"\d{2}(:?\d{2}(:?\d{2}(\.\d{1,6})?)?)?")
DATETIME_REST = re.compile(r"(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?([+-]\d{4})?")


@dataclass
class DicomReport:
    out: str
    records: int = 0  # selected records
    not_dicom: int = 0  # selected records from other readers (left out)
    files: int = 0  # de-identified copies written
    excluded_burned_in: list[dict] = field(default_factory=list)
    flagged_burned_in: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    rois: dict = field(default_factory=dict)  # ROIs and accepted proposals the copies leave out
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        return [
            f"export dicom: {self.files} de-identified file(s) from {self.records - self.not_dicom} DICOM "
            f"record(s) ({self.not_dicom} other records left out); burned-in text: {len(self.excluded_burned_in)} "
            f"excluded, {len(self.flagged_burned_in)} flagged; {len(self.failed)} failed; {self.out}"
        ] + ([f"ROIs: {self.rois['note']}"] if self.rois.get("proposals_left_out") else [])

    def warnings(self) -> list[tuple[str, str]]:
        return [("excluded", f"{item['records'][0]}: {item['reason']}") for item in self.excluded_burned_in[:20]]


def export_format(loom: Path, out: Path, request, *, workers=None, quiet: bool = False, wait: bool = False) -> DicomReport:
    """`formats.FORMATS`' entry for dicom (files are copied, not rendered: `workers` is not used)."""
    return export_dicom(
        loom,
        out,
        where=request.where,
        include_duplicates=request.include_duplicates,
        burned_in=request.burned_in,
        burned_in_frames=request.burned_in_frames,
        burned_in_ocr=request.burned_in_ocr,
        quiet=quiet,
        wait=wait,
        splits=request.splits,
        excluded=request.excluded,
        proposals=request.proposals,
    )


def new_uid(salt: str, uid: str) -> str:
    """A UID under the 2.25 root from a salted hash: the same original always maps to the same copy."""
    digest = hashlib.blake2b(str(uid).encode(), key=salt.encode()[:64], digest_size=16).digest()
    return "2.25." + str(int.from_bytes(digest, "big"))


def day_shift(salt: str, patient: str) -> int:
    """Days every date of one patient moves back (1 to 3650): intervals between studies survive."""
    digest = hashlib.blake2b(("dates:" + patient).encode(), key=salt.encode()[:64], digest_size=4).digest()
    return 1 + int.from_bytes(digest, "big") % 3650


def shift_date(value: str, days: int) -> str:
    """A DA value (or a DT's date part) moved back `days`; "" when it is not a date."""
    text = str(value or "").strip()
    if len(text) < 8 or not text[:8].isdigit():
        return ""
    try:
        day = dt.date(int(text[:4]), int(text[4:6]), int(text[6:8])) - dt.timedelta(days=days)
    except ValueError:
        return ""
    return day.strftime("%Y%m%d") + text[8:]


def _clean(elem, days: int, salt: str) -> list[str] | None:
    """The values a kept text attribute may keep (see the module docstring), or None to remove it."""
    vr, keyword, values = elem.VR, elem.keyword, values_of(elem)
    if not values:
        return [] if vr in ("DA", "DT", "TM", "DS", "IS", "UI") or keyword in VOCABULARY else None
    if vr == "DA":
        kept = [shift_date(v, days) if len(v) == 8 else "" for v in values]
    elif vr == "DT":
        kept = [shift_date(v, days) if DATETIME_REST.fullmatch(v[8:]) else "" for v in values]
    elif vr == "TM":
        kept = [v for v in values if TIME.fullmatch(v)]
    elif vr in ("DS", "IS"):
        return values if all(is_number(vr, v) for v in values) else None
    elif vr == "UI":
        from pydicom.uid import UID_dictionary

        return [v if v in UID_dictionary and keyword not in REPLACED_UIDS else new_uid(salt, v) for v in values]
    elif keyword in VOCABULARY:
        kept = [v for v in values if allowed(keyword, v)]
        if keyword == "ImageType" and [v in terms for v, terms in zip(values, IMAGE_TYPE_HEAD)] != [True, True]:
            return None
        if len(kept) < len(values) and keyword in PLACEHOLDER:
            return [PLACEHOLDER[keyword]]
        if len(kept) < len(values) and keyword == "PatientOrientation":  # two directions or none
            return None
    else:
        return None
    kept = [v for v in kept if v]
    return kept or None


def _filter(ds, days: int, salt: str) -> None:
    """Keep only allow-listed attributes (recursively in sequences), each with the values `_clean` allows."""
    for elem in list(ds):
        keyword = elem.keyword
        if elem.tag.is_private or keyword not in KEEP and keyword not in REPLACED_UIDS or elem.VR == "UN":
            del ds[elem.tag]
        elif elem.VR == "SQ":
            for item in elem.value:
                _filter(item, days, salt)
        elif elem.VR in TEXT_VRS:
            values = _clean(elem, days, salt)
            if values is None:
                del ds[elem.tag]
            else:
                elem.value = values[0] if len(values) == 1 else values


def deidentify(ds, salt: str):
    """The dataset, de-identified in place (see the module docstring); returns the patient pseudonym."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import UID_dictionary

    patient = salted_id(salt, ds.get("PatientID") or ds.get("PatientName") or "unknown")
    days = day_shift(salt, patient)
    meta = getattr(ds, "file_meta", None)
    syntax = str(getattr(meta, "TransferSyntaxUID", "") or "")
    _filter(ds, days, salt)
    ds.PatientName = patient
    ds.PatientID = patient
    for keyword in EMPTY:
        setattr(ds, keyword, "")
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if keyword not in ds:  # an object without them is invalid; give stable new ones
            setattr(ds, keyword, new_uid(salt, f"{patient}:{keyword}"))
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD
    codes = []
    for value, meaning in (
        ("113100", "Basic Application Confidentiality Profile"),
        ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ):
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        codes.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(codes)
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    fresh = FileMetaDataset()  # implementation UID and version: the writer's own (pydicom's)
    if "SOPClassUID" in ds:
        fresh.MediaStorageSOPClassUID = ds.SOPClassUID
    fresh.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if syntax in UID_dictionary:
        fresh.TransferSyntaxUID = syntax
    ds.file_meta = fresh
    ds.preamble = None  # 128 bytes anyone may have written anything into; written back as zeros
    return patient


def _selected_files(
    loom: Path,
    where: str | None,
    include_duplicates: bool,
    splits: list[str] | None,
    excluded=None,
    proposals: str = "accepted",
) -> tuple[dict, int, int, dict]:
    """{(source, uri): (split, [record ids])} of the DICOM records selected; counts of records and others; what
    is left of their ROIs (the copies carry the files' own objects only: no ROI, no accepted proposal)."""
    from ..view.proposals import roi_summary
    from ..view.selection import Selection, select_records, selection_sql

    con = catalog.connect(loom)
    joins, split, marks, _ = selection_sql(loom, Selection(include_duplicates=include_duplicates, excluded=excluded))
    select_records(con, where, joins, split, marks, splits, proposals=proposals)
    readers = {name: entry["reader"] for name, entry in catalog.read_manifest(loom)["sources"].items()}
    files: dict[tuple[str, str], tuple[str, list[str]]] = {}
    total = others = 0
    for source, uri, rid, part in con.execute("SELECT source, uri, id, split FROM selection ORDER BY id").fetchall():
        total += 1
        if readers.get(source) != "dicom":
            others += 1
            continue
        files.setdefault((source, uri), (part, []))[1].append(rid)
    return files, total, others, roi_summary(con, carried=False, which=proposals)


def _check_file(ds, source: dict, burned_in_frames: int, ocr: str | None) -> str | None:
    """Why the (de-identified) file may show burned-in text, or None: its tag, else what `burned_in.scan` saw."""
    from ..sources.dicom import check_budget, decoded_pixels, display_frame
    from .burned_in import scan

    check_budget(ds, source["max_voxels"])
    arr = decoded_pixels(ds)
    n = int(ds.get("NumberOfFrames", 1) or 1)
    found = scan(n, lambda i: display_frame(ds, arr[i] if n > 1 else arr, index=i)[0], budget=burned_in_frames, ocr=ocr)
    return found.reason() if found else None


def export_dicom(
    loom: Path,
    out: Path,
    *,
    where: str | None = None,
    include_duplicates: bool = False,
    burned_in: str = "exclude",
    burned_in_frames: int = MAX_FRAMES,
    burned_in_ocr: bool = False,
    quiet: bool = False,
    wait: bool = False,
    splits: list[str] | None = None,
    excluded=None,
    proposals: str = "accepted",
) -> DicomReport:
    from ..engine.progress import progress_bar
    from ..sources.dicom import read_dicom
    from ..view.render import render_sources, without_path
    from .burned_in import tesseract

    if burned_in not in BURNED_IN_CHOICES:
        raise DicomExportError(f"--burned-in {burned_in!r}: choose exclude or flag")
    if burned_in_frames < 0:
        raise DicomExportError(f"--burned-in-frames {burned_in_frames}: give a number of frames, or 0 for all")
    ocr = tesseract() if burned_in_ocr else None
    if burned_in_ocr and not ocr:
        raise DicomExportError(
            "--burned-in-ocr needs the tesseract program, which is not on PATH: install it "
            "(Debian/Ubuntu: apt-get install tesseract-ocr; macOS: brew install tesseract) "
            "or leave the option out"
        )
    loom, out = Path(loom), Path(out)
    folder = open_output_folder(loom, out)
    started = time.perf_counter()
    with hold(loom, shared=True, wait=wait), hold(out, wait=wait, what="export folder"), quiet_values():
        files, total, others, rois = _selected_files(loom, where, include_duplicates, splits, excluded, proposals)
        if not files:
            raise DicomExportError(
                f"none of the {total} selected records comes from a DICOM source; `--format dicom` copies DICOM files only"
            )
        salt = catalog.read_salt(loom)
        sources = render_sources(catalog.read_manifest(loom))
        report = DicomReport(out=str(out), records=total, not_dicom=others, rois=rois)
        written, listing = set(), []
        with progress_bar("export dicom", len(files), quiet) as advance:
            for (source, uri), (split, ids) in sorted(files.items()):
                path = os.path.join(sources[source]["base"], uri)
                what = {"source": source, "records": ids}
                try:
                    ds, _ = read_dicom(path, sources[source]["max_file_bytes"])
                    tagged = str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES"
                    try:  # first: the check below sees only what would be written, and so do its errors
                        patient = deidentify(ds, salt)
                    except Exception as e:  # its message could quote a value: the type only
                        raise DicomExportError(f"the file could not be de-identified ({type(e).__name__})") from None
                    reason = "Burned In Annotation = YES" if tagged else _check_file(ds, sources[source], burned_in_frames, ocr)
                except Exception as e:  # an unreadable file is reported, not exported
                    reason = without_path(f"{type(e).__name__}: {e}", sources[source], uri, ids[0])
                    report.failed.append({**what, "reason": reason})
                    advance(1)
                    continue
                if reason:
                    if burned_in == "exclude":
                        report.excluded_burned_in.append({**what, "reason": reason})
                        advance(1)
                        continue
                    report.flagged_burned_in.append({**what, "reason": reason})
                    ds.BurnedInAnnotation = "YES"
                rel = f"{split}/{patient}/{ds.SOPInstanceUID}.dcm"
                buffer = io.BytesIO()
                try:
                    ds.save_as(buffer, enforce_file_format=True)
                except Exception as e:  # a file with no transfer syntax to write it back in
                    report.failed.append({**what, "reason": f"cannot be written back: {type(e).__name__}: {e}"})
                    advance(1)
                    continue
                folder.write_bytes(rel, buffer.getvalue())
                written.add(rel)
                listing.append(
                    {"file": rel, "split": split, "records": len(ids), "sha256": hashlib.sha256(buffer.getvalue()).hexdigest()}
                )
                advance(1)
        folder.remove_many([r for r in folder.owned if r.endswith(".dcm") and r not in written])
        report.files = len(written)
        report.seconds = round(time.perf_counter() - started, 3)
        folder.write_bytes(
            "manifest.json", json.dumps({"format": "dicom", "files": listing, "report": report.as_dict()}, indent=1).encode()
        )
    return report
