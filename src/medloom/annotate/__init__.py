"""Annotation: captions, multigranular ROI descriptions, VQA items and an LLM back-end (see step.py)."""

from .step import AnnotateError, AnnotateReport, AnnotateSettings, annotate, read_annotations

__all__ = ["AnnotateError", "AnnotateReport", "AnnotateSettings", "annotate", "read_annotations"]
