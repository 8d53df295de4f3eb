"""Label tables as datasets publish them: CSV/TSV, whitespace-separated text, .xlsx, JSON label lists, each
possibly gzip- or zip-compressed, with or without a header row, and joined to further tables by a key.

Every row keeps its file and line (`Row.where`, e.g. `labels.csv:17`), so that each problem found later in a
row can name where it is. The table is read under the source's byte budget and only from inside its roots.
"""

from __future__ import annotations

import csv as csvlib
import datetime
import gzip
import io
import json
import os
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from ..imaging import DEFAULT_MAX_FILE_BYTES, DecodeError, read_file
from ..records import quarantine_row
from .base import decode_text, display_name, inside, source_roots

Format = Literal["auto", "csv", "xlsx", "json"]
WHITESPACE = "whitespace"


class TableSpec(BaseModel):
    """How to read one table: the keys a label table and each of its joins take."""

    model_config = ConfigDict(extra="forbid")
    # auto: by the file's suffix (.xlsx, .json/.jsonl, anything else delimited text; .gz and .zip looked through)
    table_format: Format = "auto"
    delimiter: str | None = None  # default "," ("\t" for .tsv); "whitespace": runs of spaces or tabs (MIAS Info.txt)
    encoding: str | None = None  # default: UTF-8, or UTF-16 / UTF-8 with a byte-order mark
    columns: list[str] | None = None  # the columns' names, for a table without a header row (or a broken one)
    # true: the first row names the columns; false: there is no header row (give `columns:`); replace: the first
    # row is a header, replaced by `columns:` (NIH's `Bbox [x,y,w,h],,,` whose last columns have no name).
    # Default: false when `columns:` is given, else true.
    header: bool | Literal["replace"] | None = None
    skip_rows: int = 0  # non-blank lines (spreadsheet rows) before the header or the first row: a title, a note
    sheet: str | None = None  # .xlsx: the sheet to read (default: the first)

    @model_validator(mode="after")
    def _header_and_columns(self) -> TableSpec:
        if self.columns is None and self.header in (False, "replace"):
            raise ValueError(f"`header: {str(self.header).lower()}` needs `columns: [names]` to name the columns")
        if self.columns is not None and self.header is True:
            raise ValueError(
                "`columns:` with `header: true`: say `header: replace` (the first row is a header, replaced by "
                "`columns:`) or `header: false` (the table has no header row)"
            )
        if self.skip_rows < 0:
            raise ValueError("`skip_rows:` is a count of lines, 0 or more")
        return self


class JoinSpec(TableSpec):
    """A second table whose columns are added to each row of the label table whose `on` column equals its `key`."""

    table: str  # relative to the source root (or absolute, inside an allowed root)
    on: str  # the label table's column
    key: str | None = None  # the joined table's column (default: the same name as `on`)
    # a row whose key the joined table lacks: keep it (with a warning row and the joined columns empty) or drop it
    unmatched: Literal["keep", "drop"] = "keep"

    @model_validator(mode="before")
    @classmethod
    def _on_as_written(cls, v: Any) -> Any:
        """YAML 1.1 reads an unquoted `on:` key as `true`: `join: {table: meta.csv, on: image}` means `on`."""
        if isinstance(v, dict) and True in v and "on" not in v:
            return {("on" if k is True else k): value for k, value in v.items()}
        return v


class TableOptions(TableSpec):
    """A reader's label table keys: the table's own (`TableSpec`) and `join:`."""

    join: list[JoinSpec] = []

    @field_validator("join", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else (v or [])


class Row(dict):
    """A table row (column -> text) that knows where it was read."""

    __slots__ = ("file", "line", "item")

    def __init__(self, values: dict[str, str], file: str, line: int, item: int = 0) -> None:
        super().__init__(values)
        self.file, self.line, self.item = file, line, item

    @property
    def where(self) -> str:
        """`labels.csv:17`; for a JSON list packed on one line (ChestX-Det's 2 MB single line), the object's number
        in the list too: `ChestX_Det_train.json:1 (object 5)`."""
        return f"{self.file}:{self.line}" + (f" (object {self.item})" if self.item else "")

    def __missing__(self, key: object) -> str:
        """Column names are read without their surrounding spaces, and a recipe may name them either way (SIIM's
        header is `ImageId, EncodedPixels`: users copy ` EncodedPixels`)."""
        if isinstance(key, str) and key != key.strip():
            return self[key.strip()]
        raise KeyError(key)

    def get(self, key: object, default: object = None) -> object:
        try:
            return self[key]
        except KeyError:
            return default


@dataclass
class Table:
    path: str
    name: str  # as rows and messages name it: its path under the source root
    header: list[str]
    rows: list[Row] = field(default_factory=list)
    quarantine: list[dict] = field(default_factory=list)


def table_path(source: dict, name: str) -> tuple[str, str]:
    """(path, display name) of a table the recipe names; an error unless it lies inside the source's roots."""
    base = source["root"] if os.path.isdir(source["root"]) else os.path.dirname(source["root"])
    path = name if os.path.isabs(name) else os.path.join(base, name)
    if not inside(path, source_roots(source)):
        raise ValueError(
            f"{name}: resolves to {display_name(os.path.realpath(path))}, outside the source's root {source['root']}; "
            "list its folder under `allowed_roots:` in the recipe to read it"
        )
    rel = os.path.relpath(path, base)
    return path, display_name(Path(rel).as_posix() if not rel.startswith("..") else os.path.basename(path))


def read_bytes(path: str, name: str, budget: int) -> tuple[bytes, str]:
    """The table's bytes under the budget, out of a .gz or a single-member .zip; (data, the inner file's name)."""
    try:
        data = read_file(path, budget)
    except DecodeError as e:
        raise ValueError(f"{name}: {e}") from None
    lower = path.lower()
    if lower.endswith(".gz"):
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
                data = f.read(budget + 1)
        except (OSError, EOFError) as e:
            raise ValueError(f"{name}: not a readable gzip file ({e})") from None
        if len(data) > budget:
            raise ValueError(f"{name}: unpacks to over {budget} bytes; raise `max_file_bytes` if it is genuine")
        return data, os.path.basename(path)[:-3]
    if lower.endswith(".zip"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                members = [m for m in z.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX/")]
                if len(members) != 1:
                    raise ValueError(
                        f"{name}: a .zip is read when it holds one table; this one holds "
                        f"{[m.filename for m in members][:10]}: unpack it and name the table"
                    )
                if members[0].file_size > budget:
                    raise ValueError(
                        f"{name}: {members[0].filename} unpacks to {members[0].file_size} bytes, over the limit of "
                        f"{budget}; raise `max_file_bytes` if it is genuine"
                    )
                with z.open(members[0]) as f:
                    data = f.read(budget + 1)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError) as e:
            raise ValueError(f"{name}: not a readable zip file ({e})") from None
        if len(data) > budget:
            raise ValueError(f"{name}: unpacks to over {budget} bytes; raise `max_file_bytes` if it is genuine")
        return data, os.path.basename(members[0].filename)
    return data, os.path.basename(path)


def table_kind(spec: TableSpec, inner: str) -> str:
    """csv, xlsx, json or jsonl, from `table_format:` or the (inner) file's suffix."""
    suffix = os.path.splitext(inner.lower())[1]
    if spec.table_format == "json":
        return "jsonl" if suffix in (".jsonl", ".ndjson") else "json"
    if spec.table_format != "auto":
        return spec.table_format
    return {".xlsx": "xlsx", ".xlsm": "xlsx", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(suffix, "csv")


def load_table(source: dict, spec: TableSpec, name: str) -> Table:
    """One table as rows: its header (names stripped of surrounding spaces), then one `Row` per record.

    A row with more fields than the header names (other than empty trailing ones) is a quarantine row and is
    left out; a row with fewer has the missing fields empty (MIAS: a normal breast has no abnormality fields)."""
    path, shown = table_path(source, name)
    data, inner = read_bytes(path, shown, source.get("max_file_bytes") or DEFAULT_MAX_FILE_BYTES)
    kind = table_kind(spec, inner)
    if kind == "xlsx":
        records = xlsx_records(data, shown, spec.sheet, source.get("max_file_bytes") or DEFAULT_MAX_FILE_BYTES)
    else:
        text = decode_text(data, shown, spec.encoding)
        if kind in ("json", "jsonl"):
            return json_table(path, shown, text, kind, spec, source)
        records = text_records(text, shown, spec, inner)
    table = Table(path, shown, [])
    records = iter(records)
    for _ in range(spec.skip_rows):
        next(records, None)
    header_row = spec.header if spec.header is not None else spec.columns is None
    if header_row:
        first = next(records, None)
        table.header = [c.strip() for c in first[1]] if first else []
    if spec.columns is not None:
        table.header = [c.strip() for c in spec.columns]
    width = len(table.header)
    for line, fields in records:
        extra = [f for f in fields[width:] if f.strip()]
        if extra:
            table.quarantine.append(
                quarantine_row(
                    source["name"],
                    f"{shown}:{line}",
                    "extra_fields",
                    f"the row has {len(fields)} fields, the header names {width} ({table.header}); the row is skipped. "
                    "Name every column with `columns:` (and `header: replace` where the first row is a header)",
                )
            )
            continue
        values: dict[str, str] = {}
        for i, column in enumerate(table.header):
            if column not in values:  # a name repeated in the header: its first column
                values[column] = fields[i] if i < len(fields) else ""
        table.rows.append(Row(values, shown, line))
    return table


def text_records(text: str, shown: str, spec: TableSpec, inner: str):
    """(line, fields) for each non-blank record of delimited or whitespace-separated text."""
    delimiter = spec.delimiter or ("\t" if inner.lower().endswith((".tsv", ".tab")) else ",")
    if delimiter == WHITESPACE:
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                yield number, line.split()
        return
    if delimiter in ("\\t", "tab"):
        delimiter = "\t"
    if len(delimiter) != 1:
        raise ValueError(f"{shown}: `delimiter: {delimiter!r}` is not one character (or `whitespace`)")
    reader = csvlib.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csvlib.Error as e:
            raise ValueError(f"{shown}:{reader.line_num}: not a readable row: {e}") from None
        if fields and any(f.strip() for f in fields):
            yield start, fields


def cell_text(value: Any) -> str:
    """A spreadsheet or JSON value as the text a CSV would hold: 1 not 1.0, empty for nothing."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def xlsx_records(data: bytes, shown: str, sheet: str | None, budget: int) -> list[tuple[int, list[str]]]:
    """(spreadsheet row number, cells as text) of one sheet, read with openpyxl in read-only mode."""
    import openpyxl  # a reader of .xlsx only; loaded when one is read

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:  # an .xlsx is a zip: its unpacked size is held to the budget
            unpacked = sum(m.file_size for m in z.infolist())
    except zipfile.BadZipFile:
        raise ValueError(f"{shown}: not an .xlsx workbook (not a zip file); set `table_format:` if it is CSV") from None
    if unpacked > budget:
        raise ValueError(f"{shown}: unpacks to {unpacked} bytes, over the limit of {budget}; raise `max_file_bytes`")
    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as e:  # openpyxl raises many kinds for a damaged workbook
        raise ValueError(f"{shown}: not a readable .xlsx workbook: {type(e).__name__}: {e}") from None
    try:
        if sheet is not None and sheet not in book.sheetnames:
            raise ValueError(f"{shown}: no sheet {sheet!r}; the workbook has the sheets {book.sheetnames}: set `sheet:` to one")
        ws = book[sheet] if sheet is not None else book[book.sheetnames[0]]
        out = []
        for number, cells in enumerate(ws.iter_rows(values_only=True), start=1):  # read-only mode yields from row 1
            fields = [cell_text(v) for v in cells]
            if any(f.strip() for f in fields):
                out.append((number, fields))
        return out
    finally:
        book.close()


def json_table(path: str, shown: str, text: str, kind: str, spec: TableSpec, source: dict) -> Table:
    """A JSON list of objects (Chaoyang's `[{"name": "train/x.jpg", "label": 0}]`) or JSON Lines, each object a
    row at the line where it starts (and its number in the list, where objects share a line); the header is every
    key, in the order first seen."""
    table = Table(path, shown, [])
    items = json_lines(text, shown) if kind == "jsonl" else json_list(text, shown)
    per_line = Counter(line for line, _ in items)
    seen: dict[str, None] = {}
    for number, (line, item) in enumerate(items, start=1):
        if not isinstance(item, dict):
            where = Row({}, shown, line, number if per_line[line] > 1 else 0).where
            table.quarantine.append(
                quarantine_row(source["name"], where, "not_an_object", f"a {type(item).__name__}, not an object")
            )
            continue
        values = {str(k).strip(): cell_text(v) for k, v in item.items()}
        seen.update(dict.fromkeys(values))
        table.rows.append(Row(values, shown, line, number if per_line[line] > 1 else 0))
    table.header = [c.strip() for c in spec.columns] if spec.columns else list(seen)
    for row in table.rows:
        for column in table.header:
            row.setdefault(column, "")
    return table


def json_list(text: str, shown: str) -> list[tuple[int, Any]]:
    decoder = json.JSONDecoder()
    out: list[tuple[int, Any]] = []
    pos, line, counted = skip_space(text, 0), 1, 0

    def line_at(i: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, i)
        counted = i
        return line

    try:
        if not text.startswith("[", pos):
            raise ValueError(
                f"{shown}:{line_at(pos)}: expected a list of objects ([{{...}}, ...]); an object holding "
                "the list is not read: take the list out"
            )
        pos = skip_space(text, pos + 1)
        if text.startswith("]", pos):
            return out
        while True:
            item, end = decoder.raw_decode(text, pos)
            out.append((line_at(pos), item))
            pos = skip_space(text, end)
            if text.startswith(",", pos):
                pos = skip_space(text, pos + 1)
            elif text.startswith("]", pos):
                return out
            else:
                raise json.JSONDecodeError("expected ',' or ']'", text, pos)
    except json.JSONDecodeError as e:
        raise ValueError(f"{shown}:{e.lineno}: not valid JSON: {e.msg} (column {e.colno})") from None


def json_lines(text: str, shown: str) -> list[tuple[int, Any]]:
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                out.append((number, json.loads(line)))
            except json.JSONDecodeError as e:
                raise ValueError(f"{shown}:{number}: not valid JSON: {e.msg} (column {e.colno})") from None
    return out


def skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def join(table: Table, other: Table, spec: JoinSpec, source: dict) -> None:
    """Add `other`'s columns to each row of `table` whose `spec.on` equals `other`'s `spec.key` (spaces around
    either ignored). A column both tables have keeps the label table's value; a key repeated in `other` keeps
    its first row (a warning row names the repeat); a row with no match is kept or dropped as `unmatched` says."""
    key = spec.key or spec.on
    if spec.on.strip() not in table.header:
        raise ValueError(f"{table.name}: join column {spec.on!r} (`on:`) not found; the header has {table.header}")
    if key not in other.header:
        raise ValueError(f"{other.name}: join column {key!r} (`key:`) not found; the header has {other.header}")
    index: dict[str, Row] = {}
    for row in other.rows:
        value = row.get(key, "").strip()
        if value in index:
            table.quarantine.append(
                quarantine_row(
                    source["name"],
                    row.where,
                    "duplicate_join_key",
                    f"{key} {value!r} is already at {index[value].where}; that first row is joined",
                    scope="warning",
                )
            )
        elif value:
            index[value] = row
    added = [c for c in other.header if c not in table.header]
    table.header += added
    kept = []
    for row in table.rows:
        match = index.get(row.get(spec.on, "").strip())
        if match is None:
            keep = spec.unmatched == "keep"
            table.quarantine.append(
                quarantine_row(
                    source["name"],
                    row.where,
                    "unmatched_join_key",
                    f"{spec.on} {row.get(spec.on, '')!r} is not in {other.name} (column {key!r}); "
                    + ("the row is kept with its columns empty" if keep else "the row is dropped (`unmatched: drop`)"),
                    scope="warning" if keep else "input",
                )
            )
            if not keep:
                continue
        for column in added:
            row[column] = match.get(column, "") if match is not None else ""
        kept.append(row)
    table.rows = kept
    table.quarantine += other.quarantine


def load_label_table(source: dict, opts: TableOptions, name: str, needed: list[str | None]) -> Table:
    """The label table with its joins done; an error naming the table and its header when a column the recipe
    names (`needed`) is in none of them."""
    table = load_table(source, opts, name)
    for spec in opts.join:
        join(table, load_table(source, spec, spec.table), spec, source)
    missing = [c for c in needed if c and c.strip() not in table.header]
    if missing:
        hint = (
            "; the header has unnamed or repeated columns: name them all with `columns: [...]` and `header: replace`"
            if any(not c for c in table.header) or len(set(table.header)) < len(table.header)
            else ""
        )
        joined = f" (with its joins: {[j.table for j in opts.join]})" if opts.join else ""
        raise ValueError(f"{table.name}: column(s) {missing} not found{joined}; the columns are {table.header}{hint}")
    return table
