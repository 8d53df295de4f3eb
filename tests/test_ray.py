"""`--executor ray` on a real local Ray instance: ingest, export, annotate and embed write the same bytes as the
local executor, and a Ray worker killed in the middle of an ingest costs nothing but a retried task."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import CLI_ENV, cli, fixture_dir, rows, write_recipe
from PIL import Image

from medloom.engine import STAGES
from medloom.engine.ray import MOST_PARTS, task_parts

pytest.importorskip("ray")


def digest(folder: Path) -> dict[str, str]:
    """Every file below the folder by relative path -> sha256; left out: medloom's records and locks, and the
    manifests (they hold the loom's path and the run's timings)."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".") and p.name != "manifest.json"
    }


def parts(loom: Path) -> dict[str, str]:
    return {k: v for k, v in digest(loom / "catalog").items() if k.endswith(".parquet")}


SOURCES = [
    dict(
        name="voc",
        reader="voc",
        path=str(fixture_dir("images", "bccd_voc")),
        modality="microscopy",
        anatomy="blood",
        task="cell detection",
    ),
    dict(
        name="em",
        reader="masks",
        path=str(fixture_dir("images", "isbi2012_em_masks", "train")),
        images_dir="image",
        masks_dir="label",
        mask_labels={255: "cell"},
        modality="microscopy",
        anatomy="cell",
        task="cell segmentation",
    ),
    dict(
        name="cells",
        reader="imagefolder",
        path=str(fixture_dir("images", "bccd_imagefolder", "BCCD_cropped")),
        modality="microscopy",
        anatomy="blood",
        task="cell type",
    ),
]


@pytest.fixture(scope="module")
def one_ray():
    """One Ray instance for this module's in-process commands that need no start of their own: a command joins a
    connection its process made before it (`engine.ray.connect`), and its end (`disconnect`) is left to us."""
    import ray

    from medloom.engine import ray as engine_ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    patch = pytest.MonkeyPatch()
    patch.setattr(engine_ray, "disconnect", lambda: None)
    yield
    patch.undo()
    ray.shutdown()


@pytest.fixture(scope="module")
def looms(tmp_path_factory, one_ray):
    tmp = tmp_path_factory.mktemp("ray")
    local = write_recipe(tmp / "local", SOURCES, part_size=4)
    remote = write_recipe(tmp / "ray", SOURCES, part_size=4)
    cli("ingest", local, "-w", "2", "-q")
    cli("ingest", remote, "--executor", "ray", "-w", "2", "-q")
    return tmp / "local" / "loom", tmp / "ray" / "loom"


def test_ingest_writes_the_same_catalog_parts(looms):
    local, remote = looms
    assert parts(local) == parts(remote) and len(parts(local)) > 6


def test_export_annotate_and_embed_write_the_same_bytes(looms, one_ray, tmp_path):
    local, remote = looms
    for loom, how in ((local, ["-w", "2"]), (remote, ["--executor", "ray", "-w", "2"])):
        cli("export", loom, "--format", "webdataset", "--max-side", "128", "--out", tmp_path / loom.parent.name, *how, "-q")
        cli("annotate", loom, *how, "-q")
        cli("export", loom, "--format", "llava", "--out", tmp_path / f"{loom.parent.name}-llava", *how, "-q")
        cli("embed", loom, "--model", "builtin", *how, "-q")
    shards = digest(tmp_path / "local")
    assert shards == digest(tmp_path / "ray") and any(k.endswith(".tar") for k in shards)
    assert digest(tmp_path / "local-llava") == digest(tmp_path / "ray-llava")
    for sub in ("annotations", "embeddings"):
        a = {k: v for k, v in digest(local / sub).items() if k.endswith(".parquet")}
        assert a and a == {k: v for k, v in digest(remote / sub).items() if k.endswith(".parquet")}, sub


def proc_files(name: str) -> dict[int, bytes]:
    """Every process's /proc/PID/`name`, by pid (processes that end meanwhile are left out)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit():
                found[int(entry.name)] = (entry / name).read_bytes()
        except OSError:
            pass
    return found


def processes_named(name: bytes) -> list[int]:
    return [pid for pid, comm in proc_files("comm").items() if comm.strip() == name]


def ray_tasks_running() -> dict[int, str]:
    """Ray workers running a medloom task now, by pid: the task's name ("ingest.decode parts 4-7"), which Ray
    puts in the worker's process title."""
    titles = {pid: cmdline.split(b"\0")[0].decode(errors="replace") for pid, cmdline in proc_files("cmdline").items()}
    return {pid: title[5:] for pid, title in titles.items() if title.startswith("ray::") and title[5:].split(" ")[0] in STAGES}


def noise_source(folder: Path, n: int, side: int, seed: int) -> list[dict]:
    """n noise PNGs in two class folders, as one source's spec."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        path = folder / "data" / ("a" if i % 2 else "b") / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(path)
    return [
        dict(
            name="noise",
            reader="imagefolder",
            path=str(folder / "data"),
            modality="microscopy",
            anatomy="blood",
            task="cell type",
        )
    ]


def start_ray_ingest(recipe: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "medloom.cli", "ingest", str(recipe), "--executor", "ray", "-w", "2", "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=CLI_ENV,
    )


def test_a_worker_killed_mid_run_is_retried_and_the_catalog_is_the_same(tmp_path):
    spec = noise_source(tmp_path, 96, 600, seed=0)
    local, remote = write_recipe(tmp_path / "local", spec, part_size=8), write_recipe(tmp_path / "ray", spec, part_size=8)
    proc = start_ray_ingest(remote)
    killed = None
    deadline = time.time() + 120
    while killed is None and proc.poll() is None and time.time() < deadline:
        busy = list(ray_tasks_running())
        if busy:
            os.kill(busy[0], signal.SIGKILL)
            killed = busy[0]
        time.sleep(0.02)
    out, err = proc.communicate(timeout=300)
    assert killed is not None, "no Ray worker was seen running a task"
    assert proc.returncode == 0, err
    cli("ingest", local, "-w", "2", "-q")
    assert parts(tmp_path / "local" / "loom") == parts(tmp_path / "ray" / "loom")


def test_a_cluster_that_does_not_answer_is_a_clear_error(tmp_path):
    recipe = write_recipe(tmp_path, SOURCES[:1])
    # Ray's own budget for a ray:// connection is three tries of 5, 10 and 15 s; one second each here
    quick = {"RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S": "1", "RAY_CLIENT_MAX_CONNECTION_TIMEOUT_S": "1"}
    # fresh: a failed client connection leaves Ray unable to start in that process
    proc = cli(
        "ingest", recipe, "--executor", "ray", "--address", "ray://127.0.0.1:1", check=False, timeout=300, env=quick, fresh=True
    )
    assert proc.returncode == 1 and "no Ray cluster answers there" in proc.stderr, proc.stderr
    proc = cli("ingest", recipe, "--executor", "spark", check=False)
    assert proc.returncode == 2 and "use local or ray" in proc.stderr


def test_a_part_whose_worker_always_dies_is_quarantined_then_decoded_next_time(one_ray, tmp_path):
    remote = write_recipe(tmp_path / "ray", noise_source(tmp_path, 16, 64, seed=1), part_size=8)
    proc = start_ray_ingest(remote)
    kills = 0
    while proc.poll() is None:  # every try of every task dies
        for pid in ray_tasks_running():
            try:
                os.kill(pid, signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass
        time.sleep(0.01)
    out, err = proc.communicate()
    assert proc.returncode == 1 and "no records from source(s) noise" in err, err  # every input died
    loom = tmp_path / "ray" / "loom"
    assert kills >= 8  # two parts, each tried four times
    quarantined = rows(loom, "SELECT * FROM quarantine WHERE reason = 'worker_died'")
    assert len(quarantined) == 16 and rows(loom, "SELECT count(*) AS n FROM records")[0]["n"] == 0
    assert "next `medloom ingest` tries this part again" in quarantined[0]["message"]
    cli("ingest", remote, "--executor", "ray", "-w", "2", "-q")  # nothing kills it now
    assert rows(loom, "SELECT count(*) AS n FROM records")[0]["n"] == 16
    assert rows(loom, "SELECT count(*) AS n FROM quarantine WHERE reason = 'worker_died'")[0]["n"] == 0


def test_a_task_takes_as_many_quick_parts_as_a_quarter_second_holds():
    assert task_parts(0, 0.0) == 1  # nothing has come back yet
    assert task_parts(10, 0.7) == 4  # export's batches: 70 ms each
    assert task_parts(4, 1.4) == 1  # ingest's parts: a third of a second or more
    assert task_parts(100, 0.1) == task_parts(3, 0.0) == MOST_PARTS


def test_a_task_of_several_parts_whose_worker_keeps_dying_runs_its_parts_one_by_one(tmp_path):
    """Which of a task's parts killed its worker is not known: after Ray's last retry each part runs alone, so
    only a part that kills its worker on its own becomes quarantine rows (none here)."""
    spec = noise_source(tmp_path, 400, 96, seed=2)
    local, remote = write_recipe(tmp_path / "local", spec, part_size=4), write_recipe(tmp_path / "ray", spec, part_size=4)
    proc = start_ray_ingest(remote)
    target, killed = None, set()
    while proc.poll() is None:
        for pid, name in ray_tasks_running().items():
            target = target or (name if " parts " in name else None)
            if name == target and pid not in killed and len(killed) < 4:  # its first run and Ray's three retries
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
                except ProcessLookupError:
                    pass
        time.sleep(0.005)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert target and len(killed) == 4, (target, killed)
    loom = tmp_path / "ray" / "loom"
    assert rows(loom, "SELECT count(*) AS n FROM quarantine WHERE reason = 'worker_died'")[0]["n"] == 0
    cli("ingest", local, "-w", "2", "-q")
    assert parts(tmp_path / "local" / "loom") == parts(loom)


def test_a_running_cluster_is_joined_with_auto_and_left_alone_without_an_address(looms, tmp_path):
    """`ray start` made a cluster here: `--address auto` runs on it, and without `--address` the command starts
    an instance of its own beside it (Ray's own default would join the cluster, and refuse our CPU count)."""
    import ray as ray_api

    ray_api.shutdown()  # the in-process commands' instance (`one_ray`): this test needs a machine without Ray
    deadline = time.time() + 30
    while processes_named(b"raylet") and time.time() < deadline:
        time.sleep(0.2)
    if processes_named(b"raylet"):
        pytest.skip("a Ray cluster runs on this machine: this test starts its own and stops it with `ray stop`")
    ray = str(Path(sys.executable).with_name("ray"))
    subprocess.run(
        [ray, "start", "--head", "--num-cpus=2", "--include-dashboard=false"], check=True, capture_output=True, timeout=120
    )
    try:
        head = processes_named(b"raylet")
        assert head
        for how in (["--address", "auto"], []):
            recipe = write_recipe(tmp_path / ("auto" if how else "own"), SOURCES, part_size=4)
            cli("ingest", recipe, "--executor", "ray", "-w", "2", *how, "-q", fresh=True)  # a command's own start
            assert parts(recipe.parent / "loom") == parts(looms[0]), how
        deadline = time.time() + 30  # the command's own instance has gone (its processes may take a moment)
        while processes_named(b"raylet") != head and time.time() < deadline:
            time.sleep(0.2)
        assert processes_named(b"raylet") == head  # and the cluster has not
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120)


WARM = """
import json, os, sys
import ray
from medloom.engine import ExecutorSpec, start_early
from medloom.engine.ray import RayExecutor, disconnect


def probe(module):
    return os.getpid(), module in sys.modules


def probes(module):
    return sorted(ray.get([ray.remote(num_cpus=1)(probe).remote(module) for _ in range(4)]))


start_early(ExecutorSpec("ray", 2, None), ["medloom.sources.stage"])  # as `medloom ingest` does before its imports
with RayExecutor(2, None) as executor:  # the step joins the command's connection, and leaves it open
    executor.prestart()
    step_connected = executor._started
command = probes("medloom.sources.stage")
connected = ray.is_initialized()
disconnect()
with RayExecutor(2, None, preload=["medloom.view.render"]) as executor:  # a step called in-process: its own
    executor.prestart()
    step = probes("medloom.view.render")
print(json.dumps({"command": command, "step": step, "step_connected": step_connected, "connected": connected,
                  "after": ray.is_initialized()}))
"""


def test_ray_workers_start_with_their_stages_before_the_first_part():
    proc = subprocess.run([sys.executable, "-c", WARM], capture_output=True, text=True, env=CLI_ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    facts = json.loads(proc.stdout.strip().splitlines()[-1])
    # the tasks that came after the warm-up ran in workers that had imported the stage: the warm-up made them
    for case in ("command", "step"):
        assert facts[case] and all(loaded for _, loaded in facts[case]), case
        assert len({pid for pid, _ in facts[case]}) <= 2, case  # no more workers than asked for
    # the command's connection outlives its step and is ended by the command; a step's own ends with it
    assert facts["step_connected"] is False and facts["connected"] is True and facts["after"] is False
