"""The one text rule every export follows: source caption, annotation caption, MAT sentence; `--text`,
`--require-text`, annotations in the sample JSON and the Parquet columns, and open_clip's sizes.json."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import cli, make_image, write_recipe


def samples(out: Path) -> dict[str, dict]:
    found = {}
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar:
                key, ext = m.name.split(".", 1)
                found.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return found


@pytest.fixture(scope="module")
def loom(tmp_path_factory):
    """A captioned CSV source (two rows without a caption) and a class-folder source with no captions."""
    tmp = tmp_path_factory.mktemp("texts")
    for i in range(4):
        make_image(tmp / "csv" / f"c{i}.png", seed=i)
    (tmp / "csv" / "labels.csv").write_text(
        "file,label,report\n"
        + "".join(f"c{i}.png,{('normal', 'effusion')[i % 2]},{'Small left effusion.' if i < 2 else ''}\n" for i in range(4))
    )
    for i in range(2):
        make_image(tmp / "folder" / "nodule" / f"f{i}.png", seed=10 + i)
    recipe = write_recipe(
        tmp,
        [
            dict(
                name="rep",
                reader="csv",
                path=str(tmp / "csv"),
                csv="labels.csv",
                image_column="file",
                label_column="label",
                caption_column="report",
                modality="X-ray",
                anatomy="chest",
                task="disease",
            ),
            dict(name="bare", reader="imagefolder", path=str(tmp / "folder"), modality="CT", anatomy="lung", task="disease"),
        ],
    )
    cli("ingest", recipe, "-q")
    return tmp / "loom"


def test_auto_text_is_never_empty_and_says_where_it_came_from(loom, tmp_path):
    out = tmp_path / "plain"
    cli("export", loom, "--out", out, "-q")  # before annotate: source captions, else the MAT sentence
    got = {k: (v["txt"].decode(), json.loads(v["json"])["text_source"]) for k, v in samples(out).items()}
    assert got["rep/c0_png"] == ("Small left effusion.", "source")
    assert got["rep/c2_png"] == ("An X-ray image of the chest.", "template")
    assert got["bare/nodule/f0_png"] == ("A CT image of the lung.", "template")
    sizes = json.loads((out / "sizes.json").read_text())  # what open_clip's get_dataset_size reads
    assert sizes == {p.name: sum(1 for k in samples_in(p)) for p in out.glob("*.tar")} and sum(sizes.values()) == 6
    cli("annotate", loom, "-q")
    out = tmp_path / "annotated"
    cli("export", loom, "--out", out, "-q")
    got = {k: (v["txt"].decode(), json.loads(v["json"])) for k, v in samples(out).items()}
    assert got["rep/c0_png"][0] == "Small left effusion."  # the source's own words win
    text, meta = got["rep/c3_png"]
    assert meta["text_source"] == "annotation" and text == meta["annotation"]["caption"] and "effusion" in text
    assert meta["annotation"]["questions"] and meta["annotation"]["questions"][0]["kind"] == "multiple-choice"
    assert set(got["bare/nodule/f0_png"][1]["annotation"]) == {"caption", "caption_source", "roi_text", "questions"}


def samples_in(shard: Path) -> set[str]:
    with tarfile.open(shard) as tar:
        return {m.name.split(".", 1)[0] for m in tar}


def test_text_modes_and_require_text(loom, tmp_path):
    cli("annotate", loom, "-q")
    out = tmp_path / "source"
    report = json.loads(cli("export", loom, "--out", out, "--text", "source", "--require-text", "--json").stdout)
    assert (report["exported"], report["filtered"]) == (2, 4)  # only the two rows with a report
    assert {v["txt"].decode() for v in samples(out).values()} == {"Small left effusion."}
    out = tmp_path / "both"
    cli("export", loom, "--out", out, "--text", "both", "-q")
    both = {k: v["txt"].decode() for k, v in samples(out).items()}
    assert both["rep/c0_png"].startswith("Small left effusion. ") and len(both["rep/c0_png"]) > 25
    out = tmp_path / "pq"
    cli("export", loom, "--format", "parquet", "--out", out, "--text", "annotation", "-q")
    table = pq.read_table(next(out.glob("*.parquet")), columns=["id", "text", "text_source", "annotation"]).to_pylist()
    assert all(r["text_source"] == "annotation" and r["text"] == r["annotation"]["caption"] for r in table)


def test_training_formats_describe_with_the_source_caption(loom, tmp_path):
    cli("annotate", loom, "-q")
    out = tmp_path / "llava"
    cli("export", loom, "--format", "llava", "--out", out, "-q")
    items = {i["id"]: i for i in json.loads((out / "llava-train.json").read_text())}
    first = items["rep/c0_png"]["conversations"]
    assert first[0]["value"] == "<image>\nDescribe this image." and first[1]["value"] == "Small left effusion."
    assert items["rep/c3_png"]["conversations"][1]["value"] != "Small left effusion."  # the annotation's caption


@pytest.mark.parametrize("fmt", ["webdataset", "parquet"])
def test_the_dataset_card_loads_every_split_in_one_call(tmp_path, fmt):
    """`datasets.load_dataset(EXPORT_DIR)` reads the card's configs and features: every split in one call,
    even when a list field is empty throughout one split (which inference would type as null)."""
    import datasets
    import yaml

    for i in range(9):
        split = ("train", "val", "test")[i % 3]
        make_image(tmp_path / "data" / split / ("normal", "effusion")[i % 2] / f"x{i}.png", seed=i)
    (tmp_path / "boxes").mkdir()
    for i in range(3):
        make_image(tmp_path / "boxes" / f"b{i}.png", seed=20 + i)
    (tmp_path / "boxes" / "b.csv").write_text(
        "file,label,x0,y0,x1,y1\n" + "".join(f"b{i}.png,nodule,2,2,20,20\n" for i in range(3))
    )
    recipe = write_recipe(
        tmp_path,
        [
            dict(
                name="cxr",
                reader="imagefolder",
                path=str(tmp_path / "data"),
                modality="X-ray",
                anatomy="chest",
                task="disease",
                license="CC BY 4.0",
            ),
            dict(
                name="box",
                reader="csv",
                path=str(tmp_path / "boxes"),
                csv="b.csv",
                image_column="file",
                label_column="label",
                box_columns={"xmin": "x0", "ymin": "y0", "xmax": "x1", "ymax": "y1"},
                modality="CT",
                anatomy="lung",
                task="lesion detection",
                license="CC BY 4.0",
                split="train",
            ),
        ],
    )
    cli("ingest", recipe, "-q")
    out = tmp_path / fmt
    cli("export", tmp_path / "loom", "--format", fmt, "--out", out, "-q")
    card = (out / "README.md").read_text()
    header = yaml.safe_load(card.split("---\n")[1])
    assert [d["split"] for d in header["configs"][0]["data_files"]] == ["test", "train", "val"]
    assert header["license"] == "cc-by-4.0" and header["size_categories"] == ["n<1K"]
    assert set(header["task_categories"]) == {"image-classification", "object-detection"}
    assert "| box | CC BY 4.0 | 3 |" in card and "## Quarantine" in card
    loaded = datasets.load_dataset(str(out))
    assert {k: v.num_rows for k, v in loaded.items()} == {"train": 6, "val": 3, "test": 3}
    rois = loaded["val"].features["json"]["rois"] if fmt == "webdataset" else loaded["val"].features["rois"]
    assert "bbox" in str(rois)  # declared, though no val record has a box
    row = loaded["train"].filter(lambda r: (r["json"] if fmt == "webdataset" else r)["source"] == "box")[0]
    first = (row["json"] if fmt == "webdataset" else row)["rois"][0]
    assert first["label"] == "nodule"


@pytest.mark.parametrize("fmt", ["parquet", "webdataset"])
def test_croissant_validates_and_reads(tmp_path, fmt):
    import mlcroissant as mlc

    for i in range(6):
        make_image(tmp_path / "data" / ("train", "test")[i % 2] / ("normal", "effusion")[i % 3 % 2] / f"x{i}.png", seed=i)
    recipe = write_recipe(
        tmp_path,
        [
            dict(
                name="cxr",
                reader="imagefolder",
                path=str(tmp_path / "data"),
                modality="X-ray",
                anatomy="chest",
                task="disease",
                license="CC BY 4.0",
            )
        ],
    )
    cli("ingest", recipe, "-q")
    out = tmp_path / fmt
    cli("export", tmp_path / "loom", "--format", fmt, "--out", out, "-q")
    doc = json.loads((out / "croissant.json").read_text())
    assert doc["conformsTo"] == "http://mlcommons.org/croissant/1.1"
    assert doc["license"] == "https://creativecommons.org/licenses/by/4.0/"
    assert all(
        k in doc
        for k in (
            "rai:dataCollection",
            "rai:dataPreprocessingProtocol",
            "rai:dataAnnotationProtocol",
            "rai:machineAnnotationTools",
            "rai:personalSensitiveInformation",
            "rai:dataLimitations",
        )
    )
    dataset = mlc.Dataset(jsonld=out / "croissant.json")  # raises on any validation error
    assert dataset.metadata.record_sets[0].name == "samples"
    if fmt == "parquet":
        records = list(dataset.records("samples"))
        assert len(records) == 6
        assert {r["samples/split"].decode() for r in records} == {"train", "test"}


def test_masks_match_the_exported_image(tmp_path):
    """ROI masks (COCO RLE) refer to the exported image's size: pycocotools decodes them to the source mask
    resized as the image was."""
    import numpy as np
    from PIL import Image
    from pycocotools import mask as coco_mask

    (tmp_path / "seg" / "masks").mkdir(parents=True)
    truth = {}
    for i in range(3):
        make_image(tmp_path / "seg" / "images" / f"s{i}.png", size=(120, 90), seed=i)
        m = np.zeros((90, 120), np.uint8)
        m[10 + i : 60, 20 : 70 + 5 * i] = 255
        m[70:80, 90:115] = 255
        Image.fromarray(m).save(tmp_path / "seg" / "masks" / f"s{i}.png")
        truth[f"seg/images/s{i}_png"] = m
    cli(
        "ingest",
        write_recipe(
            tmp_path,
            [
                dict(
                    name="seg",
                    reader="masks",
                    path=str(tmp_path / "seg"),
                    modality="microscopy",
                    anatomy="cell",
                    task="cell segmentation",
                )
            ],
        ),
        "-q",
    )
    for max_side, fmt in ((40, "webdataset"), (None, "webdataset"), (40, "parquet")):
        out = tmp_path / f"out{max_side}{fmt}"
        cli(
            "export", tmp_path / "loom", "--format", fmt, "--out", out, "-q", *(["--max-side", str(max_side)] if max_side else [])
        )
        if fmt == "webdataset":
            metas = [json.loads(v["json"]) for v in samples(out).values()]
        else:
            metas = pq.read_table(next(out.glob("*.parquet")), columns=["id", "rois", "image_width", "image_height"]).to_pylist()
        for meta in metas:
            w, h = meta["image_width"], meta["image_height"]
            assert (w, h) == ((40, 30) if max_side else (120, 90))
            union = np.zeros((h, w), bool)
            for roi in meta["rois"]:
                rle = coco_mask.frPyObjects({"counts": list(roi["rle"]), "size": [h, w]}, h, w)
                union |= coco_mask.decode(rle).astype(bool)
            expected = np.asarray(Image.fromarray(truth[meta["id"]]).resize((w, h), Image.Resampling.BOX)) >= 128
            assert (union == expected).mean() > 0.99 and union.sum() > 0


def test_llamafactory_entries_and_absolute_paths(loom, tmp_path):
    """The dataset_info.json entry per split is named after the recipe, names a file that exists, and its images
    resolve from the folder (LLaMA-Factory's dataset_dir and media_dir); with --absolute-paths from anywhere."""
    from PIL import Image

    cli("annotate", loom, "-q")
    out = tmp_path / "lf"
    cli("export", loom, "--format", "sharegpt", "--out", out, "-q")
    info = json.loads((out / "dataset_info.json").read_text())
    assert list(info) == ["test_train"]
    entry = info["test_train"]
    assert entry["formatting"] == "sharegpt" and entry["columns"] == {"messages": "messages", "images": "images"}
    items = json.loads((out / entry["file_name"]).read_text())
    for item in items:  # what LLaMA-Factory's sharegpt converter requires of each item
        roles = [m["role"] for m in item["messages"]]
        assert roles[::2] == ["user"] * (len(roles) // 2) and roles[1::2] == ["assistant"] * (len(roles) // 2)
        assert sum(m["content"].count("<image>") for m in item["messages"]) == len(item["images"]) == 1
        Image.open(out / item["images"][0]).verify()
    absolute = tmp_path / "abs"
    cli("export", loom, "--format", "sharegpt", "--out", absolute, "--absolute-paths", "-q")
    items = json.loads((absolute / "sharegpt-train.json").read_text())
    assert all(Path(i["images"][0]).is_absolute() and Path(i["images"][0]).is_file() for i in items)
    cli("export", loom, "--format", "sharegpt", "--out", absolute, "--absolute-paths", "-q")  # rerun keeps images
    assert all(Path(i["images"][0]).is_file() for i in items)
