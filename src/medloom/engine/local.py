"""The default executor: a process pool on this machine (or inline for one worker)."""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

from ..locks import process_alive
from .base import ExecutorSpec, become_worker, in_input_order, uses_pool
from .stages import run_stage, stage_module

WATCH_S = 0.5


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


class LocalExecutor:
    """Maps a stage over parts; yields (index, result) as parts finish, keeping at most 2x workers in flight."""

    def __init__(self, workers: int, preload: Sequence[str] = (stage_module("ingest.decode"),), pandas_free: bool = False):
        self.workers = max(1, workers)
        self.preload = list(preload)
        self.pandas_free = pandas_free  # the stages never use pandas: the workers refuse it (nopandas.py)
        self._pool: ProcessPoolExecutor | None = None

    @classmethod
    def from_spec(cls, spec: ExecutorSpec, preload: Sequence[str], pandas_free: bool) -> LocalExecutor:
        return cls(spec.workers if spec.workers else (os.cpu_count() or 1), preload, pandas_free)

    @staticmethod
    def start_early(spec: ExecutorSpec, preload: Sequence[str]) -> None:
        """The forkserver starts now, importing the stages (`base.start_early`)."""
        if uses_pool(spec):
            from multiprocessing import forkserver

            forkserver_context(preload)
            forkserver.ensure_running()

    def __enter__(self) -> LocalExecutor:
        if self.workers > 1:
            # forkserver: workers start from a clean process, so no lock held by a progress-bar thread
            # in the parent can be inherited
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=forkserver_context(self.preload),
                initializer=watch_parent,
                initargs=(os.getpid(), self.pandas_free, self.preload),
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def prestart(self) -> None:
        """Start the workers now, in the background, so their start (the forkserver importing the stages, about
        half a second) overlaps what the caller does before its first map, such as a scan. On a machine of 16
        cores that second of serial time is most of what keeps a step from scaling."""
        if self._pool is not None:
            threading.Thread(target=start_workers, args=(self._pool, self.workers), name="medloom-prestart", daemon=True).start()

    def map(
        self, stage: str, parts: Iterable[Any], settings: dict, ordered: bool = False, on_failure: Any = None
    ) -> Iterator[tuple[int, Any]]:
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
