"""The trainers' readers: each `examples/train/` script's own `medloom export` line is run, and the export is
read by the rules of the code that trains or evaluates on it (open_clip's WebDataset pipeline and sizes.json,
LLaMA-Factory's dataset_info.json and sharegpt converter, ms-swift's preprocessor and loader, LLaVA's
LazySupervisedDataset, clip_benchmark's `build_wds_dataset`), on real images (BCCD blood cells with their
classes and boxes).

The trainers' own code runs where it is installed (`make consumers`; those tests skip otherwise): open_clip_torch
[training] 3.3.0 in MEDLOOM_OPEN_CLIP_VENV (default /tmp/venv-open_clip; it needs torchvision, which the project's
venv must not have) and ms-swift 4.x in MEDLOOM_SWIFT_VENV (default /tmp/venv-swift; 3.x too when its folder
ms-swift-3 holds a `pip install --target` of it). Scripts are run as written up to the trainer's command, which
is recorded instead of run (`run_script`)."""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CLI_ENV, cli, fixture_dir, rows, write_recipe
from PIL import Image

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "train"
CONSUMERS = Path(__file__).resolve().parent / "consumers"
IMAGE_KEYS = ("webp", "png", "jpg", "jpeg")
OPEN_CLIP_VENV = Path(os.environ.get("MEDLOOM_OPEN_CLIP_VENV", "/tmp/venv-open_clip"))
SWIFT_VENV = Path(os.environ.get("MEDLOOM_SWIFT_VENV", "/tmp/venv-swift"))


@pytest.fixture(scope="module")
def loom(tmp_path_factory) -> Path:
    """BCCD's cell classes (classification) and its Pascal VOC boxes (grounding), annotated, split by record."""
    tmp = tmp_path_factory.mktemp("trainers")
    recipe = write_recipe(
        tmp,
        [
            dict(
                name="cells",
                reader="imagefolder",
                path=str(fixture_dir("images", "bccd_imagefolder", "BCCD_cropped")),
                modality="microscopy",
                anatomy="blood",
                task="cell type",
                license="MIT",
            ),
            dict(
                name="boxes",
                reader="voc",
                path=str(fixture_dir("images", "bccd_voc")),
                modality="microscopy",
                anatomy="blood",
                task="cell detection",
                license="MIT",
            ),
        ],
        name="bccd",
    )
    cli("ingest", recipe, "-q")
    cli("annotate", tmp / "loom", "-q")
    cli("split", tmp / "loom", "--by", "record", "--val", "0.25", "--test", "0.25", "--seed", "1", "--json")
    return tmp / "loom"


def split_of(loom: Path) -> dict[str, str]:
    return {r["id"]: r["split"] for r in rows(loom, f"SELECT id, split FROM read_parquet('{loom}/splits/split.parquet')")}


def run_example(name: str, loom: Path, out: Path, **settings: str) -> list[str]:
    """The example's `medloom export` line with its LOOM and OUT, and its other variables at their defaults (or
    `settings`), run as written; returns its arguments."""
    script = (EXAMPLES / name).read_text()
    line = next(x for x in script.splitlines() if x.startswith("medloom export "))
    values = {**dict(re.findall(r"^(\w+)=\$\{\1:-([^}]*)\}$", script, re.M)), **settings, "LOOM": str(loom), "OUT": str(out)}
    args = [re.sub(r"\$(\w+)", lambda m: values[m.group(1)], a) for a in shlex.split(line)]
    cli(*args[1:])
    return args


def run_script(
    name: str, trainer: str, tmp: Path, *args: Path | str, python: Path | None = None, **env: str
) -> tuple[list[str], dict[str, str]]:
    """The example script run as written by bash, with `medloom` this checkout's and `python` the given one (or
    this one), except that its trainer's command (`trainer`) is recorded instead of run: returns the arguments it
    was given and its environment."""
    script = (EXAMPLES / name).read_text()
    assert script.count(trainer) == 1, f"{name} runs {trainer!r} once"
    tools = tmp / "bin"
    tools.mkdir(exist_ok=True)
    (tools / "medloom").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m medloom.cli "$@"\n')
    (tools / "record-trainer").write_text(
        f"#!{sys.executable}\nimport json, os, sys\njson.dump({{'argv': "
        "sys.argv[1:], 'env': dict(os.environ)}, open(os.environ['TRAINER_CALL'], 'w'))\n"
    )
    for tool in tools.iterdir():
        tool.chmod(0o755)
    call = tmp / "trainer-call.json"
    python_dir = Path(python or sys.executable).parent
    proc = subprocess.run(
        ["bash", "-c", script.replace(trainer, str(tools / "record-trainer")), str(EXAMPLES / name), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**CLI_ENV, "PATH": f"{tools}:{python_dir}:/usr/bin:/bin", "TRAINER_CALL": str(call), **env},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recorded = json.loads(call.read_text())
    return recorded["argv"], recorded["env"]


def load_example_module(name: str):
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), EXAMPLES / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shard_pattern(out: Path, split: str) -> str:
    """The brace pattern open_clip.sh builds from the shards present."""
    last = len(list(out.glob(f"{split}-*.tar"))) - 1
    return f"{out}/{split}-{{000000..{last:06d}}}.tar"


def test_open_clip_trains_from_the_shard_pattern_alone(loom, tmp_path):
    import braceexpand
    import webdataset as wds

    out = tmp_path / "wds"
    run_example("open_clip.sh", loom, out)
    assigned = split_of(loom)
    for split in ("train", "val"):
        urls = list(braceexpand.braceexpand(shard_pattern(out, split)))
        assert all(Path(u).is_file() for u in urls)
        # open_clip's get_dataset_size: sizes.json in the folder of the first shard, summed over the shards
        sizes = json.loads((Path(urls[0]).parent / "sizes.json").read_text())
        total = sum(int(sizes[os.path.basename(u)]) for u in urls)
        # its pipeline: keep samples with an image key and a text key, decode RGB, rename to image/text
        seen = 0
        for sample in (
            wds.WebDataset(urls, shardshuffle=False)
            .select(lambda s: any(k in s for k in ("jpg", "png", "jpeg", "webp")) and "txt" in s)
            .decode("pilrgb")
            .rename(image="jpg;png;jpeg;webp", text="txt", key="__key__", meta="json")
        ):
            assert sample["image"].mode == "RGB" and sample["text"].strip()
            assert assigned[sample["key"]] == split
            # the sample JSON holds the same caption (open_clip 3.3.0 itself reads only .txt)
            assert sample["meta"]["text"] == sample["text"]
            seen += 1
        assert seen == total > 0


def open_clip_options(argv: list[str]) -> argparse.Namespace:
    """The options of open_clip_train's parser (open_clip_train/params.py, 3.3.0) that say which shards the
    workers read and in what batches."""
    parser = argparse.ArgumentParser()
    for option in ("--train-data", "--val-data", "--dataset-type"):
        parser.add_argument(option)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    return parser.parse_known_args(argv)[0]


def test_open_clip_example_gives_each_worker_a_shard_and_a_batch(loom, tmp_path):
    """open_clip_train 3.3.0's get_wds_dataset (open_clip_train/data.py) asserts `number of shards must be >= total
    workers` and deals the shuffled shards to the workers (split_by_worker: worker i reads shards i, i+W, ...); a
    worker whose shards hold less than one batch hangs the run. The example used to export one shard per 5,000
    samples and ask for 2 workers: any loom under 5,000 training samples failed. Now it balances the shards to
    its WORKERS and takes from sizes.json the most workers that each get a batch, in every shard order."""
    import braceexpand

    out = tmp_path / "oc"
    argv, _ = run_script("open_clip.sh", "python -m open_clip_train.main", tmp_path, loom, out, WORKERS="2", BATCH="2")
    opts = open_clip_options(argv)
    assert opts.dataset_type == "webdataset" and (opts.workers, opts.batch_size) == (2, 2)
    sizes = json.loads((out / "sizes.json").read_text())
    urls = list(braceexpand.braceexpand(opts.train_data))
    counts = [sizes[os.path.basename(u)] for u in urls]
    assert len(urls) >= opts.workers  # open_clip's assertion
    assert max(counts) - min(counts) <= 1 and sum(counts) == 6  # equal shards of the 6 training records
    for order in itertools.permutations(counts):
        assert all(sum(order[w :: opts.workers]) >= opts.batch_size for w in range(opts.workers))
    assert "train: 2 shard(s) of 3 to 3 samples, balanced for 2 worker(s)" in cli("verify", out).stderr
    # fewer workers when the shards cannot give each a batch, and a clear refusal when not even one can
    workers = load_example_module("open_clip_workers.py")
    assert workers.choose_workers([3, 3], 2, 4) == 1 and workers.choose_workers([3, 3], 2, 7) == 0
    assert workers.choose_workers([5000, 5000, 10], 3, 64) == 1  # a small last shard: its worker would hang
    assert workers.choose_workers([1250] * 8, 4, 64) == 4 and workers.choose_workers([1250] * 8, 16, 64) == 8
    proc = subprocess.run(
        [sys.executable, EXAMPLES / "open_clip_workers.py", out / "sizes.json", "--workers", "2", "--batch-size", "64"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "the train shards hold 6 samples in all, less than one batch of 64" in proc.stderr


def test_open_clip_own_loader_gives_every_batch_it_counts(loom, tmp_path):
    """open_clip_train 3.3.0's own parser and data loaders (with its webdataset 0.2.x) on the example's command
    line: every epoch gives the batches open_clip counted, with real worker processes, and the validation split
    is read whole."""
    import braceexpand

    python = OPEN_CLIP_VENV / "bin" / "python"
    if not python.is_file():
        pytest.skip(f"no open_clip_torch[training] venv at {OPEN_CLIP_VENV} (`make consumers`)")
    out = tmp_path / "oc"
    argv, _ = run_script("open_clip.sh", "python -m open_clip_train.main", tmp_path, loom, out, WORKERS="2", BATCH="2")
    proc = subprocess.run(
        [str(python), CONSUMERS / "open_clip_epochs.py", *argv], capture_output=True, text=True, timeout=300, env=CLI_ENV
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    sizes = json.loads((out / "sizes.json").read_text())
    val = sum(sizes[os.path.basename(u)] for u in braceexpand.braceexpand(open_clip_options(argv).val_data))
    assert result["workers"] == 2 and result["val_samples"] == val > 0
    for epoch in result["epochs"]:  # 6 samples in batches of 2: 3, rounded up to a multiple of the 2 workers
        assert epoch["batches"] == epoch["counted"] == 4 and set(epoch["sizes"]) == {2}


def test_llamafactory_reads_every_entry(loom, tmp_path):
    out = tmp_path / "sharegpt"
    run_example("llamafactory.sh", loom, out)
    info = json.loads((out / "dataset_info.json").read_text())
    assert sorted(info) == ["bccd_test", "bccd_train", "bccd_val"]  # named after the recipe, one per split
    assigned = split_of(loom)
    for name, entry in info.items():
        assert entry["formatting"] == "sharegpt" and entry["columns"] == {"messages": "messages", "images": "images"}
        tags = entry["tags"]
        items = json.loads((out / entry["file_name"]).read_text())  # dataset_dir/file_name
        assert items
        for item in items:
            messages = item[entry["columns"]["messages"]]
            # the sharegpt converter: user/assistant alternate from the first turn, an even number of turns
            assert len(messages) % 2 == 0 and messages
            for i, m in enumerate(messages):
                assert m[tags["role_tag"]] == (tags["user_tag"], tags["assistant_tag"])[i % 2]
                assert isinstance(m[tags["content_tag"]], str) and m[tags["content_tag"]]
            images = item[entry["columns"]["images"]]
            # the mm plugin: as many <image> placeholders as images; images found under media_dir
            assert sum(m["content"].count("<image>") for m in messages) == len(images) == 1
            Image.open(out / images[0]).verify()
            assert assigned[item["id"]] == name.rsplit("_", 1)[1] == item["split"]


def test_llamafactory_entries_merged_into_another_dataset_info(loom, tmp_path):
    """docs/export.md: to merge the export's entries into another dataset_info.json, export with --absolute-paths.
    LLaMA-Factory 0.9.5 opens an entry's file at os.path.join(dataset_dir, file_name) (llamafactory/data/loader.py,
    _load_single_dataset) and its images at os.path.join(media_dir, image) (data/converter.py; media_dir defaults
    to dataset_dir), so both must hold from another dataset_dir; file_name used to stay relative."""
    out = tmp_path / "sharegpt"
    script = (EXAMPLES / "llamafactory.sh").read_text()
    assert "export with --absolute-paths" in script
    args = run_example("llamafactory.sh", loom, out)
    cli(*args[1:], "--absolute-paths", "--overwrite")
    exported = json.loads((out / "dataset_info.json").read_text())
    dataset_dir = tmp_path / "my_data"
    dataset_dir.mkdir()
    (dataset_dir / "mine.json").write_text("[]")
    merged = {"mine": {"file_name": "mine.json"}, **exported}
    (dataset_dir / "dataset_info.json").write_text(json.dumps(merged))
    assert sorted(exported) == ["bccd_test", "bccd_train", "bccd_val"]
    for name in exported:
        entry = json.loads((dataset_dir / "dataset_info.json").read_text())[name]
        local_path = os.path.join(dataset_dir, entry["file_name"])
        assert os.path.isfile(local_path), f"{name}: {local_path} not found"
        for item in json.loads(Path(local_path).read_text()):
            for image in item[entry["columns"]["images"]]:
                Image.open(os.path.join(dataset_dir, image)).verify()
                assert item["split"] == name.rsplit("_", 1)[1]


# ms-swift's flag for the tuner: `train_type` in 3.x (3.12.6 swift/llm/argument/base_args/base_args.py), `tuner_type`
# in 4.x (4.6.0 swift/arguments/base_args/base_args.py; 4.6.0 has no `train_type`, and its pipelines/base.py
# _parse_args raises ValueError on any argument its parser did not take)
SWIFT_TUNER_FLAG = {3: "--train_type", 4: "--tuner_type"}


def test_swift_example_takes_the_tuner_flag_of_the_installed_version(loom, tmp_path):
    out = tmp_path / "swift"
    for version in ("3.12.6", "4.6.0"):  # what importlib.metadata finds installed (a dist-info of that version)
        site = tmp_path / version
        (site / f"ms_swift-{version}.dist-info").mkdir(parents=True)
        (site / f"ms_swift-{version}.dist-info" / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: ms-swift\nVersion: {version}\n"
        )
        argv, env = run_script("swift.sh", "swift sft", tmp_path, loom, out, PYTHONPATH=str(site))
        flag = SWIFT_TUNER_FLAG[int(version.split(".")[0])]
        other = ({*SWIFT_TUNER_FLAG.values()} - {flag}).pop()
        assert argv[argv.index(flag) + 1] == "lora" and other not in argv
        assert argv[argv.index("--dataset") + 1] == str(out / "swift-train.jsonl")
        assert env["ROOT_IMAGE_DIR"] == str(out)


def test_swift_example_command_line_parses_with_ms_swift(loom, tmp_path):
    """The installed ms-swift's own `swift sft` parser takes every argument the example passes (4.x, and 3.x when
    the venv holds it)."""
    python = SWIFT_VENV / "bin" / "python"
    if not python.is_file():
        pytest.skip(f"no ms-swift venv at {SWIFT_VENV} (`make consumers`)")
    out = tmp_path / "swift"
    older = SWIFT_VENV / "ms-swift-3"
    majors = []
    for extra in [{}] + ([{"PYTHONPATH": str(older)}] if older.is_dir() else []):
        argv, _ = run_script("swift.sh", "swift sft", tmp_path, loom, out, python=python, **extra)
        proc = subprocess.run(
            [str(python), CONSUMERS / "swift_args.py", *argv],
            capture_output=True,
            text=True,
            timeout=300,
            env={**CLI_ENV, **extra},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads(proc.stdout.splitlines()[-1])
        assert result["remaining"] == [], result  # ms-swift raises ValueError: remaining_argv
        assert result["tuner"] == "lora" and result["dataset"] == [str(out / "swift-train.jsonl")]
        assert result["val_dataset"] == [str(out / "swift-val.jsonl")]
        majors.append(int(result["version"].split(".")[0]))
    assert majors[0] >= 4


def test_swift_reads_every_line(loom, tmp_path):
    import datasets

    out = tmp_path / "swift"
    run_example("swift.sh", loom, out)
    assigned = split_of(loom)
    grounding = 0
    for path in sorted(out.glob("swift-*.jsonl")):
        split = path.stem.split("-", 1)[1]
        # ms-swift loads JSONL with HF datasets' json builder
        loaded = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf"))
        assert len(loaded) == len(path.read_text().splitlines())
        for line in path.read_text().splitlines():
            row = json.loads(line)
            assert assigned[row["id"]] == split == row["split"]
            # RowPreprocessor._check_messages: messages present, known roles, content not None
            assert row["messages"]
            for m in row["messages"]:
                assert set(m) <= {"role", "content", "loss", "loss_scale"}
                assert m["role"] in {"system", "user", "assistant"} and m["content"] is not None
            text = "".join(m["content"] for m in row["messages"])
            assert text.count("<image>") == len(row["images"]) == 1
            # ROOT_IMAGE_DIR=OUT: relative image paths resolve from the export folder
            Image.open(os.path.join(out, row["images"][0])).verify()
            objects = row.get("objects")
            if objects is None:
                assert "<ref-object>" not in text and "<bbox>" not in text
                continue
            # _check_objects and the template: one ref per <ref-object>, one box per <bbox>, boxes of 2 or 4
            assert text.count("<ref-object>") == len(objects["ref"]) and text.count("<bbox>") == len(objects["bbox"])
            assert objects["bbox_type"] in ("real", "norm1")
            for box in objects["bbox"]:
                assert len(box) == 4 and 0 <= box[0] <= box[2] <= 1 and 0 <= box[1] <= box[3] <= 1
            grounding += len(objects["bbox"])
    assert grounding > 0  # BCCD's single white cell per image is asked for


def test_llava_reads_every_item(loom, tmp_path):
    out = tmp_path / "llava"
    args = run_example("llava.sh", loom, out)
    script = (EXAMPLES / "llava.sh").read_text()
    data_path = re.search(r'--data_path "\$OUT/([^"]+)"', script).group(1)
    image_folder = out  # --image_folder "$OUT"
    assert "--format" in args and data_path == "llava-train.json"
    items = json.load(open(out / data_path))
    assigned = split_of(loom)
    for item in items:
        # LazySupervisedDataset: 'image' joined to image_folder and opened as RGB; conversations human/gpt
        Image.open(os.path.join(image_folder, item["image"])).convert("RGB")
        turns = item["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert turns[0]["value"].startswith("<image>\n")
        assert sum(t["value"].count("<image>") for t in turns) == 1
        assert assigned[item["id"]] == "train" == item["split"]


def test_clip_benchmark_reads_classification_and_retrieval(loom, tmp_path):
    import webdataset as wds

    from medloom.vocab.words import finding

    out = tmp_path / "cb"
    run_example("clip_benchmark.sh", loom, out)
    labels = {r["id"]: r["labels"] for r in rows(loom, "SELECT id, labels FROM records")}
    assigned = split_of(loom)

    def dataset(data_dir: Path, split: str, label_type: str):
        """clip_benchmark's build_wds_dataset, as it reads a local folder."""
        nshards = int((data_dir / split / "nshards.txt").read_text())
        pattern = str(data_dir / split / f"{{0..{nshards - 1}}}.tar")
        return (
            wds.WebDataset(pattern, nodesplitter=lambda src: src, shardshuffle=False)
            .decode(wds.autodecode.ImageHandler("pil", extensions=list(IMAGE_KEYS)))
            .to_tuple(list(IMAGE_KEYS), label_type, "__key__")
        )

    cells = out / "classification" / "cells"
    assert (cells / "dataset_type.txt").read_text().strip() == "classification"
    classes = [c.strip() for c in (cells / "classnames.txt").read_text().splitlines()]
    templates = [t.strip() for t in (cells / "zeroshot_classification_templates.txt").read_text().splitlines()]
    assert len(classes) == 5 and all("{c}" in t for t in templates)
    assert templates[0].format(c=classes[0]) == f"a microscopy image of blood showing {classes[0]}."
    seen = 0
    for split in ("train", "val", "test"):
        for image, cls, key in dataset(cells, split, "cls"):
            assert isinstance(cls, int) and classes[cls] == finding(labels[key][0])
            assert assigned[key] == split and image.size[0] > 0
            seen += 1
    assert seen == 10  # every cell image has one label
    assert not (out / "classification" / "boxes").exists()  # detection images carry no single label
    retrieval = out / "retrieval"
    assert (retrieval / "dataset_type.txt").read_text().strip() == "retrieval"
    n = 0
    for split in ("train", "val", "test"):
        for image, text, key in dataset(retrieval, split, "txt"):
            assert image.size[0] > 0 and text.splitlines() and all(t.strip() for t in text.splitlines())
            assert assigned[key] == split
            n += 1
    assert n == len(labels)
    assert "clip-benchmark, 6 shard(s), 24 samples: ok" in cli("verify", out).stdout  # 10 cells, 14 texts
    (cells / "test" / "nshards.txt").write_text("2\n")
    proc = cli("verify", out, check=False)
    assert proc.returncode == 1 and "nshards.txt says 2" in proc.stdout + proc.stderr
