"""Publish an output folder (an export, a training-format folder, a benchmark set) to an object store URL
(`s3://bucket/prefix`, `gs://bucket/prefix`) through `pyarrow.fs`, with the same rules as a local folder.

- Only files medloom wrote in the folder (its `.medloom-written` record) are uploaded.
- The prefix keeps its own record, the object `PREFIX/.medloom-written.json`, of the objects medloom put
  there. An object the record does not name is never overwritten or removed: a prefix holding any such
  object refuses the publish. Objects are claimed in the record before they are uploaded, so a kill leaves
  a claim without an object, never an object nobody claimed.
- An object store makes an upload visible only when it completes, so a reader never sees half a shard.
  `manifest.json` goes last: the manifest a reader finds lists shards that are all there.
- A rerun uploads only what changed: a file whose size and sha256 match what the record says was uploaded
  (and whose object is there, of that size) is skipped. The record's modification time saves re-hashing
  an unchanged file. Objects medloom put there earlier that the folder no longer has (an export redone
  with other settings) are removed after the new manifest is up.
- Every request has a time limit (S3: connect 10 s, each request 120 s, five attempts; GCS: 120 s of
  retries), and credentials come from the environment (AWS_ACCESS_KEY_ID, ~/.aws,
  GOOGLE_APPLICATION_CREDENTIALS...), never from the URL: URLs are printed and written into logs.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from .engine.progress import progress_bar
from .errors import PublishError
from .locks import hold
from .outputs import OutputFolder, is_temporary, sha256_file

RECORD = ".medloom-written.json"
LAST = "manifest.json"  # what a reader opens first goes up last
SCHEMES = ("s3", "gs")
S3_OPTIONS = {
    "endpoint_override": str,
    "region": str,
    "scheme": str,
    "connect_timeout": float,
    "request_timeout": float,
    "force_virtual_addressing": bool,
    "anonymous": bool,
}
SECRETS = {"access_key", "secret_key", "session_token", "credential", "token", "password", "key"}
CHUNK = 8 << 20
SAVE_EVERY_S = 5.0


@dataclass
class PublishReport:
    url: str
    files: int = 0
    uploaded: int = 0
    skipped: int = 0
    removed: int = 0
    bytes_uploaded: int = 0
    left_out: list[str] = field(default_factory=list)  # local files medloom did not write: not uploaded

    def as_dict(self) -> dict:
        return {
            "url": self.url,
            "files": self.files,
            "uploaded": self.uploaded,
            "skipped": self.skipped,
            "removed": self.removed,
            "bytes_uploaded": self.bytes_uploaded,
            "left_out": self.left_out,
        }


def is_url(text: str | os.PathLike | None) -> bool:
    """Whether an --out names an object store rather than a local folder."""
    return isinstance(text, str) and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text) is not None


def shown(url: str) -> str:
    """The URL as printed: without its query (endpoints and options, never secrets, but long)."""
    return url.split("?", 1)[0]


def _flag(value: str) -> bool:
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise ValueError(value)


def staging_name(url: str) -> str:
    """The folder under LOOM/exports/staged/ where an export to `url` is made before it is published."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", shown(url)).strip("-.")


def open_url(url: str):
    """(pyarrow file system, bucket/prefix path) for an s3:// or gs:// URL.

    S3 options go in the query (`?endpoint_override=http://host:9000&region=eu-west-1` for MinIO, Ceph or
    a local server); the endpoint may also come from AWS_ENDPOINT_URL, as for the AWS tools.
    """
    import pyarrow.fs as pfs

    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise PublishError(
            f"{shown(url)}: medloom writes to {' and '.join(s + '://' for s in SCHEMES)} URLs; "
            "for another store, export to a local folder and copy it with the store's own tool"
        )
    if not parts.netloc:
        raise PublishError(f"{shown(url)}: no bucket; write {scheme}://BUCKET/PREFIX")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    secret = sorted(k for k in query if k.lower() in SECRETS)
    if secret:
        raise PublishError(
            f"{shown(url)}: credentials ({', '.join(secret)}) do not belong in the URL, which is "
            "printed and logged; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or use ~/.aws, "
            "GOOGLE_APPLICATION_CREDENTIALS) instead"
        )
    path = (parts.netloc + "/" + parts.path.strip("/")).rstrip("/")
    if scheme == "gs":
        if query:
            raise PublishError(
                f"{shown(url)}: gs:// URLs take no options; the credentials and project come from "
                "the environment (GOOGLE_APPLICATION_CREDENTIALS)"
            )
        return pfs.GcsFileSystem(retry_time_limit=timedelta(seconds=120)), path
    options: dict = {
        "connect_timeout": 10.0,
        "request_timeout": 120.0,
        "retry_strategy": pfs.AwsStandardS3RetryStrategy(max_attempts=5),
    }
    for key, value in query.items():
        if key not in S3_OPTIONS:
            raise PublishError(f"{shown(url)}: unknown option {key!r}; S3 URLs take {', '.join(S3_OPTIONS)}")
        try:
            options[key] = _flag(value) if S3_OPTIONS[key] is bool else S3_OPTIONS[key](value)
        except ValueError:
            raise PublishError(f"{shown(url)}: option {key}={value!r} is not a {S3_OPTIONS[key].__name__}") from None
    endpoint = options.get("endpoint_override") or os.environ.get("AWS_ENDPOINT_URL", "")
    if "://" in endpoint:  # pyarrow wants the scheme apart
        options["scheme"], options["endpoint_override"] = endpoint.split("://", 1)
    return pfs.S3FileSystem(**options), path


def local_files(folder: OutputFolder) -> tuple[list[str], list[str]]:
    """(files medloom wrote that are there, other files): only the first are published."""
    ours, others = [], []
    for rel in folder.files():
        if not is_temporary(rel):
            (ours if folder.wrote(rel) else others).append(rel)
    return ours, others


class RemoteRecord:
    """The prefix's record of the objects medloom wrote there: {"files": {rel: {bytes, sha256, mtime_ns}},
    "claimed": [rel, ...]}, rewritten whole (object stores have no append)."""

    def __init__(self, fs, base: str):
        self.fs, self.base = fs, base
        self.files: dict[str, dict] = {}
        self.claimed: set[str] = set()
        self._lock = threading.Lock()  # uploads finish in several threads
        self._saved = 0.0

    def load(self, present: dict[str, int]) -> None:
        if RECORD not in present:
            return
        with self.fs.open_input_stream(f"{self.base}/{RECORD}") as f:
            try:
                data = json.loads(f.read())
                self.files, self.claimed = dict(data["files"]), set(data["claimed"])
            except (ValueError, KeyError, TypeError):
                raise PublishError(
                    f"{self.base}/{RECORD} is damaged, so medloom cannot tell its objects from "
                    "others there; publish to another prefix"
                ) from None

    def owns(self, rel: str) -> bool:
        return rel in self.files or rel in self.claimed

    def save(self, force: bool = True) -> None:
        """Write the record (at most every few seconds unless `force`), under the lock: one write at a time, so
        an older write never lands after a newer one."""
        with self._lock:
            if not force and time.monotonic() - self._saved < SAVE_EVERY_S:
                return
            with self.fs.open_output_stream(f"{self.base}/{RECORD}") as f:
                f.write(json.dumps({"files": self.files, "claimed": sorted(self.claimed)}, indent=1, sort_keys=True).encode())
            self._saved = time.monotonic()

    def done(self, rel: str, facts: dict) -> None:
        with self._lock:
            self.files[rel] = facts
            self.claimed.discard(rel)

    def drop(self, rel: str) -> None:
        with self._lock:
            self.files.pop(rel, None)
            self.claimed.discard(rel)


def listing(fs, base: str) -> dict[str, int]:
    """Every object under the prefix: its path relative to the prefix -> its size."""
    import pyarrow.fs as pfs

    infos = fs.get_file_info(pfs.FileSelector(base, recursive=True, allow_not_found=True))
    return {info.path[len(base) + 1 :]: info.size for info in infos if info.type == pfs.FileType.File}


def publish(folder: str | os.PathLike, url: str, *, threads: int = 8, quiet: bool = False, wait: bool = False) -> PublishReport:
    """Upload the files medloom wrote in `folder` to `url` (see the module docstring), holding the folder's
    lock so no export changes it meanwhile."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PublishError(f"{folder}: no such folder; export into it first")
    fs, base = open_url(url)
    with hold(folder, wait=wait, what="output folder"):
        local = OutputFolder(folder)
        manifest = folder / LAST
        if manifest.is_file() and local.is_owned(LAST):
            try:
                state = json.loads(manifest.read_text(encoding="utf-8"))
            except ValueError:
                raise PublishError(f"{manifest} is damaged; run the export again") from None
            if isinstance(state, dict) and state.get("complete") is False:
                raise PublishError(
                    f"{folder}: the export there is not complete (a killed run?); run the export again to finish it, then publish"
                )
        ours, others = local_files(local)
        if not ours:
            raise PublishError(f"{folder}: holds no files medloom wrote; nothing to publish")
        return _publish(folder, sorted(ours), sorted(others), fs, base, url, threads, quiet)


def _publish(
    folder: Path, ours: list[str], others: list[str], fs, base: str, url: str, threads: int, quiet: bool
) -> PublishReport:
    report = PublishReport(url=shown(url), files=len(ours), left_out=others)
    try:
        present = listing(fs, base)
        record = RemoteRecord(fs, base)
        record.load(present)
    except OSError as e:
        raise PublishError(f"{shown(url)}: cannot list it ({e}); check the bucket, the endpoint and the credentials") from None
    foreign = sorted(rel for rel in present if rel != RECORD and not record.owns(rel))
    if foreign:
        raise PublishError(
            f"{shown(url)} holds {len(foreign)} object(s) medloom did not write there (first: "
            f"{foreign[0]}); publish to an empty prefix, or remove them yourself"
        )

    def facts(rel: str) -> dict:
        st = (folder / rel).stat()
        known = record.files.get(rel)
        if known and known["bytes"] == st.st_size and known.get("mtime_ns") == st.st_mtime_ns:
            return known
        return {"bytes": st.st_size, "sha256": sha256_file(folder / rel), "mtime_ns": st.st_mtime_ns}

    with ThreadPoolExecutor(max(1, threads)) as pool:
        local = dict(zip(ours, pool.map(facts, ours)))
    todo = [
        rel
        for rel in ours
        if record.files.get(rel, {}).get("sha256") != local[rel]["sha256"] or present.get(rel) != local[rel]["bytes"]
    ]
    report.skipped = len(ours) - len(todo)
    stale = sorted(rel for rel in record.files.keys() | record.claimed if rel not in local)
    if todo:
        record.claimed |= set(todo)
        record.save()

    def upload(rel: str) -> int:
        with open(folder / rel, "rb") as src, fs.open_output_stream(f"{base}/{rel}") as dst:
            while block := src.read(CHUNK):
                dst.write(block)
        record.done(rel, local[rel])
        record.save(force=False)
        return local[rel]["bytes"]

    first, failed = [r for r in todo if r != LAST], None
    try:
        with progress_bar(f"publish {shown(url)}", len(todo), quiet) as advance, ThreadPoolExecutor(max(1, threads)) as pool:

            def sizes():
                yield from pool.map(upload, first)
                if LAST in todo:  # after every other file is up
                    yield upload(LAST)

            for size in sizes():
                report.uploaded, report.bytes_uploaded = report.uploaded + 1, report.bytes_uploaded + size
                advance(1, note=f"{report.bytes_uploaded / 1e6:,.0f} MB")
        for rel in stale:
            if rel in present:
                fs.delete_file(f"{base}/{rel}")
            record.drop(rel)
            report.removed += 1
    except OSError as e:
        failed = e
    try:
        record.save()  # what went up, even after a failure: a rerun then skips it
    except OSError as e:
        failed = failed or e
    if failed is not None:
        raise PublishError(
            f"uploading to {shown(url)} failed: {failed}; run the same command again to go on "
            f"({report.uploaded} of {len(todo)} file(s) are up)"
        )
    return report
