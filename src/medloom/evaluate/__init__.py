"""Evaluate models on a loom: multiple-choice VQA with a documented answer-parsing cascade, honest intervals,
paired comparisons of runs."""

from ..models.specs import ModelSpecError, parse_spec
from .answers import parse_answer
from .compare import CompareError, compare
from .vqa import EvalError, VQASettings, evaluate_vqa

__all__ = ["CompareError", "EvalError", "ModelSpecError", "VQASettings", "compare", "evaluate_vqa", "parse_answer", "parse_spec"]
