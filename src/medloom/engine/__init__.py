"""Stages and executors: a stage is a named pure function `(part, settings) -> result`; an executor maps
a stage over parts. Stages are referenced by name so that any executor (local pool now, Ray Data later)
can resolve them in its own workers."""

from .local import LocalExecutor, make_executor
from .stages import STAGES, run_stage

__all__ = ["STAGES", "LocalExecutor", "make_executor", "run_stage"]
