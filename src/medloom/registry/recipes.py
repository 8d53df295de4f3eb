"""`medloom init DIR --preset medmat:2,45,93` (or `medmat:subset:7`): a recipe with one source per dataset row, from
its preset: the reader and keys for the published layout, medloom's MAT, the licence and link from the registry,
and the folder to fill, with the expected layout written above it as a comment."""

from __future__ import annotations

import re

import yaml

from ..errors import RegistryError
from . import REGISTRIES, load
from .presets import Preset, presets

DATA_DIR = "data"  # the recipe's folder holding one folder per dataset


def parse_spec(spec: str) -> tuple[str, list[int], list[int]]:
    """`medmat:2,45,93` or `medmat:subset:7` -> (registry, rows with a preset, rows asked for without one)."""
    m = re.fullmatch(r"([a-z]+):(?:(subset):)?(\d+(?:\s*,\s*\d+)*)", spec.strip())
    if not m or m.group(1) not in REGISTRIES:
        raise RegistryError(
            f"--preset {spec!r}: write REGISTRY:ROWS or REGISTRY:subset:N, e.g. medmat:2,45,93 or medmat:subset:7 "
            f"(registries: {', '.join(REGISTRIES)})"
        )
    name, numbers = m.group(1), [int(n) for n in m.group(3).split(",")]
    registry = load(name)
    if m.group(2):
        rows = [row for n in numbers for row in registry.subset(n).members]
    else:
        rows = [registry.dataset(n).number for n in numbers]  # an unknown row is an error naming the range
    rows = list(dict.fromkeys(rows))
    have = presets(name)
    return name, [r for r in rows if r in have], [r for r in rows if r not in have]


class BlockDumper(yaml.SafeDumper):
    """Multi-line text as a literal block (`|`), as a person writes it."""


BlockDumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None),
)


def _comment(text: str, indent: str) -> list[str]:
    return [f"{indent}{line}".rstrip() for line in text.strip().splitlines()]


def source_entry(registry: str, preset: Preset) -> list[str]:
    """One source of the recipe, with the row's facts and the expected layout as comments."""
    row = load(registry).dataset(preset.number)
    lines = [
        f"  # {row.number}. {row.name} ({row.link})",
        f"  # Med-MAT: {row.modality} | {row.area} | {row.task}; access: {row.access}; licence: {row.licence or 'not recorded'}",
        f"  # Put the download in {DATA_DIR}/{preset.folder}/, laid out as `expected_layout` shows"
        + (f" (checked: {preset.layout_checked})" if preset.layout_checked else " (written from memory: check yours)"),
    ]
    if preset.note:
        lines += _comment(preset.note, "  # ")
    if row.note:
        lines += _comment(f"published table: {row.note}", "  # ")
    source = {
        "name": f"{registry}-{row.number:03d}",
        "path": f"{DATA_DIR}/{preset.folder}" + (f"/{preset.root}" if preset.root else ""),
        **preset.mat,
        **({"license": row.licence} if row.licence else {}),
        "description": f"{row.name} (Med-MAT dataset {row.number})",
        **preset.source,
        **(
            {"allowed_roots": [f"{DATA_DIR}/{preset.folder}/{r}" for r in preset.source["allowed_roots"]]}
            if preset.source.get("allowed_roots")
            else {}
        ),
        "expected_layout": preset.layout.strip() + "\n",
    }
    body = yaml.dump([source], Dumper=BlockDumper, sort_keys=False, allow_unicode=True, width=110).splitlines()
    return lines + [f"  {line}" for line in body]


def preset_recipe(spec: str) -> tuple[str, list[int], list[int]]:
    """The recipe text for a preset spec, the rows it holds and the rows asked for that have no preset yet."""
    name, rows, missing = parse_spec(spec)
    if not rows:
        raise RegistryError(f"--preset {spec}: none of rows {missing} has a preset yet; see `medloom registry list`")
    source = load(name).source
    head = [
        f"# medloom recipe from presets: {spec} ({source['name']}, {source['repository']} @ {source['commit'][:7]})",
        f"# Fill each dataset's folder under {DATA_DIR}/ as its comment shows, then run `medloom ingest` on this file.",
    ]
    if missing:
        head.append(f"# Rows without a preset yet (write their sources by hand): {', '.join(map(str, missing))}")
    lines = [*head, "", f"name: {name}", "loom: ./loom", "", "sources:"]
    have = presets(name)
    for number in rows:
        lines += [*source_entry(name, have[number]), ""]
    return "\n".join(lines), rows, missing
