"""Accepted ROI proposals in every export: each ROI a format writes carries `roi_source` (`dataset` or
`proposal`, with the method, version and score), the card counts ROIs per source split by where they come
from, Croissant says which were machine-made, `medloom.load` keeps all or one source, and a format with no place
for ROIs (Med-MAT, the CLIP benchmark, the DICOM copies) says in its manifest how many proposals it left out.
`export --proposals accepted|all|none` chooses which go beside the dataset's ROIs (`all`: those not accepted too,
`accepted: false`), and the manifest counts those written and left out.

Sources: mammograms in the layout of a segmentation set with one mask per image (images/NAME.png beside
masks/NAME.png, as the `masks` reader reads CBIS-DDSM-style crops; the dataset's ROI is the lesion, `breast`
proposes the breast region, the first record's proposal accepted), and pydicom's CT_small.dcm (a DICOM CT with
Hounsfield units, `body` proposes the body, accepted); for `--proposals`, generated scans with a lesion mask each,
`body` proposed on four (one refused), one accepted."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pydicom.data
import pytest
from conftest import cli, rows, run_ingest, write_recipe
from PIL import Image

from medloom import load

LESION = (40, 50, 60, 70)  # x0, y0, x1, y1 in pixels of a 96 x 128 mammogram


def mammogram(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:128, 0:96]
    breast = ((yy - 64) / 52.0) ** 2 + (xx / 60.0) ** 2 <= 1
    return np.where(breast, 140 + rng.normal(0, 12, breast.shape), 5).clip(0, 255).astype(np.uint8)


def build_proposal_loom(root: Path, *, dicom: bool = False, records: int = 3, propose: bool = True) -> Path:
    """Three mammograms with a lesion mask each; `breast` proposals for all, the first one's accepted (and with
    `dicom`, CT_small with its `body` proposal accepted)."""
    data = root / "data" / "mammo"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir(parents=True)
    for i in range(records):
        Image.fromarray(mammogram(i)).save(data / "images" / f"m{i}.png")
        mask = np.zeros((128, 96), np.uint8)
        x0, y0, x1, y1 = LESION
        mask[y0:y1, x0:x1] = 255
        Image.fromarray(mask).save(data / "masks" / f"m{i}.png")
    sources = [
        dict(
            name="mammo",
            reader="masks",
            path="data/mammo",
            modality="mammography",
            anatomy="breast",
            task="lesion segmentation",
            mask_label="lesion",
        )
    ]
    if dicom:
        (root / "data" / "dicom").mkdir(parents=True)
        shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm"), root / "data" / "dicom" / "CT_small.dcm")
        sources.append(dict(name="dcm", reader="dicom", path="data/dicom", task="disease"))
    loom, _ = run_ingest(write_recipe(root, sources))
    if not propose:
        return loom
    cli("propose", loom, "--method", "breast", "--where", "source = 'mammo'", "-w", "1", "-q")
    first = rows(loom, "SELECT id FROM records WHERE source = 'mammo' ORDER BY id LIMIT 1")[0]["id"]
    cli("propose", loom, "--method", "breast", "--where", f"id = '{first}'", "--accept", "--by", "reader1", "-q")
    if dicom:
        cli("propose", loom, "--method", "body", "--where", "source = 'dcm'", "--accept", "--by", "reader1", "-w", "1", "-q")
    return loom


@pytest.fixture(scope="module")
def loom(tmp_path_factory) -> Path:
    loom = build_proposal_loom(tmp_path_factory.mktemp("propose-exports"), dicom=True)
    cli("annotate", loom, "--rois", "-w", "1", "-q")
    return loom


def ids(loom: Path) -> list[str]:
    return [r["id"] for r in rows(loom, "SELECT id FROM records WHERE source = 'mammo' ORDER BY id")]


def marks(rois: list[dict]) -> list[tuple]:
    return [(r["label"], r["roi_source"], r["method"], r["version"]) for r in rois]


OWN = ("lesion", "dataset", "", "")
PROPOSED = ("breast", "proposal", "breast", "1")


def test_training_exports_carry_roi_source_and_medmat_says_what_it_left_out(loom, tmp_path):
    first, second, _ = ids(loom)
    for fmt, name in (("llava", "llava-train.json"), ("sharegpt", "sharegpt-train.json"), ("swift", "swift-train.jsonl")):
        cli("export", loom, "--format", fmt, "--out", tmp_path / fmt, "-w", "1", "-q")
        text = (tmp_path / fmt / name).read_text()
        items = [json.loads(line) for line in text.splitlines()] if fmt == "swift" else json.loads(text)
        got = {i["id"]: i for i in items}
        assert marks(got[first]["rois"]) == [OWN, PROPOSED], fmt
        assert marks(got[second]["rois"]) == [OWN], fmt  # its proposal was not accepted: not exported
        assert 0 < got[first]["rois"][1]["score"] <= 1 and got[first]["rois"][0]["score"] == -1
        assert "rle" not in got[first]["rois"][0]  # boxes only beside a conversation
        summary = json.loads((tmp_path / fmt / "manifest.json").read_text())["rois"]
        assert (summary["proposals"], summary["proposals_left_out"], summary["methods"]) == (2, 0, ["body 1", "breast 1"])
    out = cli("export", loom, "--format", "medmat", "--out", tmp_path / "medmat", "-w", "1")
    # Med-MAT's records hold no ROI: the accepted proposals are left out, and said so
    summary = json.loads((tmp_path / "medmat" / "manifest.json").read_text())["rois"]
    assert (summary["proposals"], summary["proposals_left_out"]) == (0, 2) and "ROIs: this format has no place" in out.stdout


def test_clip_benchmark_and_dicom_copies_say_they_left_proposals_out(loom, tmp_path):
    cli("export", loom, "--format", "clip-benchmark", "--out", tmp_path / "clip", "-w", "1", "-q")
    summary = json.loads((tmp_path / "clip" / "manifest.json").read_text())["rois"]
    assert (summary["dataset"], summary["proposals"], summary["proposals_left_out"]) == (3, 0, 2)
    assert summary["note"].startswith("this format has no place for ROIs: accepted proposals left out")
    out = cli("export", loom, "--format", "dicom", "--out", tmp_path / "dicom", "-w", "1", "--json")
    summary = json.loads((tmp_path / "dicom" / "manifest.json").read_text())["report"]["rois"]
    assert (summary["proposals_left_out"], summary["methods"]) == (2, ["body 1", "breast 1"])
    assert "accepted proposals left out" in out.stdout


def test_card_croissant_and_load_mark_and_choose_by_source(loom, tmp_path):
    first, second, _ = ids(loom)
    cli("export", loom, "--out", tmp_path / "wds", "-w", "1", "-q")
    card = (tmp_path / "wds" / "README.md").read_text()
    assert "| source | dataset ROIs | accepted proposals | methods |" in card
    assert "| dcm | 0 | 1 | body 1 |" in card and "| mammo | 3 | 1 | breast 1 |" in card
    assert "Proposals not accepted are not exported." in card
    croissant = json.loads((tmp_path / "wds" / "croissant.json").read_text())
    assert "2 ROIs are machine proposals a person accepted" in croissant["rai:dataAnnotationProtocol"][0]
    assert "medloom propose breast 1 (ROI proposals, accepted by a person)" in croissant["rai:machineAnnotationTools"]
    every = {s["json"]["id"]: s["json"]["rois"] for s in load(tmp_path / "wds")}
    assert marks(every[first]) == [OWN, PROPOSED] and marks(every[second]) == [OWN]
    own = {s["json"]["id"]: s["json"]["rois"] for s in load(tmp_path / "wds", rois="dataset")}
    assert marks(own[first]) == [OWN] and own[next(i for i in own if i.startswith("dcm/"))] == []
    machine = {s["json"]["id"]: s["json"]["rois"] for s in load(tmp_path / "wds", rois="proposal")}
    assert marks(machine[first]) == [PROPOSED] and marks(machine[next(i for i in machine if i.startswith("dcm/"))])[0][1:] == (
        "proposal",
        "body",
        "1",
    )
    cli("export", loom, "--format", "parquet", "--out", tmp_path / "pq", "-w", "1", "-q")
    parquet = {s["json"]["id"]: s["json"]["rois"] for s in load(tmp_path / "pq", rois="proposal")}
    assert marks(parquet[first]) == [PROPOSED] and parquet[second] == []
    with pytest.raises(ValueError, match="rois='mine': use one of all, dataset, proposal"):
        load(tmp_path / "wds", rois="mine")


def test_load_reads_an_export_from_before_proposals_as_the_dataset_s(tmp_path):
    shard = tmp_path / "old-000000.tar"
    meta = json.dumps({"id": "a", "rois": [{"label": "nodule", "bbox": [0, 0, 1, 1]}]}).encode()
    with tarfile.open(shard, "w") as tar:
        info = tarfile.TarInfo("a.json")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
    (sample,) = list(load([str(shard)], rois="dataset"))
    assert sample["json"]["rois"] == [{"label": "nodule", "bbox": [0, 0, 1, 1], "roi_source": "dataset"}]


# ---- `export --proposals accepted | all | none` -------------------------------------------------------------------

SCANS = ("s0", "s1", "s2", "s3", "s4")  # s0 accepted; s1, s2 proposed; s3 refused (no background); s4 never proposed


def build_body_loom(root: Path) -> tuple[Path, dict[str, str]]:
    """Five generated scans with a lesion mask each (the dataset's ROIs): `body` proposed on the first four (the
    fourth, noise filling the frame, refused: no background), the first one's accepted. Returns the loom and
    record id per scan name."""
    data = root / "data" / "scans"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir(parents=True)
    for i, name in enumerate(SCANS):
        image = mammogram(i) if name != "s3" else np.random.default_rng(9).integers(60, 200, (128, 96), dtype=np.uint8)
        Image.fromarray(image).save(data / "images" / f"{name}.png")
        mask = np.zeros((128, 96), np.uint8)
        x0, y0, x1, y1 = LESION
        mask[y0:y1, x0:x1] = 255
        Image.fromarray(mask).save(data / "masks" / f"{name}.png")
    source = dict(
        name="scans",
        reader="masks",
        path="data/scans",
        modality="X-ray",
        anatomy="chest",
        task="lesion segmentation",
        mask_label="lesion",
    )
    loom, _ = run_ingest(write_recipe(root, [source]))
    names = {Path(r["uri"]).stem: r["id"] for r in rows(loom, "SELECT id, uri FROM records")}
    cli("propose", loom, "--method", "body", "--where", f"id <> '{names['s4']}'", "-w", "1", "-q")
    cli("propose", loom, "--method", "body", "--where", f"id = '{names['s0']}'", "--accept", "--by", "reader1", "-q")
    return loom, names


@pytest.fixture(scope="module")
def body_loom(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    loom, names = build_body_loom(tmp_path_factory.mktemp("propose-choice"))
    cli("annotate", loom, "--rois", "-w", "1", "-q")
    return loom, names


def expected_rois(loom: Path, names: dict[str, str], which: str) -> dict[str, list[tuple]]:
    """Per scan, the ROIs an export under `which` must carry: the lesion (the dataset's, always, first), then the
    body proposals the choice takes, with their box and score as the proposals view holds them."""
    proposed = {r["id"]: r for r in rows(loom, "SELECT id, accepted, rois FROM proposals WHERE status = 'proposed'")}
    out = {}
    for name, rid in names.items():
        found = [("lesion", "dataset", "", "", True, -1.0)]
        p = proposed.get(rid)
        if p and (which == "all" or (which == "accepted" and p["accepted"])):
            found += [("body", "proposal", "body", "1", p["accepted"], round(r["score"], 6)) for r in p["rois"]]
        out[name] = found
    return out


def got_rois(rois: list[dict]) -> list[tuple]:
    return [(r["label"], r["roi_source"], r["method"], r["version"], r["accepted"], round(r["score"], 6)) for r in rois]


def test_export_proposals_choice_writes_exactly_the_chosen_rois_and_counts_them(body_loom, tmp_path):
    loom, names = body_loom
    assert {r["status"] for r in rows(loom, "SELECT status FROM proposals")} == {"proposed", "refused"}
    boxes = {r["id"]: [list(x["bbox"]) for x in r["rois"]] for r in rows(loom, "SELECT id, rois FROM proposals")}
    counts = {
        "accepted": ({"written": 1, "left_out": 0}, {"written": 0, "left_out": 2}),
        "all": ({"written": 1, "left_out": 0}, {"written": 2, "left_out": 0}),
        "none": ({"written": 0, "left_out": 1}, {"written": 0, "left_out": 2}),
    }
    for which, (accepted, waiting) in counts.items():
        want = expected_rois(loom, names, which)
        # WebDataset: every sample's `rois`, the dataset's lesion never replaced nor merged
        cli("export", loom, "--out", tmp_path / f"wds-{which}", "--proposals", which, "-w", "1", "-q")
        samples = {s["json"]["id"]: s["json"]["rois"] for s in load(tmp_path / f"wds-{which}")}
        assert {n: got_rois(samples[rid]) for n, rid in names.items()} == want, which
        for name, rid in names.items():
            assert [r["bbox"] for r in samples[rid] if r["roi_source"] == "proposal"] == boxes.get(rid, [])[: len(want[name]) - 1]
        manifest = json.loads((tmp_path / f"wds-{which}" / "manifest.json").read_text())
        rois = manifest["rois"]
        assert (rois["choice"], rois["accepted"], rois["not_accepted"], rois["dataset"]) == (which, accepted, waiting, 5)
        assert manifest["settings"]["proposals"] == which
        # a training format: the same ROIs beside the ROI description (no RLE)
        cli("export", loom, "--format", "llava", "--out", tmp_path / f"llava-{which}", "--proposals", which, "-w", "1", "-q")
        items = {i["id"]: i for i in json.loads((tmp_path / f"llava-{which}" / "llava-train.json").read_text())}
        assert {n: got_rois(items[rid]["rois"]) for n, rid in names.items()} == want, which
        summary = json.loads((tmp_path / f"llava-{which}" / "manifest.json").read_text())["rois"]
        assert (summary["choice"], summary["accepted"], summary["not_accepted"]) == (which, accepted, waiting)
    # Parquet: the declared schema holds `accepted`
    cli("export", loom, "--format", "parquet", "--out", tmp_path / "pq", "--proposals", "all", "-w", "1", "-q")
    parquet = {s["json"]["id"]: s["json"]["rois"] for s in load(tmp_path / "pq")}
    assert {n: got_rois(parquet[rid]) for n, rid in names.items()} == expected_rois(loom, names, "all")
    card = (tmp_path / "pq" / "README.md").read_text()
    assert "| scans | 5 | 1 | 2 | body 1 |" in card and "marked `accepted: false`" in card
    # a format with no place for ROIs says what it left out, accepted or not
    cli("export", loom, "--format", "clip-benchmark", "--out", tmp_path / "clip", "--proposals", "all", "-w", "1", "-q")
    clip = json.loads((tmp_path / "clip" / "manifest.json").read_text())["rois"]
    assert (clip["accepted"], clip["not_accepted"]) == ({"written": 0, "left_out": 1}, {"written": 0, "left_out": 2})


def test_export_proposals_refuses_an_unknown_choice_and_an_acceptance_since_is_a_new_export(tmp_path):
    loom, names = build_body_loom(tmp_path / "loom")
    bad = cli("export", loom, "--out", tmp_path / "bad", "--proposals", "pending", check=False)
    assert bad.returncode == 2 and "--proposals 'pending': choose accepted" in bad.stderr + bad.stdout
    cli("export", loom, "--out", tmp_path / "wds", "-w", "1", "-q")
    cli("propose", loom, "--method", "body", "--where", f"id = '{names['s1']}'", "--accept", "--by", "reader1", "-q")
    again = cli("export", loom, "--out", tmp_path / "wds", "-w", "1", "-q", check=False)  # not "up to date"
    assert again.returncode == 2 and "holds an export of another selection, other settings" in again.stderr + again.stdout
    cli("export", loom, "--out", tmp_path / "wds", "--overwrite", "-w", "1", "-q")
    samples = {s["json"]["id"]: s["json"]["rois"] for s in load(tmp_path / "wds")}
    assert [r["accepted"] for r in samples[names["s1"]]] == [True, True]
