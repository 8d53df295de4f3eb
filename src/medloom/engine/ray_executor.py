"""The Ray executor: the same stages, resolved by name in Ray workers (`run_stage`), so outputs are those of
the local executor byte for byte (the driver writes every file, in the same order).

Parts stream through: at most two tasks per worker are in flight and results are handed on as they finish,
so the driver's memory does not grow with the corpus. The settings of a map go to the object store once. A
task whose worker dies (a killed process, a lost node, a decoder that crashes the process) is run again, at
most `retries` times; then the caller's `on_failure(part, why)` stands in for its result (ingest turns it into
quarantine rows and decodes the part again on the next run), or, without one, the step fails naming the part.
A stage that raises fails the step with the stage's own error, as with the local executor, and the step
resumes per part when run again. Without an address, a Ray instance is started for the step on this machine
(`workers` CPUs) and stopped after it; `auto` joins the cluster `ray start` made here, `ray://HOST:PORT` a
remote one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .local import in_input_order
from .stages import run_stage

RETRIES = 3


class ExecutorError(RuntimeError):
    pass


def run_in_worker(stage: str, part: Any, settings: dict) -> Any:
    """A Ray task: one of many workers, so libraries take one thread each (as in the local pool)."""
    os.environ["MEDLOOM_WORKER"] = "1"
    return run_stage(stage, part, settings)


class RayExecutor:
    def __init__(self, workers: int | None, address: str | None, retries: int = RETRIES):
        self.workers, self.address, self.retries = workers, address, retries
        self._started = False

    def __enter__(self) -> RayExecutor:
        try:
            import ray
        except ImportError:
            raise ExecutorError("--executor ray needs Ray: pip install 'medloom[ray]'") from None
        if not ray.is_initialized():
            options = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            try:
                if self.address:
                    ray.init(address=self.address, **options)
                else:
                    ray.init(num_cpus=self.workers or os.cpu_count() or 1, **options)
            except (ConnectionError, TimeoutError, ValueError, RuntimeError) as e:
                raise ExecutorError(f"--address {self.address}: no Ray cluster answers there ({type(e).__name__}: "
                                    f"{e}); start one with `ray start --head`, or leave --address out to run Ray on "
                                    "this machine") from None
            self._started = True
        self._task = ray.remote(num_cpus=1, max_retries=self.retries)(run_in_worker)
        if not self.workers:
            self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            import ray

            ray.shutdown()

    def prestart(self) -> None:
        """Ray starts its workers itself."""

    def map(self, stage: str, parts: Iterable[Any], settings: dict, ordered: bool = False,
            on_failure: Callable[[Any, str], Any] | None = None) -> Iterator[tuple[int, Any]]:
        """Results as (index, result), as parts finish (in input order with `ordered`)."""
        if ordered:
            yield from in_input_order(self.map(stage, parts, settings, on_failure=on_failure))
            return
        import ray

        shared = ray.put(settings)
        pending: dict = {}
        queue = iter(enumerate(parts))
        limit = max(1, self.workers or 1) * 2
        while True:
            while len(pending) < limit:
                nxt = next(queue, None)
                if nxt is None:
                    break
                pending[self._task.remote(stage, nxt[1], shared)] = nxt
            if not pending:
                return
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                index, part = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as e:  # the stage raised: its own error, as locally
                    raise e.as_instanceof_cause() from None
                except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                        ray.exceptions.ObjectLostError) as e:
                    why = f"its worker died {self.retries + 1} times ({type(e).__name__})"
                    if on_failure is None:
                        raise ExecutorError(f"stage {stage}: part {index}: {why}; run the command again to resume") \
                            from None
                    result = on_failure(part, why)
                yield index, result
