"""The streaming loader: export folders, shard lists, URLs, fixtures; shuffling; torch workers."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import fixture_dir, make_image, run_ingest, write_recipe
from PIL import Image

import medloom
from medloom.export import ExportOptions, export
from medloom.stream import Stream, expand_braces


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stream")
    for i in range(40):
        make_image(root / "d" / ("train", "test")[i % 4 == 0] / ("a", "b")[i % 2] / f"{i:03d}.png", seed=i)
    loom, _ = run_ingest(
        write_recipe(
            root, [dict(name="s", reader="imagefolder", path=str(root / "d"), modality="CXR", anatomy="chest", task="disease")]
        )
    )
    export(loom, root / "wds", ExportOptions(shard_size=3), quiet=True)
    export(loom, root / "pq", ExportOptions(format="parquet", shard_size=7), quiet=True)
    return root


def keys(stream) -> list[str]:
    return [s["__key__"] for s in stream]


def test_reads_an_export_by_split_with_and_without_decoding(exported):
    train = list(medloom.load(exported / "wds", split="train"))
    test = keys(medloom.load(exported / "wds", split="test"))
    assert len(train) == 30 and len(test) == 10 and not set(keys(train)) & set(test)
    assert isinstance(train[0]["jpg"], Image.Image) and train[0]["json"]["split"] == "train"
    raw = next(iter(medloom.load(exported / "wds", split="train", decode=False)))
    assert isinstance(raw["jpg"], bytes) and isinstance(raw["json"], bytes)
    arr = next(iter(medloom.load(exported / "wds", split="test", decode="numpy")))["jpg"]
    assert isinstance(arr, np.ndarray) and arr.shape == (48, 64, 3)
    with pytest.raises(ValueError, match="no split nope"):
        medloom.load(exported / "wds", split="nope")


def test_parquet_export_streams_the_same_samples(exported):
    pq = list(medloom.load(exported / "pq"))
    wds = keys(medloom.load(exported / "wds"))
    assert sorted(s["__key__"] for s in pq) == sorted(wds)
    assert isinstance(pq[0]["jpg"], Image.Image) and pq[0]["json"]["modality"] == "X-ray"


def test_shuffle_is_seeded_and_complete(exported):
    plain = keys(medloom.load(exported / "wds"))
    a = keys(medloom.load(exported / "wds", shuffle=8, seed=1))
    b = keys(medloom.load(exported / "wds", shuffle=8, seed=1))
    c = keys(medloom.load(exported / "wds", shuffle=8, seed=2))
    assert a == b and a != c and a != plain and sorted(a) == sorted(c) == sorted(plain)
    stream = medloom.load(exported / "wds", shuffle=8, seed=1)
    stream.set_epoch(1)
    assert keys(stream) != a and sorted(keys(stream)) == sorted(plain)


def test_torch_dataloader_workers_see_each_sample_once(exported):
    torch = pytest.importorskip("torch")
    stream = medloom.load(exported / "wds", decode="torch", shuffle=4, seed=0)
    loader = torch.utils.data.DataLoader(stream.torch(), batch_size=None, num_workers=2)
    for epoch in range(2):
        stream.set_epoch(epoch)
        seen = [s["__key__"] for s in loader]
        assert len(seen) == len(set(seen)) == 40
    sample = next(iter(stream.torch()))
    assert sample["jpg"].shape == (3, 48, 64) and sample["jpg"].dtype == torch.uint8


def test_ranks_and_workers_split_shards_disjointly(exported, monkeypatch):
    stream = medloom.load(exported / "wds")
    parts = []
    for rank in range(3):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "3")
        parts.append(keys(stream))
    assert sum(len(p) for p in parts) == 40 and len(set().union(*parts)) == 40


def test_webdataset_library_test_shards():
    folder = fixture_dir("webdataset")
    mnist = list(medloom.load(folder / "webdataset_testdata_sample.tgz"))
    assert len(mnist) == 90 and isinstance(mnist[0]["cls"], int) and mnist[0]["png"].size == (28, 28)
    compressed = list(medloom.load(str(folder / "webdataset_testdata_compressed.tar")))
    assert [s["__key__"] for s in compressed] == ["compressed/0001", "compressed/0002", "compressed/0003"]
    assert all(isinstance(s["txt"], str) and s["txt"] for s in compressed)


def test_urls_and_brace_patterns_over_http(exported):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(exported / "wds"))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        pattern = f"{base}/train-{{000000..000009}}.tar"
        assert len(expand_braces(pattern)) == 10
        got = keys(medloom.load(pattern, decode=False))
        assert sorted(got) == sorted(keys(medloom.load(exported / "wds", split="train", decode=False)))
        assert len(keys(Stream([f"{base}/test-000000.tar", f"{base}/test-000001.tar"]))) == 6
    finally:
        server.shutdown()


def test_grey_and_colour_images_batch_with_the_default_collate(tmp_path):
    """decode="torch" gives three channels whatever the file holds, and size= one shape: the default collate
    stacks a batch of grey and colour images of different sizes."""
    torch = pytest.importorskip("torch")
    for i in range(8):
        make_image(tmp_path / "d" / "a" / f"{i}.png", size=(40 + 8 * i, 30 + 4 * i), seed=i, mode="L" if i % 2 else "RGB")
    loom, _ = run_ingest(
        write_recipe(
            tmp_path,
            [dict(name="s", reader="imagefolder", path=str(tmp_path / "d"), modality="CXR", anatomy="chest", task="disease")],
        )
    )
    export(loom, tmp_path / "wds", ExportOptions(image_format="png"), quiet=True)
    images = [s["png"] for s in medloom.load(tmp_path / "wds", decode="torch", size=32)]
    batch = torch.utils.data.default_collate(images)
    assert batch.shape == (8, 3, 32, 32) and batch.dtype == torch.uint8
    grey = [s["png"] for s in medloom.load(tmp_path / "wds", decode="torch", channels=1, size=(24, 16))]
    assert {tuple(t.shape) for t in grey} == {(1, 16, 24)}
    assert {np.asarray(s["png"]).ndim for s in medloom.load(tmp_path / "wds", decode="numpy")} == {2, 3}  # as stored
