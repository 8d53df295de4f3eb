"""Group-aware splits and the compositional-generalization planner, on catalogs whose MAT triplets
reproduce rows of Med-MAT's tables."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import cli, make_image, rows, run_ingest, write_recipe
from PIL import Image

from medloom.annotate import AnnotateSettings, annotate
from medloom.cg.plan import directions, mat_subsets, parse_target, plan
from medloom.export import ExportOptions, export
from medloom.export.training import export_training
from medloom.splits.assign import make_split

SOURCES = [  # name, modality, anatomy, task, labels
    ("ct-lung-covid", "CT", "lung", "covid-19", ["covid", "normal"]),
    ("ct-lung-covid-b", "CT", "lung", "covid", ["covid", "normal"]),  # a second dataset, same triplet
    ("ct-lung-level", "CT", "lung", "level", ["mild", "severe"]),
    ("ct-brain-cancer", "CT", "brain", "cancer", ["tumor", "normal"]),
    ("ct-lung-cancer", "CT", "lung", "cancer", ["benign", "malignant"]),  # the target
    ("xray-lung-cancer", "X-ray", "lung", "cancer", ["nodule", "normal"]),
    ("ct-kidney-disease", "CT", "kidney", "disease", ["cyst", "stone"]),
    ("mri-lung-covid", "MRI", "lung", "covid-19", ["covid", "normal"]),
    ("us-breast-cancer", "ultrasound", "breast", "cancer", ["benign", "malignant"]),
    ("mri-brain-disease", "MRI", "brain", "disease", ["glioma", "normal"]),  # unrelated
    ("xray-chest-covid", "X-ray", "chest", "covid-19", ["covid", "normal"]),  # unrelated
]
T = "CT|lung|cancer"


@pytest.fixture(scope="module")
def mat(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mat")
    specs = []
    for s, (src, m, a, t, labels) in enumerate(SOURCES):
        for i in range(4):
            make_image(tmp / src / labels[i % 2] / f"{src}{i}.png", size=(32, 24), seed=100 * s + i)
        specs.append(dict(name=src, reader="imagefolder", path=src, modality=m, anatomy=a, task=t))
    loom, _ = run_ingest(write_recipe(tmp, specs))
    return tmp, loom


def test_subsets_merge_sources_sharing_a_triplet(mat):
    _, loom = mat
    subsets = mat_subsets(loom)
    covid = subsets[("CT", "lung", "covid-19")]
    assert covid.records == 8 and covid.sources == ["ct-lung-covid", "ct-lung-covid-b"]
    assert covid.labels == ["covid", "normal"] and len(subsets) == 10


def test_directions_find_exactly_the_expected_related_combinations(mat):
    _, loom = mat
    names = lambda roles: [sorted("|".join(t) for t in role) for role in roles]  # noqa: E731
    found = {d: names(r) for d, r in directions(parse_target("CT,lung,cancer"), list(mat_subsets(loom))).items()}
    m_a = ["CT|lung|covid-19", "CT|lung|level"]
    assert found == {
        "fixed-modality": [m_a, ["CT|brain|cancer"]],
        "fixed-area": [m_a, ["X-ray|lung|cancer"]],
        "fixed-task": [["CT|brain|cancer"], ["X-ray|lung|cancer"]],
        "modality-area": [m_a, ["ultrasound|breast|cancer"]],
        "three-way": [["CT|kidney|disease"], ["MRI|lung|covid-19"], ["ultrasound|breast|cancer"]],
    }
    proc = cli("cg", "matrix", loom, "--json")
    matrix = json.loads(proc.stdout)
    assert matrix[T] == {"fixed-modality": 3, "fixed-area": 3, "fixed-task": 2, "modality-area": 3, "three-way": 3}
    assert matrix["MRI|brain|disease"]["fixed-modality"] == 0  # no (MRI, brain, other task) subset


def test_plans_ablations_and_baseline(mat, tmp_path):
    _, loom = mat
    proc = cli(
        "cg",
        "plan",
        loom,
        "--target",
        "ct, LUNG, cancer",
        "--out",
        tmp_path / "exp",
        "--seed",
        "3",
        "--designs",
        "pooled,ablations",
        "--json",
    )
    exps = {e["name"]: e for e in json.loads(proc.stdout)}
    assert set(exps) == {
        "related-fixed-modality",
        "related-fixed-area",
        "related-fixed-task",
        "related-modality-area",
        "related-three-way",
        "all-related",
        "all-unrelated",
        "all-data",
        "without-modality",
        "without-area",
        "without-task",
        "baseline-plus",
    }
    for e in exps.values():
        assert e["target"] == T and T not in e["train_subsets"] and e["test_records"] == 4
        assert set(e) >= {"name", "kind", "direction", "target", "train_subsets", "train_records", "test_records"}
    related = set(exps["all-related"]["train_subsets"])
    assert related == {
        "CT|lung|covid-19",
        "CT|lung|level",
        "CT|brain|cancer",
        "X-ray|lung|cancer",
        "CT|kidney|disease",
        "MRI|lung|covid-19",
        "ultrasound|breast|cancer",
    }
    assert set(exps["all-unrelated"]["train_subsets"]) == {"MRI|brain|disease", "X-ray|chest|covid-19"}
    for element, i in (("modality", 0), ("area", 1), ("task", 2)):
        dropped = related - set(exps[f"without-{element}"]["train_subsets"])
        assert dropped == {s for s in related if s.split("|")[i] == T.split("|")[i]}
    assert exps["related-three-way"]["kind"] == "related" and exps["related-three-way"]["direction"] == "three-way"
    assert exps["all-related"]["pool_records"] == 32  # the covid subset merges two sources
    # every experiment draws the smallest related combination's 8 records (CT lung level + CT brain cancer)
    assert {e["train_records"] for e in exps.values()} == {8} and {e["train_size"] for e in exps.values()} == {8}
    assert exps["baseline-plus"]["note"] == "draws every unrelated record: the same records as all-unrelated"
    folder = tmp_path / "exp" / "CT_lung_cancer" / "related-fixed-task"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["why"]["CT|brain|cancer"].startswith("fixed-task role 1: shares modality and task")
    train = (folder / "train.txt").read_text().split()
    assert len(train) == 8 and all(r.startswith(("ct-brain-cancer/", "xray-lung-cancer/")) for r in train)
    again = {e["name"]: e for e in plan(loom, [parse_target("CT,lung,cancer")], tmp_path / "again", seed=3)}
    assert all(again[n]["train_records"] == e["train_records"] for n, e in exps.items())
    assert (tmp_path / "again" / "CT_lung_cancer" / "baseline-plus" / "train.txt").read_text() == (
        tmp_path / "exp" / "CT_lung_cancer" / "baseline-plus" / "train.txt"
    ).read_text()
    # every experiment exports, in the shard formats and the training formats
    report = export(loom, tmp_path / "wds", ExportOptions(experiment=str(folder)), workers=1, quiet=True)
    assert report.splits == {"test": 4, "train": 8}
    annotate(loom, AnnotateSettings(rois=False), workers=1, quiet=True)
    for fmt in ("medmat", "llava", "sharegpt"):
        out = export_training(loom, tmp_path / fmt, fmt, experiment=str(folder), workers=1, quiet=True)
        assert out.files == [f"{fmt}-test.json", f"{fmt}-train.json"]
        assert len(json.loads((tmp_path / fmt / f"{fmt}-test.json").read_text())) == 4
    every = cli("cg", "plan", loom, "--all", "--out", tmp_path / "all", "--json")
    assert all(e["target"] not in e["train_subsets"] for e in json.loads(every.stdout))


@pytest.fixture(scope="module")
def patients(tmp_path_factory):
    """30 patients with 5 images each, one label per patient; one image copied into another patient."""
    tmp = tmp_path_factory.mktemp("patients")
    lines = ["file,finding,patient"]
    (tmp / "img").mkdir()
    for p in range(30):
        for i in range(5):  # random blocks: perceptual hashes as far apart as random bits
            blocks = np.random.default_rng(1000 + 5 * p + i).integers(0, 256, (8, 8), dtype=np.uint8)
            Image.fromarray(np.kron(blocks, np.ones((4, 4), np.uint8))).save(tmp / "img" / f"p{p:02d}_{i}.png")
            lines.append(f"p{p:02d}_{i}.png,{('normal', 'pneumonia')[p % 2]},P{p:02d}")
    shutil.copy(tmp / "img" / "p00_0.png", tmp / "img" / "dup.png")
    lines.append("dup.png,pneumonia,P29")
    (tmp / "img" / "labels.csv").write_text("\n".join(lines) + "\n")
    recipe = write_recipe(
        tmp,
        [
            dict(
                name="cxr",
                reader="csv",
                path="img",
                csv="labels.csv",
                image_column="file",
                label_column="finding",
                patient_column="patient",
                modality="X-ray",
                anatomy="chest",
                task="disease",
            )
        ],
    )
    loom, _ = run_ingest(recipe)
    return loom


def test_group_aware_split_keeps_patients_together(patients):
    loom = patients
    report = make_split(loom, by="patient", val=0.2, test=0.2, seed=7, stratify="label")
    got = rows(
        loom,
        "SELECT r.patient_id, s.split, r.labels[1] AS label FROM records r "
        "JOIN read_parquet('" + str(loom / "splits" / "split.parquet") + "') s USING (id)",
    )
    sides = {}
    for r in got:
        sides.setdefault(r["patient_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in sides.values())  # a patient never on two sides
    assert report.groups == 30 and sum(report.sizes.values()) == 151
    for split, share in (("test", 0.2), ("val", 0.2)):
        assert abs(report.sizes[split] - share * 151) <= 10
        assert {r["label"] for r in got if r["split"] == split} == {"normal", "pneumonia"}  # stratified
    again = make_split(loom, by="patient", val=0.2, test=0.2, seed=7, stratify="label")
    assert again.sizes == report.sizes
    # P00's image copied under P29: a leak whenever the two patients land on different sides
    split_of = {
        r["id"]: r["split"]
        for r in rows(loom, "SELECT id, split FROM read_parquet('" + str(loom / "splits" / "split.parquet") + "')")
    }
    apart = split_of["cxr/p00_0_png"] != split_of["cxr/dup_png"]
    assert report.duplicate_leaks == int(apart)
    assert report.leak_examples == ([["cxr/dup_png", "cxr/p00_0_png"]] if apart else [])
    # exports take the assigned split (the last one made)
    out = export(loom, loom.parent / "wds", ExportOptions(include_duplicates=True), workers=1, quiet=True)
    assert out.splits == report.sizes
    seen_apart = False
    for seed in range(10):  # some seeds put P00 and P29 on different sides: each such split reports the leak
        r = make_split(loom, by="patient", val=0.3, test=0.3, seed=seed)
        split_of = {
            x["id"]: x["split"]
            for x in rows(loom, "SELECT id, split FROM read_parquet('" + str(loom / "splits" / "split.parquet") + "')")
        }
        apart = split_of["cxr/p00_0_png"] != split_of["cxr/dup_png"]
        seen_apart |= apart
        assert r.duplicate_leaks == int(apart)
    assert seen_apart
    by_record = make_split(loom, by="record", val=0.1, test=0.1, seed=1)
    assert by_record.groups == 151
    kept = make_split(loom, keep_source=True)
    assert kept.sizes == {"train": 151} and kept.groups_on_two_sides == 0


def test_cg_plan_warns_or_refuses_when_training_holds_copies_of_the_target(tmp_path):
    """A target image also sits in a training source (the same file in two datasets) and no dedup ran: every
    manifest counts the test records with a copy among its training records, `cg plan` warns, `--strict` refuses
    and writes nothing; after `medloom dedup` (which marks the training copy out) the plan is clean."""
    from medloom.cg.run import current_copies

    specs = []
    for s, (src, m, a, t) in enumerate(
        [
            ("target", "CT", "lung", "cancer"),
            ("covid", "CT", "lung", "covid-19"),
            ("xray", "X-ray", "lung", "cancer"),
            ("mri", "MRI", "brain", "disease"),
        ]
    ):
        for i in range(3):
            blocks = np.random.default_rng(50 * s + i).integers(0, 256, (8, 8), dtype=np.uint8)
            path = tmp_path / src / ("a", "b")[i % 2] / f"{src}{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.kron(blocks, np.ones((4, 4), np.uint8))).save(path)
        specs.append(dict(name=src, reader="imagefolder", path=src, modality=m, anatomy=a, task=t))
    shutil.copy(tmp_path / "target" / "a" / "target0.png", tmp_path / "covid" / "b" / "copied.png")
    loom, _ = run_ingest(write_recipe(tmp_path, specs))
    args = ["cg", "plan", loom, "--target", "CT,lung,cancer", "--out"]
    proc = cli(*args, tmp_path / "plan", "--json", check=False)
    assert proc.returncode == 0 and "train on copies of their target's test images" in proc.stderr, proc.stderr
    assert "medloom dedup" in proc.stderr
    exps = {e["name"]: e for e in json.loads(proc.stdout)}
    assert exps["all-related"]["copies"]["test_records"] == 1 and exps["all-related"]["copies"]["exact"] == 1
    assert exps["all-related"]["copies"]["examples"] == [["target/a/target0_png", "covid/b/copied_png"]]
    assert exps["all-unrelated"]["copies"]["test_records"] == 0
    strict = cli(*args, tmp_path / "strict", "--strict", check=False)
    assert strict.returncode == 1 and "nothing was written" in strict.stderr and not (tmp_path / "strict").exists()

    hit = lambda: [e["name"] for e in current_copies(loom, list(exps.values())) if e["copies"]["test_records"]]  # noqa: E731
    assert "all-related" in hit()  # what cg run checks before it trains
    cli("dedup", loom)
    assert hit() == []
    clean = cli(*args, tmp_path / "clean", "--strict", "--json", check=False)
    assert clean.returncode == 0 and "warning" not in clean.stderr
    assert all(e["copies"]["test_records"] == 0 for e in json.loads(clean.stdout))
