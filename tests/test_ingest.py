"""Ingest behaviour: accounting, quarantine, resumption, stable ids, parallel equality."""

import json
import os
import sys
from pathlib import Path

from conftest import kill_when, make_image, rows, run_ingest, write_recipe

from medloom.catalog import read_manifest
from medloom.records import salted_id


def classes_dataset(root: Path, n: int, size=(48, 40)) -> Path:
    for i in range(n):
        split = ("train", "val", "test")[i % 3]
        make_image(root / split / ("normal", "pneumonia")[i % 2] / f"img{i:04d}.png", size=size, seed=i)
    return root


def source(path, **kw):
    return dict(
        name="cxr",
        reader="imagefolder",
        path=str(path),
        modality="CXR",
        anatomy="chest",
        task="disease",
        license="CC BY 4.0",
        **kw,
    )


def test_imagefolder_splits_labels_and_accounting(tmp_path):
    classes_dataset(tmp_path / "data", 30)
    (tmp_path / "data" / "train" / "README.md").write_text("notes")
    loom, reports = run_ingest(write_recipe(tmp_path, [source(tmp_path / "data")]))
    r = reports["cxr"]
    assert (r.records, r.inputs, r.quarantined_inputs, r.filtered) == (30, 31, 0, {"not an image file": 1})
    got = rows(loom, "SELECT source_split, labels, modality, commercial_use, label_space FROM records")
    assert {g["source_split"] for g in got} == {"train", "val", "test"}
    assert {g["labels"][0] for g in got} == {"normal", "pneumonia"}
    assert {g["modality"] for g in got} == {"X-ray"} and all(g["commercial_use"] for g in got)
    assert got[0]["label_space"] == ["normal", "pneumonia"]


def test_bad_inputs_are_quarantined_not_fatal(tmp_path):
    data = tmp_path / "data"
    classes_dataset(data, 6)
    (data / "train" / "normal" / "text.png").write_text("this is not a png")
    good = (data / "train" / "normal" / "img0000.png").read_bytes()
    (data / "train" / "normal" / "cut.png").write_bytes(good[: len(good) // 2])
    make_image(data / "train" / "normal" / "huge.png", size=(400, 300), seed=99)
    (data / "stray.png").write_bytes(good)
    loom, reports = run_ingest(write_recipe(tmp_path, [source(data, max_pixels=100_000)]))
    q = {Path(x["path"]).name: x["reason"] for x in rows(loom, "SELECT * FROM quarantine")}
    assert q == {
        "text.png": "unreadable",
        "cut.png": "truncated",
        "huge.png": "decompression_bomb",
        "stray.png": "no_class_folder",
    }
    r = reports["cxr"]
    assert r.records == 6 and r.inputs == r.records + r.quarantined_inputs + sum(r.filtered.values())


def test_labels_outside_the_space_and_zero_area_boxes(tmp_path):
    data = tmp_path / "yolo"
    for i in range(3):
        make_image(data / "images" / "train" / f"p{i}.jpg", size=(80, 60), seed=i)
    (data / "labels" / "train").mkdir(parents=True)
    (data / "labels" / "train" / "p0.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.3 0.2 0.2 0.4\n")
    (data / "labels" / "train" / "p1.txt").write_text("0 0.5 0.5 0 0.2\n5 0.5 0.5 0.1 0.1\n")
    (data / "data.yaml").write_text("path: .\ntrain: images/train\nnames: {0: polyp, 1: adenoma}\n")
    (data / "classes.txt").write_text("polyp\nhyperplastic\n")
    loom, reports = run_ingest(
        write_recipe(
            tmp_path,
            [dict(name="poly", reader="yolo", path=str(data), modality="endoscopy", anatomy="colon", task="lesion detection")],
        )
    )
    recs = {Path(r["uri"]).name: r for r in rows(loom, "SELECT * FROM records")}
    assert len(recs) == 3 and recs["p2.jpg"]["rois"] == [] and recs["p0.jpg"]["source_split"] == "train"
    boxes = {r["label"]: [round(v, 3) for v in r["bbox"]] for r in recs["p0.jpg"]["rois"]}
    assert boxes == {"polyp": [0.4, 0.4, 0.6, 0.6], "adenoma": [0.1, 0.1, 0.3, 0.4]}  # polygon -> box
    reasons = sorted(x["reason"] for x in rows(loom, "SELECT reason FROM quarantine"))
    # p1 lost both its boxes: a warning says so
    assert reasons == ["all_boxes_dropped", "class_list_conflict", "label_outside_space", "zero_area_box"]
    assert reports["poly"].quarantined_inputs == 0 and reports["poly"].annotation_problems == 2


def test_csv_resolution_by_basename_and_ambiguity(tmp_path):
    data = tmp_path / "data"
    make_image(data / "batch1" / "a.png", seed=1)
    make_image(data / "batch2" / "b.png", seed=2)
    make_image(data / "batch3" / "b.png", seed=3)
    make_image(data / "batch1" / "c.png", seed=4)
    (data / "labels.csv").write_text(
        "file,finding,pid\na.png,Effusion|Mass,p1\nb.png,No Finding,p2\nbatch1/c.png,Mass,p3\nd.png,Mass,p4\n"
    )
    loom, reports = run_ingest(
        write_recipe(
            tmp_path,
            [
                dict(
                    name="nih",
                    reader="csv",
                    path=str(data),
                    csv="labels.csv",
                    image_column="file",
                    label_column="finding",
                    label_separator="|",
                    patient_column="pid",
                    modality="X-ray",
                    anatomy="chest",
                    task="disease",
                )
            ],
        )
    )
    recs = {r["uri"]: r for r in rows(loom, "SELECT * FROM records")}
    # patient ids are stored as salted hashes (the recipe's salt), never as written
    assert recs["batch1/a.png"]["labels"] == ["Effusion", "Mass"]
    assert recs["batch1/a.png"]["patient_id"] == salted_id("test-salt", "p1") != "p1"
    assert set(recs) == {"batch1/a.png", "batch1/c.png"}
    q = {x["reason"]: x["message"] for x in rows(loom, "SELECT * FROM quarantine")}
    assert "batch2/b.png" in q["ambiguous_basename"] and "batch3/b.png" in q["ambiguous_basename"]
    assert "d.png" in q["missing_file"]


def test_rerun_does_no_decoding_and_picks_up_changes(tmp_path):
    data = classes_dataset(tmp_path / "data", 60)
    recipe = write_recipe(tmp_path, [source(data)], part_size=8)
    loom, first = run_ingest(recipe)
    assert first["cxr"].parts_decoded == first["cxr"].parts > 2
    ids = [r["id"] for r in rows(loom, "SELECT id FROM records ORDER BY id")]
    loom, again = run_ingest(recipe)
    assert again["cxr"].parts_decoded == 0
    assert [r["id"] for r in rows(loom, "SELECT id FROM records ORDER BY id")] == ids
    make_image(data / "train" / "normal" / "new.png", seed=1000)
    loom, changed = run_ingest(recipe)
    assert changed["cxr"].parts_decoded == 1 and changed["cxr"].records == 61
    # the replaced part is retired, not deleted at once (a reader may still be reading it); a later run past
    # the retention deletes it, and only it
    manifest = read_manifest(loom)
    parts = list((loom / "catalog" / "records" / "cxr").iterdir())
    assert len(parts) == len(manifest["sources"]["cxr"]["parts"]) + 1 and len(manifest["retired"]) == 2
    run_ingest(recipe, retention=0)
    parts = list((loom / "catalog" / "records" / "cxr").iterdir())
    assert len(parts) == len(read_manifest(loom)["sources"]["cxr"]["parts"]) and not read_manifest(loom)["retired"]
    # ids do not depend on where the data or the loom live
    other = tmp_path / "elsewhere"
    os.rename(data, other)
    loom2, _ = run_ingest(write_recipe(tmp_path / "second", [source(other)], part_size=8))
    assert [r["id"] for r in rows(loom2, "SELECT id FROM records ORDER BY id")] == sorted(ids + ["cxr/train/normal/new_png"])


def test_largest_parts_go_out_first_each_as_soon_as_its_key_is_made(tmp_path, monkeypatch):
    """Parts are cut by content, so their sizes vary: sent in id order, a large part sent last kept the other
    workers idle. The real executor runs; the spy only notes what it is handed and how many keys exist."""
    import medloom.ingest as ingest_module
    from medloom.engine.local import LocalExecutor

    keys_made, drawn = [], []
    real_key, real_map = ingest_module.part_key, LocalExecutor.map
    monkeypatch.setattr(ingest_module, "part_key", lambda *a: keys_made.append(1) or real_key(*a))

    def map(self, stage, parts, *args, **kwargs):
        def noted(parts):
            for part in parts:
                drawn.append((part.num_rows, len(keys_made)))
                yield part

        return real_map(self, stage, noted(parts), *args, **kwargs)

    monkeypatch.setattr(LocalExecutor, "map", map)
    data = classes_dataset(tmp_path / "data", 60)
    loom, reports = run_ingest(write_recipe(tmp_path, [source(data)], part_size=4), workers=2)
    sizes = [n for n, _ in drawn]
    assert len(sizes) == reports["cxr"].parts > 5 and len(set(sizes)) > 2 and sum(sizes) == 60
    assert sizes == sorted(sizes, reverse=True) != sorted(sizes)
    assert [made for _, made in drawn] == list(range(1, len(drawn) + 1))  # one key per part, as it goes out
    assert len(rows(loom, "SELECT id FROM records")) == 60


def test_two_workers_give_the_same_catalog(tmp_path):
    data = classes_dataset(tmp_path / "data", 40)
    loom1, _ = run_ingest(write_recipe(tmp_path / "one", [source(data)], part_size=4), workers=1)
    loom2, _ = run_ingest(write_recipe(tmp_path / "two", [source(data)], part_size=4), workers=2)
    sql = "SELECT id, pixel_hash, phash, labels, width FROM records ORDER BY id"
    assert rows(loom1, sql) == rows(loom2, sql)


def test_sigkill_mid_ingest_then_resume(tmp_path):
    data = classes_dataset(tmp_path / "data", 400, size=(96, 96))
    recipe = write_recipe(tmp_path, [source(data)], part_size=4)
    parts_dir = tmp_path / "loom" / "catalog" / "records" / "cxr"
    kill_when(
        [sys.executable, "-m", "medloom.cli", "ingest", str(recipe), "--workers", "1", "-q"],
        lambda: parts_dir.is_dir() and len(list(parts_dir.glob("part-*.parquet"))) >= 5,
    )
    written = len(list(parts_dir.glob("part-*.parquet")))
    assert 0 < written
    loom, reports = run_ingest(recipe)
    assert reports["cxr"].parts_decoded <= reports["cxr"].parts - written + 1  # finished parts were reused
    ids = [r["id"] for r in rows(loom, "SELECT id FROM records")]
    assert len(ids) == len(set(ids)) == 400
    assert not [p for p in parts_dir.iterdir() if ".tmp" in p.name]


def test_unreadable_source_does_not_stop_the_others(tmp_path):
    classes_dataset(tmp_path / "data", 4)
    (tmp_path / "broken").mkdir()
    loom, reports = run_ingest(
        write_recipe(
            tmp_path,
            [
                source(tmp_path / "data"),
                dict(
                    name="coco",
                    reader="coco",
                    path=str(tmp_path / "broken"),
                    annotations="missing.json",
                    modality="CT",
                    anatomy="lung",
                    task="lesion detection",
                ),
            ],
        )
    )
    assert reports["cxr"].records == 4
    assert reports["coco"].error and "missing.json" in reports["coco"].error
    assert rows(loom, "SELECT reason FROM quarantine")[0]["reason"] == "source_unreadable"


def test_scan_tasks_kept_as_arrow_give_the_same_parts_and_duplicate_ids(tmp_path, monkeypatch):
    """Tasks wait as Arrow tables while a source is scanned; however they are batched, the parts (named by a hash
    of their tasks) are the same, and two files giving one record id keep the first found."""
    from medloom.sources.base import TaskList

    for i in range(9):
        make_image(tmp_path / "data" / f"c{i % 2}" / f"img{i}.png", seed=i)
    make_image(tmp_path / "data" / "c0" / "x.1.png", seed=20)
    make_image(tmp_path / "data" / "c0" / "x_1.png", seed=21)  # the same id as x.1.png: c0/x_1_png
    sources = [
        dict(name="cxr", reader="imagefolder", path=str(tmp_path / "data"), modality="X-ray", anatomy="chest", task="disease")
    ]
    listings = []
    for batch, folder in ((4096, "one"), (3, "many")):
        monkeypatch.setattr(TaskList, "BATCH", batch)
        loom, reports = run_ingest(write_recipe(tmp_path / folder, sources, part_size=2))
        listings.append(sorted(p.name for p in (loom / "catalog" / "records" / "cxr").glob("*.parquet")))
        assert reports["cxr"].records == 10 and reports["cxr"].parts > 3
        dup = rows(loom, "SELECT * FROM quarantine WHERE reason = 'duplicate_id'")
        assert [(d["path"], d["message"]) for d in dup] == [
            ("c0/x_1.png", "gives the same record id 'cxr/c0/x_1_png' as 'c0/x.1.png'; rename one file")
        ]
        assert rows(loom, "SELECT uri FROM records WHERE id = 'cxr/c0/x_1_png'") == [{"uri": "c0/x.1.png"}]
    assert listings[0] == listings[1]


def test_rows_take_matches_arrows_take_across_chunks():
    """Parts are taken from the scan's chunks directly (Arrow's take joins every chunk first); the rows, their
    order and their values are Arrow's take, in one chunk, whatever chunks the positions fall in."""
    import numpy as np
    import pyarrow as pa

    from medloom.ingest import Rows

    rng = np.random.default_rng(0)
    schema = pa.schema([("a", pa.int64()), ("s", pa.string()), ("l", pa.list_(pa.string()))])
    table = pa.concat_tables(
        [
            pa.table(
                {
                    "a": rng.integers(0, 100, n),
                    "s": [str(x) for x in rng.integers(0, 999, n)],
                    "l": [[str(i)] * (i % 3) for i in range(n)],
                },
                schema=schema,
            )
            for n in (5, 100, 37, 0, 64)
        ]
    )
    rows = Rows(table)
    for _ in range(200):
        positions = rng.choice(len(table), int(rng.integers(0, 50)), replace=False).astype(np.uint64)
        if rng.random() < 0.5:
            positions.sort()
        taken = rows.take(positions)
        assert taken.equals(table.take(pa.array(positions)))
        assert taken.num_rows == 0 or taken.column(0).num_chunks == 1


def test_real_path_resolves_as_realpath(tmp_path):
    """The scan resolves each folder once; links to files and folders, `..` and missing files resolve as
    `os.path.realpath` resolves them."""
    from medloom.sources.base import real_path

    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret.png").write_bytes(b"x")
    (tmp_path / "data" / "a" / "img.png").write_bytes(b"x")
    (tmp_path / "data" / "a" / "link.png").symlink_to(tmp_path / "elsewhere" / "secret.png")
    (tmp_path / "data" / "b").symlink_to(tmp_path / "elsewhere")
    folders: dict[str, str] = {}
    for p in [
        "data/a/img.png",
        "data/a/link.png",
        "data/b/secret.png",
        "data/a/../../elsewhere/secret.png",
        "data/a/missing.png",
        "data/a/.",
        "data/a/..",
        "data/b",
    ]:
        path = str(tmp_path / p)
        assert real_path(path, folders) == os.path.realpath(path), p


def test_ingest_workers_run_without_pandas_and_the_cli_never_loads_it(tmp_path):
    """pyarrow imports pandas (0.6 s) on its first list conversion in every process; ingest's and export's
    workers and commands refuse it (nopandas.py), and still decode, ingest and export."""
    import subprocess

    from medloom.engine.local import LocalExecutor
    from medloom.recipe import load_recipe
    from medloom.sources import get_reader

    for i in range(4):
        make_image(tmp_path / "d" / "a" / f"{i}.png", seed=i)
    recipe = write_recipe(
        tmp_path,
        [dict(name="s", reader="imagefolder", path=str(tmp_path / "d"), modality="CXR", anatomy="chest", task="disease")],
    )
    source = {**load_recipe(recipe).sources[0], "salt": "x", "label_space": ["a"]}
    tasks = get_reader("imagefolder").scan(source).tasks.table()
    mapped = {}
    for pandas_free in (True, False):  # the plain pool's workers do load it: the check can fail
        with LocalExecutor(2, ["medloom.sources.stage"], pandas_free=pandas_free) as executor:
            results = [r for _, r in executor.map("ingest.decode", [tasks.slice(0, 2), tasks.slice(2, 2)], source)]
            mapped[pandas_free] = ["/pandas/" in Path(f"/proc/{pid}/maps").read_text() for pid in list(executor._pool._processes)]
        assert sum(r[0].num_rows for r in results) == 4
    assert mapped[True] and not any(mapped[True]) and any(mapped[False])

    script = (
        "import sys, duckdb, pyarrow as pa\n"
        "from medloom.nopandas import keep_pandas_out\n"
        "keep_pandas_out()\n"
        "t = pa.Table.from_pylist([{'a': [1.5], 'b': 'x'}])\n"
        "assert duckdb.connect().sql('SELECT 41 + 1 AS n').fetch_arrow_table().column(0)[0].as_py() == 42\n"
        "assert 'pandas' not in sys.modules and t.num_rows == 1\n"
        "try:\n    import pandas\nexcept ModuleNotFoundError as e:\n    print(e)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "medloom keeps pandas out" in run.stdout
    user = (
        "import pandas\nfrom medloom.nopandas import keep_pandas_out\nkeep_pandas_out()\nimport pandas.testing\n"
        "import pyarrow as pa\nprint(pa.array(pandas.Series([1.0, None])).null_count)\n"
    )
    assert (
        subprocess.run([sys.executable, "-c", user], capture_output=True, text=True, check=True).stdout.strip() == "1"
    )  # a process that already uses pandas is left alone


def test_workers_start_with_their_steps_stages_and_without_the_cli_or_pydantic(tmp_path):
    """A worker's start is serial time before it takes a part (on 16 cores, a tenth of an ingest). It imports its
    step's stages (also when the forkserver, which lives as long as the process, was started by an earlier step
    with other ones), decodes plain image files without pydantic, and does not load the CLI when multiprocessing
    runs the parent's main module in it."""
    import shutil
    import subprocess

    script = f"""
import sys
from pathlib import Path
from medloom.engine.local import LocalExecutor
from medloom.recipe import load_recipe
from medloom.sources import decoder_module, get_reader

source = {{**load_recipe(Path({str(write_recipe(tmp_path, [source(classes_dataset(tmp_path / "d", 4))]))!r})).sources[0],
          "salt": "x", "label_space": ["normal", "pneumonia"]}}
tasks = get_reader("imagefolder").scan(source).tasks.table()
ask = "sorted(m for m in ('medloom.view.render', 'pydantic', 'medloom.cli', 'typer') if m in __import__('sys').modules)"
for reader in ("imagefolder", "dicom"):
    with LocalExecutor(2, ["medloom.sources.stage", decoder_module(reader)]) as executor:
        executor.prestart()
        if reader == "imagefolder":
            assert sum(r[0].num_rows for _, r in executor.map("ingest.decode", [tasks], source)) == 4
        print(reader, executor._pool.submit(eval, ask).result())
with LocalExecutor(2, ["medloom.view.render"]) as executor:  # the same forkserver, started by the first step
    executor.prestart()
    print("export", executor._pool.submit(eval, ask).result())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["imagefolder []", "dicom ['pydantic']", "export ['medloom.view.render']"], out
    from medloom.sources import IMAGE_FILE_READERS, READERS, get_decoder, get_reader
    from medloom.sources.base import decode_image_file

    for reader in READERS:  # the list says what the readers do
        assert (get_reader(reader).decode is decode_image_file) == (reader in IMAGE_FILE_READERS), reader
        assert get_decoder(reader) is get_reader(reader).decode

    # what multiprocessing runs in each worker: the console script, or `-m medloom`, as `__mp_main__`
    command = shutil.which("medloom", path=str(Path(sys.executable).parent))
    check = (
        "import runpy, sys\n"
        "runpy.run_path(sys.argv[1], run_name='__mp_main__') if sys.argv[1] != '-m' else "
        "runpy.run_module('medloom.__main__', run_name='__mp_main__', alter_sys=True)\n"
        "print(sorted(m for m in ('medloom.cli', 'typer', 'rich', 'pyarrow') if m in sys.modules))\n"
    )
    for main in (command, "-m"):
        run = subprocess.run([sys.executable, "-c", check, main], capture_output=True, text=True, check=True)
        assert run.stdout.strip() == "[]", (main, run.stdout, run.stderr)
    assert "Usage: medloom" in subprocess.run([command, "--help"], capture_output=True, text=True, check=True).stdout


def test_a_command_starts_the_forkserver_early_and_its_pool_forks_from_it():
    """`ingest` and `export` start the forkserver before their own imports (so the two overlap); the step's
    pool must then fork its workers from that one, not start another, and only where a pool will run."""
    import subprocess

    from medloom.engine import ExecutorSpec, uses_pool

    script = """
import os
from multiprocessing import forkserver
from medloom.engine import start_early
from medloom.engine.local import LocalExecutor

start_early(1, ["medloom.sources.stage"])
assert forkserver._forkserver._forkserver_pid is None  # one worker runs inline: nothing to start
start_early(2, ["medloom.sources.stage"])
early = forkserver._forkserver._forkserver_pid
with LocalExecutor(2, ["medloom.sources.stage", "medloom.sources.base"]) as executor:
    executor.prestart()
    parents = {executor._pool.submit(os.getppid).result() for _ in range(4)}
    ready = executor._pool.submit(eval, "'medloom.sources.base' in __import__('sys').modules").result()
print(early is not None and parents == {early} and forkserver._forkserver._forkserver_pid == early, ready)
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["True", "True"], run.stdout + run.stderr
    assert uses_pool(2) and uses_pool(ExecutorSpec("local", 2)) and not uses_pool(1)
    assert not uses_pool(ExecutorSpec("ray", 4)) and not uses_pool(ExecutorSpec("local", 1))
    assert uses_pool(None) == ((os.cpu_count() or 1) > 1)


def test_tables_cross_to_the_workers_as_arrow_streams_and_come_back_equal():
    """Pickle took a 32-row catalog part apart array by array (1.8 ms, against 0.44 ms as an IPC stream) on the
    driver's one core: tables and batches, alone or in a stage's result tuple, cross as IPC bytes."""
    import pickle

    import pyarrow as pa

    from medloom.engine.wire import WireTable, from_wire, to_wire

    table = pa.table(
        {"id": ["a", "b", None], "labels": [["x"], [], None], "render": [{"window_center": 1.5}, None, {"window_center": -2.0}]}
    ).replace_schema_metadata({"medloom.tasks": "3"})
    chunked = pa.concat_tables([table, table.slice(1)])
    for value in (table, chunked, table.to_batches()[0], table.slice(0, 0), (table, chunked, 7), "text", [table]):
        sent = to_wire(value)
        back = from_wire(pickle.loads(pickle.dumps(sent)))
        if isinstance(value, tuple):
            assert [type(v) for v in sent] == [WireTable, WireTable, int]
            assert back[0].equals(table) and back[1].equals(chunked) and back[2] == 7
            assert back[1].column(0).num_chunks == 2 and back[0].schema.metadata == {b"medloom.tasks": b"3"}
        elif isinstance(value, (pa.Table, pa.RecordBatch)):
            assert isinstance(sent, WireTable) and type(back) is type(value) and back.equals(value)
            assert back.schema.metadata == value.schema.metadata
        else:
            assert sent is value and back == value  # only tables travel as streams


def test_ingest_and_export_commands_use_the_system_allocator_unless_the_user_chose_one(tmp_path):
    """mimalloc kept freed pages and the driver's peak grew with the corpus (arrowpool.py): the commands set
    Arrow's pool before pyarrow loads, so Parquet's and the kernels' buffers use it too; a user's choice stays."""
    import subprocess

    for i in range(3):
        make_image(tmp_path / "d" / "a" / f"{i}.png", seed=i)
    recipe = write_recipe(
        tmp_path,
        [dict(name="s", reader="imagefolder", path=str(tmp_path / "d"), modality="CXR", anatomy="chest", task="disease")],
    )
    script = (
        "import sys\nfrom medloom.cli import app\n"
        "for args in sys.argv[1:]:\n"
        "    try:\n        app(args.split('|'), standalone_mode=False)\n"
        "    except SystemExit as e:\n        assert not e.code, e\n"
        "import pyarrow as pa\nprint(pa.default_memory_pool().backend_name)\n"
    )
    commands = [f"ingest|{recipe}|-q|-w|1", f"export|{tmp_path / 'loom'}|--out|{tmp_path / 'wds'}|-q|-w|1"]
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    run = subprocess.run([sys.executable, "-c", script, *commands], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[-1] == "system"
    assert len(rows(tmp_path / "loom", "SELECT id FROM records")) == 3
    assert json.loads((tmp_path / "wds" / "manifest.json").read_text())["counts"]["exported"] == 3
    chosen = subprocess.run(
        [sys.executable, "-c", script, commands[0]],
        capture_output=True,
        text=True,
        env={**env, "ARROW_DEFAULT_MEMORY_POOL": "mimalloc"},
    )
    assert chosen.returncode == 0, chosen.stderr
    assert chosen.stdout.split()[-1] == "mimalloc"
