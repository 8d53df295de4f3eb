"""Reader `vqa_parquet`: a benchmark as Hugging Face datasets publish it and lmms-eval loads it, Parquet files
(`data/test-00000-of-00001.parquet`) whose image column holds the image's bytes (`datasets.Image`: a struct
{bytes, path}, or plain binary), beside the question columns (VQA-RAD's and PathVQA's image, question, answer;
SLAKE's and the others' as in their JSON, `vqa_formats.py`).

Read one row group at a time. Rows whose image bytes are the same (one image, several questions: every
question row repeats the image) make one record. Where the image lies (row group and row) is kept in the meta
(`embedded`); the image is read again from there when it is rendered, checked against the hash taken at ingest.
"""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from ..imaging import DecodeError, file_hash
from ..records import quarantine_row
from .base import Scan, inside, make_task, source_record_id, source_roots
from .vqa import add_question, embedded_record, mat_of, meta_of
from .vqa_formats import detect, file_split, parse

IMAGE_COLUMNS = ("image", "images", "img", "decoded_image")
_DECODE_CACHE: dict = {}  # a worker's last row group, kept while its next tasks come from the same one


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    parquet: list[str] | None = None  # the Parquet files, globs under the root (default: every *.parquet)
    image_column: str | None = None  # default: the first of image, images, img, decoded_image
    format: str | None = None  # the question columns' format (vqa_formats.FORMATS); default: told by the names


def image_of(value) -> tuple[bytes | None, str]:
    """The bytes of one image cell (struct {bytes, path}, binary, or a list of one), else (None, why)."""
    if isinstance(value, list):
        if len(value) != 1:
            return None, f"{len(value)} images for one question; not read"
        value = value[0]
    if isinstance(value, dict):
        value = value.get("bytes")
    if isinstance(value, bytes) and value:
        return value, ""
    return None, "no image bytes in the row (a dataset whose images are files: read its JSON with reader `vqa`)"


def scan(source: dict) -> Scan:
    from pathlib import Path

    opts = Options(**source["options"])
    out, root = Scan(), source["root"]
    files = sorted({str(p) for g in (opts.parquet or ["**/*.parquet"]) for p in Path(root).glob(g) if p.is_file()})
    if not files:
        raise ValueError(f"{root}: no Parquet file ({', '.join(opts.parquet or ['**/*.parquet'])}); name them with `parquet:`")
    roots, folders = source_roots(source), {}
    for path in files:
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        if not inside(path, roots, folders):
            out.quarantine.append(
                quarantine_row(source["name"], rel, "outside_root", "a link outside the source's roots; not read")
            )
            continue
        try:
            read_parquet(out, source, opts, path, rel)
        except (OSError, pa.ArrowException, ValueError) as e:
            out.quarantine.append(quarantine_row(source["name"], rel, "unreadable_parquet", f"{type(e).__name__}: {e}"))
    return out


def read_parquet(out: Scan, source: dict, opts: Options, path: str, rel: str) -> None:
    name, budget = source["name"], source.get("max_file_bytes") or (1 << 30)
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    column = opts.image_column or next((c for c in IMAGE_COLUMNS if c in names), None)
    if column not in names:
        raise ValueError(
            f"no image column ({opts.image_column or ', '.join(IMAGE_COLUMNS)}) among {names[:12]}; name it with `image_column:`"
        )
    fmt = opts.format or detect([c for c in names if c != column] + ["image"])
    if fmt is None:
        raise ValueError(f"the columns {names[:12]} are not a known benchmark's (see `format:`)")
    split = file_split(rel) or "test"
    groups: dict[str, dict] = {}
    for g in range(pf.num_row_groups):
        size = pf.metadata.row_group(g).total_byte_size
        if size > budget:
            message = f"row group {g} is {size} bytes, over `max_file_bytes`; its rows are left out"
            out.quarantine.append(quarantine_row(name, f"{rel}#{g}", "over_budget", message))
            continue
        for i, row in enumerate(pf.read_row_group(g).to_pylist()):
            where = f"{rel}#{g}:{i}"
            data, why = image_of(row.pop(column))
            if data is None:
                out.quarantine.append(quarantine_row(name, where, "missing_image", f"{why}; the question is left out"))
                continue
            try:
                r = parse(fmt, row, split)
            except ValueError as e:
                out.quarantine.append(quarantine_row(name, where, "bad_question", f"{e}; the question is left out"))
                continue
            key = file_hash(data)
            add_question(groups, key, r, fmt, {"row_group": g, "row": i, "column": column})
            groups[key].setdefault("split", r.split)
    for group in groups.values():
        task = make_task(source, path, uri=rel, split=group["split"], extra={"meta": meta_of(group), "mat": mat_of(group)})
        where = group["location"]
        task["id"] = source_record_id(source, f"{rel}/{where['row_group']}_{where['row']}")
        out.tasks.append(task)


def image_bytes(row: dict, path: str, cache: dict, max_bytes: int) -> bytes:
    """A record's image: its row group read again (kept in `cache` while the next records come from it)."""
    where = json.loads(row["meta"])["embedded"]
    key = (path, where["row_group"], where["column"])
    try:
        if cache.get("parquet_key") != key:
            pf = pq.ParquetFile(path)
            if pf.metadata.row_group(where["row_group"]).total_byte_size > max_bytes:
                raise DecodeError("over_budget", f"row group {where['row_group']} is over the limit of {max_bytes} bytes")
            cache["parquet_key"] = key
            cache["parquet_rows"] = pf.read_row_group(where["row_group"], columns=[where["column"]]).column(0).to_pylist()
        data, why = image_of(cache["parquet_rows"][where["row"]])
    except (OSError, pa.ArrowException, IndexError) as e:
        raise DecodeError("changed_since_ingest", f"{type(e).__name__}: {e}; run `medloom ingest` again") from None
    if data is None:
        raise DecodeError("changed_since_ingest", f"{why}; run `medloom ingest` again")
    return data


def decode(task: dict, source: dict) -> tuple[list[dict], list[dict]]:
    meta = json.dumps(json.loads(task["extra"])["meta"])
    return embedded_record(
        task, source, image_bytes({"meta": meta}, task["path"], _DECODE_CACHE, source.get("max_file_bytes") or (1 << 30))
    )
