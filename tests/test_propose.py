"""`medloom propose` through the CLI: machine-made ROIs in their own view, refusals with reasons, accept and
unaccept recorded and reversible, annotate and the WebDataset export marking accepted ones, resume by parts.

Sources: the demo's (examples/demo/build_demo.py: pydicom's head CT with Hounsfield units, scikit-image's
retina.jpg and ihc.png, nilearn's MNI152 slices with their brain mask), and a classification source in the
layout of MIAS/CBIS-DDSM-style folders (`benign/`, `malignant/`, one PNG mammogram each), plus CT slices saved
as PNG (a Kaggle-style classification folder: grey levels, no Hounsfield units)."""

from __future__ import annotations

import importlib.util
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, rows, run_ingest, write_recipe
from PIL import Image

ROOT = Path(__file__).parents[1]


def mammogram(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:128, 0:96]
    breast = ((yy - 64) / 52.0) ** 2 + (xx / 60.0) ** 2 <= 1
    img = np.where(breast, 140 + rng.normal(0, 12, breast.shape), 5).clip(0, 255).astype(np.uint8)
    img[6:12, 70:90] = 250  # a burned-in side marker
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


@pytest.fixture(scope="module")
def loom(tmp_path_factory) -> Path:
    pytest.importorskip("nilearn")
    folder = tmp_path_factory.mktemp("propose")
    spec = importlib.util.spec_from_file_location("build_demo", ROOT / "examples/demo/build_demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    demo.gather(folder)
    import yaml

    sources = [
        s for s in yaml.safe_load(demo.RECIPE)["sources"] if s["name"] in ("ct-head", "ct-spine", "fundus", "pathology", "mni152")
    ]
    for i, cls in enumerate(["benign", "malignant", "benign"]):
        mammogram(folder / "data" / "mias" / cls / f"mdb00{i + 1}.png", i)
    ct = Image.fromarray(np.asarray(Image.open(folder / "data" / "fundus" / "normal" / "retina.jpg").convert("L"))[::8, ::8])
    (folder / "data" / "ct-png" / "covid").mkdir(parents=True)
    ct.save(folder / "data" / "ct-png" / "covid" / "slice1.png")
    sources += [
        {
            "name": "mias",
            "reader": "imagefolder",
            "path": "data/mias",
            "modality": "mammography",
            "anatomy": "breast",
            "task": "disease",
        },
        {
            "name": "ct-png",
            "reader": "imagefolder",
            "path": "data/ct-png",
            "modality": "CT",
            "anatomy": "lung",
            "task": "disease",
        },
    ]
    loaded, _ = run_ingest(write_recipe(folder, sources, salt="medloom-demo-salt"))
    return loaded


def proposals(loom: Path, method: str) -> dict[str, dict]:
    return {r["id"]: r for r in rows(loom, f"SELECT * FROM proposals WHERE method = '{method}' ORDER BY id")}


def test_methods_refuse_what_they_do_not_suit_and_never_touch_the_records(loom):
    before = rows(loom, "SELECT id, rois FROM records ORDER BY id")
    out = cli("propose", loom, "--method", "lung-ct", "-w", "1", "-q")
    assert "lung-ct (version 1)" in out.stdout
    got = proposals(loom, "lung-ct")
    assert len(got) == len(before)
    by_source = {}
    for rid, p in got.items():
        by_source.setdefault(rid.split("/")[0], set()).add((p["status"], p["reason"]))
    # the head CTs are refused for their anatomy; the thoracic-vertebra CT (pydicom CT_small, rescale intercept
    # -1024) is read in HU and has no lung in its 128 x 128 crop; the PNG "CT" has no HU at all
    assert by_source["ct-head"] == {("refused", "not_suited")}
    assert by_source["ct-spine"] == {("refused", "no_lung")}
    assert by_source["ct-png"] == {("refused", "no_hounsfield_units")}
    assert by_source["mias"] == {("refused", "not_suited")}
    assert got[next(i for i in got if i.startswith("mias/"))]["message"] == (
        "lung fields by Hounsfield units needs CT; this record is mammography"
    )
    cli("propose", loom, "--method", "brain-mri", "--where", "source = 'mni152'", "-w", "1", "-q")
    brain = proposals(loom, "brain-mri")
    made = [p for p in brain.values() if p["status"] == "proposed"]
    assert len(made) >= len(brain) - 2  # the lowest slice holds a sliver of brain: refused with its reason
    assert {p["reason"] for p in brain.values() if p["status"] != "proposed"} <= {"no_head", "no_brain"}
    roi = made[0]["rois"][0]
    assert (roi["label"], roi["method"], roi["version"], roi["roi_source"]) == ("brain", "brain-mri", "1", "proposal")
    assert 0 < roi["score"] <= 1 and roi["rle"] and json.loads(made[0]["params"])["erode"] == 0.03
    cli("propose", loom, "--method", "nuclei-he", "--param", "max_nuclei=25", "-w", "1", "-q")
    nuclei = proposals(loom, "nuclei-he")
    ihc = next(p for i, p in nuclei.items() if i.startswith("pathology/"))
    assert ihc["status"] == "proposed" and len(ihc["rois"]) == 25 and {r["label"] for r in ihc["rois"]} == {"nucleus"}
    fundus = proposals(loom, "fundus") or (cli("propose", loom, "--method", "fundus", "-q"), proposals(loom, "fundus"))[1]
    retina = next(p for i, p in fundus.items() if i.startswith("fundus/"))
    assert [r["label"] for r in retina["rois"]] == ["optic disc", "retinal vessels"]
    assert rows(loom, "SELECT id, rois FROM records ORDER BY id") == before  # the dataset's own ROIs, untouched
    assert rows(loom, "SELECT count(*) n FROM proposals WHERE accepted")[0]["n"] == 0


def test_accept_is_recorded_reversible_and_marked_in_annotate_and_export(loom, tmp_path):
    out = cli("propose", loom, "--method", "breast", "--where", "source = 'mias'", "--accept", "--by", "reader1", "-q")
    assert "accepted 3 breast proposal(s) (by reader1)" in out.stdout
    decisions = json.loads((loom / "proposals" / "decisions.json").read_text())
    assert [(d["action"], d["method"], d["by"], len(d["proposals"])) for d in decisions] == [("accept", "breast", "reader1", 3)]
    cli("annotate", loom, "--rois", "-w", "1", "-q")
    ann = rows(loom, "SELECT id, roi_text, roi_facts FROM annotations WHERE id LIKE 'mias/%' ORDER BY id")
    assert [f["roi_source"] for a in ann for f in a["roi_facts"]] == ["proposal"] * 3
    assert all("candidate breast region (machine proposal)" in a["roi_text"] and "annotated" not in a["roi_text"] for a in ann)
    mni = rows(loom, "SELECT roi_facts FROM annotations WHERE id LIKE 'mni152/%' LIMIT 1")[0]
    assert {f["roi_source"] for f in mni["roi_facts"]} == {"dataset"}  # brain-mri proposals were not accepted
    cli("export", loom, "--out", tmp_path / "wds", "--where", "source IN ('mias', 'mni152')", "-w", "1", "-q")
    samples = {}
    for shard in sorted((tmp_path / "wds").rglob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(m).read())
                    samples[meta["id"]] = meta["rois"]
    mias = [v for k, v in samples.items() if k.startswith("mias/")]
    assert len(mias) == 3 and all(
        [(r["roi_source"], r["method"], r["label"]) for r in v] == [("proposal", "breast", "breast")] for v in mias
    )
    assert all(
        r["roi_source"] == "dataset" and r["method"] == "" for k, v in samples.items() if k.startswith("mni152/") for r in v
    )
    one = rows(loom, "SELECT id FROM records WHERE source = 'mias' ORDER BY id LIMIT 1")[0]["id"]
    out = cli("propose", loom, "--method", "breast", "--where", f"id = '{one}'", "--unaccept", "--by", "reader2", "-q")
    assert "unaccepted 1 breast proposal(s) (by reader2); 2 accepted in all" in out.stdout
    state = {r["id"]: (r["accepted"], r["accepted_by"]) for r in rows(loom, "SELECT * FROM proposals WHERE method = 'breast'")}
    assert (
        state[one] == (False, "")
        and sorted(v for k, v in state.items() if k != one and k.startswith("mias/")) == [(True, "reader1")] * 2
    )
    decisions = json.loads((loom / "proposals" / "decisions.json").read_text())
    assert [(d["action"], d["by"], d["proposals"][0][0] if d["action"] == "unaccept" else None) for d in decisions] == [
        ("accept", "reader1", None),
        ("unaccept", "reader2", one),
    ]


def test_parts_resume_and_bad_requests_say_what_to_do(loom):
    cli("propose", loom, "--method", "body", "-w", "1", "-q")
    again = cli("propose", loom, "--method", "body", "-w", "1", "-q")
    total = len(rows(loom, "SELECT id FROM records"))
    parts = -(-total // 64)
    assert f"0 of {parts} parts computed now" in again.stdout
    part = sorted((loom / "proposals" / "parts" / "body").glob("*.parquet"))[0]
    part.unlink()  # as a run killed before that part finished leaves it
    resumed = cli("propose", loom, "--method", "body", "-w", "1", "-q")
    assert f"1 of {parts} parts computed now" in resumed.stdout and part.is_file()
    wrong = cli("propose", loom, "--method", "lungs", check=False)
    assert wrong.returncode == 2 and "unknown method 'lungs'; choose one of: body, lung-ct" in " ".join(wrong.stderr.split())
    bad = cli("propose", loom, "--method", "body", "--param", "size=3", check=False)
    assert bad.returncode == 2 and "unknown parameter 'size'" in bad.stderr
    listed = cli("propose", loom, "--list")
    assert all(name in listed.stdout for name in ("body", "lung-ct", "brain-mri", "fundus", "nuclei-he", "breast"))
