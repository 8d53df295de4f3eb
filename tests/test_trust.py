"""Trust under hostile or careless use: nothing destroyed, nothing lost silently, one writer, roots kept,
bounded resources, clean failures. Every test makes its own hostile input and runs the real CLI (or the real
step), then checks the exit code, the quarantine rows and the files on disk before and after."""

from __future__ import annotations

import codecs
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import CLI_ENV, cli, make_image, rows, run_ingest, write_recipe
from PIL import Image

from medloom.catalog import read_manifest
from medloom.locks import hold, process_alive


def folder_source(path: Path, name: str = "cxr", **extra) -> dict:
    return dict(name=name, reader="imagefolder", path=str(path), modality="X-ray", anatomy="chest", task="disease", **extra)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def small_loom(tmp_path):
    for i in range(6):
        make_image(tmp_path / "data" / ("normal", "effusion")[i % 2] / f"x{i}.png", seed=i)
    loom, _ = run_ingest(write_recipe(tmp_path, [folder_source(tmp_path / "data")]))
    return loom


# ---- 1. never delete or overwrite a file medloom did not write -------------------------------------------------


@pytest.mark.parametrize("fmt", ["webdataset", "parquet", "llava", "swift", "clip-benchmark", "dicom"])
def test_exports_refuse_a_folder_holding_someone_elses_files(small_loom, tmp_path, fmt):
    if fmt in ("llava", "swift"):
        cli("annotate", small_loom, "-q")
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "images" / "my_scan.jpg").write_bytes(b"the user's only copy")
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    proc = cli("export", small_loom, "--format", fmt, "--out", out, "-q", check=False)
    assert proc.returncode == 2 and "did not write" in proc.stderr
    assert "images/my_scan.jpg" in proc.stderr or "notes.txt" in proc.stderr
    assert snapshot(out) == before  # nothing written, nothing deleted
    proc = cli("export", small_loom, "--format", fmt, "--out", out, "--overwrite", "-q", check=False)
    assert proc.returncode == 2 and snapshot(out) == before  # --overwrite does not make them ours either


def test_overwrite_and_resume_touch_only_medlooms_files(small_loom, tmp_path):
    out = tmp_path / "out"
    cli("export", small_loom, "--out", out, "-q")
    shards = sorted(p.name for p in out.glob("*.tar"))
    cli("export", small_loom, "--out", out, "--max-side", "16", "--overwrite", "-q")  # replaces its own shards
    assert sorted(p.name for p in out.glob("*.tar")) == shards
    record = [json.loads(line) for line in (out / ".medloom-written").read_text().splitlines()]
    assert {e["w"] for e in record if "w" in e} >= {"manifest.json", "quarantine.jsonl", *shards}
    # a user's file next to the loom's own outputs survives every step that rewrites that folder
    (small_loom / "annotations").mkdir()
    (small_loom / "annotations" / "my-notes.txt").write_text("keep me")
    cli("annotate", small_loom, "-q")
    cli("annotate", small_loom, "-q")
    assert (small_loom / "annotations" / "my-notes.txt").read_text() == "keep me"
    # and a file of the user's at a name medloom wants is never replaced
    (small_loom / "curation").mkdir()
    (small_loom / "curation" / "dedup.parquet").write_text("not medloom's")
    (small_loom / "curation" / ".medloom-written").write_text("")  # a folder medloom already writes into
    proc = cli("dedup", small_loom, check=False)
    assert proc.returncode == 2 and "dedup.parquet" in proc.stderr and "medloom did not write it" in proc.stderr
    assert (small_loom / "curation" / "dedup.parquet").read_text() == "not medloom's"


def test_training_export_keeps_a_users_images_folder(small_loom, tmp_path):
    cli("annotate", small_loom, "-q")
    out = tmp_path / "train"
    cli("export", small_loom, "--format", "sharegpt", "--out", out, "-q")
    assert len(list((out / "images").rglob("*.jpg"))) == 6
    # a narrower selection removes only the images medloom wrote that it no longer names
    cli("export", small_loom, "--format", "sharegpt", "--out", out, "--where", "'normal' = ANY(labels)", "-q")
    assert len(list((out / "images").rglob("*.jpg"))) == 3


# ---- 2. one writer per loom -----------------------------------------------------------------------------------


def test_a_second_writer_is_refused_naming_the_holder_or_waits(small_loom, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    with hold(small_loom, "test-holder"):
        proc = cli("ingest", recipe, "-q", check=False, fresh=True)  # a writer in another process
        assert proc.returncode == 3
        assert f"pid {os.getpid()} (test-holder)" in proc.stderr and "--wait" in proc.stderr
        for args in (
            ["annotate", small_loom],
            ["dedup", small_loom],
            ["split", small_loom],
            ["export", small_loom, "--out", tmp_path / "e"],
        ):
            assert cli(*args, "-q" if args[0] in ("annotate", "export") else "--json", check=False).returncode == 3
        assert not (tmp_path / "e" / "manifest.json").exists()
        cli("stats", small_loom)  # readers are never blocked
        cli("query", small_loom, "SELECT count(*) FROM records")
    # --wait queues behind the holder and runs once it lets go
    released = threading.Event()

    def holder():
        with hold(small_loom, "short holder"):
            released.wait(1.0)

    t = threading.Thread(target=holder)
    t.start()
    time.sleep(0.2)
    started = time.time()
    proc = cli("dedup", small_loom, "--wait")
    assert proc.returncode == 0 and time.time() - started >= 0.5
    t.join()


def test_a_dead_holders_lock_is_taken_over(small_loom, tmp_path):
    code = (
        f"import time, sys; sys.path.insert(0, {str(Path(__file__).parents[1] / 'src')!r})\n"
        f"from medloom.locks import hold, process_alive\nwith hold({str(small_loom)!r}, 'doomed'):\n"
        "    print('held', flush=True)\n    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    assert cli("dedup", small_loom, check=False).returncode == 3
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    cli("dedup", small_loom)  # the kernel released the dead holder's lock


def test_writers_started_together_never_corrupt_the_catalog(tmp_path):
    for i in range(40):
        make_image(tmp_path / "data" / ("normal", "effusion")[i % 2] / f"x{i}.png", size=(128, 128), seed=i)
    recipe = write_recipe(tmp_path, [folder_source(tmp_path / "data")], part_size=4)
    for round_ in range(6):
        make_image(tmp_path / "data" / "normal" / f"new{round_}.png", seed=1000 + round_)  # something to do
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "medloom.cli", "ingest", str(recipe), "-q", "-w", "1"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=CLI_ENV,
            )
            for _ in range(3)
        ]
        readers = [
            cli("query", tmp_path / "loom", "SELECT count(*) AS n FROM records", "-f", "json", check=False) for _ in range(3)
        ]
        codes = [p.wait() for p in procs]
        assert set(codes) <= {0, 3} and 0 in codes, [p.stderr.read() for p in procs]
        assert all(r.returncode in (0, 2) for r in readers)  # 2: no catalog yet in the first round
        assert all("IO Error" not in r.stderr and "No files found" not in r.stderr for r in readers)
        ids = [r["id"] for r in rows(tmp_path / "loom", "SELECT id FROM records")]
        assert len(ids) == len(set(ids)) == 41 + round_
        manifest = read_manifest(tmp_path / "loom")
        for part in manifest["sources"]["cxr"]["parts"]:
            assert (tmp_path / "loom" / "catalog" / "records" / "cxr" / part["records"]["file"]).is_file()


# ---- 3. sources stay inside their root ------------------------------------------------------------------------


def test_paths_and_links_outside_the_root_are_quarantined(tmp_path):
    data, outside = tmp_path / "data", tmp_path / "secret"
    make_image(data / "a.png", seed=1)
    make_image(data / "sub" / "b.png", seed=2)
    make_image(outside / "x.png", seed=3)
    make_image(outside / "y.png", seed=4)
    (data / "link.png").symlink_to(outside / "y.png")
    (data / "labels.csv").write_text(
        f"file,label\na.png,ok\n{data / 'sub' / 'b.png'},ok\n../secret/x.png,bad\n{outside / 'x.png'},bad\nlink.png,bad\n"
    )
    src = dict(
        name="t",
        reader="csv",
        path=str(data),
        csv="labels.csv",
        image_column="file",
        label_column="label",
        modality="X-ray",
        anatomy="chest",
        task="disease",
    )
    loom, reports = run_ingest(write_recipe(tmp_path, [src]))
    assert sorted(r["uri"] for r in rows(loom, "SELECT uri FROM records")) == ["a.png", "sub/b.png"]
    outside_rows = rows(loom, "SELECT path, message FROM quarantine WHERE reason = 'outside_root'")
    assert sorted(r["path"] for r in outside_rows) == ["../secret/x.png", "../secret/x.png", "link.png"]
    assert all("allowed_roots" in r["message"] for r in outside_rows)
    assert reports["t"].inputs == 2 + 3 and reports["t"].quarantined_inputs == 3
    # listed explicitly, the folder is readable
    loom, _ = run_ingest(write_recipe(tmp_path / "r2", [{**src, "allowed_roots": [str(outside)]}]))
    assert len(rows(loom, "SELECT uri FROM records")) == 4


def test_every_annotation_layout_is_held_to_its_root(tmp_path):
    outside = tmp_path / "outside"
    make_image(outside / "o.jpg", seed=9)
    make_image(outside / "m.png", seed=8)
    coco = tmp_path / "coco"
    make_image(coco / "in.jpg", seed=1)
    (coco / "ann.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "in.jpg"}, {"id": 2, "file_name": str(outside / "o.jpg")}],
                "categories": [{"id": 1, "name": "nodule"}],
                "annotations": [],
            }
        )
    )
    yolo = tmp_path / "yolo"
    make_image(yolo / "images" / "in.jpg", seed=2)
    (yolo / "train.txt").write_text(f"images/in.jpg\n../outside/o.jpg\n{outside / 'o.jpg'}\n")
    (yolo / "data.yaml").write_text("path: .\ntrain: train.txt\nnames: [polyp]\n")
    masks = tmp_path / "masks"
    make_image(masks / "images" / "a.png", seed=3)
    make_image(masks / "images" / "b.png", seed=4)
    make_image(masks / "masks" / "a.png", seed=5, mode="L")
    (masks / "masks" / "b.png").symlink_to(outside / "m.png")  # a mask that is a link out of the root
    loom, _ = run_ingest(
        write_recipe(
            tmp_path,
            [
                dict(
                    name="c",
                    reader="coco",
                    path=str(coco),
                    annotations="ann.json",
                    modality="CT",
                    anatomy="lung",
                    task="lesion detection",
                ),
                dict(name="y", reader="yolo", path=str(yolo), modality="endoscopy", anatomy="colon", task="lesion detection"),
                dict(name="m", reader="masks", path=str(masks), modality="microscopy", anatomy="cell", task="cell segmentation"),
            ],
        )
    )
    assert sorted(r["id"] for r in rows(loom, "SELECT id FROM records")) == ["c/in_jpg", "m/images/a_png", "y/images/in_jpg"]
    outside_rows = rows(loom, "SELECT source FROM quarantine WHERE reason = 'outside_root' ORDER BY source")
    assert [r["source"] for r in outside_rows] == ["c", "m", "y", "y"]


def test_a_link_to_a_folder_outside_is_not_walked(tmp_path):
    data = tmp_path / "data"
    make_image(data / "normal" / "a.png", seed=1)
    make_image(tmp_path / "elsewhere" / "b.png", seed=2)
    (data / "effusion").symlink_to(tmp_path / "elsewhere")
    (data / "normal" / "loop").symlink_to(data / "normal")  # a loop inside the root
    loom, _ = run_ingest(write_recipe(tmp_path, [folder_source(data)]))
    assert [r["uri"] for r in rows(loom, "SELECT uri FROM records")] == ["normal/a.png"]
    reasons = {r["reason"]: r["path"] for r in rows(loom, "SELECT reason, path FROM quarantine")}
    assert reasons == {"outside_root": "effusion", "symlink_loop": "normal/loop"}


def test_links_to_nowhere_pipes_and_devices_are_rows_and_the_source_is_kept(tmp_path):
    """A file link to itself or to nothing, a FIFO (reading it would block) and a character device (reading it
    would never end) inside a source: one quarantine row each, every regular file ingested, no hang. A CSV that
    names the FIFO gets a row for its line, and read_file itself refuses a FIFO before it opens it."""
    import stat as st

    data = tmp_path / "data"
    for i, name in enumerate(("a.png", "b.png", "c.png")):
        make_image(data / "normal" / name, seed=i)
    (data / "normal" / "self.png").symlink_to("self.png")
    (data / "normal" / "gone.png").symlink_to("nothing-here.png")
    os.mkfifo(data / "normal" / "pipe.png")
    expected = {"normal/self.png": "symlink_loop", "normal/gone.png": "broken_link", "normal/pipe.png": "not_a_regular_file"}
    try:
        os.mknod(data / "normal" / "zero.png", 0o600 | st.S_IFCHR, os.makedev(1, 5))  # /dev/zero's numbers
        expected["normal/zero.png"] = "not_a_regular_file"
    except (PermissionError, OSError):
        pass  # no CAP_MKNOD here: the FIFO and the links still hold the rule
    (tmp_path / "labels.csv").write_text("image,label\nnormal/a.png,x\nnormal/pipe.png,y\n")
    recipe = write_recipe(
        tmp_path,
        [
            folder_source(data),
            dict(
                name="table",
                reader="csv",
                path=str(data),
                csv=str(tmp_path / "labels.csv"),
                image_column="image",
                label_column="label",
                modality="X-ray",
                anatomy="chest",
                task="disease",
                allowed_roots=[str(tmp_path)],
            ),
        ],
    )
    cli("ingest", recipe, "-q", "--workers", "1", timeout=120)
    loom = tmp_path / "loom"
    assert [r["uri"] for r in rows(loom, "SELECT uri FROM records WHERE source = 'cxr' ORDER BY uri")] == [
        "normal/a.png",
        "normal/b.png",
        "normal/c.png",
    ]
    got = {r["path"]: r["reason"] for r in rows(loom, "SELECT path, reason FROM quarantine WHERE source = 'cxr'")}
    assert got == expected
    assert [r["uri"] for r in rows(loom, "SELECT uri FROM records WHERE source = 'table'")] == ["normal/a.png"]
    assert rows(loom, "SELECT path FROM quarantine WHERE source = 'table'") == [{"path": "labels.csv:3"}]

    from medloom.imaging import DecodeError, read_file

    outcome = []

    def read() -> None:
        try:
            read_file(str(data / "normal" / "pipe.png"))
        except DecodeError as e:
            outcome.append(e.reason)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # unblock the reader: open the FIFO's other end
        with open(data / "normal" / "pipe.png", "wb"):
            pass
    assert outcome == ["not_a_regular_file"]


# ---- 4. one bad entry never drops a source ----------------------------------------------------------------------


def test_malformed_boxes_are_rows_and_the_rest_is_ingested(tmp_path):
    data = tmp_path / "coco"
    for i in range(5):
        make_image(data / f"im{i}.png", size=(80, 60), seed=i)
    anns = [[10, 10, 20, 20], [1, 2, 3], [float("nan"), 1, 2, 3], "10,10,5,5", [1, 1, float("inf"), 2]]
    coco = {
        "images": [{"id": i, "file_name": f"im{i}.png"} for i in range(5)] + [{"id": 9}],
        "categories": [{"id": 1, "name": "nodule"}],
        "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": b} for i, b in enumerate(anns)],
    }
    (data / "ann.json").write_text(json.dumps(coco).replace("NaN", "NaN").replace("Infinity", "Infinity"))
    loom, reports = run_ingest(
        write_recipe(
            tmp_path,
            [
                dict(
                    name="c",
                    reader="coco",
                    path=str(data),
                    annotations="ann.json",
                    modality="CT",
                    anatomy="lung",
                    task="lesion detection",
                )
            ],
        )
    )
    recs = {r["uri"]: r for r in rows(loom, "SELECT uri, rois FROM records")}
    assert len(recs) == 5 and len(recs["im0.png"]["rois"]) == 1
    q = rows(loom, "SELECT reason, scope, record_id FROM quarantine ORDER BY reason, record_id")
    assert sorted(r["reason"] for r in q if r["reason"] == "bad_box") == ["bad_box"] * 4
    assert sum(r["reason"] == "all_boxes_dropped" and r["scope"] == "warning" for r in q) == 4
    assert any(r["reason"] == "bad_annotation" for r in q)  # the image entry without a file name
    # YOLO and VOC spell bad numbers too
    y = tmp_path / "yolo"
    make_image(y / "images" / "a.jpg", seed=1)
    make_image(y / "images" / "b.jpg", seed=2)
    (y / "labels").mkdir(parents=True)
    (y / "labels" / "a.txt").write_text("0 nan 0.5 0.1 0.1\n0 0.5 0.5 0.2 0.2\n")
    (y / "labels" / "b.txt").write_bytes(b"0 0.5 0.5 \xff\xfe 0.1\n")
    (y / "classes.txt").write_text("polyp\n")
    loom, _ = run_ingest(
        write_recipe(
            tmp_path / "y",
            [dict(name="y", reader="yolo", path=str(y), modality="endoscopy", anatomy="colon", task="lesion detection")],
        )
    )
    assert [len(r["rois"]) for r in rows(loom, "SELECT rois FROM records")] == [1]
    assert {r["reason"] for r in rows(loom, "SELECT reason FROM quarantine")} == {"bad_box", "bad_annotation"}


def test_csv_encodings(tmp_path):
    data = tmp_path / "data"
    make_image(data / "résumé.png", seed=1)
    make_image(data / "b.png", seed=2)
    text = "file,label\nrésumé.png,épanchement\nb.png,normal\n"
    (data / "cp1252.csv").write_bytes(text.encode("cp1252"))
    (data / "utf16.csv").write_bytes(codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    (data / "bom.csv").write_bytes(codecs.BOM_UTF8 + text.encode())

    def src(csv, **kw):
        return dict(
            name="t",
            reader="csv",
            path=str(data),
            csv=csv,
            image_column="file",
            label_column="label",
            modality="X-ray",
            anatomy="chest",
            task="disease",
            **kw,
        )

    for name in ("utf16.csv", "bom.csv"):
        loom, _ = run_ingest(write_recipe(tmp_path / name, [src(name)]))
        assert sorted(x for r in rows(loom, "SELECT labels FROM records") for x in r["labels"]) == ["normal", "épanchement"]
    recipe = write_recipe(tmp_path / "cp", [src("cp1252.csv", encoding="cp1252")])
    loom, _ = run_ingest(recipe)
    assert len(rows(loom, "SELECT id FROM records")) == 2
    # the same file named without its encoding: an error naming the file and the line, the earlier run kept
    recipe.write_text(recipe.read_text().replace("encoding: cp1252\n", ""))
    proc = cli("ingest", recipe, "-q")
    assert "cp1252.csv: not UTF-8" in proc.stderr and "line 2" in proc.stderr and "encoding:" in proc.stderr
    assert len(rows(loom, "SELECT id FROM records")) == 2


def test_a_failed_or_empty_scan_never_wipes_an_earlier_run(tmp_path):
    data = tmp_path / "data"
    for i in range(4):
        make_image(data / f"i{i}.png", seed=i)
    (data / "ann.json").write_text(
        json.dumps({"images": [{"id": i, "file_name": f"i{i}.png"} for i in range(4)], "categories": [], "annotations": []})
    )
    recipe = write_recipe(
        tmp_path,
        [dict(name="c", reader="coco", path=str(data), annotations="ann.json", modality="CT", anatomy="lung", task="disease")],
    )
    loom, _ = run_ingest(recipe)
    (data / "ann.json").write_text('{"images": [')  # a download cut short
    loom, reports = run_ingest(recipe)
    assert reports["c"].error and "ann.json" in reports["c"].error
    assert len(rows(loom, "SELECT id FROM records")) == 4
    assert rows(loom, "SELECT reason FROM quarantine")[0]["reason"] == "source_unreadable"
    # an imagefolder whose drive is gone: the scan finds nothing, the catalog keeps the records
    imgs = tmp_path / "mnt"
    for i in range(3):
        make_image(imgs / "normal" / f"n{i}.png", seed=i)
    recipe = write_recipe(tmp_path / "f", [folder_source(imgs)])
    loom, _ = run_ingest(recipe)
    for p in (imgs / "normal").iterdir():
        p.unlink()
    loom, reports = run_ingest(recipe)
    assert "found no inputs" in reports["cxr"].error and len(rows(loom, "SELECT id FROM records")) == 3


def test_names_in_any_script_and_names_that_are_not_utf8(tmp_path):
    data = tmp_path / "data"
    for i, folder in enumerate(["肺炎", "正常", "مرض", "café", "cafe"]):
        make_image(data / folder / "a.png", seed=i)
    bad = os.path.join(os.fsencode(data / "cafe"), b"bad\xff.png")
    Image.new("L", (8, 8)).save(open(bad, "wb"), "PNG")
    recipe = write_recipe(tmp_path, [folder_source(data)])
    loom, reports = run_ingest(recipe)
    ids = sorted(r["id"] for r in rows(loom, "SELECT id FROM records"))
    assert len(ids) == len(set(ids)) == 5
    assert "cxr/_u80ba_708e_/a_png" in ids and "cxr/caf_u00e9_/a_png" in ids and "cxr/cafe/a_png" in ids
    assert sorted({x for r in rows(loom, "SELECT labels FROM records") for x in r["labels"]}) == sorted(
        ["肺炎", "正常", "مرض", "café", "cafe"]
    )
    bad_rows = rows(loom, "SELECT path FROM quarantine WHERE reason = 'bad_filename'")
    assert bad_rows == [{"path": "cafe/bad\\xff.png"}]
    loom, again = run_ingest(recipe)  # stable: nothing to decode again
    assert again["cxr"].parts_decoded == 0 and sorted(r["id"] for r in rows(loom, "SELECT id FROM records")) == ids


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder: an unreadable one cannot be made")
def test_an_unreadable_folder_is_a_row(tmp_path):
    make_image(tmp_path / "data" / "normal" / "a.png", seed=1)
    make_image(tmp_path / "data" / "locked" / "b.png", seed=2)
    os.chmod(tmp_path / "data" / "locked", 0)
    try:
        loom, _ = run_ingest(write_recipe(tmp_path, [folder_source(tmp_path / "data")]))
    finally:
        os.chmod(tmp_path / "data" / "locked", 0o755)
    assert rows(loom, "SELECT reason FROM quarantine") == [{"reason": "unreadable_folder"}]


# ---- 5. nothing corrupt passes as good -------------------------------------------------------------------------


def _jpeg(path: Path, seed: int = 0) -> bytes:
    make_image(path, size=(96, 64), seed=seed, fmt="JPEG")
    return path.read_bytes()


def test_damaged_jpegs_are_quarantined_or_kept_by_choice(tmp_path):
    data = tmp_path / "data"
    whole = _jpeg(data / "ok" / "whole.jpg", 1)
    sos = whole.index(b"\xff\xda")
    cut = whole[: sos + (len(whole) - sos) // 2]
    (data / "ok" / "cut_then_eoi.jpg").write_bytes(cut + b"\xff\xd9")  # Pillow decodes this silently, grey
    (data / "ok" / "zero_padded.jpg").write_bytes(cut + b"\x00" * 500 + b"\xff\xd9")
    (data / "ok" / "extra_bytes.jpg").write_bytes(whole[:-2] + b"\x00\x00\xff\xd9")  # harmless
    (data / "ok" / "named.png").write_bytes(cut + b"\xff\xd9")  # a JPEG under another name
    recipe = write_recipe(tmp_path, [folder_source(data)])
    loom, _ = run_ingest(recipe)
    assert sorted(r["uri"] for r in rows(loom, "SELECT uri FROM records")) == ["ok/extra_bytes.jpg", "ok/whole.jpg"]
    assert sorted(r["reason"] for r in rows(loom, "SELECT reason FROM quarantine")) == ["truncated"] * 3
    loom, _ = run_ingest(write_recipe(tmp_path / "keep", [folder_source(data, damaged_images="keep")]))
    assert len(rows(loom, "SELECT id FROM records")) == 5
    warned = rows(loom, "SELECT reason, scope FROM quarantine")
    assert warned == [{"reason": "damaged_kept", "scope": "warning"}] * 3


def test_multiframe_files_say_which_frame_or_give_one_record_each(tmp_path):
    data = tmp_path / "data" / "cine"
    data.mkdir(parents=True)
    frames = [Image.fromarray(np.full((32, 40), 40 * i + 10, np.uint8)) for i in range(3)]
    frames[0].save(data / "clip.tif", save_all=True, append_images=frames[1:])
    frames[0].convert("P").save(data / "clip.gif", save_all=True, append_images=[f.convert("P") for f in frames[1:]])
    loom, _ = run_ingest(write_recipe(tmp_path, [folder_source(tmp_path / "data")]))
    assert len(rows(loom, "SELECT id FROM records")) == 2
    messages = [r["message"] for r in rows(loom, "SELECT message FROM quarantine WHERE reason = 'multiframe'")]
    assert len(messages) == 2 and all("3 frames; frame 0 was kept" in m for m in messages)
    loom, _ = run_ingest(write_recipe(tmp_path / "all", [folder_source(tmp_path / "data", multiframe="all")]))
    recs = rows(loom, "SELECT id, frame, pixel_hash FROM records ORDER BY id")
    assert [r["frame"] for r in recs] == [0, 1, 2, 0, 1, 2] and len({r["pixel_hash"] for r in recs[3:]}) == 3
    out = tmp_path / "out"
    cli("export", loom, "--out", out, "--image-format", "png", "-q")
    import tarfile

    with tarfile.open(next(out.glob("*.tar"))) as tar:
        pngs = {m.name: np.asarray(Image.open(tar.extractfile(m))) for m in tar if m.name.endswith(".png")}
    tif = {k: v for k, v in pngs.items() if "_tif" in k}
    assert sorted(int(v.mean()) for v in tif.values()) == [10, 50, 90]  # each record is its own frame


def test_a_file_changed_since_ingest_is_caught_at_export_and_picked_up_by_ingest(small_loom, tmp_path):
    target = tmp_path / "data" / "normal" / "x0.png"
    st = os.stat(target)
    im = np.asarray(Image.open(target)).copy()
    im[:8, :8] = 255 - im[:8, :8]  # other pixels; the modification time is set back as `cp -p` would
    Image.fromarray(im).save(target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    proc = cli("export", small_loom, "--out", tmp_path / "out", "--json")
    report = json.loads(proc.stdout)
    assert report["reasons"] == {"changed_since_ingest": 1} and report["exported"] == 5
    cli("ingest", tmp_path / "recipe.yaml", "-q")
    report = json.loads(cli("export", small_loom, "--out", tmp_path / "out2", "--json").stdout)
    assert report["exported"] == 6 and report["quarantined"] == 0


# ---- 6. bounded resources -------------------------------------------------------------------------------------


def _png_bomb(path: Path, side: int) -> None:
    """A grey PNG of side x side pixels, all zero: a few hundred KB on disk, side^2 bytes decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    comp, row, parts = zlib.compressobj(9), b"\x00" * (side + 1), []
    for _ in range(side):
        parts.append(comp.compress(row))
    parts.append(comp.flush())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", b"".join(parts))
        + chunk(b"IEND", b"")
    )


def _nifti_bomb(path: Path) -> None:
    """A complete .nii.gz of 1024 x 1024 x 512 zeros: about 1 MB on disk, 2 GB as float32."""
    import gzip

    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape((1024, 1024, 512))
    header.set_data_dtype(np.uint8)
    header["vox_offset"] = 352
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header.binaryblock + b"\x00" * 4)
        block = b"\x00" * (1 << 24)
        for _ in range(1024 * 1024 * 512 // len(block)):
            f.write(block)


def _dicom_bomb(path: Path) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Rows, ds.Columns, ds.NumberOfFrames = 60000, 60000, 100  # 360 G values announced, 32 KB present
    ds.save_as(path)


def _package(path: Path, members: dict[str, bytes]) -> None:
    import io
    import tarfile

    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


ARTICLE = (
    b'<article xmlns:xlink="http://www.w3.org/1999/xlink"><front><article-meta><article-id pub-id-type="pmc">'
    b'PMC1</article-id></article-meta></front><body><fig id="f1"><label>Figure 1</label><caption><p>A scan.'
    b'</p></caption><graphic xlink:href="big"/></fig><fig id="f2"><caption><p>Small.</p></caption>'
    b'<graphic xlink:href="small"/></fig></body></article>'
)


def test_bombs_are_refused_before_memory_is_taken(tmp_path):
    data = tmp_path / "data"
    _png_bomb(data / "png" / "x" / "bomb.png", 20000)  # 400 M pixels, over the 100 M budget
    make_image(data / "png" / "x" / "fine.png", seed=1)
    (data / "nii").mkdir()
    _nifti_bomb(data / "nii" / "bomb.nii.gz")
    (data / "dcm").mkdir()
    _dicom_bomb(data / "dcm" / "bomb.dcm")
    (data / "pmc").mkdir()
    small = tmp_path / "s.jpg"
    make_image(small, seed=2, fmt="JPEG")
    _package(
        data / "pmc" / "PMC1.tar.gz",
        {
            "PMC1/a.nxml": ARTICLE,
            "PMC1/big.jpg": b"\x00" * (40 << 20),
            "PMC1/small.jpg": small.read_bytes(),
            "PMC1/unrelated.jpg": b"\x00" * (40 << 20),
        },
    )
    _package(data / "pmc" / "PMC2.tar.gz", {"PMC2/a.nxml": b"<article>" + b" " * (20 << 20) + b"</article>"})
    assert sum(p.stat().st_size for p in data.rglob("*") if p.is_file()) < 8 << 20
    recipe = write_recipe(
        tmp_path,
        [
            folder_source(data / "png", name="png"),
            dict(name="nii", reader="nifti", path=str(data / "nii"), modality="MRI", anatomy="brain", task="disease"),
            dict(name="dcm", reader="dicom", path=str(data / "dcm"), task="disease"),
            dict(name="pmc", reader="pmc", path=str(data / "pmc"), max_file_bytes=10 << 20),
        ],
    )
    probe = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "sys.stderr.write(r.stdout + r.stderr); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
        "sys.exit(r.returncode)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, sys.executable, "-m", "medloom.cli", "ingest", str(recipe), "-w", "1", "-q"],
        capture_output=True,
        text=True,
        env=CLI_ENV,
        timeout=600,
    )
    # the nifti and dicom sources hold one file each, refused: a source with no record fails the command
    assert proc.returncode == 1, proc.stderr
    assert "nii" in proc.stderr and "dcm" in proc.stderr
    peak_mb = int(proc.stdout) / 1024
    print(f"peak memory of one ingest worker over the bombs: {peak_mb:.0f} MB")
    assert peak_mb < 600  # the bombs announce 0.4 GB, 2 GB, 720 GB and 40 MB members; nothing was allocated
    q = {(r["source"], r["reason"]) for r in rows(tmp_path / "loom", "SELECT source, reason FROM quarantine")}
    assert q == {("png", "decompression_bomb"), ("nii", "over_budget"), ("dcm", "over_budget"), ("pmc", "over_budget")}
    recs = rows(tmp_path / "loom", "SELECT source, uri FROM records")
    assert sorted(r["source"] for r in recs) == ["pmc", "png"]  # the fine image and the small figure


# ---- 7. clean failure ------------------------------------------------------------------------------------------


def test_paths_that_are_files_fail_in_one_line(small_loom, tmp_path):
    (tmp_path / "a-file").write_text("x")
    for args in (
        ["export", small_loom, "--out", tmp_path / "a-file"],
        ["export", small_loom, "--format", "llava", "--out", tmp_path / "a-file"],
    ):
        proc = cli(*args, "-q", check=False)
        assert proc.returncode in (1, 2) and "a-file" in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    recipe = write_recipe(tmp_path / "r", [folder_source(tmp_path / "data")])
    recipe.write_text(recipe.read_text().replace("loom: ./loom", f"loom: {tmp_path / 'a-file' / 'loom'}"))
    proc = cli("ingest", recipe, "-q", check=False)
    assert proc.returncode == 1 and "a-file" in proc.stderr and "Traceback" not in proc.stderr


def test_a_full_disk_fails_cleanly_and_the_rerun_resumes(tmp_path):
    for i in range(8):
        make_image(tmp_path / "data" / "n" / f"{i}.png", size=(256, 256), seed=i)
    loom, _ = run_ingest(write_recipe(tmp_path, [folder_source(tmp_path / "data")]))
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        proc = cli("export", loom, "--out", disk / "out", "--image-format", "png", "--shard-size", "2", "-q", check=False)
        assert proc.returncode == 1 and "disk is full" in proc.stderr and "Traceback" not in proc.stderr
        assert f"error: {disk / 'out'}/train-" in proc.stderr  # the file that could not be written, not "a file"
        assert not [p for p in (disk / "out").iterdir() if ".tmp" in p.name]
        done = json.loads((disk / "out" / "manifest.json").read_text())
        kept = [s["file"] for split in done["splits"].values() for s in split["shards"]]
        assert kept and not done["complete"]
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        report = json.loads(
            cli("export", loom, "--out", disk / "out", "--image-format", "png", "--shard-size", "2", "--json").stdout
        )
        assert report["exported"] == 8 and report["shards_written"] == 4 - len(kept)  # resumed after the last shard
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[-1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_sigkill_leaves_no_worker_behind(tmp_path):
    for i in range(300):
        make_image(tmp_path / "data" / "n" / f"{i}.png", size=(160, 160), seed=i)
    recipe = write_recipe(tmp_path, [folder_source(tmp_path / "data")], part_size=2)
    parts = tmp_path / "loom" / "catalog" / "records" / "cxr"
    proc = subprocess.Popen(
        [sys.executable, "-m", "medloom.cli", "ingest", str(recipe), "-w", "2", "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=CLI_ENV,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not (parts.is_dir() and len(list(parts.glob("part-*"))) >= 3):
        time.sleep(0.01)
    family = _descendants(proc.pid)
    assert len(family) >= 3 and proc.poll() is None  # the forkserver and two workers (and the resource tracker)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(process_alive(p) for p in family):
        time.sleep(0.1)
    assert not [p for p in family if process_alive(p)]


# ---- 8. privacy: nothing identifying leaves the loom ------------------------------------------------------------

MARK = b"MARKER7731"


def _planted_dataset(root: Path) -> list[dict]:
    """Four sources with a marker in every identifying field they can carry."""
    import pydicom
    from PIL import PngImagePlugin
    from pydicom.data import get_testdata_file

    m = MARK.decode()
    (root / "dcm").mkdir(parents=True)
    for i, name in enumerate(("CT_small.dcm", "MR_small.dcm")):
        ds = pydicom.dcmread(get_testdata_file(name))
        for keyword in (
            "PatientName",
            "PatientID",
            "OtherPatientIDs",
            "PatientAddress",
            "InstitutionName",
            "InstitutionAddress",
            "ReferringPhysicianName",
            "PerformingPhysicianName",
            "OperatorsName",
            "StudyDescription",
            "SeriesDescription",
            "AccessionNumber",
            "StudyID",
            "DeviceSerialNumber",
            "StationName",
            "PatientComments",
            "ImageComments",
        ):
            setattr(ds, keyword, f"{m}{i}"[:16] if keyword in ("AccessionNumber", "StudyID", "StationName") else f"{m}-{keyword}")
        ds.PatientID = f"{m}-patient"  # one patient, two studies
        ds.StudyDate = "20200101" if i == 0 else "20200301"
        ds.add_new(0x00091010, "LO", f"{m}-private")
        ds.add_new(0x00091001, "LO", "MEDLOOM TEST CREATOR")
        ds.save_as(root / "dcm" / f"s{i}.dcm")
    (root / "csv").mkdir()
    for i in range(4):
        make_image(root / "csv" / f"c{i}.png", seed=i)
    (root / "csv" / "labels.csv").write_text(
        "file,label,pid,study\n"
        + "".join(f"c{i}.png,{('normal', 'effusion')[i % 2]},{m}-pid{i},{m}-study{i}\n" for i in range(4))
    )
    (root / "photo" / "naevus").mkdir(parents=True)
    (root / "photo" / "melanoma").mkdir(parents=True)
    for i in range(2):
        im = Image.fromarray(np.random.default_rng(i).integers(0, 255, (48, 64, 3), np.uint8))
        exif = Image.Exif()
        exif[0x013B] = f"{m}-artist"  # Artist
        exif[0x010E] = f"{m}-description"  # ImageDescription
        im.save(root / "photo" / ("naevus", "melanoma")[i] / f"p{i}.jpg", exif=exif.tobytes(), comment=f"{m}-comment".encode())
        text = PngImagePlugin.PngInfo()
        text.add_text("Patient", f"{m}-png-text")
        text.add_itxt("Comment", f"{m}-png-itxt")
        im.save(root / "photo" / ("naevus", "melanoma")[i] / f"q{i}.png", pnginfo=text)
    return [
        dict(name="dcm", reader="dicom", path=str(root / "dcm"), task="disease"),
        dict(
            name="tab",
            reader="csv",
            path=str(root / "csv"),
            csv="labels.csv",
            image_column="file",
            label_column="label",
            patient_column="pid",
            study_column="study",
            modality="X-ray",
            anatomy="chest",
            task="disease",
        ),
        dict(name="derm", reader="imagefolder", path=str(root / "photo"), modality="dermoscopy", anatomy="skin", task="disease"),
    ]


def _bytes_under(folder: Path) -> list[tuple[str, bytes]]:
    return [(str(p), p.read_bytes()) for p in folder.rglob("*") if p.is_file()]


def test_no_identifying_marker_reaches_any_export(tmp_path):
    sources = _planted_dataset(tmp_path / "data")
    assert any(MARK in data for _, data in _bytes_under(tmp_path / "data"))
    recipe = write_recipe(tmp_path, sources)
    cli("ingest", recipe, "-q")
    loom = tmp_path / "loom"
    cli("annotate", loom, "-q")
    outs = {}
    for fmt, extra in (
        ("webdataset", []),
        ("webdataset", ["--image-format", "keep"]),
        ("parquet", []),
        ("parquet", ["--image-format", "keep"]),
        ("llava", []),
        ("sharegpt", []),
        ("medmat", []),
        ("dicom", []),
    ):
        out = tmp_path / "out" / f"{fmt}{len(extra)}"
        cli("export", loom, "--format", fmt, "--out", out, "-q", *extra)
        outs[fmt + str(len(extra))] = out
        leaks = [path for path, data in _bytes_under(out) if MARK in data]
        assert not leaks, (fmt, extra, leaks)
    assert len(list(outs["dicom0"].rglob("*.dcm"))) == 2
    # the test can fail: asked to keep metadata, the markers are there
    out = tmp_path / "out" / "kept"
    cli("export", loom, "--out", out, "--image-format", "keep", "--keep-metadata", "-q")
    assert any(MARK in data for _, data in _bytes_under(out))


def test_names_in_folders_never_leave_the_loom(tmp_path):
    """DICOM folders named after patients (and a CSV source whose recipe asks for pseudonymous ids): no export
    format carries the names, in keys, ids, paths, file names or messages; the catalog keeps the paths (the
    mapping stays in the loom). A source that keeps path ids shows the test can fail."""
    import pydicom
    from pydicom.data import get_testdata_file

    data = tmp_path / "data"
    for i, name in enumerate(("CT_small.dcm", "MR_small.dcm", "CT_small.dcm")):
        ds = pydicom.dcmread(get_testdata_file(name))
        ds.SOPInstanceUID += f".{i}"
        target = data / "dcm" / f"DOE_JOHN_{MARK.decode()}" / f"DOE_JOHN_{i}.dcm"
        target.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(target)
    lines = ["file,label"]
    for i in range(4):
        make_image(data / "tab" / f"SMITH_JANE_{MARK.decode()}" / f"c{i}.png", seed=i)
        lines.append(f"SMITH_JANE_{MARK.decode()}/c{i}.png,{('normal', 'effusion')[i % 2]}")
        make_image(data / "open" / "PUBLIC_FOLDER" / f"o{i}.png", seed=10 + i)
    (data / "tab" / "labels.csv").write_text("\n".join(lines) + "\n")
    (data / "open" / "labels.csv").write_text(
        "file,label\n" + "".join(f"PUBLIC_FOLDER/o{i}.png,{('normal', 'effusion')[i % 2]}\n" for i in range(4))
    )
    table = dict(
        reader="csv",
        csv="labels.csv",
        image_column="file",
        label_column="label",
        modality="X-ray",
        anatomy="chest",
        task="disease",
    )
    recipe = write_recipe(
        tmp_path,
        [
            dict(name="dcm", reader="dicom", path=str(data / "dcm"), task="disease"),
            dict(name="tab", path=str(data / "tab"), pseudonymous_ids=True, **table),
            dict(name="open", path=str(data / "open"), **table),
        ],
    )
    cli("ingest", recipe, "-q")
    loom = tmp_path / "loom"
    got = rows(loom, "SELECT id, uri, source FROM records ORDER BY id")
    assert all(MARK.decode() not in r["id"] for r in got) and len({r["id"] for r in got}) == len(got) == 11
    assert sum(MARK.decode() in r["uri"] for r in got) == 7  # the mapping id -> path stays in the catalog
    (data / "dcm" / f"DOE_JOHN_{MARK.decode()}" / "DOE_JOHN_2.dcm").unlink()  # quarantined at export: its message
    cli("annotate", loom, "-q")
    cli("split", loom, "--by", "record", "--test", "0.3", "--val", "0", "--seed", "2", "--json")
    for fmt in ("webdataset", "parquet", "llava", "sharegpt", "medmat", "swift", "clip-benchmark", "dicom", "vlmeval-tsv"):
        out = tmp_path / "out" / fmt
        cli("export", loom, "--format", fmt, "--out", out, "-q")
        leaks = [
            path
            for path, data in _bytes_under(out)
            if MARK in data or b"DOE_JOHN" in data or b"SMITH_JANE" in data or MARK.decode() in path
        ]
        assert not leaks, (fmt, leaks)
        if fmt in ("webdataset", "parquet", "clip-benchmark"):  # path ids where the recipe keeps them
            assert any(b"PUBLIC_FOLDER" in data for _, data in _bytes_under(out)), fmt
    quarantined = (tmp_path / "out" / "webdataset" / "quarantine.jsonl").read_text()
    assert "missing_file" in quarantined and "(record dcm/" in quarantined


def test_patient_ids_are_salted_hashes_unless_the_recipe_says_raw(tmp_path):
    sources = _planted_dataset(tmp_path / "data")
    loom, _ = run_ingest(write_recipe(tmp_path, sources[:2]))
    ids = rows(loom, "SELECT source, patient_id, study_id FROM records ORDER BY id")
    assert all(r["patient_id"] and MARK.decode() not in r["patient_id"] + r["study_id"] for r in ids)
    assert len({r["patient_id"] for r in ids if r["source"] == "dcm"}) == 1  # one patient, one pseudonym
    loom, _ = run_ingest(write_recipe(tmp_path / "raw", [{**sources[1], "raw_ids": True}]))
    assert rows(loom, "SELECT patient_id FROM records ORDER BY id")[0]["patient_id"] == f"{MARK.decode()}-pid0"


def test_dicom_export_follows_the_basic_profile(tmp_path):
    import pydicom
    from PIL import ImageDraw

    sources = _planted_dataset(tmp_path / "data")
    # a file tagged as having burned-in text, and one with text drawn along its top border
    base = pydicom.dcmread(tmp_path / "data" / "dcm" / "s0.dcm")
    base.BurnedInAnnotation = "YES"
    base.SOPInstanceUID += ".7"
    base.save_as(tmp_path / "data" / "dcm" / "tagged.dcm")
    sc = pydicom.dcmread(tmp_path / "data" / "dcm" / "s1.dcm")
    canvas = Image.new("L", (sc.Columns * 4, sc.Rows * 4), 30)
    ImageDraw.Draw(canvas).text((4, 2), "JOHN DOE 1961-02-03  ST MARY HOSP", fill=255)
    sc.Rows, sc.Columns = canvas.height, canvas.width
    sc.PixelData = (np.asarray(canvas, np.uint16) * 12).tobytes()  # text at the top of the range, as scanners print it
    sc.SOPInstanceUID += ".8"
    sc.save_as(tmp_path / "data" / "dcm" / "drawn.dcm")
    loom, _ = run_ingest(write_recipe(tmp_path, sources[:1]))
    report = json.loads(cli("export", loom, "--format", "dicom", "--out", tmp_path / "d", "--json").stdout)
    assert report["files"] == 2 and len(report["excluded_burned_in"]) == 2
    reasons = sorted(e["reason"] for e in report["excluded_burned_in"])
    assert reasons[0] == "Burned In Annotation = YES"
    assert reasons[1].startswith("text-like marks in the image (frame 0, rows ")
    copies = [pydicom.dcmread(p) for p in sorted((tmp_path / "d").rglob("*.dcm"))]
    originals = {str(pydicom.dcmread(p).StudyDate): pydicom.dcmread(p) for p in (tmp_path / "data" / "dcm").glob("s*")}
    assert len({c.PatientID for c in copies}) == 1 and copies[0].PatientName == copies[0].PatientID
    for c in copies:
        assert c.PatientIdentityRemoved == "YES" and c.LongitudinalTemporalInformationModified == "MODIFIED"
        assert [i.CodeValue for i in c.DeidentificationMethodCodeSequence] == ["113100", "113107"]
        assert not any(e.tag.is_private for e in c) and "InstitutionName" not in c and "OperatorsName" not in c
        assert c.SOPInstanceUID.startswith("2.25.") and c.file_meta.MediaStorageSOPInstanceUID == c.SOPInstanceUID
        assert c.ReferringPhysicianName == "" and c.AccessionNumber == ""
    import datetime as dt

    def day(v):
        return dt.date(int(v[:4]), int(v[4:6]), int(v[6:8]))

    shifted = sorted(day(c.StudyDate) for c in copies)
    assert shifted[1] - shifted[0] == dt.timedelta(days=60) and shifted[0] < dt.date(2020, 1, 1)  # interval kept
    assert sorted(originals) == ["20200101", "20200301"]
    np.testing.assert_array_equal(
        copies[0].pixel_array,
        pydicom.dcmread(tmp_path / "data" / "dcm" / ("s0.dcm" if copies[0].Modality == "CT" else "s1.dcm")).pixel_array,
    )
    flagged = json.loads(
        cli("export", loom, "--format", "dicom", "--out", tmp_path / "f", "--burned-in", "flag", "--json").stdout
    )
    assert flagged["files"] == 4 and len(flagged["flagged_burned_in"]) == 2


def test_the_burned_in_text_heuristic_on_real_scans():
    """pydicom's real ultrasounds and its SMPTE test pattern carry burned-in text (an institution's name, dates,
    times, captions) in white, grey or colour; its CT, MR, NM, radiographs and other images do not. Each file is
    scanned as the export scans it (every frame up to the budget). pydicom-data's files are used when installed."""
    import warnings

    import pydicom
    from pydicom.data import get_testdata_file

    from medloom.export.burned_in import scan
    from medloom.sources.dicom import display_frame

    def shows_text(name: str) -> bool:
        ds = pydicom.dcmread(get_testdata_file(name))
        arr, n = ds.pixel_array, int(ds.get("NumberOfFrames", 1) or 1)
        return scan(n, lambda i: display_frame(ds, arr[i] if n > 1 else arr)[0]) is not None

    text = (
        "OBXXXX1A.dcm",
        "US1_UNCR.dcm",
        "mlut_18.dcm",
        "gdcm-US-ALOKA-16.dcm",
        "color3d_jpeg_baseline.dcm",
        "OBXXXX1A_expb.dcm",
    )  # the last: 8-bit colours in 16-bit palette entries, once rendered black
    clean = (
        "CT_small.dcm",
        "MR_small.dcm",
        "SC_rgb.dcm",
        "emri_small.dcm",
        "MR2_UNCI.dcm",
        "RG1_UNCI.dcm",
        "RG3_UNCI.dcm",
        "693_UNCI.dcm",
        "JPEG2000_UNC.dcm",
        "eCT_Supplemental.dcm",
        "explicit_VR-UN.dcm",
        "examples_overlay.dcm",
        "MR-SIEMENS-DICOM-WithOverlays.dcm",
        "image_dfl.dcm",
        "color-pl.dcm",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's download notices for pydicom-data's files
        text, clean = ([n for n in names if get_testdata_file(n)] for names in (text, clean))
    assert [n for n in text if not shows_text(n)] == []
    assert [n for n in clean if shows_text(n)] == []


# ---- 9. options are checked ------------------------------------------------------------------------------------


def test_bad_options_are_clear_errors(small_loom, tmp_path):
    for value in ("0", "-5"):
        proc = cli("export", small_loom, "--max-side", value, "--out", tmp_path / "o", check=False)
        assert proc.returncode == 2 and "--max-side" in proc.stderr and not (tmp_path / "o").exists()
    recipe = write_recipe(
        tmp_path / "r",
        [folder_source(tmp_path / "data", split="training2"), {**folder_source(tmp_path / "data", name="b"), "modality": " "}],
    )
    proc = cli("ingest", recipe, check=False)
    assert proc.returncode == 2 and "split 'training2' is not a split name" in proc.stderr
    assert "`modality:` is empty" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = cli("verify", tmp_path / "empty", check=False)
    assert proc.returncode == 1 and "nothing to verify" in proc.stderr


# ---- 10. secrets ---------------------------------------------------------------------------------------------


def test_an_api_key_travels_only_over_https_or_loopback(small_loom):
    from medloom.models.chat import LLMError, check_key_transport

    env = {"OPENAI_API_KEY": "sk-test"}
    proc = cli("annotate", small_loom, "--llm", "http://192.0.2.10:8000/v1", "--model", "m", env=env, check=False)
    assert proc.returncode == 2 and "unencrypted" in proc.stderr and "--llm-allow-insecure-key" in proc.stderr
    for url in ("https://api.example.org/v1", "http://127.0.0.1:8000/v1", "http://localhost:8000/v1", "http://[::1]:8000/v1"):
        check_key_transport(url)
    check_key_transport("http://192.0.2.10:8000/v1", allow_insecure=True)
    with pytest.raises(LLMError):
        check_key_transport("http://gpu-box.lan:8000/v1")


# ---- no test record ever lands in a training file -----------------------------------------------------------------

TRAINING_JSON = ("llava", "sharegpt", "medmat", "swift")


def _ids_by_file(out: Path, dicom_ids: dict[str, str] | None = None) -> dict[str, set[str]]:
    """Record ids in every output file (shards, training JSON/JSONL, clip-benchmark sets, DICOM copies), by file;
    `dicom_ids` maps a copy's SOP Instance UID to its record id."""
    import tarfile

    import pyarrow.parquet as pq
    import pydicom

    found: dict[str, set[str]] = {}
    for path in out.rglob("*"):
        name = path.relative_to(out).as_posix()
        if path.suffix == ".tar":
            with tarfile.open(path) as tar:
                found[name] = {m.name.rsplit(".", 1)[0] for m in tar}
        elif path.suffix == ".parquet":
            found[name] = set(pq.read_table(path, columns=["id"]).column("id").to_pylist())
        elif path.suffix == ".json" and name.split("-")[0] in TRAINING_JSON:
            items = json.loads(path.read_text())  # medmat's ids count from 1 (Med-MAT's): its image names the record
            found[name] = {
                i["image"][len("images/") :].rsplit(".", 1)[0] if name.startswith("medmat-") else i["id"] for i in items
            }
        elif path.suffix == ".jsonl" and name.startswith("swift-"):
            found[name] = {json.loads(line)["id"] for line in path.read_text().splitlines()}
        elif path.suffix == ".dcm":
            found[name] = {dicom_ids[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)]}
    return found


def _split_of_file(fmt: str, name: str) -> str:
    """The split a file belongs to by its name: SPLIT-000000.tar, FORMAT-SPLIT.json, [classification/X/]SPLIT/0.tar,
    SPLIT/PATIENT/UID.dcm."""
    if fmt in TRAINING_JSON:
        return name.rsplit("-", 1)[-1].split(".")[0]
    if fmt == "clip-benchmark":
        return name.split("/")[-2]
    if fmt == "dicom":
        return name.split("/")[0]
    return name.split("-")[0]


# each format with the options that change what it writes (every option is accepted by every format)
EXPORT_OPTIONS = {
    "webdataset": [
        ["--max-side", "32"],
        ["--image-format", "keep"],
        ["--text", "annotation", "--require-text"],
        ["--where", "source <> 'x'"],
        ["--include-duplicates"],
    ],
    "parquet": [["--image-format", "png"], ["--keep-metadata"]],
    "llava": [["--absolute-paths"], ["--image-format", "keep"]],
    "sharegpt": [["--max-side", "32"], ["--absolute-paths"]],
    "medmat": [["--image-format", "png"]],
    "swift": [["--absolute-paths"]],
    "clip-benchmark": [["--image-format", "keep"], ["--max-side", "32"]],
    "dicom": [["--include-duplicates"]],
}


def test_no_val_or_test_record_in_any_training_file(tmp_path):
    """Every export format under every export option, with the sources' own splits and with a `medloom split`
    assignment: each file holds one split's records only."""
    import pydicom
    from pydicom.data import get_testdata_file

    from medloom.catalog import read_salt
    from medloom.export.dicom import new_uid

    for i in range(24):
        split = ("train", "val", "test")[i % 3]
        make_image(tmp_path / "data" / split / ("normal", "effusion", "nodule")[i % 4 % 3] / f"x{i}.png", seed=i)
    (tmp_path / "dcm").mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm", "693_UNCR.dcm"):
        shutil.copy(get_testdata_file(name), tmp_path / "dcm" / name)
    recipe = write_recipe(
        tmp_path, [folder_source(tmp_path / "data"), dict(name="dcm", reader="dicom", path=str(tmp_path / "dcm"), task="disease")]
    )
    cli("ingest", recipe, "-q")
    loom = tmp_path / "loom"
    cli("annotate", loom, "-q")
    salt = read_salt(loom)
    dicom_ids = {}
    for r in rows(loom, "SELECT id, uri FROM records WHERE source = 'dcm'"):
        original = pydicom.dcmread(tmp_path / "dcm" / r["uri"], stop_before_pixels=True)
        dicom_ids[new_uid(salt, str(original.SOPInstanceUID))] = r["id"]

    def check(split_of: dict[str, str], label: str, every_option: bool) -> None:
        for fmt, options in EXPORT_OPTIONS.items():
            for n, extra in enumerate([[], ["--split", "train", "--split", "test"], *options] if every_option else [[]]):
                out = tmp_path / "out" / label / fmt / str(n)
                cli("export", loom, "--format", fmt, "--out", out, "-q", *extra)
                files = _ids_by_file(out, dicom_ids)
                assert files, (fmt, extra)
                for name, ids in files.items():
                    assert {split_of[i] for i in ids} == {_split_of_file(fmt, name)}, (fmt, extra, name)
                if "--split" in extra:
                    assert {_split_of_file(fmt, name) for name in files} <= {"train", "test"}

    # the sources' own splits (the DICOM files have none: train)
    own = {r["id"]: r["source_split"] or "train" for r in rows(loom, "SELECT id, source_split FROM records")}
    check(own, "own", every_option=True)
    # a split assigned by `medloom split` is honoured the same way
    cli("split", loom, "--by", "record", "--val", "0.3", "--test", "0.3", "--seed", "3", "--json")
    assigned = {
        r["id"]: r["split"] for r in rows(loom, f"SELECT id, split FROM read_parquet('{loom / 'splits' / 'split.parquet'}')")
    }
    assert {assigned[i] for i in dicom_ids.values()} != {"train"}  # some DICOM copy lands outside train
    check(assigned, "assigned", every_option=False)
