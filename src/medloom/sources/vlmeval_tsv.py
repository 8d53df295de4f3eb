"""Reader `vlmeval_tsv`: VLMEvalKit's benchmark TSV files (GMAI-MMBench, OmniMedVQA, PathVQA, MedXpertQA-MM as
VLMEvalKit ships them), each image base64 in its row's `image` column.

As VLMEvalKit writes and reads them (vlmeval/dataset/image_base.py, `ImageBaseDataset.__init__`): a header
`index, image, question, A, B, ..., answer, ...` (pandas' `to_csv(sep='\\t')`, so a field holding a tab, a
newline or a quote is quoted); an `image` of at most 64 characters is the `index` of the row that holds the
image (one image, several questions); a multiple-choice question has its options in the letter columns and its
answer as a letter.

The file is read row by row, never whole: each row is at most `max_file_bytes`. A record is one image: where
its row starts in the file and how long it is are kept in its meta (`embedded`), and the image is decoded out
of that row again when it is rendered, checked against the hash taken at ingest.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import os
import sys

from pydantic import BaseModel, ConfigDict

from ..imaging import DecodeError
from ..records import quarantine_row
from .base import Scan, inside, make_task, source_record_id, source_roots
from .vqa import add_question, embedded_record, mat_of, meta_of
from .vqa_formats import file_split, parse

REFERENCE_CHARS = 64  # VLMEvalKit: an image field this short is another row's index


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tsv: list[str] | None = None  # the TSV files, globs under the root (default: every *.tsv)


def records_of(f, budget: int):
    """(offset, length, first physical line, fields) of each row after the header; a row longer than `budget`
    is (offset, length, line, None). A row ends at a newline outside quotes (pandas quotes a field holding one)."""
    offset, line = f.tell(), 1
    while True:
        start, first, size, quotes, chunks, over = offset, line + 1, 0, 0, [], False
        while True:
            piece = f.readline(1 << 24)
            if not piece:
                break
            offset, size, quotes = offset + len(piece), size + len(piece), quotes + piece.count(b'"')
            if size > budget:
                over, chunks = True, []
            elif not over:
                chunks.append(piece)
            if piece.endswith(b"\n"):
                line += 1
                if quotes % 2 == 0:
                    break
        if size == 0:
            return
        if over:
            yield start, size, first, None
            continue
        raw = b"".join(chunks)
        if raw.strip():
            yield start, size, first, next(csv.reader(io.StringIO(raw.decode("utf-8").rstrip("\r\n")), delimiter="\t"))


def scan(source: dict) -> Scan:
    from pathlib import Path

    opts = Options(**source["options"])
    out, name, root = Scan(), source["name"], source["root"]
    budget = source.get("max_file_bytes") or (1 << 30)
    files = sorted({str(p) for g in (opts.tsv or ["**/*.tsv"]) for p in Path(root).glob(g) if p.is_file()})
    if not files:
        raise ValueError(f"{root}: no TSV file ({', '.join(opts.tsv or ['**/*.tsv'])}); name them with `tsv:`")
    roots, folders = source_roots(source), {}
    csv.field_size_limit(min(sys.maxsize, 1 << 62))
    for path in files:
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        if not inside(path, roots, folders):
            out.quarantine.append(quarantine_row(name, rel, "outside_root", "a link outside the source's roots; not read"))
            continue
        try:
            read_tsv(out, source, path, rel, budget)
        except (OSError, UnicodeDecodeError, csv.Error, ValueError) as e:
            out.quarantine.append(quarantine_row(name, rel, "unreadable_tsv", f"{type(e).__name__}: {e}"))
    return out


def read_tsv(out: Scan, source: dict, path: str, rel: str, budget: int) -> None:
    name = source["name"]
    groups: dict[str, dict] = {}
    references: list[tuple[str, str, object]] = []
    with open(path, "rb") as f:
        header = next(csv.reader([f.readline(1 << 20).decode("utf-8-sig").rstrip("\r\n")], delimiter="\t"))
        if "image" not in header or "question" not in header:
            raise ValueError(
                f"the header {header[:8]} has no `image` and `question` columns (VLMEvalKit's TSV: index, image, "
                "question, A, B, ..., answer)"
            )
        column, split = header.index("image"), file_split(rel) or "test"
        for offset, length, line, fields in records_of(f, budget):
            where = f"{rel}:{line}"
            if fields is None:
                out.quarantine.append(
                    quarantine_row(name, where, "over_budget", f"a row of {length} bytes, over `max_file_bytes`")
                )
                continue
            if len(fields) != len(header):
                message = f"{len(fields)} fields where the header has {len(header)}; the row is left out"
                out.quarantine.append(quarantine_row(name, where, "bad_row", message))
                continue
            row = dict(zip(header, fields))
            image = row.pop("image").strip()
            try:
                r = parse("vlmeval", row, split)
            except ValueError as e:
                out.quarantine.append(quarantine_row(name, where, "bad_question", f"{e}; the question is left out"))
                continue
            index = row.get("index", "").strip() or str(line)
            if image.startswith("["):
                message = "several images for one question (a list in `image`); not read"
                out.quarantine.append(quarantine_row(name, where, "multi_image", message))
            elif 0 < len(image) <= REFERENCE_CHARS:
                references.append((image, where, r))
            elif not image:
                out.quarantine.append(
                    quarantine_row(name, where, "missing_image", "the row has no image; the question is left out")
                )
            else:
                location = {"offset": offset, "length": length, "column": column, "index": index}
                add_question(groups, index, r, "vlmeval", location)
                groups[index]["split"] = r.split
    for target, where, r in references:
        if target not in groups:
            message = f"its image is row {target!r}'s, which holds no image here; the question is left out"
            out.quarantine.append(quarantine_row(name, where, "missing_image", message))
            continue
        add_question(groups, target, r, "vlmeval", {})
    for index, group in groups.items():
        task = make_task(source, path, uri=rel, split=group["split"], extra={"meta": meta_of(group), "mat": mat_of(group)})
        task["id"] = source_record_id(source, f"{rel}/{index}")
        out.tasks.append(task)


def image_bytes(row: dict, path: str, cache: dict, max_bytes: int) -> bytes:
    """The image of a record: its row read again from the TSV, its `image` field base64-decoded."""
    import json

    where = json.loads(row["meta"])["embedded"]
    if where["length"] > max_bytes:
        raise DecodeError("over_budget", f"the row is {where['length']} bytes, over the limit of {max_bytes}")
    try:
        with open(path, "rb") as f:
            f.seek(where["offset"])
            raw = f.read(where["length"])
        fields = next(csv.reader(io.StringIO(raw.decode("utf-8").rstrip("\r\n")), delimiter="\t"))
        field = fields[where["column"]]
    except (OSError, UnicodeDecodeError, csv.Error, IndexError, StopIteration) as e:
        raise DecodeError(
            "changed_since_ingest",
            f"row {where['index']} cannot be read where it was ({type(e).__name__}); run `medloom ingest` again",
        ) from None
    try:
        return base64.b64decode(field, validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError("not_an_image", f"row {where['index']}: the `image` field is not base64") from None


def decode(task: dict, source: dict) -> tuple[list[dict], list[dict]]:
    import json

    csv.field_size_limit(min(sys.maxsize, 1 << 62))
    row = {"meta": json.dumps(json.loads(task["extra"])["meta"])}
    data = image_bytes(row, task["path"], {}, source.get("max_file_bytes") or (1 << 30))
    if not data:
        raise DecodeError("not_an_image", "the `image` field decodes to no bytes")
    return embedded_record(task, source, data)
