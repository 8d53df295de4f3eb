"""Thumbnails for the web app: made once per record by the executor, cached in `LOOM/cache/thumbs/`.

A thumbnail's key is a hash of the record id, its pixel hash and the thumbnail size, so a record whose
pixels changed gets a new one, and a cached one is never stale. Thumbnails are kept in packs, one per part
of records: the JPEGs one after another, then a JSON index (key -> offset, length) and the index's length in
8 bytes. One file per 256 thumbnails, not 256 files: on this machine's disk, small files are written at
500 to 6,000 a second, which made writing, not rendering, the cost of a large loom. A pack is written under
a temporary name and renamed, so it is whole or absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pyarrow as pa

from .. import layout
from ..engine import ExecutorSpec, make_executor, stage_module
from ..engine.progress import progress_bar
from ..imaging import DecodeError, encode, fit
from ..locks import hold
from ..outputs import OutputFolder, temporary_name

THUMBS = Path(layout.CACHE) / "thumbs"
SIDE = 192
QUALITY = 80
PART = 256
FOOTER = struct.Struct("<Q")
COLUMNS = ["id", "source", "uri", "frame", "width", "height", "pixel_hash", "file_hash", "render"]


def thumb_key(record_id: str, pixel_hash: str | None, side: int = SIDE) -> str:
    return hashlib.sha1(f"{record_id}\0{pixel_hash or ''}\0{side}".encode()).hexdigest()[:24]


def render_thumb(row: dict, sources: dict, cache: dict, side: int = SIDE) -> bytes:
    from ..view.render import record_image

    im = record_image(row, {"sources": sources}, cache, side)
    return encode(fit(im, side), "jpg", QUALITY)


def write_pack(folder: Path, thumbs: list[tuple[str, bytes]]) -> str:
    """One pack of (key, JPEG) pairs; returns its file name (a hash of its keys: the same part, the same name)."""
    name = "pack-" + hashlib.sha1("\n".join(k for k, _ in thumbs).encode()).hexdigest()[:20] + ".bin"
    index, offset, blobs = {}, 0, []
    for key, data in thumbs:
        index[key] = [offset, len(data)]
        offset += len(data)
        blobs.append(data)
    tail = json.dumps(index, separators=(",", ":")).encode()
    path = Path(folder) / name
    tmp = temporary_name(path)
    with open(tmp, "wb") as f:
        f.write(b"".join(blobs) + tail + FOOTER.pack(len(tail)))
    os.replace(tmp, path)  # no fsync: a pack lost to a power cut is made again
    return name


def read_index(folder: Path) -> dict[str, tuple[str, int, int]]:
    """key -> (pack file, offset, length) over every whole pack in the folder."""
    out: dict[str, tuple[str, int, int]] = {}
    if not Path(folder).is_dir():
        return out
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not (entry.name.startswith("pack-") and entry.name.endswith(".bin")):
            continue
        try:
            with open(entry.path, "rb") as f:
                f.seek(-FOOTER.size, os.SEEK_END)
                (size,) = FOOTER.unpack(f.read(FOOTER.size))
                f.seek(-FOOTER.size - size, os.SEEK_END)
                index = json.loads(f.read(size))
        except (OSError, ValueError, struct.error):
            continue  # not a pack of ours: skipped, never touched
        for key, (offset, length) in index.items():
            out[key] = (entry.name, offset, length)
    return out


def read_thumb(folder: Path, where: tuple[str, int, int]) -> bytes:
    name, offset, length = where
    fd = os.open(Path(folder) / name, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def thumbs_part(table: pa.Table, settings: dict) -> tuple[list[tuple[str, bytes]], list[tuple[str, str]], int]:
    """(thumbnails, failures as (key, why), thumbnails made). With `settings["folder"]` (a local executor, whose
    workers see the loom) the worker writes the pack itself and returns no thumbnails."""
    cache: dict = {}
    made, failed = [], []
    for row in table.to_pylist():
        key = thumb_key(row["id"], row["pixel_hash"], settings["side"])
        try:
            made.append((key, render_thumb(row, settings["sources"], cache, settings["side"])))
        except DecodeError as e:
            failed.append((key, f"{e.reason}: {e}"))
        except Exception as e:  # an odd file shows as a placeholder in the grid, never ends the run
            failed.append((key, f"{type(e).__name__}: {e}"))
    if settings.get("folder") and made:
        write_pack(Path(settings["folder"]), made)
        return [], failed, len(made)
    return made, failed, len(made)


def claim(loom: Path) -> Path:
    """The thumbnail folder, recorded as medloom's (every file in it is) in the loom's cache folder."""
    folder = Path(loom) / THUMBS
    OutputFolder(folder.parent).claim_dir(folder.name)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def build_thumbnails(loom: Path, con, sources: dict, *, workers=None, quiet: bool = False, side: int = SIDE) -> dict:
    """Make the thumbnails that are missing, a part at a time on the executor; returns counts."""
    folder = Path(loom) / THUMBS
    with hold(folder.parent, what="cache"):
        claim(loom)
        rows = con.sql(f"SELECT {', '.join(COLUMNS)} FROM records ORDER BY source, uri, frame").to_arrow_table()
        have = read_index(folder)
        keys = [thumb_key(i, h, side) for i, h in zip(rows.column("id").to_pylist(), rows.column("pixel_hash").to_pylist())]
        missing = [k for k, key in enumerate(keys) if key not in have]
        report = {"records": len(keys), "cached": len(keys) - len(missing), "made": 0, "failed": 0}
        if not missing:
            return report
        todo = rows.take(missing)
        parts = (todo.slice(start, PART) for start in range(0, todo.num_rows, PART))
        local = not isinstance(workers, ExecutorSpec) or workers.kind == "local"
        settings = {"sources": sources, "side": side, "folder": str(folder.resolve()) if local else None}
        with (
            make_executor(workers, preload=[stage_module("web.thumbs")]) as executor,
            progress_bar("thumbnails", todo.num_rows, quiet) as advance,
        ):
            for _, (made, failed, count) in executor.map("web.thumbs", parts, settings):
                if made:  # made by workers that do not see the loom (Ray): the pack is written here
                    write_pack(folder, made)
                report["made"] += count
                report["failed"] += len(failed)
                advance(count + len(failed))
        return report
