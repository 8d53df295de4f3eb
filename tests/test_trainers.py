"""The trainers' readers: each `examples/train/` script's own `medloom export` line is run, and the export is
read by the rules of the code that trains or evaluates on it (open_clip's WebDataset pipeline and sizes.json,
LLaMA-Factory's dataset_info.json and sharegpt converter, ms-swift's preprocessor and loader, LLaVA's
LazySupervisedDataset, clip_benchmark's `build_wds_dataset`), on real images (BCCD blood cells with their
classes and boxes)."""

from __future__ import annotations

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
IMAGE_KEYS = ("webp", "png", "jpg", "jpeg")


@pytest.fixture(scope="module")
def loom(tmp_path_factory) -> Path:
    """BCCD's cell classes (classification) and its Pascal VOC boxes (grounding), annotated, split by record."""
    tmp = tmp_path_factory.mktemp("trainers")
    recipe = write_recipe(tmp, [
        dict(name="cells", reader="imagefolder", path=str(fixture_dir("images", "bccd_imagefolder", "BCCD_cropped")),
             modality="microscopy", anatomy="blood", task="cell type", license="MIT"),
        dict(name="boxes", reader="voc", path=str(fixture_dir("images", "bccd_voc")), modality="microscopy",
             anatomy="blood", task="cell detection", license="MIT"),
    ], name="bccd")
    cli("ingest", recipe, "-q")
    cli("annotate", tmp / "loom", "-q")
    cli("split", tmp / "loom", "--by", "record", "--val", "0.25", "--test", "0.25", "--seed", "1", "--json")
    return tmp / "loom"


def split_of(loom: Path) -> dict[str, str]:
    return {r["id"]: r["split"] for r in rows(loom, f"SELECT id, split FROM read_parquet('{loom}/splits/split.parquet')")}


def run_example(name: str, loom: Path, out: Path) -> list[str]:
    """The example's `medloom export` line with its LOOM and OUT, run as written; returns its arguments."""
    script = (EXAMPLES / name).read_text()
    line = next(x for x in script.splitlines() if x.startswith("medloom export "))
    args = [a.replace("$LOOM", str(loom)).replace("$OUT", str(out)) for a in shlex.split(line)]
    cli(*args[1:])
    return args


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
        for sample in (wds.WebDataset(urls, shardshuffle=False)
                       .select(lambda s: any(k in s for k in ("jpg", "png", "jpeg", "webp")) and "txt" in s)
                       .decode("pilrgb").rename(image="jpg;png;jpeg;webp", text="txt", key="__key__", meta="json")):
            assert sample["image"].mode == "RGB" and sample["text"].strip()
            assert assigned[sample["key"]] == split
            # open_clip 3.x --json-text-key text: the same caption from the sample JSON
            assert sample["meta"]["text"] == sample["text"]
            seen += 1
        assert seen == total > 0


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
    """The README: to merge the export's entries into another dataset_info.json, export with --absolute-paths.
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

    from medloom.annotate.captions import finding

    out = tmp_path / "cb"
    run_example("clip_benchmark.sh", loom, out)
    labels = {r["id"]: r["labels"] for r in rows(loom, "SELECT id, labels FROM records")}
    assigned = split_of(loom)

    def dataset(data_dir: Path, split: str, label_type: str):
        """clip_benchmark's build_wds_dataset, as it reads a local folder."""
        nshards = int((data_dir / split / "nshards.txt").read_text())
        pattern = str(data_dir / split / f"{{0..{nshards - 1}}}.tar")
        return (wds.WebDataset(pattern, nodesplitter=lambda src: src, shardshuffle=False)
                .decode(wds.autodecode.ImageHandler("pil", extensions=list(IMAGE_KEYS)))
                .to_tuple(list(IMAGE_KEYS), label_type, "__key__"))

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
    proc = subprocess.run([sys.executable, "-m", "medloom.cli", "verify", str(out)], capture_output=True, text=True,
                          env=CLI_ENV)
    assert proc.returncode == 1 and "nshards.txt says 2" in proc.stdout + proc.stderr
