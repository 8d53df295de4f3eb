"""Every benchmark runs, once, at a tiny size: a benchmark that cannot run is a claim nobody can check. Each
prints its comparison with its named baseline (a ratio); the numbers themselves are not asserted here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TINY = {  # script: arguments at a tiny size (--data is added where the script takes it)
    "answers.py": [],
    "burned_in.py": ["--every", "200"],
    "cores.py": ["--n", "40", "--workers", "1,2", "--baseline-n", "20"],
    "dedup.py": ["--small", "200", "--large", "400", "--near", "6"],
    "eval.py": ["--n", "8"],
    "export.py": ["--n", "20", "--sets", "jpg"],
    "ingest.py": ["--n", "20", "--sets", "jpg", "--repeat", "1"],
    "pmc.py": ["--rounds", "1"],
    "propose.py": ["--n", "2"],
    "propose_throughput.py": ["--n", "24", "--baseline-n", "8", "--executors", "local", "--workers", "1"],
    "publish.py": ["--files", "4", "--mb", "1", "--threads", "2"],
    "readers.py": ["--n", "20", "--repeat", "1"],
    "scale.py": ["--n", "40", "--workers", "1", "--memory", "100,200"],
    "serve.py": ["--n", "200", "--requests", "10"],
    "stream.py": ["--n", "40"],
    "train.py": ["--n", "8", "--no-cg"],  # tests/test_cg.py runs examples/cg itself
    "zeroshot.py": ["--n", "8"],
}
NO_DATA = {"answers.py", "burned_in.py", "dedup.py", "pmc.py", "propose.py", "publish.py"}


def test_every_benchmark_is_listed():
    scripts = {p.name for p in BENCHMARKS.glob("*.py")} - {"images.py", "pubmed_parser_worker.py"}
    assert scripts == set(TINY)


@pytest.mark.parametrize("script", sorted(TINY))
def test_benchmark_runs_at_a_tiny_size(script, tmp_path_factory):
    data = tmp_path_factory.getbasetemp() / "bench-data"  # generated images, shared by the benchmarks
    args = TINY[script] + ([] if script in NO_DATA else ["--data", str(data)])
    if script == "pmc.py" and not (BENCHMARKS.parents[1] / "shared" / "fixtures" / "jats").is_dir():
        pytest.skip("pmc.py reads ../shared/fixtures/jats")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}  # as a user runs it (scikit-image
    # turns a sample that needs a download into a pytest skip when it sees pytest)
    proc = subprocess.run(
        [sys.executable, script, *args],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        env={**env, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, f"{script} {' '.join(args)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "x" in proc.stdout and any(ch.isdigit() for ch in proc.stdout)  # its comparison was printed
