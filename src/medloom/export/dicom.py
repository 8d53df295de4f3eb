"""`export --format dicom`: de-identified copies of the DICOM files behind the selected records.

De-identification follows the Basic Application Level Confidentiality Profile (DICOM PS3.15 Annex E) with
the "Retain Longitudinal Temporal Information with Modified Dates" option, done as an allow-list: an
attribute is kept only when it is known to describe the image and not the person (pixel description,
geometry, acquisition physics, windows and look-up tables); everything else, private attributes,
overlays and curves included, is removed. Attributes an image object must carry are written back with
values that identify no one:

- Patient's Name and Patient ID: one pseudonym per patient, the salted hash the catalog already stores,
  so records of one patient stay together and nobody without the loom's salt can go back.
- Every UID (study, series, instance, frame of reference, the file meta's): `2.25.<number>`, a salted hash of
  the original, so references between the copies still hold.
- Dates (DA, and the date part of DT): shifted by a per-patient number of days (1 to 3650, from the
  salted hash), so intervals between a patient's studies survive; times are kept.
- Referring physician, accession number, study id: empty (the profile's Z).

What was done is recorded in the copies: Patient Identity Removed = YES, De-identification Method, the
De-identification Method Code Sequence (113100 Basic Application Confidentiality Profile, 113107 Retain
Longitudinal Temporal Information Modified Dates Option) and Longitudinal Temporal Information Modified.

Pixels are copied as they are: text burned into them cannot be removed here. A file whose Burned In
Annotation is YES, or whose rendered frame shows text-like marks along its borders, is excluded (or,
with `--burned-in flag`, exported and listed as flagged); never exported silently.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import catalog
from ..errors import DicomExportError
from ..locks import hold
from ..records import salted_id
from . import open_output_folder

KEEP = frozenset({
    # SOP common, general image and series (non-identifying parts)
    "SOPClassUID", "SpecificCharacterSet", "Modality", "ImageType", "BodyPartExamined", "ViewPosition",
    "Laterality", "ImageLaterality", "PatientOrientation", "PatientPosition", "SeriesNumber", "InstanceNumber",
    "AcquisitionNumber", "LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod",
    "PresentationIntentType", "ScanOptions", "ConversionType",
    # dates and times (dates are shifted, times kept)
    "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "StudyTime", "SeriesTime", "AcquisitionTime",
    "ContentTime", "AcquisitionDateTime",
    # image pixel module
    "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
    "PixelRepresentation", "PlanarConfiguration", "PixelAspectRatio", "NumberOfFrames", "FrameIncrementPointer",
    "FrameTime", "PixelData", "FloatPixelData", "DoubleFloatPixelData", "SmallestImagePixelValue",
    "LargestImagePixelValue", "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor", "RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData",
    # geometry
    "PixelSpacing", "ImagerPixelSpacing", "SliceThickness", "SpacingBetweenSlices", "ImageOrientationPatient",
    "ImagePositionPatient", "SliceLocation", "PixelSpacingCalibrationType",
    # value transforms
    "RescaleIntercept", "RescaleSlope", "RescaleType", "WindowCenter", "WindowWidth", "VOILUTFunction",
    "VOILUTSequence", "ModalityLUTSequence", "LUTDescriptor", "LUTData", "LUTExplanation", "ModalityLUTType",
    "PresentationLUTShape", "BurnedInAnnotation", "RecognizableVisualFeatures",
    # acquisition physics
    "KVP", "ExposureTime", "XRayTubeCurrent", "Exposure", "ConvolutionKernel", "EchoTime", "RepetitionTime",
    "InversionTime", "FlipAngle", "MagneticFieldStrength", "ScanningSequence", "SequenceVariant",
    "MRAcquisitionType", "EchoTrainLength", "ImagingFrequency", "ImagedNucleus", "NumberOfAverages",
    "DistanceSourceToDetector", "DistanceSourceToPatient", "EstimatedRadiographicMagnificationFactor",
    "FieldOfViewShape", "FieldOfViewDimensions", "UltrasoundColorDataPresent",
    # enhanced multi-frame: the functional groups, filtered by this same list inside
    "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence", "PixelMeasuresSequence",
    "PlanePositionSequence", "PlaneOrientationSequence", "PixelValueTransformationSequence",
    "FrameVOILUTSequence", "FrameContentSequence", "FrameAcquisitionDateTime", "FrameReferenceDateTime",
    "InStackPositionNumber", "TemporalPositionIndex", "StackID", "DimensionIndexValues",
})
REPLACED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
EMPTY = ("ReferringPhysicianName", "AccessionNumber", "StudyID", "PatientBirthDate", "PatientSex")
METHOD = ["medloom: PS3.15 E.1 basic profile as an allow-list", "pseudonymous patient ids and UIDs (salted hashes)",
          "dates shifted per patient (1-3650 days)"]  # LO: 64 characters a value
BURNED_IN_CHOICES = ("exclude", "flag")


@dataclass
class DicomReport:
    out: str
    records: int = 0  # selected records
    not_dicom: int = 0  # selected records from other readers (left out)
    files: int = 0  # de-identified copies written
    excluded_burned_in: list[dict] = field(default_factory=list)
    flagged_burned_in: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        return [f"export dicom: {self.files} de-identified file(s) from {self.records - self.not_dicom} DICOM "
                f"record(s) ({self.not_dicom} other records left out); burned-in text: {len(self.excluded_burned_in)} "
                f"excluded, {len(self.flagged_burned_in)} flagged; {len(self.failed)} failed; {self.out}"]

    def warnings(self) -> list[tuple[str, str]]:
        return [("excluded", f"{item['records'][0]}: {item['reason']}") for item in self.excluded_burned_in[:20]]


def export_format(loom: Path, out: Path, request, *, workers=None, quiet: bool = False, wait: bool = False
                  ) -> DicomReport:
    """`formats.FORMATS`' entry for dicom (files are copied, not rendered: `workers` is not used)."""
    return export_dicom(loom, out, where=request.where, include_duplicates=request.include_duplicates,
                        burned_in=request.burned_in, quiet=quiet, wait=wait, splits=request.splits)


def new_uid(salt: str, uid: str) -> str:
    """A UID under the 2.25 root from a salted hash: the same original always maps to the same copy."""
    digest = hashlib.blake2b(str(uid).encode(), key=salt.encode()[:64], digest_size=16).digest()
    return "2.25." + str(int.from_bytes(digest, "big"))


def day_shift(salt: str, patient: str) -> int:
    """Days every date of one patient moves back (1 to 3650): intervals between studies survive."""
    digest = hashlib.blake2b(("dates:" + patient).encode(), key=salt.encode()[:64], digest_size=4).digest()
    return 1 + int.from_bytes(digest, "big") % 3650


def shift_date(value: str, days: int) -> str:
    text = str(value or "").strip()
    if len(text) < 8 or not text[:8].isdigit():
        return ""
    try:
        day = dt.date(int(text[:4]), int(text[4:6]), int(text[6:8])) - dt.timedelta(days=days)
    except ValueError:
        return ""
    return day.strftime("%Y%m%d") + text[8:]


def _filter(ds, days: int, salt: str) -> None:
    """Keep only allow-listed attributes (recursively in sequences), shift dates, map UIDs."""
    for elem in list(ds):
        keyword = elem.keyword
        if elem.tag.is_private or keyword not in KEEP and keyword not in REPLACED_UIDS:
            del ds[elem.tag]
            continue
        if elem.VR == "SQ":
            for item in elem.value:
                _filter(item, days, salt)
        elif elem.VR in ("DA", "DT") and elem.value:
            values = elem.value if elem.VM > 1 else [elem.value]
            shifted = [shift_date(str(v), days) for v in values]
            elem.value = shifted if elem.VM > 1 else shifted[0]
        elif keyword in REPLACED_UIDS and elem.value:
            elem.value = new_uid(salt, str(elem.value))


def deidentify(ds, salt: str):
    """The dataset, de-identified in place (see the module docstring); returns the patient pseudonym."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    patient = salted_id(salt, ds.get("PatientID") or ds.get("PatientName") or "unknown")
    days = day_shift(salt, patient)
    kept_burned_in = ds.get("BurnedInAnnotation")
    _filter(ds, days, salt)
    ds.PatientName = patient
    ds.PatientID = patient
    for keyword in EMPTY:
        setattr(ds, keyword, "")
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if keyword not in ds:  # an object without them is invalid; give stable new ones
            setattr(ds, keyword, new_uid(salt, f"{patient}:{keyword}"))
    if kept_burned_in is not None:
        ds.BurnedInAnnotation = kept_burned_in
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD
    codes = []
    for value, meaning in (("113100", "Basic Application Confidentiality Profile"),
                           ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")):
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        codes.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(codes)
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        for elem in list(meta):
            if elem.tag.is_private or elem.keyword in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle",
                                                       "ReceivingApplicationEntityTitle", "PrivateInformation",
                                                       "PrivateInformationCreatorUID"):
                del meta[elem.tag]
    return patient


def text_like_border(frame: np.ndarray, band: float = 0.15) -> bool:
    """Whether bright, glyph-sized marks line up along a border of an 8-bit frame: the look of burned-in text
    (names, dates, institution) that scanners and PACS print into corners. A heuristic: it flags for review."""
    from scipy import ndimage

    gray = frame if frame.ndim == 2 else frame[..., :3].mean(axis=2)
    h, w = gray.shape
    if h < 32 or w < 32:
        return False
    threshold = max(200.0, float(np.percentile(gray, 99.5)))
    bh, bw = max(8, int(h * band)), max(8, int(w * band))
    for region in (gray[:bh], gray[-bh:], gray[:, :bw].T, gray[:, -bw:].T):
        labelled, n = ndimage.label(region >= threshold, structure=np.ones((3, 3), bool))
        if n < 4:
            continue
        rows = []
        for box in ndimage.find_objects(labelled):
            gh, gw = box[0].stop - box[0].start, box[1].stop - box[1].start
            if 3 <= gh <= max(4, region.shape[0] // 2) and gw <= 3 * gh:
                rows.append((box[0].start + box[0].stop) / 2)
        if len(rows) < 4:
            continue
        rows.sort()
        # at least 4 glyphs whose vertical centres lie within one glyph height: a line of text
        for i in range(len(rows) - 3):
            if rows[i + 3] - rows[i] <= 6:
                return True
    return False


def _selected_files(loom: Path, where: str | None, include_duplicates: bool, splits: list[str] | None
                    ) -> tuple[dict, int, int]:
    """{(source, uri): (split, [record ids])} of the DICOM records selected; counts of records and others."""
    from ..view.selection import Selection, select_records, selection_sql

    con = catalog.connect(loom)
    joins, split, marks, _ = selection_sql(loom, Selection(include_duplicates=include_duplicates))
    select_records(con, where, joins, split, marks, splits)
    readers = {name: entry["reader"] for name, entry in catalog.read_manifest(loom)["sources"].items()}
    files: dict[tuple[str, str], tuple[str, list[str]]] = {}
    total = others = 0
    for source, uri, rid, part in con.execute("SELECT source, uri, id, split FROM selection ORDER BY id").fetchall():
        total += 1
        if readers.get(source) != "dicom":
            others += 1
            continue
        files.setdefault((source, uri), (part, []))[1].append(rid)
    return files, total, others


def export_dicom(loom: Path, out: Path, *, where: str | None = None, include_duplicates: bool = False,
                 burned_in: str = "exclude", quiet: bool = False, wait: bool = False,
                 splits: list[str] | None = None) -> DicomReport:
    from ..engine.progress import progress_bar
    from ..sources.dicom import display_frame, read_dicom
    from ..view.render import render_sources, without_path

    if burned_in not in BURNED_IN_CHOICES:
        raise DicomExportError(f"--burned-in {burned_in!r}: choose exclude or flag")
    loom, out = Path(loom), Path(out)
    folder = open_output_folder(loom, out)
    started = time.perf_counter()
    with hold(loom, shared=True, wait=wait), hold(out, wait=wait, what="export folder"):
        files, total, others = _selected_files(loom, where, include_duplicates, splits)
        if not files:
            raise DicomExportError(f"none of the {total} selected records comes from a DICOM source; "
                                   "`--format dicom` copies DICOM files only")
        salt = catalog.read_salt(loom)
        sources = render_sources(catalog.read_manifest(loom))
        report = DicomReport(out=str(out), records=total, not_dicom=others)
        written, listing = set(), []
        with progress_bar("export dicom", len(files), quiet) as advance:
            for (source, uri), (split, ids) in sorted(files.items()):
                path = os.path.join(sources[source]["base"], uri)
                what = {"source": source, "records": ids}
                try:
                    ds, _ = read_dicom(path, sources[source]["max_file_bytes"])
                    arr = ds.pixel_array
                    frame = arr[len(arr) // 2] if int(ds.get("NumberOfFrames", 1) or 1) > 1 else arr
                    tagged = str(ds.get("BurnedInAnnotation", "")).upper() == "YES"
                    suspected = not tagged and text_like_border(display_frame(ds, frame)[0])
                except Exception as e:  # an unreadable file is reported, not exported
                    reason = without_path(f"{type(e).__name__}: {e}", sources[source], uri, ids[0])
                    report.failed.append({**what, "reason": reason})
                    advance(1)
                    continue
                if tagged or suspected:
                    entry = {**what, "reason": "Burned In Annotation = YES" if tagged
                             else "text-like marks along a border of the image"}
                    if burned_in == "exclude":
                        report.excluded_burned_in.append(entry)
                        advance(1)
                        continue
                    report.flagged_burned_in.append(entry)
                patient = deidentify(ds, salt)
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
                listing.append({"file": rel, "split": split, "records": len(ids),
                                "sha256": hashlib.sha256(buffer.getvalue()).hexdigest()})
                advance(1)
        folder.remove_many([r for r in folder.owned if r.endswith(".dcm") and r not in written])
        report.files = len(written)
        report.seconds = round(time.perf_counter() - started, 3)
        folder.write_bytes("manifest.json", json.dumps({"format": "dicom", "files": listing,
                                                        "report": report.as_dict()}, indent=1).encode())
    return report
