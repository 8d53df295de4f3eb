"""Stages and executors: a stage is a named pure function `(part, settings) -> result`; an executor maps
a stage over parts. Stages are referenced by name so that any executor (the local process pool, Ray) resolves
them in its own workers; executors implement the contract of `base.py`."""

from .base import EXECUTORS, KINDS, Executor, ExecutorSpec, Workers, capped, make_executor, start_early, uses_pool
from .stages import STAGES, run_stage, stage_module

__all__ = [
    "EXECUTORS",
    "KINDS",
    "STAGES",
    "Executor",
    "ExecutorSpec",
    "Workers",
    "capped",
    "make_executor",
    "run_stage",
    "stage_module",
    "start_early",
    "uses_pool",
]
