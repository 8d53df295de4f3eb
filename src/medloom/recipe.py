"""The YAML recipe: a loom (working folder) and its sources, validated before any work starts.

Every problem in a recipe is reported at once, with the source it concerns and what to do, so that a
long ingest never dies half-way on a typo.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import RecipeError
from .records import licence_commercial_use
from .sources import READERS, get_reader
from .vocab import KINDS, UnknownTermError, Vocabulary, default_vocabulary
from .vocab.splits import split_name

COMMON_KEYS = (
    "name",
    "reader",
    "path",
    "modality",
    "anatomy",
    "task",
    "description",
    "license",
    "commercial_use",
    "classes",
    "label_map",
    "split",
    "max_pixels",
    "max_voxels",
    "max_file_bytes",
    "allowed_roots",
    "raw_ids",
    "pseudonymous_ids",
    "damaged_images",
    "multiframe",
    "exclude",
    "expected_layout",
)


class SourceSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
    reader: str
    path: str
    modality: str | None = None
    anatomy: str | None = None
    task: str | None = None
    description: str = ""
    license: str = ""
    commercial_use: bool | None = None
    classes: list[str] | None = None  # the label space; labels outside it are quarantined
    label_map: dict[str, str] = {}  # rename labels as read: {"0": normal, "1": pneumonia}
    split: str | None = None  # one split for the whole source: train, val or test (or their spellings)
    max_pixels: int | None = Field(None, gt=0)  # decoded pixels per image at most (decompression bombs)
    max_voxels: int | None = Field(None, gt=0)  # voxels per volume at most (NIfTI, multi-frame DICOM)
    max_file_bytes: int | None = Field(None, gt=0)  # bytes per input file (or archive member) at most
    allowed_roots: list[str] = []  # folders outside `path` that annotation files and links may point into
    raw_ids: bool = False  # keep patient and study ids as written (default: salted hashes)
    # record ids from a keyed hash of the file's path instead of the path, which can hold a patient's name
    # (DOE_JOHN/IM0001); the path stays in the loom's catalog only. Default: true for dicom, false otherwise
    pseudonymous_ids: bool | None = None
    # a JPEG whose data is cut short or damaged (libjpeg fills the rest grey): quarantine it, or keep it
    # with a `warning` row
    damaged_images: Literal["quarantine", "keep"] = "quarantine"
    multiframe: Literal["first", "all"] = "first"  # GIF/TIFF with several frames: the first, or a record each
    # globs of files never read (ISIC's `*_superpixels.png`): on the file name, or with a `/` on the relative path
    exclude: list[str] = []
    # the published layout (written by `init --preset`): shown with a listing of `path` when the source gives no record
    expected_layout: str = ""

    @field_validator("exclude", mode="before")
    @classmethod
    def _globs(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("modality", "anatomy", "task")
    @classmethod
    def _not_blank(cls, v: str | None, info) -> str | None:
        if v is not None and not v.strip():
            raise ValueError(
                f"`{info.field_name}:` is empty; give a term (or leave the key out where the reader reads it from the files)"
            )
        return v

    @field_validator("split")
    @classmethod
    def _known_split(cls, v: str | None) -> str | None:
        if v is not None and split_name(v) is None:
            raise ValueError(
                f"split {v!r} is not a split name; use train, val or test (or training, validation, testing, dev, ...)"
            )
        return split_name(v) if v is not None else None

    @field_validator("label_map", mode="before")
    @classmethod
    def _str_keys(cls, v: Any) -> Any:
        return {str(k): str(val) for k, val in v.items()} if isinstance(v, dict) else v

    @field_validator("classes", mode="before")
    @classmethod
    def _str_classes(cls, v: Any) -> Any:
        return [str(c) for c in v] if isinstance(v, list) else v


def layout_hint(root: Path, expected: str) -> str:
    """The expected layout and what the nearest existing folder above `root` holds (a preset's source whose
    download sits elsewhere), as lines to append to a message; "" without an expected layout."""
    if not expected:
        return ""
    from .sources.listing import listing

    folder = root.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    lines = ["", "    expected:", *(f"      {line}" for line in expected.strip().splitlines())]
    lines += [f"    found in {folder}:", *(f"      {line}" for line in listing(str(folder)))]
    return "\n".join(lines)


class LLMSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str  # an OpenAI-compatible server: http://localhost:8000/v1 (vLLM), http://localhost:11434/v1 (Ollama)
    model: str
    images: bool = False  # send each image to a multimodal server
    concurrency: int = Field(4, ge=1)
    max_wait: float = Field(60.0, ge=0)  # the longest Retry-After honoured (seconds)
    allow_insecure_key: bool = False  # send OPENAI_API_KEY over plain http to another machine


class AnnotateStep(BaseModel):
    """The `annotate:` step of a recipe (the same switches as `medloom annotate`)."""

    model_config = ConfigDict(extra="forbid")
    captions: bool = True
    rois: bool = True
    vqa: bool = True
    seed: int = 0
    templates: dict[str, list[str]] = {}  # extra caption templates per task family
    knowledge: str | None = None  # YAML/JSONL knowledge base, relative to the recipe
    definitions: bool = True
    # labels whose mask regions are counted one by one; other labels' regions are parts of one structure
    # (annotate/structures.py); default: lesion and cell words (nodule, polyp, cell, ...)
    instances: list[str] | None = None
    llm: LLMSpec | None = None


class ExecutorStep(BaseModel):
    """`executor: ray` or `executor: {kind: ray, address: auto}`: who runs `medloom ingest` (and the steps that
    read the recipe) when the command line does not say."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["local", "ray"] = "local"
    address: str | None = None


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    loom: str = "./loom"
    # secret for hashing patient/study ids; default: a random one kept in LOOM/.salt
    salt: str | None = None
    vocabulary: dict[str, list[str | dict[str, Any]]] = {}
    sources: list[SourceSpec]
    part_size: int | None = None  # tasks per catalog part (default: per reader)
    annotate: AnnotateStep | None = None
    executor: ExecutorStep | None = None

    @field_validator("executor", mode="before")
    @classmethod
    def _executor_name(cls, v: Any) -> Any:
        return {"kind": v} if isinstance(v, str) else v


@dataclass(frozen=True)
class LoadedRecipe:
    path: Path
    recipe: Recipe
    loom: Path
    sources: list[dict]  # resolved: absolute root, canonical MAT terms, validated reader options
    vocabulary: Vocabulary


def _where(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_recipe(path: str | os.PathLike) -> LoadedRecipe:
    path = Path(path).resolve()
    if path.is_dir():
        path = path / "recipe.yaml"
    if not path.is_file():
        raise RecipeError(f"{path}: recipe not found (create one with `medloom init DIR`)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from None
    try:
        recipe = Recipe.model_validate(data or {})
    except ValidationError as e:
        problems = [f"  - {_where(err['loc'])}: {err['msg']}" for err in e.errors()]
        raise RecipeError(f"{path}: the recipe has {len(problems)} problem(s):\n" + "\n".join(problems)) from None
    base = path.parent
    problems: list[str] = []
    try:
        vocab = default_vocabulary().extended(recipe.vocabulary)
    except (ValueError, KeyError) as e:
        vocab = default_vocabulary()
        problems.append(f"vocabulary: {e}")
    sources, seen = [], set()
    for i, spec in enumerate(recipe.sources):
        label = f"sources[{i}] ({spec.name})"
        if spec.name in seen:
            problems.append(f"{label}: the name {spec.name!r} is used twice; source names must be unique")
        seen.add(spec.name)
        if spec.reader not in READERS:
            problems.append(f"{label}: unknown reader {spec.reader!r}; choose one of {', '.join(READERS)}")
            continue
        root = Path(spec.path) if os.path.isabs(spec.path) else base / spec.path
        if not root.exists():
            problems.append(f"{label}: path {str(root)!r} does not exist" + layout_hint(root, spec.expected_layout))
        mat = {}
        for kind in KINDS:
            value = getattr(spec, kind)
            if value is None:
                if kind not in READERS[spec.reader].mat_from_files:
                    problems.append(f"{label}: `{kind}:` is required (the {spec.reader} reader cannot read it from the files)")
                mat[kind] = None
                continue
            try:
                mat[kind] = vocab.normalise(kind, value)
            except UnknownTermError as e:
                problems.append(f"{label}: {e}")
        extras = spec.model_extra or {}
        try:
            options = get_reader(spec.reader).Options(**extras).model_dump(mode="json")
        except ValidationError as e:
            keys = [*get_reader(spec.reader).Options.model_fields, *SourceSpec.model_fields]
            for err in e.errors():
                key = _where(err["loc"]) or "options"
                hint = ""
                if err["type"] == "extra_forbidden":
                    close = difflib.get_close_matches(str(err["loc"][-1]), keys, n=1)
                    guess = f"; did you mean {close[0]}?" if close else ";"
                    hint = f" (not a key of this reader{guess} see `medloom init` for the keys)"
                problems.append(f"{label}: {key}: {err['msg']}{hint}")
            continue
        sources.append(
            {
                "name": spec.name,
                "reader": spec.reader,
                "root": str(root.resolve()) if root.exists() else str(root),
                **mat,
                "description": spec.description,
                "license": spec.license,
                "commercial_use": spec.commercial_use
                if spec.commercial_use is not None
                else licence_commercial_use(spec.license),
                "classes": spec.classes,
                "label_map": spec.label_map,
                "split": spec.split,
                "max_pixels": spec.max_pixels,
                "max_voxels": spec.max_voxels,
                "max_file_bytes": spec.max_file_bytes,
                "allowed_roots": [str((Path(r) if os.path.isabs(r) else base / r).resolve()) for r in spec.allowed_roots],
                "raw_ids": spec.raw_ids,
                "damaged_images": spec.damaged_images,
                "multiframe": spec.multiframe,
                "exclude": spec.exclude,
                "expected_layout": spec.expected_layout,
                "pseudonymous_ids": spec.pseudonymous_ids
                if spec.pseudonymous_ids is not None
                else READERS[spec.reader].patient_data,
                "options": options,
            }
        )
    if problems:
        raise RecipeError(f"{path}: the recipe has {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))
    if recipe.annotate and recipe.annotate.knowledge and not os.path.isabs(recipe.annotate.knowledge):
        recipe.annotate.knowledge = str(base / recipe.annotate.knowledge)
    loom = Path(recipe.loom) if os.path.isabs(recipe.loom) else (base / recipe.loom)
    return LoadedRecipe(path, recipe, loom.resolve(), sources, vocab)
