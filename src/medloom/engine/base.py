"""What every executor shares, and the contract each implements: `make_executor` builds the one a step's
`workers` name (a count of local processes, or an `ExecutorSpec`), from `EXECUTORS` (name -> "module:class").

An executor is a context manager with `prestart()` (start its workers while the caller scans or plans) and
`map(stage, parts, settings, ordered=False, on_failure=None)` yielding (index, result) as parts finish; its class
has `start_early(spec, preload)` (start the workers before the command's own imports). To add one: a module with
such a class, and its entry here.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from .stages import stage_module

EXECUTORS = {"local": "medloom.engine.local:LocalExecutor", "ray": "medloom.engine.ray:RayExecutor"}
KINDS = tuple(EXECUTORS)


class Executor(Protocol):
    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...

    def prestart(self) -> None: ...

    def map(
        self, stage: str, parts: Iterable[Any], settings: dict, ordered: bool = False, on_failure: Any = None
    ) -> Iterator[tuple[int, Any]]: ...


def become_worker(preload: Sequence[str]) -> None:
    """What every worker does before its first part, local or Ray: say it is one of several (libraries that would
    start a thread per core, torch, take one each instead) and import the step's stage modules."""
    os.environ["MEDLOOM_WORKER"] = "1"
    for module in preload:
        importlib.import_module(module)


def in_input_order(results: Iterable[tuple[int, Any]]) -> Iterator[tuple[int, Any]]:
    """(index, result) pairs that arrive as parts finish, handed on in input order (a finished part waits only
    for those before it, at most the executor's in-flight limit)."""
    waiting: dict[int, Any] = {}
    expected = 0
    for i, result in results:
        waiting[i] = result
        while expected in waiting:
            yield expected, waiting.pop(expected)
            expected += 1


@dataclass(frozen=True)
class ExecutorSpec:
    """Who runs the stages: this machine's process pool (`local`) or a Ray cluster (`ray`, at `address`: None
    starts a local Ray instance, `auto` joins the running cluster, `ray://HOST:PORT` a remote one)."""

    kind: str = "local"
    workers: int | None = None
    address: str | None = None


# a step's `workers`: a count of local processes (None: every core), or an executor spec
Workers = int | ExecutorSpec | None


def as_spec(workers: Workers) -> ExecutorSpec:
    return workers if isinstance(workers, ExecutorSpec) else ExecutorSpec("local", workers)


def executor_class(kind: str):
    if kind not in EXECUTORS:
        raise ValueError(f"executor {kind!r}: use one of {', '.join(KINDS)}")
    module, _, name = EXECUTORS[kind].partition(":")
    return getattr(importlib.import_module(module), name)


def capped(workers: Workers, most: int) -> Workers:
    """At most `most` workers (a model that is memory- or thread-heavy), on the same executor."""
    if isinstance(workers, ExecutorSpec):
        return replace(workers, workers=min(workers.workers or most, most))
    return min(workers or most, most)


def uses_pool(workers: Workers) -> bool:
    """Whether a step given these `workers` runs a local process pool (one worker runs inline)."""
    if isinstance(workers, ExecutorSpec):
        return workers.kind == "local" and uses_pool(workers.workers)
    return (workers or os.cpu_count() or 1) > 1


def start_early(workers: Workers, preload: Sequence[str]) -> None:
    """Start the workers these `workers` make now, before the command's own imports: the start of a local pool's
    forkserver (a fresh interpreter importing the stages, 0.3 s or more) or of Ray's workers (a second or two
    each) then overlaps those imports instead of coming after. On a machine of 16 cores the workers' start was
    what the first part waited for; with Ray it is most of what a command pays over the local executor."""
    spec = as_spec(workers)
    executor_class(spec.kind).start_early(spec, preload)


def make_executor(
    workers: Workers = None, preload: Sequence[str] = (stage_module("ingest.decode"),), pandas_free: bool = False
) -> Executor:
    """The executor for a step. `pandas_free` (local workers only): the step's stages never touch pandas, so
    its workers refuse the import pyarrow would otherwise make in each of them (`nopandas.py`)."""
    spec = as_spec(workers)
    return executor_class(spec.kind).from_spec(spec, preload, pandas_free)
