"""Readers, one module per input layout, selected by `reader:` in the recipe."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from types import ModuleType

READERS = ("imagefolder", "csv", "coco", "voc", "yolo", "masks", "dicom", "nifti", "pmc")


def known(name: str) -> str:
    if name not in READERS:
        raise ValueError(f"unknown reader {name!r}; choose one of: {', '.join(READERS)}")
    return name


def get_reader(name: str) -> ModuleType:
    """The reader module for a recipe's `reader:` value (imported on first use)."""
    return importlib.import_module(f"{__name__}.{known(name)}")


# readers of plain image files, whose `decode` is `base.decode_image_file`: a worker decodes their inputs without
# importing the reader, whose recipe options are a pydantic model (pydantic: 0.13 s of each worker's start on a
# 16-core machine, before it takes a part)
IMAGE_FILE_READERS = frozenset({"imagefolder", "csv", "coco", "voc", "yolo"})


def decoder_module(name: str) -> str:
    """The module a worker imports to decode a reader's inputs."""
    return f"{__name__}.base" if name in IMAGE_FILE_READERS else f"{__name__}.{known(name)}"


def worker_modules(readers: Iterable[str]) -> list[str]:
    """What ingest's workers import before their first part: the decode stage and the readers' decoders."""
    return [f"{__name__}.stage", *sorted({decoder_module(r) for r in readers})]


def get_decoder(name: str):
    """The reader's `decode(task, source)`, from `decoder_module`."""
    return importlib.import_module(decoder_module(name)).decode
