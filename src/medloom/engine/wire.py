"""What crosses the pipe between the driver and a local worker: Arrow tables go as one IPC stream each.

Python's pickle takes a table apart array by array: 1.8 ms to pickle a 32-row part of the catalog's 27 columns and
1.6 ms to unpickle it, against 0.44 ms and 0.24 ms for the same part as an IPC stream. The driver pickles every
part it sends and unpickles every result, on one core beside the busy workers: on 16 cores, 0.6 of the export
driver's 2.6 CPU seconds per 12,000 samples. The table comes back equal, schema metadata and chunks included.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import pyarrow as pa

from .stages import run_stage

ARROW = (pa.Table, pa.RecordBatch)


class WireTable(NamedTuple):
    """A table or a record batch as the bytes of one Arrow IPC stream."""

    data: bytes
    batch: bool

    @classmethod
    def pack(cls, value: pa.Table | pa.RecordBatch) -> WireTable:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, value.schema) as writer:
            writer.write(value)
        return cls(sink.getvalue().to_pybytes(), isinstance(value, pa.RecordBatch))

    def value(self) -> pa.Table | pa.RecordBatch:
        reader = pa.ipc.open_stream(pa.py_buffer(self.data))
        return reader.read_next_batch() if self.batch else reader.read_all()


def _each(value: Any, fn, kind) -> Any:
    """`fn` on the value, or on a plain tuple's items (a stage's `(records, problems, ok)`), that are `kind`."""
    if isinstance(value, kind):
        return fn(value)
    if type(value) is tuple:
        return tuple(fn(v) if isinstance(v, kind) else v for v in value)
    return value


def to_wire(value: Any) -> Any:
    """Tables and batches packed; anything else as is."""
    return _each(value, WireTable.pack, ARROW)


def from_wire(value: Any) -> Any:
    return _each(value, WireTable.value, WireTable)


def run_wired(stage: str, part: Any, settings: dict) -> Any:
    """The worker's side: the stage on the unpacked part, its result packed."""
    return to_wire(run_stage(stage, from_wire(part), settings))
