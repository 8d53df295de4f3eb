"""Export: WebDataset and Parquet shards read back by their own ecosystems, manifests, resume, verify."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import sys
import tarfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import cli, kill_when, make_image, rows, run_ingest, write_recipe
from PIL import Image

from medloom.export import ExportError, ExportOptions, balanced_ends, export, hf_features, read_export_manifest
from medloom.export.verify import verify
from medloom.imaging import phash_image, to_uint8, window_to_uint8
from medloom.sources.nifti import display


def build_mixed(root: Path) -> Path:
    """Five readers: class folders with splits, masks (ROIs with RLE), a captioned CSV, DICOM and NIfTI."""
    data = root / "data"
    for i in range(18):
        split = ("train", "val", "test")[i % 3]
        make_image(
            data / "cxr" / split / ("normal", "effusion")[i % 2] / f"c{i:03d}.png",
            size=(60, 40),
            seed=i,
            mode="L" if i % 4 == 0 else "RGB",
        )
    (data / "seg" / "masks").mkdir(parents=True)
    for i in range(4):
        make_image(data / "seg" / "images" / f"s{i}.png", size=(48, 48), seed=100 + i)
        mask = np.zeros((48, 48), np.uint8)
        mask[5 + i : 20 + i, 8:30] = 255
        if i % 2:
            mask[30:40, 30:44] = 255
        Image.fromarray(mask).save(data / "seg" / "masks" / f"s{i}.png")
    lines = ["file,finding,report"]
    for i in range(6):
        make_image(data / "reports" / f"r{i}.jpg", size=(90, 60), seed=200 + i)
        report = '"Small nodule, right upper lobe."' if i % 3 else ""  # quoted: the comma is the report's
        lines.append(f"r{i}.jpg,{('nodule', 'normal')[i % 2]},{report}")
    (data / "reports" / "labels.csv").write_text("\n".join(lines) + "\n")
    (data / "dicom").mkdir(parents=True)
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(pydicom.data.get_testdata_file(name), data / "dicom" / name)
    vol = (np.arange(20 * 24 * 6, dtype=np.float32).reshape(20, 24, 6) % 97) * 10
    (data / "nifti").mkdir()
    nib.save(nib.Nifti1Image(vol, np.diag([2.0, 2.0, 3.0, 1.0])), data / "nifti" / "v.nii.gz")
    return write_recipe(
        root,
        [
            dict(
                name="cxr",
                reader="imagefolder",
                path=str(data / "cxr"),
                modality="CXR",
                anatomy="chest",
                task="disease",
                license="CC BY 4.0",
            ),
            dict(
                name="seg",
                reader="masks",
                path=str(data / "seg"),
                modality="dermoscopy",
                anatomy="skin",
                task="lesion segmentation",
                mask_label="lesion",
                license="CC BY-NC 4.0",
            ),
            dict(
                name="reports",
                reader="csv",
                path=str(data / "reports"),
                csv="labels.csv",
                image_column="file",
                label_column="finding",
                caption_column="report",
                modality="CT",
                anatomy="lung",
                task="cancer",
            ),
            dict(name="dcm", reader="dicom", path=str(data / "dicom"), task="disease"),
            dict(name="vol", reader="nifti", path=str(data / "nifti"), modality="MRI", anatomy="brain", task="disease", stride=2),
        ],
    )


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    loom, reports = run_ingest(build_mixed(tmp_path_factory.mktemp("mixed")))
    assert sum(r.records for r in reports.values()) == 18 + 4 + 6 + 2 + 3
    return loom


def shards(folder: Path, split: str | None = None, ext: str = "tar") -> list[str]:
    return sorted(str(p) for p in folder.glob(f"{split or '*'}-*.{ext}"))


def catalog_by_id(loom: Path) -> dict[str, dict]:
    return {r["id"]: r for r in rows(loom, "SELECT * FROM records")}


def test_webdataset_export_reads_back_with_webdataset_and_hf(mixed, tmp_path):
    import datasets
    import webdataset as wds

    out = tmp_path / "wds"
    report = export(mixed, out, ExportOptions(max_side=32, shard_size=7), quiet=True)
    records = catalog_by_id(mixed)
    assert report.inputs == len(records) == report.exported + report.filtered + report.quarantined
    assert (report.filtered, report.quarantined) == (0, 0)
    assert {p.name for p in out.glob("*.tar")} >= {"train-000000.tar", "val-000000.tar", "test-000000.tar"}
    seen = {}
    for split in ("train", "val", "test"):
        for sample in wds.WebDataset(shards(out, split), shardshuffle=False).decode("pil"):
            meta, image = sample["json"], sample["jpg"]
            rec = records[sample["__key__"]]
            assert meta["split"] == split and meta["id"] == rec["id"]
            assert (meta["labels"], meta["modality"], meta["width"]) == (rec["labels"], rec["modality"], rec["width"])
            assert [v for r in meta["rois"] for v in r["bbox"]] == pytest.approx([v for r in rec["rois"] for v in r["bbox"]])
            assert max(image.size) <= 32 and (image.width, image.height) == (meta["image_width"], meta["image_height"])
            if max(rec["width"], rec["height"]) > 32:  # aspect ratio kept within rounding
                assert abs(image.width / image.height - rec["width"] / rec["height"]) < 0.1
            # the text rule: the source's caption, else (no annotations here) the MAT sentence; never empty
            assert sample["txt"] == meta["text"] and sample["txt"]
            assert meta["text_source"] == ("source" if rec["caption"] else "template")
            assert sample["txt"] == rec["caption"] if rec["caption"] else sample["txt"].startswith("A")
            seen[sample["__key__"]] = split
    assert set(seen) == set(records)
    for split in ("train", "val", "test"):  # one split at a time: types inferred from its first samples
        loaded = datasets.load_dataset(
            "webdataset", data_files={split: shards(out, split)}, split=split, cache_dir=str(tmp_path / "hf" / split)
        )
        assert sorted(loaded["__key__"]) == sorted(k for k, s in seen.items() if s == split)
        assert [len(e["json"]["rois"]) for e in loaded] == [len(records[k]["rois"]) for k in loaded["__key__"]]
    # all splits at once: datasets guesses types from one split only, so the export declares them
    loaded = datasets.load_dataset(
        "webdataset",
        data_files={s: shards(out, s) for s in ("train", "val", "test")},
        features=hf_features(out),
        cache_dir=str(tmp_path / "hf" / "all"),
    )
    assert {e["__key__"] for s in loaded for e in loaded[s]} == set(records)
    example = next(e for e in loaded["train"] if e["json"]["rois"])
    assert example["jpg"].size[0] <= 32 and example["json"]["rois"][0]["rle"]
    assert verify(out).ok, verify(out).problems


def write_voc(folder: Path, boxes: dict[str, list[tuple]], split: str) -> None:
    """A Pascal VOC folder: one image per name with its (label, x0, y0, x1, y1) boxes, all in `split`."""
    (folder / "Annotations").mkdir(parents=True)
    for i, (name, objects) in enumerate(boxes.items()):
        make_image(folder / "JPEGImages" / f"{name}.jpg", size=(64, 48), seed=i, fmt="JPEG")
        xml = "".join(
            f"<object><name>{label}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
            f"<ymax>{d}</ymax></bndbox></object>"
            for label, a, b, c, d in objects
        )
        (folder / "Annotations" / f"{name}.xml").write_text(f"<annotation><filename>{name}.jpg</filename>{xml}</annotation>")
    (folder / "ImageSets" / "Main").mkdir(parents=True)
    (folder / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(boxes) + "\n")


def test_one_split_loads_when_its_first_samples_have_no_grounding_box(tmp_path):
    """HF `datasets` types a WebDataset split from its first samples: when they had questions but no grounding box
    (`annotation.questions[].box` empty), `box` was typed null and the split failed to load ("Couldn't cast array of
    type double to null"). The lead records now fill the questions' lists too."""
    import datasets

    from medloom.annotate import AnnotateSettings, annotate

    names = [f"v{i:02d}" for i in range(9)]
    # the export's order is by md5(source/uri): the one image with a grounding question (its label unique in the
    # image) comes last, behind eight whose two boxes share a label (no grounding question)
    last = max(names, key=lambda n: hashlib.md5(f"cells/JPEGImages/{n}.jpg".encode()).hexdigest())
    write_voc(
        tmp_path / "voc",
        {n: [("rbc", 2, 2, 20, 20), ("rbc", 30, 10, 50, 40)] + ([("wbc", 22, 5, 40, 30)] if n == last else []) for n in names},
        "val",
    )
    loom, _ = run_ingest(
        write_recipe(
            tmp_path,
            [
                dict(
                    name="cells",
                    reader="voc",
                    path=str(tmp_path / "voc"),
                    modality="microscopy",
                    anatomy="blood",
                    task="cell detection",
                )
            ],
        )
    )
    annotate(loom, AnnotateSettings(seed=1), workers=1, quiet=True)
    out = tmp_path / "wds"
    export(loom, out, ExportOptions(), workers=1, quiet=True)
    loaded = datasets.load_dataset(
        "webdataset", data_files={"val": shards(out, "val")}, split="val", cache_dir=str(tmp_path / "hf")
    )
    boxes = [[q["box"] for q in e["json"]["annotation"]["questions"] if q["box"]] for e in loaded]
    assert len(loaded) == 9 and sum(map(len, boxes)) == 1 and any(boxes[:5])
    assert boxes[[e["__key__"] for e in loaded].index(f"cells/JPEGImages/{last}_jpg")] == [[0.344, 0.104, 0.625, 0.625]]
    assert verify(out).ok


def test_parquet_export_reads_with_duckdb_pandas_polars_and_hf(mixed, tmp_path):
    import datasets
    import duckdb
    import pandas as pd
    import polars as pl

    out = tmp_path / "pq"
    report = export(mixed, out, ExportOptions(format="parquet", image_format="png", shard_size=10), quiet=True)
    files = shards(out, ext="parquet")
    assert len(files) == report.shards and verify(out).ok
    con = duckdb.connect()
    n = con.execute(f"SELECT count(*) FROM read_parquet({files})").fetchone()[0]
    assert n == report.exported == len(pd.concat(pd.read_parquet(f) for f in files)) == pl.read_parquet(files).height
    rois = con.execute(f"SELECT rois FROM read_parquet({files}) WHERE id = 'seg/images/s1_png'").fetchone()[0]
    assert len(rois) == 2 and rois[0]["rle"] and rois[0]["label"] == "lesion"
    hf = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
    image = hf[0]["image"]
    assert isinstance(image, Image.Image) and image.size == (hf[0]["width"], hf[0]["height"])


def test_dicom_and_nifti_are_rendered_with_their_stored_window(mixed, tmp_path):
    out = tmp_path / "png"
    export(mixed, out, ExportOptions(image_format="png", where="source IN ('dcm', 'vol')"), quiet=True)
    records = catalog_by_id(mixed)
    data = mixed.parent / "data"
    samples = {}
    with tarfile.open(shards(out)[0]) as tar:
        for m in tar.getmembers():
            if m.name.endswith(".png"):
                samples[m.name[:-4]] = np.asarray(Image.open(io.BytesIO(tar.extractfile(m).read())))
    assert len(samples) == 2 + 3
    ct = next(r for r in records.values() if r["uri"] == "CT_small.dcm")  # a DICOM record's id is a pseudonym
    ds = pydicom.dcmread(data / "dicom" / "CT_small.dcm")
    hu = pydicom.pixels.apply_modality_lut(ds.pixel_array, ds)
    expected = window_to_uint8(hu, ct["render"]["window_center"], ct["render"]["window_width"])
    assert np.array_equal(samples[ct["id"]], expected)
    volume = nib.as_closest_canonical(nib.load(data / "nifti" / "v.nii.gz")).get_fdata(dtype=np.float32)
    rec = records["vol/v_nii_gz/00004"]
    expected = window_to_uint8(display(volume[:, :, 4]), rec["render"]["window_center"], rec["render"]["window_width"])
    assert np.array_equal(samples["vol/v_nii_gz/00004"], expected)
    for key, pixels in samples.items():  # the exported image is the one hashed at ingest
        assert phash_image(Image.fromarray(pixels)) == records[key]["phash"]


def test_16_bit_png_follows_the_documented_rule(tmp_path):
    values = np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50
    (tmp_path / "d" / "a").mkdir(parents=True)
    Image.fromarray(values).save(tmp_path / "d" / "a" / "x.png")
    loom, _ = run_ingest(
        write_recipe(
            tmp_path,
            [dict(name="u16", reader="imagefolder", path=str(tmp_path / "d"), modality="X-ray", anatomy="hand", task="level")],
        )
    )
    export(loom, tmp_path / "out", ExportOptions(image_format="png"), quiet=True)
    with tarfile.open(shards(tmp_path / "out")[0]) as tar:
        png = np.asarray(Image.open(io.BytesIO(tar.extractfile("u16/a/x_png.png").read())))
    assert png.dtype == np.uint8 and np.array_equal(png, to_uint8(values))


def test_keep_copies_files_byte_for_byte_when_it_can(mixed, tmp_path):
    export(mixed, tmp_path / "jpg", ExportOptions(image_format="keep", where="source = 'reports'"), quiet=True)
    with tarfile.open(shards(tmp_path / "jpg")[0]) as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".jpg")}
    assert got["reports/r1_jpg.jpg"] == (mixed.parent / "data" / "reports" / "r1.jpg").read_bytes()
    report = export(mixed, tmp_path / "mixed", ExportOptions(image_format="keep"), quiet=True)
    assert read_export_manifest(tmp_path / "mixed")["fields"][0] == "png"  # one image field in every sample
    with tarfile.open(shards(tmp_path / "mixed", "train")[0]) as tar:
        member = next(m for m in tar.getmembers() if m.name.startswith("cxr/") and m.name.endswith(".png"))
        source = mixed.parent / "data" / "cxr" / member.name[len("cxr/") :].replace("_png.png", ".png")
        assert tar.extractfile(member).read() == source.read_bytes()
    assert report.quarantined == 0


def test_shard_limits_names_and_split_counts(mixed, tmp_path):
    out = tmp_path / "small"
    report = export(mixed, out, ExportOptions(shard_size=4, max_side=24), quiet=True)
    manifest = read_export_manifest(out)
    for split, entry in manifest["splits"].items():
        assert [s["file"] for s in entry["shards"]] == [f"{split}-{i:06d}.tar" for i in range(len(entry["shards"]))]
        assert all(s["samples"] <= 4 for s in entry["shards"])
        assert sum(s["samples"] for s in entry["shards"]) == report.splits[split]
    limit = 12 * 1024
    out2 = tmp_path / "bytes"
    export(mixed, out2, ExportOptions(shard_bytes=limit, image_format="png"), quiet=True)
    for entry in read_export_manifest(out2)["splits"].values():
        for s in entry["shards"]:
            assert s["bytes"] == (out2 / s["file"]).stat().st_size
            assert s["bytes"] <= limit or s["samples"] == 1
    assert verify(out2).ok


def test_balanced_shards_split_each_split_equally_and_verify_checks_them(mixed, tmp_path):
    """--balance-shards N: equal shards (within one sample), the fewest within --shard-size, their number a
    multiple of N, so that N data-loader workers dealt whole shards read as much each; verify holds the shards to
    that plan."""
    assert balanced_ends(21, 2, 4) == [3, 7, 10, 14, 17, 21] and balanced_ends(3, 4, 5000) == [1, 2, 3]
    assert balanced_ends(10_000, 4, 5000) == [2500, 5000, 7500, 10_000] and balanced_ends(0, 2, 5) == []
    for fmt, ext in (("webdataset", "tar"), ("parquet", "parquet")):
        out = tmp_path / fmt
        report = export(mixed, out, ExportOptions(format=fmt, balance_shards=2, shard_size=4, max_side=16), quiet=True)
        held = {split: [s["samples"] for s in entry["shards"]] for split, entry in read_export_manifest(out)["splits"].items()}
        assert held == {"train": [3, 4, 3, 4, 3, 4], "val": [3, 3], "test": [3, 3]}, held
        assert report.exported == 33 and len(shards(out, ext=ext)) == 10
        checked = verify(out)
        assert checked.ok, checked.problems
        assert "train: 6 shard(s) of 3 to 4 samples, balanced for 2 worker(s) (--balance-shards 2)" in checked.notes
    export(mixed, tmp_path / "webdataset", ExportOptions(balance_shards=2, shard_size=4, max_side=16), quiet=True)
    with pytest.raises(ExportError, match="--overwrite"):  # another cut is another export
        export(mixed, tmp_path / "webdataset", ExportOptions(shard_size=4, max_side=16), quiet=True)
    # shards cut by --shard-size, in a manifest that says they were balanced: verify names the split and the plan
    out = tmp_path / "cut"
    export(mixed, out, ExportOptions(shard_size=4, max_side=16), quiet=True)
    manifest = read_export_manifest(out)
    manifest["settings"]["balance_shards"] = 2
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert "train: its shards hold [4, 4, 4, 4, 4, 1] samples, --balance-shards 2 plans [3, 4, 3, 4, 3, 4]" in "\n".join(
        verify(out).problems
    )
    with pytest.raises(ExportError, match="--balance-shards 0: give the number of data-loader workers"):
        export(mixed, tmp_path / "zero", ExportOptions(balance_shards=0), quiet=True)
    helped = cli("export", "--help")
    assert "--balance-shards N" in helped.stdout and "multiple of N" in helped.stdout
    wrong = cli("export", mixed, "--format", "llava", "--balance-shards", "2", "--out", tmp_path / "llava", check=False)
    assert wrong.returncode != 0 and "--format llava has none to balance" in wrong.stderr
    assert not (tmp_path / "llava").exists()


def test_where_filter_and_render_quarantine_are_counted(tmp_path):
    for i in range(6):
        make_image(tmp_path / "d" / ("a", "b")[i % 2] / f"{i}.png", seed=i)
    loom, _ = run_ingest(
        write_recipe(
            tmp_path,
            [dict(name="s", reader="imagefolder", path=str(tmp_path / "d"), modality="CXR", anatomy="chest", task="disease")],
        )
    )
    (tmp_path / "d" / "a" / "0.png").unlink()
    (tmp_path / "d" / "a" / "2.png").write_bytes(b"garbage")
    report = export(loom, tmp_path / "out", ExportOptions(where="'a' = ANY(labels) OR uri LIKE '%1.png'"), quiet=True)
    assert (report.inputs, report.exported, report.filtered, report.quarantined) == (6, 2, 2, 2)
    assert report.reasons == {"missing_file": 1, "changed_since_ingest": 1}  # its bytes differ from the ingested
    lines = [json.loads(x) for x in (tmp_path / "out" / "quarantine.jsonl").read_text().splitlines()]
    assert {x["record_id"] for x in lines} == {"s/a/0_png", "s/a/2_png"}
    with pytest.raises(ExportError, match="not a valid filter"):
        export(loom, tmp_path / "bad", ExportOptions(where="no_such_column = 1"), quiet=True)


def test_rerun_is_up_to_date_and_a_different_export_needs_overwrite(mixed, tmp_path):
    out = tmp_path / "o"
    export(mixed, out, ExportOptions(max_side=16), quiet=True)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    again = export(mixed, out, ExportOptions(max_side=16), quiet=True)
    assert again.up_to_date and again.shards_written == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")} == before
    with pytest.raises(ExportError, match="--overwrite"):
        export(mixed, out, ExportOptions(max_side=20), quiet=True)
    replaced = export(mixed, out, ExportOptions(max_side=20, overwrite=True), quiet=True)
    assert replaced.shards_written == replaced.shards and verify(out).ok


def test_two_workers_write_the_same_shards_as_one(mixed, tmp_path):
    one = export(mixed, tmp_path / "one", ExportOptions(max_side=24, shard_size=5), workers=1, quiet=True)
    two = export(mixed, tmp_path / "two", ExportOptions(max_side=24, shard_size=5), workers=2, quiet=True)
    assert one.shards == two.shards
    m1, m2 = read_export_manifest(tmp_path / "one"), read_export_manifest(tmp_path / "two")
    assert [s["sha256"] for e in m1["splits"].values() for s in e["shards"]] == [
        s["sha256"] for e in m2["splits"].values() for s in e["shards"]
    ]


def test_sigkill_mid_export_then_resume(tmp_path):
    for i in range(300):
        make_image(tmp_path / "d" / ("a", "b")[i % 2] / f"{i:04d}.png", size=(160, 120), seed=i)
    loom, _ = run_ingest(
        write_recipe(
            tmp_path,
            [dict(name="s", reader="imagefolder", path=str(tmp_path / "d"), modality="CXR", anatomy="chest", task="disease")],
        ),
        workers=2,
    )
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "medloom.cli",
        "export",
        str(loom),
        "--out",
        str(out),
        "--shard-size",
        "10",
        "--image-format",
        "png",
        "--workers",
        "1",
        "-q",
    ]
    kill_when(cmd, lambda: len(list(out.glob("train-*.tar"))) >= 4)
    done = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.tar")}
    assert not read_export_manifest(out)["complete"]
    result = cli(*cmd[3:-1], "--json")  # the resume: in this process
    summary = json.loads(result.stdout)
    assert summary["exported"] == 300 and summary["shards"] == 30
    assert 0 < summary["shards_written"] <= 30 - len(done) + 1
    for name, stamp in done.items():  # completed shards were not rewritten
        if name in {s["file"] for s in read_export_manifest(out)["splits"]["train"]["shards"]}:
            assert ((out / name).stat().st_ino, (out / name).stat().st_mtime_ns) == stamp
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    keys = []
    for path in shards(out):
        with tarfile.open(path) as tar:
            keys += [m.name.rsplit(".", 1)[0] for m in tar.getmembers() if m.name.endswith(".json")]
    assert len(keys) == len(set(keys)) == 300
    assert verify(out).ok


def test_verify_names_each_problem(mixed, tmp_path):
    out = tmp_path / "v"
    export(mixed, out, ExportOptions(max_side=16, shard_size=6), quiet=True)
    first, second = shards(out, "train")[:2]
    data = bytearray(Path(first).read_bytes())
    data[700] ^= 0xFF
    Path(first).write_bytes(bytes(data))
    os.truncate(second, 1024 * 3)
    shutil.copy(shards(out, "val")[0], out / "stray-000000.tar")
    problems = "\n".join(verify(out).problems)
    assert f"{Path(first).name}: sha256 differs" in problems
    assert f"{Path(second).name}: 3072 bytes, the manifest says" in problems
    assert "stray-000000.tar: a shard that the manifest does not list" in problems
    bad = tmp_path / "bad"
    bad.mkdir()
    with tarfile.open(bad / "x-000000.tar", "w") as tar:

        def add(name: str, payload: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))

        add("a.json", b'{"n": 1, "s": "x"}')
        add("b.json", b'{"n": "one", "s": null}')
        add("a.JPG", b"..")
        add("c.d.json", b'{"n": 2, "s": "y"}')
    problems = "\n".join(verify(bad).problems)
    assert "a.JPG: extension 'JPG' is not lowercase" in problems
    assert "key a is used again in this shard (its files are not adjacent)" in problems
    assert "b.json: json.s is null" in problems
    assert "n: number in one sample, str in another" in problems
    assert "sample b has fields ['json']" not in problems and "sample a has fields" in problems
    fixtures = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "webdataset"
    for shard in fixtures.glob("*.t*"):  # the webdataset library's own test shards follow the rules
        assert verify(shard).ok, verify(shard).problems


def test_cli_export_and_verify(mixed, tmp_path):
    out = tmp_path / "cli"
    run = cli("export", mixed, "--out", out, "--max-side", "16", "--shard-bytes", "1MB", "--where", "modality = 'X-ray'", "-q")
    assert "in 33 = exported 18 + filtered 15 + quarantined 0" in " ".join(run.stdout.split())
    ok = cli("verify", out, check=False)
    assert ok.returncode == 0 and ": ok" in ok.stdout
    (out / "train-000000.tar").write_bytes(b"")
    broken = cli("verify", out, check=False)
    assert broken.returncode == 1 and "train-000000.tar" in broken.stderr


def test_webdataset_json_and_parquet_columns_agree(mixed, tmp_path):
    """One field, one type, one missing-value rule: every sample's JSON equals its Parquet row, and the declared
    HF features are the same (phash as 16 hex digits, commercial_use as yes/no/unknown, -1 for a missing number,
    "" for missing text, never null)."""
    import tarfile

    import pyarrow.parquet as pq

    from medloom.export.card import parquet_features, webdataset_features

    wds_out, pq_out = tmp_path / "w", tmp_path / "p"
    export(mixed, wds_out, ExportOptions(format="webdataset"), quiet=True)
    export(mixed, pq_out, ExportOptions(format="parquet"), quiet=True)
    from_json = {}
    for shard in wds_out.glob("*.tar"):
        with tarfile.open(shard) as tar:
            for m in tar:
                if m.name.endswith(".json"):
                    from_json[m.name[:-5]] = json.loads(tar.extractfile(m).read())
    from_parquet = {}
    for shard in pq_out.glob("*.parquet"):
        for row in pq.read_table(shard).to_pylist():
            row.pop("image")
            from_parquet[row.pop("key")] = row
    assert from_json.keys() == from_parquet.keys() and len(from_json) == 33
    for key, meta in from_json.items():
        row = from_parquet[key]
        assert {k: row[k] for k in meta} == meta, key  # the same values, so the same types
        assert not any(v is None for v in row.values())
    values = list(from_json.values())
    assert {m["commercial_use"] for m in values} == {"yes", "no", "unknown"}
    assert all(re.fullmatch(r"[0-9a-f]{16}", m["phash"]) for m in values)
    assert any(m["render"]["axis"] == -1 for m in values) and any(m["render"]["axis"] >= 0 for m in values)
    assert any(m["patient_id"] == "" for m in values)
    manifest = read_export_manifest(wds_out)
    declared = webdataset_features(manifest["settings"], manifest["fields"][0], True)["json"]
    columns = parquet_features()
    assert {k: columns[k] for k in declared} == declared


def test_tar_members_are_the_bytes_tarfile_writes():
    """The shard writer builds tar headers itself (speed); the archive is byte for byte tarfile's, short ASCII
    names and the pax records of long and non-ASCII names alike, and reads back member by member."""
    from medloom.export.webdataset import tar_end, tar_sample

    rng = np.random.default_rng(0)
    samples = [
        (f"src/class{i % 3}/img{i:04d}_jpg", {"jpg": rng.bytes(int(rng.integers(0, 3000))), "json": b"{}"}) for i in range(40)
    ]
    samples += [
        ("k" * 97, {"png": b"x" * 512}),
        ("k" * 98, {"png": b""}),
        ("k" * 300, {"txt": b"long"}),
        ("src/caf\u00e9/\u80ba_png", {"png": b"\x89PNG", "txt": "\u80ba".encode()}),
    ]
    ours = b"".join(tar_sample(key, files) for key, files in samples)
    ours += tar_end(len(ours))
    reference = io.BytesIO()
    with tarfile.open(fileobj=reference, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for key, files in samples:
            for ext, data in files.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
    assert ours == reference.getvalue()
    with tarfile.open(fileobj=io.BytesIO(ours)) as tar:
        read = [(m.name, tar.extractfile(m).read()) for m in tar]
    assert read == [(f"{key}.{ext}", data) for key, files in samples for ext, data in files.items()]
