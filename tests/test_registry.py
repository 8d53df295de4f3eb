"""The Med-MAT registry (`src/medloom/registry/medmat.yaml`): Med-MAT's README tables at commit d7721ae
(FreedomIntelligence/Med-MAT), 109 source datasets and 53 subsets, with medloom's annotations; and the
`medloom registry list` / `show` commands."""

from __future__ import annotations

import json

import pytest
from conftest import cli as medloom

from medloom.registry import KINDS, drift, load, normalised_rows, raw, unknown_terms
from medloom.registry.presets import presets
from medloom.sources import READERS
from medloom.vocab import default_vocabulary

ACCESS = {"open download", "login", "competition rules", "data-use agreement", "unknown"}


@pytest.fixture(scope="module")
def reg():
    return load()


def test_counts_numbers_and_members(reg):
    assert len(reg.datasets) == 109
    assert len(reg.subsets) == 53
    assert [d.number for d in reg.datasets] == list(range(1, 110))  # unique, in the table's order
    assert [s.number for s in reg.subsets] == list(range(1, 54))
    numbers = {d.number for d in reg.datasets}
    for s in reg.subsets:
        assert s.members, s.number
        assert set(s.members) <= numbers, s.number
    # medloom's reading of the subsets puts each dataset in exactly one
    assert sorted(n for s in reg.subsets for n in s.members) == list(range(1, 110))
    assert reg.source["repository"] == "https://github.com/FreedomIntelligence/Med-MAT"
    assert reg.source["commit"] == "d7721ae00ebc798460d616723915e5f17992854d"


def test_rows_as_published(reg):
    first = reg.dataset(1)
    assert (first.name, first.modality, first.area, first.task) == (
        "Intel and MobileODT Cervical Screening",
        "Co",
        "Cervix",
        "Cervix Type in Screening",
    )
    assert first.link == "https://www.kaggle.com/competitions/intel-mobileodt-cervical-cancer-screening/data"
    assert first.access == "competition rules"
    assert reg.dataset(2).name == "CT Kindney Dataset"  # the published spelling is kept
    last = reg.dataset(109)
    assert (last.name, last.modality, last.area, last.task, last.qa) == (
        "PALM19",
        "FP",
        "Fundus",
        "Optic Disc Segmentation",
        "TODO",
    )
    assert reg.subset(43).area == "Chest" and reg.subset(43).members == (97,)
    for d in reg.datasets:
        assert d.access in ACCESS, d.number
        assert d.preset == (d.number in presets("medmat"))  # a preset file exists (tests/test_presets.py reads each)
        assert d.layout is None or (d.layout["description"] and d.layout["reader"] in (None, *READERS))
    assert {d.number for d in reg.datasets if d.access == "data-use agreement"} == {86, 87, 100, 101}  # physionet


def test_known_errors_are_kept_and_annotated(reg):
    # a link pointing at another dataset: kept, with a note
    assert reg.dataset(50).link == "https://www.kaggle.com/datasets/preetviradiya/brian-tumor-dataset"
    assert reg.dataset(50).link == reg.dataset(63).link
    assert "another dataset" in reg.dataset(50).note
    assert reg.dataset(46).name == reg.dataset(41).name and "row 41" in reg.dataset(46).note
    # a task contradicting the dataset: kept, with a note
    assert reg.dataset(54).task == "COVID19, Classification Dataset." and "tuberculosis" in reg.dataset(54).note
    assert reg.dataset(103).task == "Surgical Instrument Segmentation" and "contradicts" in reg.dataset(103).note
    assert "blank" in reg.dataset(57).note  # the published No. cell is empty
    assert "Breast" in reg.subset(43).note


def test_recorded_vocabulary_results_are_what_the_vocabulary_says_now():
    """The normalised triplets were written by the vocabulary (tasks through `task_readings`); after a change to
    either, run `python -m medloom.registry refresh` and review the diff."""
    assert drift() == []
    vocab = default_vocabulary()
    data = raw()
    now = normalised_rows(data)
    for what, rows in (("dataset", data["datasets"]), ("subset", data["subsets"])):
        for row in rows:
            assert row["normalised"] == now[what, row["number"]], (what, row["number"])
            for kind, column in zip(KINDS[:2], ("modality", "area")):  # M and A: the vocabulary, as written
                assert row["normalised"][kind] == vocab.normalise(kind, row[column]), (row["number"], kind)
    assert data["unknown_terms"] == unknown_terms(data["datasets"] + data["subsets"])
    assert data["unknown_terms"] == {"modality": [], "anatomy": [], "task": []}


def test_filters(reg):
    tb, tb_subsets = reg.select(task="tuberculosis")
    assert [d.number for d in tb] == [59, 79]
    assert [s.number for s in tb_subsets] == [30]
    # as Med-MAT writes it, or as medloom names it
    fp = [d.number for d in reg.select(modality="FP")[0]]
    assert fp == [d.number for d in reg.select(modality="fundus photography")[0]]
    assert fp == [*range(21, 33), 66, 68, 75, 107, 108, 109]
    assert [d.number for d in reg.select(modality="oct")[0]] == [46, 47]  # whole terms: CT is not in OCT
    assert [d.number for d in reg.select(modality="ct")[0]] == [2, 3, 4, 5, 6, 7, 8]
    # Fundus (fundus photographs) and Retina (OCT) are two areas, as Med-MAT writes them
    assert {d.number for d in reg.select(anatomy="retina")[0]} == {46, 47}
    assert {d.number for d in reg.select(anatomy="optic disc")[0]} == set(fp)  # a synonym: normalised
    # a task category matches by normalised task; a finding filed under one (tuberculosis: state) by its text
    assert [d.number for d in reg.select(task="state")[0]] == [1, 7, 16, 50, 51, 59, 79]
    both, _ = reg.select(modality="X-ray", anatomy="Bones", task="fractured")
    assert [d.number for d in both] == [50, 51]
    assert reg.select(modality="no such modality") == ([], [])


def test_list_json_shape():
    proc = medloom("registry", "list", "--json")
    data = json.loads(proc.stdout)
    assert list(data) == ["datasets", "subsets", "source"]
    assert len(data["datasets"]) == 109 and len(data["subsets"]) == 53
    assert data["source"]["commit"] == "d7721ae00ebc798460d616723915e5f17992854d"
    row = data["datasets"][1]
    assert set(row) == {
        "number",
        "name",
        "link",
        "modality",
        "area",
        "task",
        "qa",
        "normalised",
        "access",
        "licence",
        "layout",
        "preset",
        "note",
    }
    assert row["normalised"] == {"modality": "CT", "anatomy": "kidney", "task": "disease"}  # its subset's task
    assert data["subsets"][29] == {
        "number": 30,
        "modality": "X-ray",
        "area": "Lung",
        "task": "Tuberculosis Classification",
        "qa": "https://huggingface.co/datasets/FreedomIntelligence/Med-MAT/blob/main/Aggregated_Subsets/Subset--30-train.json",
        "normalised": {"modality": "X-ray", "anatomy": "lung", "task": "state"},
        "members": [59, 79],
        "members_note": None,
        "note": None,
    }
    filtered = json.loads(medloom("registry", "list", "--json", "--anatomy", "cervix").stdout)
    assert [d["number"] for d in filtered["datasets"]] == [1]
    assert [s["number"] for s in filtered["subsets"]] == [1]


def with_presets(numbers: list[int]) -> str:
    n = len(set(numbers) & set(presets("medmat")))
    return f"{n} {'row' if n == 1 else 'rows'} with a preset"


def test_list_table_and_count_line():
    proc = medloom("registry", "list")
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == f"109 rows, 53 subsets, {with_presets([d.number for d in load().datasets])}"
    assert "CT Kindney Dataset" in proc.stdout and "50*" in proc.stdout
    one = medloom("registry", "list", "--task", "tuberculosis").stdout.strip().splitlines()
    assert one[-1] == f"2 rows (of 109), 1 subset, {with_presets([59, 79])}"


def test_show_prints_the_fields():
    proc = medloom("registry", "show", "2")
    out = proc.stdout
    for text in (
        "number: 2",
        "name: CT Kindney Dataset",
        "link: https://www.kaggle.com/datasets/nazmul0087/ct-kidney-dataset-normal-cyst-tumor-and-stone",
        "modality: CT",
        "area: Kidney",
        "task: Normal or Cyst or Tumor",
        "normalised: CT | kidney | disease",
        "access: login",
        "licence: -",
        "layout: imagefolder: CT-KIDNEY-DATASET-Normal-Cyst-Tumor-Stone/",
        "preset: yes",
        "subsets: 2",
    ):
        assert text in out, text
    shown = json.loads(medloom("registry", "show", "50", "--json").stdout)
    assert shown["link"] == "https://www.kaggle.com/datasets/preetviradiya/brian-tumor-dataset"
    assert "another dataset" in shown["note"] and shown["subsets"] == [26]
    sub = medloom("registry", "show", "30", "--subset").stdout
    assert "datasets: 59 Tuberculosis Chest X-Ray Database; 79 NLM-TB" in sub


def test_show_of_a_missing_row_says_what_exists():
    proc = medloom("registry", "show", "110", check=False)
    assert proc.returncode == 2
    assert "no dataset 110" in proc.stderr and "1-109" in proc.stderr
    proc = medloom("registry", "show", "54", "--subset", check=False)
    assert proc.returncode == 2 and "1-53" in proc.stderr


@pytest.mark.parametrize("cmd", ["registry", "registry list", "registry show"])
def test_help(cmd):
    assert "Usage" in medloom(*cmd.split(), "--help").stdout
