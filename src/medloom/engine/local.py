"""The default executor: a process pool on this machine (or inline for one worker)."""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Any

from ..locks import process_alive
from .stages import run_stage, stage_module

WATCH_S = 0.5


def become_worker(preload: Sequence[str]) -> None:
    """What every worker does before its first part, local or Ray: say it is one of several (libraries that would
    start a thread per core, torch, take one each instead) and import the step's stage modules."""
    os.environ["MEDLOOM_WORKER"] = "1"
    for module in preload:
        importlib.import_module(module)


def watch_parent(pid: int, pandas_free: bool = False, preload: Sequence[str] = ()) -> None:
    """Worker initializer: exit as soon as the medloom process that started the pool is gone, so a SIGKILL of
    medloom leaves no worker running on (workers are children of the forkserver, not of medloom, so the kernel
    does not end them by itself). `pandas_free`: see `nopandas.py`.

    The step's stage modules are imported here, before the worker takes a part: the forkserver preloads only
    those of the first step of a process (it lives as long as the process), and a worker of a later step would
    otherwise import its stages inside its first part, after the prestart had reported it ready."""
    if pandas_free:
        from ..nopandas import keep_pandas_out

        keep_pandas_out()
    become_worker(preload)

    def watch() -> None:
        while process_alive(pid):
            time.sleep(WATCH_S)
        os._exit(1)

    threading.Thread(target=watch, name="medloom-parent-watch", daemon=True).start()


def start_workers(pool: ProcessPoolExecutor, n: int) -> None:
    """Have the pool start its n workers (it starts one per task submitted while none is idle)."""
    try:
        for _ in range(n):
            pool.submit(os.getpid)
    except RuntimeError:  # the step ended (an error in its scan) before its workers had started
        pass


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


class LocalExecutor:
    """Maps a stage over parts; yields (index, result) as parts finish, keeping at most 2x workers in flight."""

    def __init__(self, workers: int, preload: Sequence[str] = (stage_module("ingest.decode"),),
                 pandas_free: bool = False):
        self.workers = max(1, workers)
        self.preload = list(preload)
        self.pandas_free = pandas_free  # the stages never use pandas: the workers refuse it (nopandas.py)
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> LocalExecutor:
        if self.workers > 1:
            # forkserver: workers start from a clean process, so no lock held by a progress-bar thread
            # in the parent can be inherited
            self._pool = ProcessPoolExecutor(self.workers, mp_context=forkserver_context(self.preload),
                                             initializer=watch_parent,
                                             initargs=(os.getpid(), self.pandas_free, self.preload))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def prestart(self) -> None:
        """Start the workers now, in the background, so their start (the forkserver importing the stages, about
        half a second) overlaps what the caller does before its first map, such as a scan. On a machine of 16
        cores that second of serial time is most of what keeps a step from scaling."""
        if self._pool is not None:
            threading.Thread(target=start_workers, args=(self._pool, self.workers), name="medloom-prestart",
                             daemon=True).start()

    def map(self, stage: str, parts: Iterable[Any], settings: dict, ordered: bool = False,
            on_failure: Any = None) -> Iterator[tuple[int, Any]]:
        """Results as (index, result). `parts` may be a generator: it is drawn only as workers free up.

        With `ordered`, results come in input order (finished parts wait in a buffer of at most 2x workers).
        `on_failure` is the Ray executor's (a task whose worker died); here a dead worker breaks the pool and
        the step fails, to resume per part when run again.
        """
        if ordered and self._pool is not None:
            yield from in_input_order(self.map(stage, parts, settings))
            return
        if self._pool is None:
            for i, part in enumerate(parts):
                yield i, run_stage(stage, part, settings)
            return
        from .wire import from_wire, run_wired, to_wire  # pyarrow: loaded only by a step that maps

        pending: dict = {}
        queue = iter(enumerate(parts))
        limit = self.workers * 2
        while True:
            while len(pending) < limit:
                nxt = next(queue, None)
                if nxt is None:
                    break
                pending[self._pool.submit(run_wired, stage, to_wire(nxt[1]), settings)] = nxt[0]
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield pending.pop(fut), from_wire(fut.result())


def forkserver_context(preload: Sequence[str]):
    """The start method of local workers: forkserver, with the stage modules imported there once (the forkserver
    then serves every pool of this process; a later step's workers import their own in `watch_parent`)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(list(preload))
    return ctx


def start_early(workers: Workers, preload: Sequence[str]) -> None:
    """Start the workers these `workers` make now, before the command's own imports: the start of a local pool's
    forkserver (a fresh interpreter importing the stages, 0.3 s or more) or of Ray's workers (a second or two
    each) then overlaps those imports instead of coming after. On a machine of 16 cores the workers' start was
    what the first part waited for; with Ray it is most of what a command pays over the local executor."""
    if isinstance(workers, ExecutorSpec) and workers.kind == "ray":
        from .ray_executor import start_ray

        start_ray(workers.workers, workers.address, preload)
    elif uses_pool(workers):
        from multiprocessing import forkserver

        forkserver_context(preload)
        forkserver.ensure_running()


@dataclass(frozen=True)
class ExecutorSpec:
    """Who runs the stages: this machine's process pool (`local`) or a Ray cluster (`ray`, at `address`: None
    starts a local Ray instance, `auto` joins the running cluster, `ray://HOST:PORT` a remote one)."""
    kind: str = "local"
    workers: int | None = None
    address: str | None = None


# a step's `workers`: a count of local processes (None: every core), or an executor spec
Workers = int | ExecutorSpec | None
KINDS = ("local", "ray")


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


def make_executor(workers: Workers = None, preload: Sequence[str] = (stage_module("ingest.decode"),),
                  pandas_free: bool = False):
    """The executor for a step. `pandas_free` (local workers only): the step's stages never touch pandas, so
    its workers refuse the import pyarrow would otherwise make in each of them (`nopandas.py`)."""
    spec = workers if isinstance(workers, ExecutorSpec) else ExecutorSpec("local", workers)
    if spec.kind == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(spec.workers, spec.address, preload=preload)
    if spec.kind != "local":
        raise ValueError(f"executor {spec.kind!r}: use one of {', '.join(KINDS)}")
    return LocalExecutor(spec.workers if spec.workers else (os.cpu_count() or 1), preload, pandas_free)
