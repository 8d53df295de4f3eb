"""Thumbnails for the web app: made once per record by the executor, cached in `LOOM/cache/thumbs/`.

A thumbnail's file name is a hash of the record id, its pixel hash and the thumbnail size, so a record
whose pixels changed gets a new one, and a cached one is never stale.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pyarrow as pa

from ..engine import ExecutorSpec, make_executor
from ..engine.progress import progress_bar
from ..imaging import DecodeError, encode, fit
from ..locks import hold
from ..outputs import OutputFolder, temporary_name

THUMBS = Path("cache") / "thumbs"
SIDE = 192
QUALITY = 80
PART = 256
COLUMNS = ["id", "source", "uri", "frame", "width", "height", "pixel_hash", "file_hash", "render"]


def thumb_name(record_id: str, pixel_hash: str | None, side: int = SIDE) -> str:
    key = hashlib.sha1(f"{record_id}\0{pixel_hash or ''}\0{side}".encode()).hexdigest()[:24]
    return f"{key[:2]}/{key}.jpg"


def render_thumb(row: dict, sources: dict, cache: dict, side: int = SIDE) -> bytes:
    from ..export.render import record_image

    im = record_image(row, {"sources": sources}, cache, side)
    return encode(fit(im, side), "jpg", QUALITY)


def thumbs_part(table: pa.Table, settings: dict) -> list[tuple[str, bytes | None, str]]:
    """(file name, JPEG bytes, why not) per record of the part. With `settings["folder"]` (a local executor,
    whose workers see the loom) the worker writes the file itself and returns no bytes: the main process
    would otherwise spend more time writing 100,000 small files than the workers spend making them."""
    cache: dict = {}
    folder = settings.get("folder")
    out = []
    for row in table.to_pylist():
        name = thumb_name(row["id"], row["pixel_hash"], settings["side"])
        try:
            data = render_thumb(row, settings["sources"], cache, settings["side"])
        except DecodeError as e:
            out.append((name, None, f"{e.reason}: {e}"))
            continue
        except Exception as e:  # an odd file shows as a placeholder in the grid, never ends the run
            out.append((name, None, f"{type(e).__name__}: {e}"))
            continue
        if folder:
            write_cached(Path(folder) / name, data)
            data = b""
        out.append((name, data, ""))
    return out


def write_cached(path: Path, data: bytes) -> None:
    """Under a temporary name, then linked into place without fsync: a file that exists is never replaced, and
    a cache file lost to a power cut is simply made again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    tmp.write_bytes(data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def build_thumbnails(loom: Path, con, sources: dict, *, workers=None, quiet: bool = False,
                     side: int = SIDE) -> dict:
    """Make the thumbnails that are missing, a part at a time on the executor; returns counts."""
    folder_path = Path(loom) / THUMBS
    with hold(folder_path.parent, what="cache"):
        OutputFolder(folder_path.parent).claim_dir(folder_path.name)  # every file in it is medloom's
        rows = con.sql(f"SELECT {', '.join(COLUMNS)} FROM records ORDER BY source, uri, frame").to_arrow_table()
        names = [thumb_name(i, h, side) for i, h in zip(rows.column("id").to_pylist(),
                                                        rows.column("pixel_hash").to_pylist())]
        missing = [k for k, name in enumerate(names) if not os.path.exists(folder_path / name)]
        report = {"records": len(names), "cached": len(names) - len(missing), "made": 0, "failed": 0}
        if not missing:
            return report
        todo = rows.take(missing)
        parts = (todo.slice(start, PART) for start in range(0, todo.num_rows, PART))
        local = not isinstance(workers, ExecutorSpec) or workers.kind == "local"
        settings = {"sources": sources, "side": side, "folder": str(folder_path.resolve()) if local else None}
        with make_executor(workers, preload=["medloom.web.thumbs"]) as executor, \
                progress_bar("thumbnails", todo.num_rows, quiet) as advance:
            for _, results in executor.map("web.thumbs", parts, settings):
                for name, data, _ in results:
                    if data:  # made by a worker that does not see the loom (Ray): written here
                        write_cached(folder_path / name, data)
                made = sum(1 for _, data, _ in results if data is not None)
                report["made"] += made
                report["failed"] += len(results) - made
                advance(len(results))
        return report
