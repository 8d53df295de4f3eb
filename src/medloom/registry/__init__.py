"""Published dataset tables as data: today Med-MAT's 109 source datasets and 53 subsets (`medmat.yaml`), kept as
published with medloom's annotations (normalised triplet, access, licence, layout, preset, notes on known errors),
so that `medloom registry`, presets and the CG matrix all read one copy that names its source commit.

The normalised triplet is what the vocabulary (`vocab/`) said when the data was written, Med-MAT's free-text tasks
read through the file's `task_readings` (`normalised_rows`); `drift` lists where it says something else now and
`refresh` rewrites the file (`python -m medloom.registry refresh`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import RegistryError
from ..vocab import KINDS, UNKNOWN, Vocabulary, default_vocabulary, term_key

REGISTRIES = {"medmat": "medmat.yaml"}
# the column of the published table that each vocabulary kind normalises
COLUMN = {"modality": "modality", "anatomy": "area", "task": "task"}
HEADER = (
    "# Med-MAT's dataset and subset tables, as published (see source:), with medloom's annotations.\n"
    "# Written by a script, then kept by hand: docs/registry.md says what each field means.\n"
)


@dataclass(frozen=True)
class Dataset:
    """One row of the published dataset table, M/A/T as written, and medloom's annotations."""

    number: int
    name: str
    link: str
    modality: str
    area: str
    task: str
    qa: str
    normalised: dict[str, str | None]
    access: str
    licence: str | None
    layout: dict[str, str | None] | None
    preset: bool  # a preset file exists (presets.py)
    note: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Subset:
    """One row of the published subset table; `members` are dataset numbers (see the source's `members`)."""

    number: int
    modality: str
    area: str
    task: str
    qa: str
    normalised: dict[str, str | None]
    members: tuple[int, ...]
    members_note: str | None
    note: str | None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "members": list(self.members)}


@dataclass(frozen=True)
class Registry:
    name: str
    source: dict[str, str]
    datasets: tuple[Dataset, ...]
    subsets: tuple[Subset, ...]
    unknown_terms: dict[str, list[str]]
    task_readings: dict[str, Any]

    def dataset(self, number: int) -> Dataset:
        return _numbered(self.datasets, number, f"no dataset {number} in the {self.name} registry: rows")

    def subset(self, number: int) -> Subset:
        return _numbered(self.subsets, number, f"no subset {number} in the {self.name} registry: subsets")

    def subsets_of(self, number: int) -> list[Subset]:
        return [s for s in self.subsets if number in s.members]

    def select(
        self, *, modality: str | None = None, anatomy: str | None = None, task: str | None = None
    ) -> tuple[list[Dataset], list[Subset]]:
        """Datasets and subsets whose own M/A/T match every filter given (`matches`)."""
        wanted = {"modality": modality, "anatomy": anatomy, "task": task}

        def keep(row: Dataset | Subset) -> bool:
            return all(matches(kind, term, row) for kind, term in wanted.items() if term)

        return [d for d in self.datasets if keep(d)], [s for s in self.subsets if keep(s)]

    def as_dict(self, datasets: list[Dataset] | None = None, subsets: list[Subset] | None = None) -> dict[str, Any]:
        return {
            "datasets": [d.as_dict() for d in (self.datasets if datasets is None else datasets)],
            "subsets": [s.as_dict() for s in (self.subsets if subsets is None else subsets)],
            "source": dict(self.source),
        }


def _numbered(rows: tuple, number: int, what: str):
    """The row numbered `number`, else an error naming the numbers there are."""
    for row in rows:
        if row.number == number:
            return row
    raise RegistryError(f"{what} are numbered {rows[0].number}-{rows[-1].number} (see `medloom registry list`)")


def matches(kind: str, term: str, row: Dataset | Subset, vocabulary: Vocabulary | None = None) -> bool:
    """A filter term matches a row when it is the row's term as Med-MAT wrote it (any case or punctuation: `FP`,
    `x ray`), or normalises to the row's normalised term (`fundus photography`, `bones` -> bone). Tasks (free text
    in Med-MAT's table) match where the term is a part of the written task (`tuberculosis`, `segmentation`), and by
    normalised term only when the term names a category itself (`state`, `cancer`): a finding filed under a
    category (`tuberculosis` under state) finds that finding's rows, not the whole category."""
    written = term_key(getattr(row, COLUMN[kind]))
    key = term_key(term)
    if key == written or (kind == "task" and key and key in written):
        return True
    vocab = vocabulary or default_vocabulary()
    found = vocab.normalise(kind, term, strict=False)  # type: ignore[arg-type]
    if kind == "task" and key != term_key(found):
        return False
    return found != UNKNOWN and found == row.normalised.get(kind)


def normalised(
    written: dict[str, Any], vocabulary: Vocabulary | None = None, *, reading: str | None = None
) -> dict[str, str | None]:
    """The vocabulary's terms for a row's M/A/T as written; the task, where the vocabulary does not know the text,
    from `reading` (the registry's reading of it: `task_readings`); None where a term does not normalise."""
    vocab = vocabulary or default_vocabulary()
    out: dict[str, str | None] = {}
    for kind in KINDS:
        found = vocab.normalise(kind, written[COLUMN[kind]], strict=False)
        if found == UNKNOWN and kind == "task" and reading:
            found = vocab.normalise(kind, reading, strict=False)
        out[kind] = None if found == UNKNOWN else found
    return out


def normalised_rows(data: dict[str, Any], vocabulary: Vocabulary | None = None) -> dict[tuple[str, int], dict]:
    """Every row's normalised triplet, keyed ("dataset" | "subset", number). Med-MAT's task texts are free text,
    often generic ("Multi Classification" is in seven subsets): a text the vocabulary knows is read as written;
    else the registry's reading of that row (`task_readings`); else a dataset takes its subset's task (a dataset's
    "Normal or Cyst or Tumor" is its subset's "Kidney Diseases Classification": disease)."""
    readings = data.get("task_readings") or {}
    out: dict[tuple[str, int], dict] = {}
    for s in data["subsets"]:
        out["subset", s["number"]] = normalised(s, vocabulary, reading=(readings.get("subsets") or {}).get(s["number"]))
    subset_of = {n: s["number"] for s in data["subsets"] for n in s["members"]}
    for d in data["datasets"]:
        found = normalised(d, vocabulary, reading=(readings.get("datasets") or {}).get(d["number"]))
        if found["task"] is None and d["number"] in subset_of:
            found["task"] = out["subset", subset_of[d["number"]]]["task"]
        out["dataset", d["number"]] = found
    return out


def unknown_terms(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The written terms, per kind, whose normalised value is None (sorted, each once)."""
    found = {kind: {r[COLUMN[kind]] for r in rows if r["normalised"][kind] is None} for kind in KINDS}
    return {kind: sorted(terms, key=lambda t: (t.lower(), t)) for kind, terms in found.items()}


def data_path(name: str = "medmat") -> Path:
    if name not in REGISTRIES:
        raise RegistryError(f"no registry {name!r}; known: {', '.join(REGISTRIES)}")
    return Path(str(resources.files(__package__).joinpath(REGISTRIES[name])))


def raw(name: str = "medmat") -> dict[str, Any]:
    """The registry file as stored (plain dicts and lists)."""
    return yaml.safe_load(data_path(name).read_text(encoding="utf-8"))


@cache
def load(name: str = "medmat") -> Registry:
    """The registry, read once per process."""
    from .presets import presets

    data = raw(name)
    have = presets(name)
    datasets = tuple(
        Dataset(
            **{**d, "layout": preset_layout(d["layout"], have[d["number"]])} if d["number"] in have else d,
            preset=d["number"] in have,
        )
        for d in data["datasets"]
    )
    subsets = tuple(Subset(**{**s, "members": tuple(s["members"])}) for s in data["subsets"])
    readings = data.get("task_readings") or {}
    return Registry(name, data["source"], datasets, subsets, data["unknown_terms"], readings)


def preset_layout(layout: dict | None, preset: Any) -> dict[str, str | None]:
    """A row's layout where a preset reads it: the preset's reader, the row's description or the preset layout's
    first line."""
    description = (layout or {}).get("description") or preset.layout.strip().splitlines()[0]
    return {"reader": preset.source["reader"], "description": description}


def drift(name: str = "medmat", vocabulary: Vocabulary | None = None) -> list[str]:
    """Where the stored normalised terms differ from what the vocabulary says now, one line each."""
    data = raw(name)
    current_rows = normalised_rows(data, vocabulary)
    lines = []
    for what, rows in (("dataset", data["datasets"]), ("subset", data["subsets"])):
        for row in rows:
            now = current_rows[what, row["number"]]
            for kind in KINDS:
                if row["normalised"][kind] != now[kind]:
                    lines.append(
                        f"{what} {row['number']} {kind} {row[COLUMN[kind]]!r}: stored {row['normalised'][kind]!r}, "
                        f"the vocabulary now says {now[kind]!r}"
                    )
    stored = data["unknown_terms"]
    current = unknown_terms(data["datasets"] + data["subsets"])
    if stored != current:
        lines.append(f"unknown_terms: stored {stored}, now {current}")
    return lines


def refresh(name: str = "medmat", vocabulary: Vocabulary | None = None) -> Path:
    """Rewrite the registry file with the vocabulary's current terms (after a vocabulary change)."""
    data = raw(name)
    now = normalised_rows(data, vocabulary)
    for what, rows in (("dataset", data["datasets"]), ("subset", data["subsets"])):
        for row in rows:
            row["normalised"] = now[what, row["number"]]
    data["unknown_terms"] = unknown_terms(data["datasets"] + data["subsets"])
    path = data_path(name)
    path.write_text(HEADER + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120), encoding="utf-8")
    load.cache_clear()
    return path
