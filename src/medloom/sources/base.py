"""What every reader shares: the task model, file discovery, box checks and 2-D image decoding.

A reader has two halves. `scan(source)` is cheap: it walks folders and parses annotation files into
one *task* per input file (labels, boxes in pixels or normalised units, patient ids) plus quarantine
rows for annotation problems. `decode(task, source)` is the expensive half that the executor runs in
parallel: it reads the pixels and returns zero or more records (a DICOM file or a NIfTI volume gives
one per frame or slice).
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..imaging import (
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    DecodeError,
    file_facts,
    image_facts,
    open_image,
)
from ..records import NO_RENDER, patient_key, quarantine_row, record_id, salted_id
from .exclude import exclusion
from .polygons import polygon_rois
from .rle import rle_rois

TASK_BOX = pa.struct([("label", pa.string()), ("bbox", pa.list_(pa.float64(), 4)), ("normalized", pa.bool_())])
TASK_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("uri", pa.string()),
        ("path", pa.string()),
        ("source_split", pa.string()),
        ("labels", pa.list_(pa.string())),
        ("rois", pa.list_(TASK_BOX)),
        ("patient_id", pa.string()),
        ("study_id", pa.string()),
        ("caption", pa.string()),
        ("fingerprint", pa.string()),
        ("extra", pa.string()),  # reader-specific JSON (paired mask path, ...)
    ]
)

SKIP_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})


class TaskList:
    """A reader's tasks as it appends them, kept as Arrow tables of `TASK_SCHEMA`: as a Python dict a task costs
    about 1 KB, as an Arrow row a fraction of that, and a source of millions of files is scanned whole before
    its parts are cut."""

    BATCH = 4096

    def __init__(self) -> None:
        self._tables: list[pa.Table] = []
        self._pending: list[dict] = []
        self._rows = 0

    def append(self, task: dict) -> None:
        self._pending.append(task)
        if len(self._pending) >= self.BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._tables.append(pa.Table.from_pylist(self._pending, TASK_SCHEMA))
            self._rows += len(self._pending)
            self._pending = []

    def __len__(self) -> int:
        return self._rows + len(self._pending)

    def table(self) -> pa.Table:
        """Every task, in the order appended, as one table."""
        self._flush()
        return pa.concat_tables(self._tables) if self._tables else TASK_SCHEMA.empty_table()

    def keep(self, mask: list[bool]) -> None:
        """Keep the tasks whose entry in `mask` (one per task, in order) is true."""
        table = self.table().filter(pa.array(mask, pa.bool_()))
        self._tables, self._rows = [table], table.num_rows


@dataclass
class Scan:
    """The result of scanning one source: tasks to decode, problems found, inputs filtered out."""

    tasks: TaskList = field(default_factory=TaskList)
    quarantine: list[dict] = field(default_factory=list)
    filtered: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)  # boxes dropped per record id

    def filter(self, reason: str, n: int = 1) -> None:
        self.filtered[reason] = self.filtered.get(reason, 0) + n


def fingerprint(path: str, *more: str) -> str:
    """Size, modification time and inode change time: enough to notice a changed file without reading it.

    The change time cannot be set back by tools that restore a modification time (`touch -d`, `cp -p`,
    `rsync -t`), so a file rewritten in place with the same size and mtime is still noticed.
    """
    st = os.stat(path)
    return ":".join([str(st.st_size), str(st.st_mtime_ns), str(st.st_ctime_ns), *more])


def read_text(path: str, encoding: str | None = None) -> str:
    """An annotation file's text: the `encoding:` the recipe names, else by its byte-order mark (UTF-8,
    UTF-16), else UTF-16 recognised by its zero bytes, else UTF-8; otherwise an error naming the file and
    the line, and what to do."""
    with open(path, "rb") as f:
        data = f.read()
    return decode_text(data, path, encoding)


def decode_text(data: bytes, path: str, encoding: str | None = None) -> str:
    """`read_text`'s decoding, for bytes already read (under a budget, or out of a .gz or .zip)."""
    if encoding:
        try:
            return data.decode(encoding)
        except LookupError:
            raise ValueError(f"{path}: unknown encoding {encoding!r} (try utf-8, cp1252, latin-1, utf-16)") from None
        except UnicodeDecodeError as e:
            line = data[: e.start].count(b"\n") + 1
            raise ValueError(
                f"{path}: not {encoding} at byte {e.start} (line {line}); check the `encoding:` of the source"
            ) from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    head = data[:400]
    if len(head) >= 4 and head[1::2].count(0) > 0.9 * len(head[1::2]):
        return data.decode("utf-16-le", errors="strict")
    if len(head) >= 4 and head[0::2].count(0) > 0.9 * len(head[0::2]):
        return data.decode("utf-16-be", errors="strict")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(
            f"{path}: not UTF-8 (byte 0x{data[e.start]:02x} on line {line}); name the file's encoding "
            "with `encoding:` in the source, e.g. `encoding: cp1252` or `latin-1`"
        ) from None


def display_name(name: str) -> str:
    """A file name as text, whatever bytes it has (undecodable bytes shown as \\xNN)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def is_valid_name(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8 arrive as surrogate escapes
        return False
    return True


def real_path(path: str, folders: dict[str, str]) -> str:
    """`os.path.realpath`, resolving each folder once (`folders` keeps them): a file that is not itself a link
    is its folder's real path plus its name. A scan checks every input this way, and realpath would look at
    every component of every path."""
    folder, name = os.path.split(path)
    if name not in ("", ".", ".."):
        try:
            if not stat.S_ISLNK(os.lstat(path).st_mode):
                real = folders.get(folder)
                if real is None:
                    real = folders[folder] = os.path.realpath(folder)
                return os.path.join(real, name)
        except OSError:
            pass
    return os.path.realpath(path)


def inside(path: str, roots: Iterable[str], folders: dict[str, str] | None = None) -> bool:
    """Whether a path, with every symbolic link resolved, lies under one of the roots."""
    real = os.path.realpath(path) if folders is None else real_path(path, folders)
    return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def source_roots(source: dict) -> list[str]:
    """The resolved folders a source may read: its root, the recipe's `allowed_roots`, and folders the recipe
    names for the reader (`masks_dir: ../seg`): what the recipe says explicitly is allowed, what a data file
    says is not."""
    base = source["root"] if os.path.isdir(source["root"]) else os.path.dirname(source["root"])
    named = [os.path.join(base, v) for k, v in (source.get("options") or {}).items() if k.endswith("_dir") and isinstance(v, str)]
    return [os.path.realpath(r) for r in [source["root"], *(source.get("allowed_roots") or []), *named]]


def source_record_id(source: dict, uri: str) -> str:
    """A record's id: from its path inside the source (`record_id`), or, for a source with `pseudonymous_ids`
    (DICOM by default), the source name and a keyed hash of that path: folders named after patients never
    reach an id, a key or a file name outside the loom; the catalog's `uri` keeps the path."""
    if source.get("pseudonymous_ids"):
        return record_id(source["name"], salted_id(source["salt"], uri))
    return record_id(source["name"], uri)


def make_task(
    source: dict,
    path: str,
    *,
    uri: str | None = None,
    split: str = "",
    labels: Iterable[str] = (),
    rois: Iterable[dict] = (),
    patient_id: str = "",
    study_id: str = "",
    caption: str = "",
    extra: dict | None = None,
    fingerprint_extra: str = "",
) -> dict:
    """One task per input file. Annotations are part of the task (and so of its part key);
    `fingerprint_extra` covers companion files the task only names, such as a paired mask."""
    uri = uri or Path(os.path.relpath(path, source["root"])).as_posix()
    extra_json = json.dumps(extra, sort_keys=True) if extra else "{}"
    return {
        "id": source_record_id(source, uri),
        "uri": uri,
        "path": path,
        "source_split": split or source.get("split") or "",
        "labels": list(labels),
        "rois": list(rois),
        "patient_id": patient_key(source, patient_id),
        "study_id": patient_key(source, study_id),
        "caption": caption,
        "fingerprint": fingerprint(path, fingerprint_extra),
        "extra": extra_json,
    }


def walk_files(root: str | Path, scan: Scan | None = None, source: dict | None = None) -> Iterator[Path]:
    """Every file under root as a Path: see `walk_entries`."""
    for folder, name in walk_entries(root, scan, source):
        yield Path(folder, name)


def walk_entries(root: str | Path, scan: Scan | None = None, source: dict | None = None) -> Iterator[tuple[str, str]]:
    """Every regular file under root as (its folder, its name), sorted, hidden entries skipped (stable order on
    every machine: a folder's files, then each of its folders in turn).

    Symbolic links to folders are followed while they stay inside the source's roots. Everything else is
    skipped with a quarantine row when `scan` and `source` are given, and the rest of the source is read: a
    link leading outside, a folder link loop, a file link that points at itself or nowhere, a FIFO, device or
    socket (reading one would hang or never end), a folder that cannot be listed, a name that is not UTF-8.
    Files that the source's `exclude:` globs name are never read, only counted as filtered.
    """
    roots = source_roots(source) if source else None
    skip = exclusion(source)
    top = str(source["root"]) if source else ""

    def problem(path: str, reason: str, message: str) -> None:
        if scan is not None and source is not None:
            rel = display_name(os.path.relpath(path, source["root"]))
            scan.quarantine.append(quarantine_row(source["name"], rel, reason, message))

    def visit(folder: str) -> Iterator[tuple[str, str]]:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            problem(e.filename or folder, "unreadable_folder", f"cannot list the folder: {e.strerror or e}")
            return
        folders = []
        for entry in entries:
            name, full = entry.name, entry.path
            if name.startswith("."):
                continue
            if is_kind(entry.is_dir):
                if not is_valid_name(name):
                    problem(full, "bad_filename", "the folder name is not valid UTF-8; rename it (its files are skipped)")
                    continue
                real = os.path.realpath(full)
                if roots is not None and not inside(real, roots):
                    problem(
                        full,
                        "outside_root",
                        f"a link to {display_name(real)}, outside the source's root; list "
                        "that folder under `allowed_roots:` in the recipe to read it",
                    )
                elif real in seen:
                    problem(full, "symlink_loop", f"leads back to {display_name(real)}, already read; skipped")
                else:
                    seen.add(real)
                    folders.append(full)
                continue
            if name.lower() in SKIP_NAMES:
                continue
            if skip is not None and skip(os.path.relpath(full, top).replace(os.sep, "/")):
                if scan is not None:
                    scan.filter("excluded")
                continue
            if not is_valid_name(name):
                problem(full, "bad_filename", "the file name is not valid UTF-8; rename the file to read it")
            elif is_kind(entry.is_file):
                yield folder, name
            else:
                reason, message = not_a_file(full)
                problem(full, reason, message)
        for sub in folders:
            yield from visit(sub)

    seen = {os.path.realpath(root)}
    yield from visit(str(root))


def is_kind(check) -> bool:
    """A DirEntry's is_dir / is_file, False where the link cannot be followed (a loop raises ELOOP)."""
    try:
        return check()
    except OSError:
        return False


def not_a_file(path: str) -> tuple[str, str]:
    """Why an entry that is neither a folder nor a regular file is not read: (reason, message)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symlink_loop", "a link that leads back to itself; skipped"
        return (
            "broken_link",
            f"a link to {display_name(os.readlink(path)) if os.path.islink(path) else path}, "
            f"which does not exist ({e.strerror}); skipped",
        )
    kind = (
        "a FIFO (named pipe)"
        if stat.S_ISFIFO(mode)
        else "a character device"
        if stat.S_ISCHR(mode)
        else "a block device"
        if stat.S_ISBLK(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "not a file"
    )
    return "not_a_regular_file", f"{kind}, not a regular file; only regular files are read"


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def basename_index(root: str | Path, suffixes: frozenset[str] = IMAGE_EXTENSIONS) -> dict[str, list[str]]:
    """Image files under root by basename and by stem, for annotations that name files loosely."""
    index: dict[str, list[str]] = {}
    for p in walk_files(root):
        if p.suffix.lower() in suffixes:
            index.setdefault(p.name, []).append(str(p))
            index.setdefault(p.stem, []).append(str(p))
    return index


def resolve_file(root: str, name: str, index: dict[str, list[str]] | None) -> tuple[str | None, str | None]:
    """Find the file an annotation names: as a path under root, else by basename anywhere under root.

    Returns (path, problem): problem is None when found, else a message (missing or ambiguous).
    """
    name = name.strip().replace("\\", "/")
    candidate = os.path.join(root, name.lstrip("/")) if not os.path.isabs(name) else name
    if os.path.isfile(candidate):
        return candidate, None
    if index is not None:
        base = name.rsplit("/", 1)[-1]
        hits = index.get(base, [])
        if len(hits) == 1:
            return hits[0], None
        if len(hits) > 1:
            rel = [os.path.relpath(h, root) for h in hits]
            return None, f"ambiguous: {base!r} matches {len(hits)} files: {', '.join(rel)}"
    return None, f"file not found: {name!r} (looked under {root}" + (" and by basename)" if index else ")")


def parse_box(values: object) -> list[float] | None:
    """Four finite numbers, else None (a wrong count, text, NaN or an infinity)."""
    try:
        box = [float(v) for v in values]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    return box if len(box) == 4 and all(math.isfinite(v) for v in box) else None


def bad_box_row(source: dict, where: str, rid: str, label: str, values: object) -> dict:
    return quarantine_row(
        source["name"],
        where,
        "bad_box",
        f"box {label!r} {values!r} is not four finite numbers (x0, y0, x1, y1); the box is dropped, the image kept",
        scope="annotation",
        record_id=rid,
    )


def check_box(source: dict, path: str, rid: str, label: str, box: list[float]) -> dict | None:
    """A quarantine row for a malformed or degenerate box, else None."""
    if parse_box(box) is None:
        return bad_box_row(source, path, rid, label, box)
    x0, y0, x1, y1 = box
    if not (x1 > x0 and y1 > y0):
        return quarantine_row(
            source["name"],
            path,
            "zero_area_box",
            f"box {label!r} {[round(v, 3) for v in box]} has no area (x0,y0,x1,y1)",
            scope="annotation",
            record_id=rid,
        )
    return None


def check_label(source: dict, path: str, rid: str, label: str) -> dict | None:
    classes = source.get("classes")
    if classes and label not in classes:
        return quarantine_row(
            source["name"],
            path,
            "label_outside_space",
            f"label {label!r} is not in the declared classes {sorted(classes)}",
            scope="annotation",
            record_id=rid,
        )
    return None


def add_box(
    scan: Scan,
    source: dict,
    where: str,
    rid: str,
    label: str,
    box: list[float],
    normalized: bool,
    rois: list[dict],
    labels: list[str],
) -> None:
    """Keep a box (and its label) if it has area and its label is in the space; else quarantine it."""
    problem = check_box(source, where, rid, label, box) or check_label(source, where, rid, label)
    if problem:
        scan.quarantine.append(problem)
        scan.dropped[rid] = scan.dropped.get(rid, 0) + 1
        return
    rois.append({"label": label, "bbox": box, "normalized": normalized})
    if label not in labels:
        labels.append(label)


def normalise_rois(task: dict, source: dict, width: int, height: int, from_bottom: bool = False) -> tuple[list[dict], list[dict]]:
    """Task boxes -> record ROIs in normalised units, clipped; boxes outside the image are quarantined.
    `from_bottom`: the boxes count y up from the image's bottom row (MIAS), not down from its top."""
    rois, problems = [], []
    for roi in task["rois"]:
        x0, y0, x1, y1 = roi["bbox"]
        if not roi["normalized"]:
            x0, x1, y0, y1 = x0 / width, x1 / width, y0 / height, y1 / height
        if from_bottom:
            y0, y1 = 1.0 - y1, 1.0 - y0
        cx0, cy0, cx1, cy1 = max(0.0, x0), max(0.0, y0), min(1.0, x1), min(1.0, y1)
        if cx1 <= cx0 or cy1 <= cy0:
            problems.append(
                quarantine_row(
                    source["name"],
                    task["uri"],
                    "box_outside_image",
                    f"box {roi['label']!r} {roi['bbox']} lies outside the {width}x{height} image",
                    stage="decode",
                    scope="annotation",
                    record_id=task["id"],
                )
            )
            continue
        rois.append({"label": roi["label"], "bbox": [cx0, cy0, cx1, cy1], "area": (cx1 - cx0) * (cy1 - cy0), "rle": []})
    if task["rois"] and not rois:
        problems.append(
            quarantine_row(
                source["name"],
                task["uri"],
                "all_boxes_dropped",
                f"all {len(task['rois'])} box(es) of this image lie outside it; the image is kept with no ROI",
                stage="decode",
                scope="warning",
                record_id=task["id"],
            )
        )
    return rois, problems


def decode_image_file(task: dict, source: dict) -> tuple[list[dict], list[dict]]:
    """The decode half for readers of plain 2-D image files: one record per file, or per frame of a
    multi-frame GIF/TIFF with `multiframe: all` (otherwise a warning row says which frame was kept)."""
    max_pixels = source.get("max_pixels") or DEFAULT_MAX_PIXELS
    facts = file_facts(
        task["path"],
        max_pixels,
        damaged=source.get("damaged_images") or "quarantine",
        max_bytes=source.get("max_file_bytes") or DEFAULT_MAX_FILE_BYTES,
    )
    extra = json.loads(task["extra"]) if task["extra"] != "{}" else {}
    from_bottom = extra.get("y_origin") == "bottom"
    rois, problems = normalise_rois(task, source, facts.width, facts.height, from_bottom)
    fields: dict[str, Any] = {"meta": extra.get("meta"), "file_hash": facts.file_hash}
    if extra.get("rle"):  # masks written as run lengths in a table (csv's `rle_column`)
        found, labels, bad = rle_rois(task, source, facts.height, facts.width, extra["rle"])
        rois, problems = rois + found, problems + bad
        from_masks = {m["label"] for m in extra["rle"]}
        fields["labels"] = [lab for lab in task["labels"] if lab not in from_masks or lab in labels]
    if extra.get("polygons"):  # findings drawn as polygons (csv's `findings:`), filled now that the size is known
        found, bad = polygon_rois(task, source, facts.height, facts.width, extra["polygons"])
        rois, problems = rois + found, problems + bad
    if facts.warning:
        problems.append(
            quarantine_row(
                source["name"], task["uri"], "damaged_kept", facts.warning, stage="decode", scope="warning", record_id=task["id"]
            )
        )
    if facts.frames == 1:
        return [image_record(task, facts, rois=rois, **fields)], problems
    if source.get("multiframe") != "all":
        problems.append(
            quarantine_row(
                source["name"],
                task["uri"],
                "multiframe",
                f"the file has {facts.frames} frames; frame 0 was kept (set "
                "`multiframe: all` in the source for one record per frame)",
                stage="decode",
                scope="warning",
                record_id=task["id"],
            )
        )
        return [image_record(task, facts, rois=rois, **fields)], problems
    records = [image_record(task, facts, frame=0, rois=rois, **fields)]
    for index in range(1, facts.frames):
        frame = image_facts(open_image(task["path"], max_pixels, frame=index))
        if (frame.width, frame.height) != (facts.width, facts.height):
            rois, _ = normalise_rois(task, source, frame.width, frame.height, from_bottom)
        records.append(image_record(task, frame, frame=index, rois=rois, **fields))
    return records, problems


def image_record(
    task: dict,
    facts: Any,
    *,
    frame: int = -1,
    rois: list[dict] | None = None,
    render: dict | None = None,
    meta: dict | None = None,
    **fields: Any,
) -> dict:
    """The per-image part of a record; source-level fields are added by the ingest stage."""
    rec = {
        "id": task["id"] if frame < 0 else f"{task['id']}/{frame:05d}",
        "frame": frame,
        "width": facts.width,
        "height": facts.height,
        "channels": facts.channels,
        "pixel_hash": facts.pixel_hash,
        "phash": facts.phash,
        "rois": rois if rois is not None else [],
        "render": render or NO_RENDER,
        "meta": json.dumps(meta, sort_keys=True, default=str) if meta else None,
    }
    rec.update(fields)
    return rec


decode = decode_image_file  # what `sources.get_decoder` gives the plain image readers (IMAGE_FILE_READERS)


def decode_error_row(source: dict, task: dict, err: DecodeError) -> dict:
    return quarantine_row(source["name"], task["uri"], err.reason, str(err), stage="decode", record_id=task["id"])
