"""Readers, one module per input layout, selected by `reader:` in the recipe, each with one entry in `READERS`.

A reader module has `Options` (its recipe keys, a pydantic model), `scan(source)` (tasks and quarantine rows,
cheap) and `decode(task, source)` (records, in the workers); a reader whose records need their own rendering
(DICOM frames, NIfTI slices) has `render(record, path, cache, source)` too. To add one: copy the module of the
layout nearest yours (`imagefolder.py` for files, `csv.py` for a table), then add its entry here.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType

ALL_MAT = ("modality", "anatomy", "task")


@dataclass(frozen=True)
class Reader:
    image_files: bool = False  # plain image files, decoded by `base.decode_image_file` (see IMAGE_FILE_READERS)
    renders: bool = False  # its records are rendered by its own `render` (the stored window of a frame or slice)
    mat_from_files: tuple[str, ...] = ()  # MAT elements it reads from the files (the recipe may leave them out)
    part_size: int = 128  # tasks per catalog part (a DICOM file can hold hundreds of frames, a NIfTI volume more)
    patient_data: bool = False  # its files hold patient data: record ids are pseudonyms unless the recipe says not
    # its images are bytes inside a table (base64 in a TSV row, a Parquet cell): the module's `image_bytes(row, path,
    # cache, max_bytes)` reads one, and view/render checks it against the hash taken at ingest
    embedded: bool = False


READERS = {
    "imagefolder": Reader(image_files=True),
    "names": Reader(image_files=True),  # labels, patient, split and facts from file names / paths (a regex)
    "csv": Reader(image_files=True),
    "medmat": Reader(image_files=True),  # Med-MAT's question files; their questions kept in each record's meta
    "coco": Reader(image_files=True),
    "voc": Reader(image_files=True),
    "yolo": Reader(image_files=True),
    "masks": Reader(),
    "dicom": Reader(renders=True, mat_from_files=ALL_MAT, part_size=16, patient_data=True),
    # DICOM images with DICOM masks, slice by slice (Duke Liver): pairing as `masks`, decoding as `dicom`
    "dicom_masks": Reader(renders=True, mat_from_files=ALL_MAT, part_size=16, patient_data=True),
    "nifti": Reader(renders=True, part_size=1),
    "pmc": Reader(mat_from_files=ALL_MAT),
    # medical VQA benchmarks: their own questions stored with each image (records.SOURCE_QUESTIONS)
    "vqa": Reader(mat_from_files=ALL_MAT),  # question files beside image files (VQA-RAD, SLAKE, PathVQA, PMC-VQA, ...)
    "vlmeval_tsv": Reader(mat_from_files=ALL_MAT, embedded=True),  # VLMEvalKit's TSV, images as base64
    "vqa_parquet": Reader(mat_from_files=ALL_MAT, embedded=True),  # Hugging Face datasets' Parquet, image bytes
}
RENDERED_READERS = frozenset(n for n, r in READERS.items() if r.renders)
EMBEDDED_READERS = frozenset(n for n, r in READERS.items() if r.embedded)


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
IMAGE_FILE_READERS = frozenset(n for n, r in READERS.items() if r.image_files)


def decoder_module(name: str) -> str:
    """The module a worker imports to decode a reader's inputs."""
    return f"{__name__}.base" if name in IMAGE_FILE_READERS else f"{__name__}.{known(name)}"


def worker_modules(readers: Iterable[str]) -> list[str]:
    """What ingest's workers import before their first part: the decode stage and the readers' decoders."""
    return [f"{__name__}.stage", *sorted({decoder_module(r) for r in readers})]


def get_decoder(name: str):
    """The reader's `decode(task, source)`, from `decoder_module`."""
    return importlib.import_module(decoder_module(name)).decode
