"""Whether a record's pixels may show burned-in text (a name, a date, an institution printed into the image):
the record page says so, by the same two tests `medloom export --format dicom` makes before it copies a file."""

from __future__ import annotations

from ..imaging import DecodeError


def burned_in(row: dict, source: dict) -> str:
    """Why the record may show burned-in text ('' when neither test says so, or the file cannot be read; the
    image route reports that). The file is read as `/image` reads it: by the catalog's path, within budgets."""
    if source.get("reader") != "dicom":
        return ""
    from ..export.burned_in import text_like
    from ..sources import dicom
    from ..view.render import source_file

    cache: dict = {}
    try:
        dicom.render(row, source_file(source["base"], row["uri"]), cache, source)
        ds, frame = cache["ds"], cache["arr"][max(row["frame"], 0)]
        if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
            return "the file's Burned In Annotation tag is YES"
        if text_like(dicom.display_frame(ds, frame, index=max(row["frame"], 0))[0]):
            return "text-like marks in the image (a heuristic: check the image)"
    except (DecodeError, OSError, ValueError, KeyError, IndexError):
        return ""
    return ""
