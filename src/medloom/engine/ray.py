"""The Ray executor: the same stages, resolved by name in Ray workers (`run_stage`), so outputs are those of
the local executor byte for byte (the driver writes every file, in the same order).

Parts stream through: at most two tasks per worker are in flight and results are handed on as they finish,
so the driver's memory does not grow with the corpus. A task takes a few consecutive parts when parts are quick
(`task_parts`): a Ray worker idles between two tasks while its result goes back and the next task comes (5 to
14 ms here), which is 7% to 10% of one worker's time on export's parts of 32 samples. The settings of a map go
to the object store once. A task whose worker dies (a killed process, a lost node, a decoder that crashes the
process) is run again, at most `retries` times, and a task of several parts then runs each part as a task of
its own; a part that still fails gets the caller's `on_failure(part, why)` for its result (ingest turns it into
quarantine rows and decodes the part again on the next run), or, without one, the step fails naming the part.
A stage that raises fails the step with the stage's own error, as with the local executor, and the step
resumes per part when run again. Without an address, a Ray instance is started on this machine (`workers`
CPUs); `auto` joins the cluster `ray start` made here, `ray://HOST:PORT` a remote one. A step connects and
disconnects by itself, unless a connection was made before it (a command's, by `start_ray`, which the command
ends with `disconnect`).
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

from ..errors import ExecutorError
from .base import ExecutorSpec, become_worker, in_input_order
from .stages import run_stage

RETRIES = 3
TASK_S = 0.25  # what a task of several parts should take: the turn between two tasks is then a few percent of it
MOST_PARTS = 8  # parts in a task at most: they come back together, so this bounds what the driver holds


def run_in_worker(stage: str, parts: list, settings: dict) -> tuple[list, float]:
    """A Ray task: its parts' results, and the seconds they took. One of many workers, so libraries take one
    thread each (as in the local pool)."""
    os.environ["MEDLOOM_WORKER"] = "1"
    started = time.perf_counter()
    results = [run_stage(stage, part, settings) for part in parts]
    return results, time.perf_counter() - started


def connect(workers: int | None, address: str | None) -> bool:
    """Join the Ray cluster at `address`, or start an instance of `workers` CPUs on this machine; whether this
    call started the connection (False: it was made before, and whoever made it ends it)."""
    try:
        import ray
    except ImportError:
        raise ExecutorError("--executor ray needs Ray: pip install 'medloom[ray]'") from None
    if ray.is_initialized():
        return False
    options = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(address="local", num_cpus=workers or os.cpu_count() or 1, **options)  # ours, beside any cluster
    except (ConnectionError, TimeoutError, ValueError, RuntimeError) as e:
        if not address:
            raise ExecutorError(f"Ray could not start on this machine ({type(e).__name__}: {e})") from None
        raise ExecutorError(
            f"--address {address}: no Ray cluster answers there ({type(e).__name__}: {e}); start "
            "one with `ray start --head`, or leave --address out to run Ray on this machine"
        ) from None
    return True


def disconnect() -> None:
    """End this process's Ray connection, whoever made it: a command calls it as it ends (its connection was made
    by `start_ray` or a step); Ray's own exit hook would end it too, but only after half a second's sleep."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def cluster_workers(workers: int | None) -> int:
    """`workers`, or every CPU of the cluster."""
    import ray

    return workers or max(1, int(ray.cluster_resources().get("CPU", 1)))


def start_ray(workers: int | None, address: str | None, preload: Sequence[str]) -> None:
    """Connect, and start the step's workers now: Ray starts a job's workers only when tasks come for them, and
    each then takes a second or two (an interpreter importing Ray, then the stages) before its first part. One
    small task per worker that imports the stage modules lets that start overlap what the driver does before its
    first map (its own imports, the scan, the plan). The tasks' results are not waited for (Ray runs a task
    whose reference is dropped all the same): a failed import fails the step's first part with its own error. A
    command calls this before its imports; the executor's `prestart` calls it for in-process steps."""
    import ray

    connect(workers, address)
    warm = ray.remote(num_cpus=1, max_retries=0)(become_worker)  # a task that only starts a worker
    for _ in range(cluster_workers(workers)):
        warm.remote(list(preload))


class RayExecutor:
    def __init__(self, workers: int | None, address: str | None, retries: int = RETRIES, preload: Sequence[str] = ()):
        self.workers, self.address, self.retries, self.preload = workers, address, retries, list(preload)
        self._started = False

    @classmethod
    def from_spec(cls, spec: ExecutorSpec, preload: Sequence[str], pandas_free: bool) -> RayExecutor:
        return cls(spec.workers, spec.address, preload=preload)

    @staticmethod
    def start_early(spec: ExecutorSpec, preload: Sequence[str]) -> None:
        """Connect and start Ray's workers now (`start_ray`)."""
        start_ray(spec.workers, spec.address, preload)

    def __enter__(self) -> RayExecutor:
        self._started = connect(self.workers, self.address)
        import ray

        self._task = ray.remote(num_cpus=1, max_retries=self.retries)(run_in_worker)
        self.workers = cluster_workers(self.workers)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            import ray

            ray.shutdown()

    def prestart(self) -> None:
        """Start the workers now, while the caller scans or plans (`start_ray`). Where the connection was made
        before the step (a command's, by `start_ray`), they have been started already."""
        if self._started:
            start_ray(self.workers, self.address, self.preload)

    def map(
        self,
        stage: str,
        parts: Iterable[Any],
        settings: dict,
        ordered: bool = False,
        on_failure: Callable[[Any, str], Any] | None = None,
    ) -> Iterator[tuple[int, Any]]:
        """Results as (index, result), as parts finish (in input order with `ordered`)."""
        if ordered:
            yield from in_input_order(self.map(stage, parts, settings, on_failure=on_failure))
            return
        import ray

        shared = ray.put(settings)
        pending: dict = {}
        queue = enumerate(parts)
        alone: deque = deque()  # the parts of a task of several whose worker died: each is tried on its own
        limit = max(1, self.workers or 1) * 2
        done_parts, done_seconds = 0, 0.0
        while True:
            while len(pending) < limit:
                task = [alone.popleft()] if alone else list(islice(queue, task_parts(done_parts, done_seconds)))
                if not task:
                    break
                named = self._task.options(name=task_name(stage, [index for index, _ in task]))
                pending[named.remote(stage, [part for _, part in task], shared)] = task
            if not pending:
                return
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                task = pending.pop(ref)
                try:
                    results, seconds = ray.get(ref)
                    done_parts, done_seconds = done_parts + len(task), done_seconds + seconds
                except ray.exceptions.RayTaskError as e:  # the stage raised: its own error, as locally
                    raise e.as_instanceof_cause() from None
                except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError) as e:
                    if len(task) > 1:  # which of its parts killed the worker is not known
                        alone.extend(task)
                        continue
                    ((index, part),) = task
                    why = f"its worker died {self.retries + 1} times ({type(e).__name__})"
                    if on_failure is None:
                        raise ExecutorError(f"stage {stage}: part {index}: {why}; run the command again to resume") from None
                    results = [on_failure(part, why)]
                for (index, _), result in zip(task, results):
                    yield index, result


def task_name(stage: str, indexes: list[int]) -> str:
    """What Ray's dashboard, `ray list tasks` and the worker's process title show: the stage and its parts."""
    return f"{stage} part {indexes[0]}" if len(indexes) == 1 else f"{stage} parts {indexes[0]}-{indexes[-1]}"


def task_parts(parts: int, seconds: float) -> int:
    """How many parts the next task takes: as many as `TASK_S` holds at the rate the workers have measured so far
    (`parts` done in `seconds`), one while none has come back. Ingest's parts of 128 JPEGs take a third of a
    second or more, so one each; export's batches of 32 at 256 px about 70 ms, so four."""
    if not parts:
        return 1
    return max(1, min(MOST_PARTS, round(TASK_S * parts / seconds))) if seconds > 0 else MOST_PARTS
