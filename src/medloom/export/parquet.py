"""Parquet shards: the image bytes in a column, the record's fields beside it.

The `image` column is a struct of `bytes` and `path`, the layout HF `datasets` uses for images, and the
schema carries HF feature metadata, so `datasets.load_dataset("parquet", ...)` yields decoded images.
DuckDB, pandas and polars read the same files as plain columns. Row groups are small so that readers
can stream a shard.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .samples import ANNOTATION_JSON_TYPE, ARTICLE_JSON_TYPE, SAMPLE_JSON_TYPE
from .webdataset import ShardFile

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
# the WebDataset sample JSON's fields with the same types and the same no-null rule (`sample_metadata`), the
# article and annotation always present (empty when the record has none)
EXPORT_SCHEMA = pa.schema(
    [("key", pa.string()), ("image", IMAGE_TYPE)]
    + list(SAMPLE_JSON_TYPE)
    + [("article", ARTICLE_JSON_TYPE), ("annotation", ANNOTATION_JSON_TYPE)]
)
ROW_GROUP = 256


def hf_feature(dtype: pa.DataType) -> dict:
    """An Arrow type as an HF `datasets` feature description."""
    if pa.types.is_struct(dtype):
        return {dtype.field(i).name: hf_feature(dtype.field(i).type) for i in range(dtype.num_fields)}
    if pa.types.is_fixed_size_list(dtype):
        return {"feature": hf_feature(dtype.value_type), "length": dtype.list_size, "_type": "List"}
    if pa.types.is_list(dtype):
        return {"feature": hf_feature(dtype.value_type), "_type": "List"}
    name = {pa.string(): "string", pa.binary(): "binary", pa.bool_(): "bool"}.get(dtype, str(dtype))
    return {"dtype": {"double": "float64", "float": "float32"}.get(name, name), "_type": "Value"}


def hf_metadata(schema: pa.Schema) -> bytes:
    features = {f.name: hf_feature(f.type) for f in schema}
    features["image"] = {"_type": "Image"}
    return json.dumps({"info": {"features": features}}).encode()


ROW_BYTES = 64  # a sample's size in a shard, for the size limit: its image and this much


class ParquetShardWriter:
    """Writes one shard under a temporary name, a row group at a time."""

    def __init__(self, path: Path, ext: str):
        self.path, self.ext = path, ext
        self._file = ShardFile(path)
        schema = EXPORT_SCHEMA.with_metadata({b"huggingface": hf_metadata(EXPORT_SCHEMA)})
        self._writer = pq.ParquetWriter(self._file, schema, compression="zstd")
        self._rows: list[dict] = []
        self.samples = 0
        self.size = 0

    def add(self, key: str, metadata: dict, image: bytes) -> None:
        """`metadata`: the sample's `sample_metadata` with article and annotation."""
        self._rows.append({**metadata, "key": key, "image": {"bytes": image, "path": f"{key.replace('/', '_')}.{self.ext}"}})
        self.samples += 1
        self.size += len(image) + ROW_BYTES
        if len(self._rows) >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            self._writer.write_table(pa.Table.from_pylist(self._rows, EXPORT_SCHEMA), row_group_size=ROW_GROUP)
            self._rows = []

    def finish(self) -> dict:
        self._flush()
        self._writer.close()
        return self._file.finish()

    def abort(self) -> None:
        self._file.abort()


def check_shards(paths: list[Path]) -> tuple[dict[str, int], list[str]]:
    """Rows per shard and the problems found: unreadable files, wrong columns, duplicate keys."""
    counts: dict[str, int] = {}
    problems: list[str] = []
    seen: dict[str, str] = {}
    for path in paths:
        try:
            meta = pq.read_metadata(path)
            schema = pq.read_schema(path)
            counts[path.name] = meta.num_rows
            missing = [f.name for f in EXPORT_SCHEMA if f.name not in schema.names]
            if missing:
                problems.append(f"{path.name}: columns {missing} are missing")
                continue
            keys = pq.read_table(path, columns=["key"]).column("key").to_pylist()
        except (OSError, pa.ArrowInvalid) as e:
            problems.append(f"{path.name}: not a readable Parquet file ({e})")
            counts[path.name] = 0
            continue
        for key in keys:
            if key in seen:
                problems.append(f"{path.name}: key {key} already used in {seen[key]}")
            seen.setdefault(key, path.name)
    return counts, problems
