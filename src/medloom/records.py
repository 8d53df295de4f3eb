"""The record model: one Arrow schema for every record, and one for quarantine rows.

A record is one 2-D image (a DICOM frame or a NIfTI slice is one record). Pixels stay in the source
files; a record points at them (`uri`, `frame`) and carries the render settings needed to turn them
into an 8-bit image later (`render`).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any

import pyarrow as pa

ROI_TYPE = pa.struct(
    [
        ("label", pa.string()),
        # normalised [x0, y0, x1, y1] in image coordinates (0..1), origin top-left
        ("bbox", pa.list_(pa.float32(), 4)),
        # share of the image covered: mask pixels when there is a mask, box area otherwise
        ("area", pa.float32()),
        # COCO-style uncompressed RLE over the whole image, column-major, starting with a run of 0s;
        # empty when the ROI is a box only
        ("rle", pa.list_(pa.int32())),
    ]
)

# a machine-made ROI (`medloom propose`): a catalog ROI plus where it came from. Kept in the `proposals` view, never
# in a record's `rois`; steps that read accepted proposals beside a record's own ROIs mark each by `roi_source`
# ("dataset" or "proposal")
PROPOSAL_ROI_TYPE = pa.struct(
    list(ROI_TYPE) + [("score", pa.float32()), ("method", pa.string()), ("version", pa.string()), ("roi_source", pa.string())]
)
# one row per record and method: what the method proposed, or why it refused the image
PROPOSAL_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("method", pa.string()),
        ("version", pa.string()),
        ("params", pa.string()),  # the method's parameters as JSON
        ("fingerprint", pa.string()),  # hash of method, version and parameters: what an acceptance names
        ("status", pa.string()),  # proposed | refused | failed
        ("reason", pa.string()),  # for refused or failed: a short code (not_ct, no_hounsfield_units, ...)
        ("message", pa.string()),
        ("rois", pa.list_(PROPOSAL_ROI_TYPE)),
        ("accepted", pa.bool_()),
        ("accepted_by", pa.string()),
        ("accepted_at", pa.string()),
        ("seconds", pa.float32()),
    ]
)

RENDER_TYPE = pa.struct(
    [
        # linear window applied to the modality-LUT values; null for 8-bit photographic data
        ("window_center", pa.float64()),
        ("window_width", pa.float64()),
        # where the window came from: tags, recipe, preset:NAME, percentiles, none
        ("window_source", pa.string()),
        ("invert", pa.bool_()),  # MONOCHROME1: high values are dark
        ("axis", pa.int8()),  # NIfTI slicing axis in RAS+ canonical orientation; -1 otherwise
        ("volume", pa.int32()),  # index in the 4th dimension of a 4-D NIfTI; -1 otherwise
    ]
)

# a figure from an article (pmc reader); null for other records
ARTICLE_TYPE = pa.struct(
    [(name, pa.string()) for name in ("pmcid", "pmid", "doi", "title")]
    + [("abstracts", pa.list_(pa.string()))]
    + [(name, pa.string()) for name in ("journal", "publisher")]
    + [("year", pa.int32())]
    + [(name, pa.list_(pa.string())) for name in ("keywords", "subjects", "mesh")]
    + [("article_type", pa.string())]
    + [(name, pa.string()) for name in ("fig_id", "fig_label", "fig_kind", "caption_title")]
    # the href as written in the XML, and the file it resolved to (a member path for packages)
    + [("graphic", pa.string()), ("file", pa.string())]
    + [("panel", pa.int32()), ("panels", pa.int32())]
    + [("where", pa.string()), ("xref_count", pa.int32()), ("contexts", pa.list_(pa.string()))]
    # the licence URL and which element the licence was read from (url, license-type, prose, ...)
    + [(name, pa.string()) for name in ("license_url", "license_source", "copyright")]
)

RECORD_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("source_split", pa.string()),
        ("uri", pa.string()),
        ("frame", pa.int32()),
        ("modality", pa.string()),
        ("anatomy", pa.string()),
        ("task", pa.string()),
        ("labels", pa.list_(pa.string())),
        ("label_space", pa.list_(pa.string())),
        ("rois", pa.list_(ROI_TYPE)),
        ("patient_id", pa.string()),
        ("study_id", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("channels", pa.int8()),
        ("pixel_hash", pa.string()),
        ("phash", pa.uint64()),
        # xxh3-128 of the source file's bytes (of the archive member for a figure in a package): an export
        # compares it to tell a file that changed since ingest
        ("file_hash", pa.string()),
        ("license", pa.string()),
        ("commercial_use", pa.bool_()),
        ("description", pa.string()),
        ("caption", pa.string()),
        ("render", RENDER_TYPE),
        ("article", ARTICLE_TYPE),
        # reader-specific facts as a JSON object (DICOM orientation, spacing, SOP class ...)
        ("meta", pa.string()),
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("path", pa.string()),  # relative to the source root (or the annotation file)
        ("record_id", pa.string()),  # the record this concerns, when one exists
        ("stage", pa.string()),  # scan (reading annotations) or decode (reading pixels)
        # input: the input was dropped; annotation: part of it was dropped (a box, a label);
        # warning: recovered, nothing dropped; filtered: left out on purpose (a licence filter)
        ("scope", pa.string()),
        ("reason", pa.string()),
        ("message", pa.string()),
    ]
)

NO_RENDER = {"window_center": None, "window_width": None, "window_source": "none", "invert": False, "axis": -1, "volume": -1}

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-/]+")
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


def _spell_non_ascii(text: str) -> str:
    """Each run of non-ASCII characters as its code points (`肺炎` -> `_u80ba_708e_`), after NFC normalisation:
    folder names in any script (CJK, Arabic, accented Latin) keep distinct ids, and a name stored decomposed
    (macOS) gives the same id as one stored composed."""
    if text.isascii():
        return text
    return _NON_ASCII.sub(lambda m: "_u" + "_".join(f"{ord(c):04x}" for c in m.group()) + "_", unicodedata.normalize("NFC", text))


def record_id(source: str, uri: str, frame: int = -1) -> str:
    """Stable id from source name, path inside the source and frame.

    Safe as a WebDataset key: no dots. The extension is kept as a `_ext` suffix so that a.png and a.jpg
    stay apart; non-ASCII characters are spelled as code points (`_u80ba`), other dots and unsafe ASCII
    characters become '_'.
    """
    uri = _spell_non_ascii(uri)
    stem, dot, ext = uri.rpartition(".")
    if not dot or "/" in ext:
        stem, ext = uri, ""
    key = _UNSAFE.sub("_", stem).strip("/")
    if ext:
        key = f"{key}_{_UNSAFE.sub('_', ext.lower())}"
    key = f"{_UNSAFE.sub('_', source)}/{key}"
    return key if frame < 0 else f"{key}/{frame:05d}"


def salted_id(salt: str, value: Any) -> str:
    """A patient or study id as a keyed hash: the same person gives the same value within a loom (or every loom
    sharing the recipe's `salt:`), and the value cannot be turned back into the id without the salt."""
    text = str(value or "").strip()
    if not text:
        return ""
    return hashlib.blake2b(text.encode(), key=salt.encode()[:64], digest_size=10).hexdigest()


def patient_key(source: dict, value: Any) -> str:
    """What a record stores for a patient or study id: the salted hash, or the raw id when the recipe says
    `raw_ids: true`."""
    if source.get("raw_ids"):
        return str(value or "").strip()
    return salted_id(source["salt"], value)


def quarantine_row(
    source: str, path: str, reason: str, message: str, *, stage: str = "scan", scope: str = "input", record_id: str | None = None
) -> dict:
    return {
        "source": source,
        "path": path,
        "record_id": record_id,
        "stage": stage,
        "scope": scope,
        "reason": reason,
        "message": message,
    }


def licence_commercial_use(license: str | None) -> bool | None:
    """True/False when the licence text says so plainly; None when it cannot be told."""
    if not license:
        return None
    text = license.lower().replace("_", "-").replace(" ", "-")
    if "-nc" in text or "noncommercial" in text or "non-commercial" in text or "research-only" in text:
        return False
    if any(t in text for t in ("cc-by", "cc0", "public-domain", "mit", "apache", "bsd", "odbl", "pddl")):
        return True
    return None


# A benchmark's own questions (VQA-RAD, SLAKE, PathVQA, PMC-VQA, OmniMedVQA, VLMEvalKit TSV, Parquet), kept in
# the record's `meta` under this key as a list, one dict per question, never mixed with the questions that
# `medloom annotate` generates (those live in the annotation). Every reader that stores a dataset's own questions
# (the VQA readers, Med-MAT's) writes this one shape through `source_question`, and `eval vqa --questions source`
# reads it back with `source_questions`.
SOURCE_QUESTIONS = "source_questions"
ANSWER_TYPES = ("open", "closed")


def source_question(
    question: str,
    answer: str,
    *,
    answer_type: str = "",
    options: list[str] | None = None,
    qid: str = "",
    question_type: str = "",
    language: str = "",
    task: str = "",
) -> dict:
    """One source question: `answer` is the answer's text (for a multiple-choice question the right option's
    text, `answer_letter` its letter); `answer_type` is open or closed (a question with options, or answered
    yes or no, is closed when the benchmark does not say); `task` is the question's MAT task when its type maps
    to one (SLAKE's content_type, OmniMedVQA's question_type), else empty (the record's task)."""
    options = [str(o) for o in options or []]
    answer = str(answer).strip()
    kind = answer_type.strip().lower()
    if kind not in ANSWER_TYPES:
        kind = "closed" if options or answer.lower() in ("yes", "no") else "open"
    letter = ""
    if options and answer in options:
        letter = "ABCDEFGHIJ"[options.index(answer)]
    return {
        "id": str(qid),
        "question": str(question).strip(),
        "options": options,
        "answer": answer,
        "answer_letter": letter,
        "answer_type": kind,
        "question_type": str(question_type or ""),
        "language": str(language or ""),
        "task": task,
    }


def source_questions(meta: str | dict | None) -> list[dict]:
    """The source questions a record's `meta` holds (empty for a record without)."""
    if not meta:
        return []
    if isinstance(meta, str):
        import json

        meta = json.loads(meta)
    return list(meta.get(SOURCE_QUESTIONS) or []) if isinstance(meta, dict) else []
