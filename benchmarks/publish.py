"""Publishing to S3: `medloom publish` against pyarrow's own parallel copy (`pyarrow.fs.copy_files`, the
baseline), both uploading the same folder of shards to one local S3 server (moto's, in its own process,
over HTTP), and then a rerun of `medloom publish` with nothing changed.

medloom does more than copy: it hashes every file (sha256), keeps the prefix's record of what it wrote,
checks the prefix for objects it did not write, and uploads the manifest last. The ratio shows what that
costs. The local server is the limit for both; against a real store the network is.

Usage: python benchmarks/publish.py [--files 48] [--mb 4] [--threads 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    server = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto_server did not start (pip install 'moto[server]')")


def make_folder(folder: Path, files: int, mb: int) -> int:
    """A folder medloom wrote: `files` shards of `mb` MB of random bytes and a manifest."""
    from medloom.outputs import OutputFolder

    out = OutputFolder(folder)
    out.ensure()
    total = 0
    for i in range(files):
        data = os.urandom(mb << 20)
        out.write_bytes(f"train-{i:06d}.tar", data)
        total += len(data)
    out.write_bytes("manifest.json", b'{"complete": true}')
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=48)
    ap.add_argument("--mb", type=int, default=4)
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args()
    os.environ.update(ENV)

    import pyarrow as pa
    import pyarrow.fs as pfs

    from medloom.publish import publish

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = start_server(port)
    tmp = Path(tempfile.mkdtemp(prefix="medloom-publish-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    try:
        s3 = pfs.S3FileSystem(region="us-east-1", endpoint_override=endpoint, allow_bucket_creation=True)
        s3.create_dir("bench")
        total = make_folder(tmp / "export", args.files, args.mb)
        mb = total / 1e6
        pfs_threads = pa.io_thread_count()

        started = time.perf_counter()
        pfs.copy_files(str(tmp / "export"), "bench/baseline", destination_filesystem=s3, use_threads=True)
        base = time.perf_counter() - started

        url = f"s3://bench/medloom?endpoint_override={endpoint}"
        started = time.perf_counter()
        first = publish(tmp / "export", url, threads=args.threads, quiet=True)
        ours = time.perf_counter() - started
        started = time.perf_counter()
        again = publish(tmp / "export", url, threads=args.threads, quiet=True)
        rerun = time.perf_counter() - started
        assert first.uploaded == args.files + 1 and again.uploaded == 0, (first, again)
    finally:
        server.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.files} files, {mb:.0f} MB, to a local S3 server (moto) over HTTP")
    print(f"  pyarrow.fs.copy_files (baseline, {pfs_threads} I/O threads): {base:.2f} s, {mb / base:.0f} MB/s")
    print(
        f"  medloom publish ({args.threads} threads): {ours:.2f} s, {mb / ours:.0f} MB/s, {base / ours:.2f}x the baseline's rate"
    )
    print(f"  medloom publish again, nothing changed: {rerun:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
