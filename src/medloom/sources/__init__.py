"""Readers, one module per input layout, selected by `reader:` in the recipe."""

from __future__ import annotations

import importlib
from types import ModuleType

READERS = ("imagefolder", "csv", "coco", "voc", "yolo", "masks", "dicom", "nifti", "pmc")


def get_reader(name: str) -> ModuleType:
    """The reader module for a recipe's `reader:` value (imported on first use)."""
    if name not in READERS:
        raise ValueError(f"unknown reader {name!r}; choose one of: {', '.join(READERS)}")
    return importlib.import_module(f"{__name__}.{name}")
