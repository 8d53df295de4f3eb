from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from medloom.catalog import connect
from medloom.ingest import ingest
from medloom.recipe import load_recipe

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


def fixture_dir(*parts: str) -> Path:
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared fixtures not present: {path}")
    return path


def write_recipe(folder: Path, sources: list[dict], **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(
        yaml.safe_dump({"name": "test", "loom": "./loom", "salt": "test-salt", **extra, "sources": sources}, sort_keys=False)
    )
    return path


def run_ingest(recipe: Path, workers: int = 1, **kw):
    loaded = load_recipe(recipe)
    reports = ingest(loaded, workers=workers, quiet=True, **kw)
    return loaded.loom, {r.name: r for r in reports}


def rows(loom: Path, sql: str) -> list[dict]:
    cur = connect(loom).execute(sql)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def make_image(path: Path, size=(64, 48), seed: int = 0, mode: str = "RGB", fmt: str | None = None) -> Path:
    """A smooth random image (gradients plus noise) so that hashes differ per seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = (xx * rng.uniform(0.5, 3) + yy * rng.uniform(0.5, 3) + rng.normal(0, 20, (h, w))) % 256
    arr = np.stack([base, np.roll(base, 7, axis=1), 255 - base], axis=-1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr)
    (im.convert("L") if mode == "L" else im).save(path, fmt)
    return path


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def kill_when(cmd: list[str], ready: Callable[[], bool], timeout: float = 60) -> None:
    """Run a command and SIGKILL it as soon as `ready()` holds (fails the test if it finishes first)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.002)
    if proc.poll() is not None:
        pytest.fail(f"{cmd[3]} finished before it could be killed; make the dataset larger")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


CLI_ENV = {"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
# loaders of the pip-installed towers: kept between in-process commands (their weights never change); every other
# cache of medloom's (models and knowledge read from a test's folders) is emptied after each command
KEEP_CACHES = {"medloom.models.clip.text_tower", "medloom.models.embedders.load_efficientnet_lite0"}

# what CLI_ENV gives a command, for this whole process: huggingface_hub reads it once, when first imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    # the commands' consoles are made at import: made here they see no terminal, as in a subprocess's pipes
    import medloom.cli


def cli(*args, check: bool = True, env: dict | None = None, timeout: float = 900, fresh: bool = False):
    """`medloom ARGS`, exit 0 unless not `check`: a subprocess.CompletedProcess-like result. In this process by
    default (the command as a user runs it, less a second or two of imports); with `fresh`, in a new interpreter
    with a plain environment, for what only a new process shows (its start-up, a kill, locks between processes)."""
    if fresh:
        proc = subprocess.run(
            [sys.executable, "-m", "medloom.cli", *map(str, args)],
            capture_output=True,
            text=True,
            env={**CLI_ENV, **(env or {})},
            timeout=timeout,
        )
    else:
        proc = cli_in_process(list(map(str, args)), {**CLI_ENV, **(env or {})}, timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def cli_in_process(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    """Run `medloom.cli.main` here with its output captured, and put back what a command may change in its
    process: environment, argv, cwd, its import hooks (nopandas), the excepthook typer installs, and medloom's caches
    of things read from files (a fresh process starts without them). A command that hangs ends the test run
    with every thread's traceback (a subprocess would time out)."""
    import faulthandler
    import traceback

    from medloom.cli import common

    saved = dict(os.environ), sys.argv, list(sys.meta_path), os.getcwd(), sys.excepthook
    stdout, stderr = io.StringIO(), io.StringIO()
    os.environ.update(env)
    sys.argv = ["medloom", *args]
    for console in (common.out, common.err):
        console.width = int(env["COLUMNS"])
    faulthandler.dump_traceback_later(timeout, exit=True)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                medloom.cli.main(args, prog_name="medloom")
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
                if not isinstance(e.code, int | None):
                    print(e.code, file=sys.stderr)
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        faulthandler.cancel_dump_traceback_later()
        environ, sys.argv, finders, cwd, sys.excepthook = saved
        sys.meta_path[:] = [f for f in sys.meta_path if f in finders or not f.__module__.startswith("medloom.")]
        os.environ.clear()
        os.environ.update(environ)
        os.chdir(cwd)
        for name, module in list(sys.modules.items()):
            if name.startswith("medloom."):
                for attr, value in list(vars(module).items()):
                    if (
                        hasattr(value, "cache_clear")
                        and getattr(value, "__module__", None) == name
                        and f"{name}.{attr}" not in KEEP_CACHES
                    ):
                        value.cache_clear()
    return subprocess.CompletedProcess(["medloom", *args], code, stdout.getvalue(), stderr.getvalue())


def cg_world(folder: Path, per_class: int) -> Path:
    """examples/cg's generated world, ingested and planned for CT / brain / cancer with the directions pooled and
    the ablations (12 experiments): the loom."""
    script = Path(__file__).resolve().parents[1] / "examples" / "cg" / "make_world.py"
    subprocess.run([sys.executable, str(script), str(folder), "--per-class", str(per_class)], check=True, capture_output=True)
    cli("ingest", folder / "recipe.yaml", "-q")
    cli("cg", "plan", folder / "loom", "--target", "CT,brain,cancer", "--designs", "pooled,ablations")
    return folder / "loom"
