"""`medloom propose --executor ray` on a real local Ray instance makes the same proposals as local workers (the
same rows, the same part files), with resume by parts as locally.

Source: mammograms in the layout of a segmentation set (test_propose_exports.py), seven records in parts of
two so that several parts go to Ray's workers."""

from __future__ import annotations

import pytest
from conftest import cli, rows
from test_propose_exports import build_proposal_loom

pytest.importorskip("ray")


@pytest.fixture(scope="module")
def one_ray():
    """One Ray instance for this module's in-process commands (as in test_ray.py)."""
    import ray

    from medloom.engine import ray as engine_ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    patch = pytest.MonkeyPatch()
    patch.setattr(engine_ray, "disconnect", lambda: None)
    yield
    patch.undo()
    ray.shutdown()


def test_ray_gives_the_same_proposals_as_local_workers(tmp_path, one_ray, monkeypatch):
    from medloom.propose import step

    monkeypatch.setattr(step, "PART", 2)  # several parts from a few records
    looms = [build_proposal_loom(tmp_path / name, records=7, propose=False) for name in ("local", "ray")]
    local, remote = looms
    cli("propose", local, "--method", "breast", "-w", "2", "-q")
    out = cli("propose", remote, "--method", "breast", "--executor", "ray", "-w", "2", "-q")
    assert "4 of 4 parts computed now" in out.stdout
    keep = "id, method, version, params, fingerprint, status, reason, message, rois, accepted"
    got = [rows(loom, f"SELECT {keep} FROM proposals ORDER BY id, method") for loom in looms]
    assert got[0] == got[1] and len(got[0]) == 7 and {r["status"] for r in got[0]} == {"proposed"}
    names = [sorted(p.name for p in (loom / "proposals" / "parts" / "breast").glob("*.parquet")) for loom in looms]
    assert names[0] == names[1] and len(names[0]) == 4
    again = cli("propose", remote, "--method", "breast", "--executor", "ray", "-w", "2", "-q")
    assert "0 of 4 parts computed now" in again.stdout
