"""Every preset of the Med-MAT registry reads its example, written in the dataset's published layout, with zero
quarantine rows and the labels, ROIs and splits its file expects; `medloom init --preset` writes that recipe.

All the examples are ingested by one recipe (one source per row, as `init --preset` writes it), once per session;
each row's expectations are then a test of their own."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import cli, rows, run_ingest

from medloom.registry import load
from medloom.registry.examples import write_example
from medloom.registry.presets import presets
from medloom.registry.recipes import DATA_DIR, preset_recipe

PRESETS = presets("medmat")
NUMBERS = sorted(PRESETS)


def always_list(value) -> list:
    return [] if value is None else value if isinstance(value, list) else [value]


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> dict:
    """One recipe as `init --preset` writes it for every row, each example in a data folder of its own (rows that
    share a download, such as BUSI's classification and segmentation rows, each show a part of it)."""
    folder = tmp_path_factory.mktemp("presets")
    text, chosen, missing = preset_recipe("medmat:" + ",".join(map(str, NUMBERS)))
    assert chosen == NUMBERS and not missing
    recipe = yaml.safe_load(text)
    for source in recipe["sources"]:
        number = int(source["name"].rsplit("-", 1)[1])
        assert source["path"].startswith(f"{DATA_DIR}/{PRESETS[number].folder}")
        for key in ("path", "allowed_roots"):
            moved = [f"{DATA_DIR}/{number:03d}/" + p[len(DATA_DIR) + 1 :] for p in always_list(source.get(key))]
            if moved:
                source[key] = moved if key == "allowed_roots" else moved[0]
        write_example(folder / DATA_DIR / f"{number:03d}" / PRESETS[number].folder, PRESETS[number].example.files)
    (folder / "recipe.yaml").write_text(yaml.safe_dump({**recipe, "salt": "test-salt"}, sort_keys=False))
    loom, reports = run_ingest(folder / "recipe.yaml", workers=2)
    records = rows(loom, "SELECT source, labels, len(rois) AS rois, source_split FROM records")
    quarantine = rows(loom, "SELECT source, path, reason, message FROM quarantine")
    return {"reports": reports, "records": records, "quarantine": quarantine}


@pytest.mark.parametrize("number", NUMBERS)
def test_a_preset_reads_its_published_layout(number, ingested):
    preset, name = PRESETS[number], f"medmat-{number:03d}"
    report = ingested["reports"][name]
    assert report.error is None, report.error
    problems = [q for q in ingested["quarantine"] if q["source"] == name]
    assert problems == []
    mine = [r for r in ingested["records"] if r["source"] == name]
    expect = preset.example.expect
    assert len(mine) == expect.records
    if expect.labels:
        assert dict(Counter(label for r in mine for label in r["labels"])) == expect.labels
    if expect.rois is not None:
        assert sum(r["rois"] for r in mine) == expect.rois
    if expect.splits is not None:
        assert dict(Counter(r["source_split"] for r in mine)) == expect.splits


def test_every_preset_names_a_row_and_vocabulary_terms():
    registry = load("medmat")
    for number, preset in PRESETS.items():
        assert registry.dataset(number).preset
        assert preset.mat == {k: v for k, v in preset.mat.items()}  # loaded as given
    assert sum(d.preset for d in registry.datasets) == len(PRESETS)


def test_init_writes_the_preset_recipe_and_names_rows_without_one(tmp_path):
    without = next(d.number for d in load("medmat").datasets if not d.preset) if len(PRESETS) < 109 else None
    asked = f"medmat:{NUMBERS[0]}" + (f",{without}" if without else "")
    proc = cli("init", str(tmp_path / "r"), "--preset", asked)
    recipe = yaml.safe_load((tmp_path / "r" / "recipe.yaml").read_text())
    assert [s["name"] for s in recipe["sources"]] == [f"medmat-{NUMBERS[0]:03d}"]
    first = recipe["sources"][0]
    assert first["path"].startswith(f"{DATA_DIR}/{PRESETS[NUMBERS[0]].folder}")
    assert {k: first[k] for k in ("modality", "anatomy", "task")} == PRESETS[NUMBERS[0]].mat
    text = (tmp_path / "r" / "recipe.yaml").read_text()
    assert load("medmat").dataset(NUMBERS[0]).link in text  # the row's link and layout as comments
    if without:
        assert str(without) in proc.stderr and f"medmat-{without:03d}" not in text
    again = cli("init", str(tmp_path / "r"), "--preset", asked, check=False)
    assert again.returncode != 0 and "exists" in again.stderr  # never overwrites a recipe


def test_a_preset_spec_that_names_nothing_known_says_what_to_write(tmp_path):
    proc = cli("init", str(tmp_path / "r"), "--preset", "medmat:200", check=False)
    assert proc.returncode == 2 and "numbered 1-" in proc.stderr
    proc = cli("init", str(tmp_path / "r"), "--preset", "mednist:3", check=False)
    assert proc.returncode == 2 and "REGISTRY:ROWS" in proc.stderr
    assert not Path(tmp_path / "r" / "recipe.yaml").exists()


def test_a_download_in_the_wrong_place_shows_the_layout_expected_and_what_is_there(tmp_path):
    number = NUMBERS[0]
    preset = PRESETS[number]
    cli("init", str(tmp_path), "--preset", f"medmat:{number}")
    folder = tmp_path / DATA_DIR / preset.folder
    (folder / "wrong-place").mkdir(parents=True)
    (folder / "wrong-place" / "readme.txt").write_text("x")
    proc = cli("ingest", str(tmp_path), "-q", check=False)
    first_line = preset.layout.strip().splitlines()[0]
    if preset.root:  # the reader's folder is missing: the recipe error shows the layout and the folder's listing
        assert proc.returncode == 2 and "does not exist" in proc.stderr
    else:  # the folder is read and gives nothing
        assert "gave no record" in proc.stderr
    assert first_line in proc.stderr and "wrong-place/" in proc.stderr and "readme.txt" in proc.stderr
