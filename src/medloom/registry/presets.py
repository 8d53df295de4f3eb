"""Presets: for a row of a published dataset table, the recipe source that reads the dataset as it is published,
the folder the user fills and its expected layout, and a small example tree in that layout with what ingesting
it must give (the tests ingest every preset's example).

One YAML file per row in `presets/<registry>/NNN.yaml` (see `Preset`); a row has a preset exactly when its file
exists, so `medloom registry list` counts the rows a reader can read by counting files that pass their test.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import RegistryError

# recipe keys a preset's source may not set: the recipe writer sets them from the row and the folder
WRITTEN_KEYS = frozenset({"name", "path", "modality", "anatomy", "task"})


class Expect(BaseModel):
    """What ingesting the example must give: records, and how many records carry each label (zero quarantine
    rows always)."""

    model_config = ConfigDict(extra="forbid")
    records: int = Field(ge=1)
    labels: dict[str, int] = {}
    rois: int | None = None  # ROIs over all records, where the layout has boxes or masks
    splits: dict[str, int] | None = None  # records per split, where the layout has official splits


class Example(BaseModel):
    """A few files in the published layout: path -> a kind (`image`, `image 64x48`, `mask`, `dicom`, ...; see
    `examples.write_example`) or {text: ...}, {json: ...}, {xlsx: {sheet: rows}}."""

    model_config = ConfigDict(extra="forbid")
    files: dict[str, Any]
    expect: Expect


class Preset(BaseModel):
    model_config = ConfigDict(extra="forbid")
    number: int
    folder: str  # the folder (under the recipe's data folder) the user fills with the download
    root: str | None = None  # the source's path inside the folder, where the reader starts (e.g. the class folders)
    layout: str  # the published layout, as the recipe's comment shows it
    layout_checked: str | None = None  # where the layout was checked (a page, a repository file); None: from memory
    mat: dict[str, str]  # modality, anatomy, task: medloom's vocabulary terms for the source
    # the recipe source's other keys: reader and its options, label_map, split ...; `allowed_roots` relative to the
    # folder (the recipe gets them under its data folder), the reader's own paths relative to the source's path
    source: dict[str, Any]
    example: Example
    note: str | None = None

    @field_validator("folder")
    @classmethod
    def _plain_folder(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError(f"folder {v!r}: one plain folder name (letters, digits, . _ -)")
        return v

    @field_validator("root")
    @classmethod
    def _inside(cls, v: str | None) -> str | None:
        if v is not None and (v.startswith("/") or ".." in v.split("/")):
            raise ValueError(f"root {v!r}: a path inside the folder")
        return v

    @field_validator("mat")
    @classmethod
    def _mat(cls, v: dict[str, str]) -> dict[str, str]:
        if set(v) != {"modality", "anatomy", "task"}:
            raise ValueError("mat: give modality, anatomy and task")
        return v

    @field_validator("source")
    @classmethod
    def _source(cls, v: dict[str, Any]) -> dict[str, Any]:
        if "reader" not in v:
            raise ValueError("source: name its reader")
        taken = sorted(WRITTEN_KEYS & set(v))
        if taken:
            raise ValueError(f"source: {taken} are written from the row and the folder; leave them out")
        return v


def presets_dir(registry: str = "medmat") -> Path:
    return Path(str(resources.files(__package__).joinpath("presets", registry)))


@cache
def presets(registry: str = "medmat") -> dict[int, Preset]:
    """Every preset of a registry by row number; an error naming the file for one that does not load."""
    found: dict[int, Preset] = {}
    folder = presets_dir(registry)
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        try:
            preset = Preset(**yaml.safe_load(path.read_text(encoding="utf-8")))
        except (yaml.YAMLError, TypeError, ValidationError) as e:
            raise RegistryError(f"{path}: not a preset: {e}") from None
        if path.stem != f"{preset.number:03d}":
            raise RegistryError(f"{path}: holds the preset of row {preset.number}; name it {preset.number:03d}.yaml")
        found[preset.number] = preset
    return found
