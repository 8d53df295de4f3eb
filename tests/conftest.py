from __future__ import annotations

import json
import signal
import subprocess
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
    path.write_text(yaml.safe_dump({"name": "test", "loom": "./loom", "salt": "test-salt", **extra,
                                    "sources": sources}, sort_keys=False))
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


def cli(*args, check: bool = True, env: dict | None = None, timeout: float = 900):
    """`medloom ARGS` in a fresh interpreter with a plain environment (no network hubs); exit 0 unless not
    `check`."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "medloom.cli", *map(str, args)], capture_output=True, text=True,
                          env={**CLI_ENV, **(env or {})}, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc
