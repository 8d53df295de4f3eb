"""Exports published to an object store: a real S3 server over HTTP (moto's) and medloom's own command line,
checked with pyarrow's S3 client as a reader would."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.fs as pfs
import pytest
from conftest import cli, make_image, run_ingest, write_recipe

from medloom.export.verify import verify
from medloom.outputs import OutputFolder
from medloom.publish import local_files

SETTINGS = ["--max-side", "16", "--shard-size", "4", "-q"]


@pytest.fixture(scope="module")
def s3():
    """(endpoint, environment for the CLI, a client) of a local S3 server with an empty bucket."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = pfs.S3FileSystem(
        access_key="key", secret_key="secret", region="us-east-1", endpoint_override=endpoint, allow_bucket_creation=True
    )
    client.create_dir("bucket")
    env = {
        "AWS_ACCESS_KEY_ID": "key",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    yield endpoint, env, client
    server.stop()


@pytest.fixture(scope="module")
def loom(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("publish")
    for i in range(14):
        make_image(root / "d" / ("train", "test")[i % 2] / ("a", "b")[i // 2 % 2] / f"{i:03d}.png", seed=i)
    loom, _ = run_ingest(
        write_recipe(
            root, [dict(name="s", reader="imagefolder", path=str(root / "d"), modality="CXR", anatomy="chest", task="disease")]
        )
    )
    return loom


def written(folder: Path) -> list[str]:
    return sorted(local_files(OutputFolder(folder))[0])


def objects(client, prefix: str) -> dict[str, bytes]:
    infos = client.get_file_info(pfs.FileSelector(prefix, recursive=True, allow_not_found=True))
    found = {}
    for info in infos:
        if info.type == pfs.FileType.File:
            with client.open_input_stream(info.path) as f:
                found[info.path[len(prefix) + 1 :]] = f.read()
    return found


def test_export_to_s3_is_the_local_export_and_a_rerun_uploads_only_what_is_missing(s3, loom, tmp_path):
    endpoint, env, client = s3
    url = f"s3://bucket/medical/wds?endpoint_override={endpoint}"
    first = json.loads(cli("export", loom, "--out", url, *SETTINGS, "--json", env=env).stdout)
    staged = loom / "exports" / "staged" / "s3-bucket-medical-wds"
    files = written(staged)
    assert first["exported"] == 14 and first["shards"] == 4
    assert first["published"] == {
        "url": "s3://bucket/medical/wds",
        "files": len(files),
        "uploaded": len(files),
        "skipped": 0,
        "removed": 0,
        "bytes_uploaded": first["published"]["bytes_uploaded"],
        "left_out": [],
    }
    up = objects(client, "bucket/medical/wds")
    assert sorted(up) == sorted([*files, ".medloom-written.json"])
    assert all(up[name] == (staged / name).read_bytes() for name in files)

    local = tmp_path / "local"
    cli("export", loom, "--out", local, *SETTINGS)
    for shard in sorted(local.glob("*.tar")):  # the same shards as an export to a folder, byte for byte
        assert up[shard.name] == shard.read_bytes()
    copy = tmp_path / "copy"
    copy.mkdir()
    for name, data in up.items():
        (copy / name).write_bytes(data)
    assert verify(copy).ok, verify(copy).problems  # counts, sizes and sha256 as the uploaded manifest lists them

    again = json.loads(cli("export", loom, "--out", url, *SETTINGS, "--json", env=env).stdout)
    assert again["up_to_date"] and again["published"]["uploaded"] == 0 and again["published"]["skipped"] == len(files)
    client.delete_file("bucket/medical/wds/train-000001.tar")
    mended = json.loads(cli("publish", staged, url, "--json", env=env).stdout)
    assert (mended["uploaded"], mended["skipped"]) == (1, len(files) - 1)
    assert objects(client, "bucket/medical/wds")["train-000001.tar"] == (staged / "train-000001.tar").read_bytes()


def test_a_redone_export_removes_only_its_own_old_objects(s3, loom):
    endpoint, env, client = s3
    url = f"s3://bucket/redo?endpoint_override={endpoint}"
    cli("export", loom, "--out", url, *SETTINGS, env=env)
    assert "test-000001.tar" in objects(client, "bucket/redo")
    run = cli("export", loom, "--out", url, "--max-side", "16", "--shard-size", "8", "--overwrite", env=env)
    assert "2 old file(s) removed" in " ".join(run.stdout.split())
    staged = loom / "exports" / "staged" / "s3-bucket-redo"
    up = objects(client, "bucket/redo")
    assert sorted(up) == sorted([*written(staged), ".medloom-written.json"])
    assert "test-000001.tar" not in up and "train-000001.tar" not in up


def test_publish_leaves_what_it_did_not_write_alone(s3, loom, tmp_path):
    endpoint, env, client = s3
    with client.open_output_stream("bucket/theirs/notes.txt") as f:
        f.write(b"a colleague's file")
    url = f"s3://bucket/theirs?endpoint_override={endpoint}"
    run = cli("export", loom, "--out", url, *SETTINGS, check=False, env=env)
    assert run.returncode == 2
    assert "holds 1 object(s) medloom did not write there (first: notes.txt)" in " ".join(run.stderr.split())
    assert objects(client, "bucket/theirs") == {"notes.txt": b"a colleague's file"}
    with client.open_output_stream("bucket/torn/.medloom-written.json") as f:
        f.write(b'{"files": {"a.tar"')
    run = cli("export", loom, "--out", f"s3://bucket/torn?endpoint_override={endpoint}", *SETTINGS, check=False, env=env)
    assert run.returncode == 2 and "is damaged" in run.stderr
    assert list(objects(client, "bucket/torn")) == [".medloom-written.json"]

    folder = tmp_path / "mine"
    cli("export", loom, "--out", folder, *SETTINGS)
    (folder / "my-notes.md").write_text("not medloom's")
    state = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**state, "complete": False}))
    run = cli("publish", folder, f"s3://bucket/mine?endpoint_override={endpoint}", check=False, env=env)
    assert run.returncode == 2 and "not complete" in run.stderr
    (folder / "manifest.json").write_text(json.dumps(state))
    run = cli("publish", folder, f"s3://bucket/mine?endpoint_override={endpoint}", env=env)
    assert "1 file(s)" in run.stderr and "my-notes.md" in run.stderr  # named, not uploaded
    assert "my-notes.md" not in objects(client, "bucket/mine")


def test_urls_never_carry_credentials_and_a_dead_endpoint_fails_in_bounded_time(tmp_path, loom):
    run = cli("publish", tmp_path, "s3://bucket/x?secret_key=abc", check=False)
    assert run.returncode == 2 and "do not belong in the URL" in run.stderr and "abc" not in run.stderr
    run = cli("publish", tmp_path, "s3://bucket/x?colour=blue", check=False)
    assert run.returncode == 2 and "unknown option 'colour'" in run.stderr
    run = cli("export", loom, "--out", "ftp://host/x", check=False)
    assert run.returncode == 2 and "s3:// and gs://" in run.stderr
    started = time.monotonic()
    run = cli(
        "export",
        loom,
        "--out",
        "s3://bucket/x?endpoint_override=http://127.0.0.1:9&connect_timeout=1",
        *SETTINGS,
        check=False,
        env={"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_EC2_METADATA_DISABLED": "true"},
    )
    assert run.returncode == 2 and "cannot list it" in run.stderr
    assert time.monotonic() - started < 120
