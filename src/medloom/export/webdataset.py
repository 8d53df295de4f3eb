"""WebDataset tar shards: the writer, and the format rules that `verify` checks.

The rules are the ones the `webdataset` library and HF `datasets` enforce when reading: a member name
is `KEY.EXT` where the key has no dots and the extension is lowercase; a sample's files are adjacent;
keys are unique; every sample has the same fields, and each JSON field keeps one type.
Members are written with fixed owner, mode and time, so the same samples give byte-identical shards.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..outputs import naming

BLOCK = 512
KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]+)$")  # the split `webdataset` uses: key up to the first dot


def temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


class ShardFile:
    """A shard's temporary file, hashed as it is written, so its sha256 needs no second read.

    Writers (tarfile, pyarrow) get it as their file object; their `close()` only flushes, `finish()`
    makes the file durable and returns its manifest facts.
    """

    def __init__(self, path: Path):
        self.path, self.tmp = path, temporary(path)
        self._file = open(self.tmp, "wb")
        self._sha = hashlib.sha256()
        self._size = 0

    def write(self, data) -> int:
        with naming(self.path):
            self._file.write(data)
        self._sha.update(data)
        n = memoryview(data).nbytes
        self._size += n
        return n

    def tell(self) -> int:
        return self._size

    def flush(self) -> None:
        with naming(self.path):
            self._file.flush()

    close = flush

    @property
    def closed(self) -> bool:
        return self._file.closed

    def writable(self) -> bool:
        return True

    def finish(self) -> dict:
        with naming(self.path):
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        return {"bytes": self._size, "sha256": self._sha.hexdigest()}

    def abort(self) -> None:
        self._file.close()
        self.tmp.unlink(missing_ok=True)


# A member's ustar header (POSIX, as tarfile's PAX writer makes it for a short ASCII name): mode 0644, owner 0,
# time 0, no user or group name. Only the name, the size and the checksum change from member to member.
_MODE_TO_MTIME = b"0000644\0" + b"0000000\0" * 2  # mode, uid, gid; then size, mtime, checksum
_AFTER_TYPE = b"\0" * 100 + tarfile.POSIX_MAGIC + b"\0" * (32 + 32 + 8 + 8 + 155 + 12)
_MTIME = b"00000000000\0"
_FIXED_SUM = sum(_AFTER_TYPE) + 8 * 32 + ord("0")  # the rest of the header; the checksum field counts as spaces
RECORD = tarfile.RECORDSIZE  # an archive is padded to a multiple of this


def tar_member(name: str, data: bytes) -> bytes:
    """One regular file as tar bytes: header, data, zero padding to the block.

    Written by hand because tarfile spends more time on a header than a worker on resizing a small image;
    the bytes are tarfile's (a test compares). A name that is not ASCII or longer than 100 bytes gets
    tarfile's own header with a pax `path` record."""
    size = len(data)
    pad = b"\0" * (-size % BLOCK)
    if not (name.isascii() and len(name) <= 100 and size < 8**11):
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, 0, 0o644
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape") + data + pad
    head = name.encode().ljust(100, b"\0") + _MODE_TO_MTIME + b"%011o\0" % size + _MTIME
    checksum = sum(head) + _FIXED_SUM
    return head + b"%06o\0 " % checksum + b"0" + _AFTER_TYPE + data + pad


def tar_sample(key: str, files: dict[str, bytes]) -> bytes:
    """A sample's members, adjacent, named `KEY.EXT`."""
    return b"".join(tar_member(f"{key}.{ext}", data) for ext, data in files.items())


def tar_end(offset: int) -> bytes:
    """The end of an archive of `offset` bytes: two zero blocks, then zeros to a whole tar record (as tarfile)."""
    offset += 2 * BLOCK
    return b"\0" * (2 * BLOCK + -offset % RECORD)


class TarShardWriter:
    """Writes one shard under a temporary name; the caller lists it, then renames it into place."""

    def __init__(self, path: Path):
        self.path = path
        self._file = ShardFile(path)
        self.samples = 0
        self.size = 2 * BLOCK  # the end-of-archive blocks

    def add(self, key: str, files: dict[str, bytes]) -> None:
        self.add_bytes(tar_sample(key, files))

    def add_bytes(self, sample: bytes) -> None:
        """A sample's members as `tar_sample` made them."""
        self._file.write(sample)
        self.samples += 1
        self.size += len(sample)

    def finish(self) -> dict:
        """Close the archive under its temporary name; its size and sha256 for the manifest."""
        self._file.write(tar_end(self._file.tell()))
        return self._file.finish()

    def abort(self) -> None:
        self._file.abort()


def iter_members(fileobj: BinaryIO) -> Iterator[tuple[tarfile.TarInfo, bytes | None]]:
    """Members of a tar stream (plain or compressed), read front to back without seeking."""
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        for info in tar:
            yield info, (tar.extractfile(info).read() if info.isfile() else None)


def json_types(value) -> object:
    """A type signature of a JSON value; null matches anything (reported separately)."""
    if isinstance(value, dict):
        return {k: json_types(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        kinds = [json_types(v) for v in value]
        return ["list", kinds[0] if kinds else None]
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if value is None:
        return None
    return type(value).__name__


def merge_types(a: object, b: object, where: str, problems: list[str]) -> object:
    """The common signature of two; a problem is added where they disagree."""
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            problems.append(f"{where}: fields {sorted(a.keys() ^ b.keys())} are not in every sample")
        return {k: merge_types(a.get(k), b.get(k), f"{where}.{k}", problems) for k in a.keys() | b.keys()}
    if isinstance(a, list) and isinstance(b, list):
        return ["list", merge_types(a[1], b[1], f"{where}[]", problems)]
    if a != b:
        problems.append(f"{where}: {describe(a)} in one sample, {describe(b)} in another")
    return a


def describe(sig: object) -> str:
    return "object" if isinstance(sig, dict) else "list" if isinstance(sig, list) else str(sig)


def iter_samples(fileobj: BinaryIO, name: str, problems: list[str]) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Adjacent members grouped by key, as readers group them; member-level problems are reported."""
    key, files = None, {}
    for info, data in iter_members(fileobj):
        if not info.isfile():
            if not info.isdir():
                problems.append(f"{name}: {info.name} is not a regular file")
            continue
        match = KEY_EXT.match(info.name)
        if not match:
            problems.append(f"{name}: {info.name} has no KEY.EXT form (no extension, or a dot in a folder)")
            continue
        member_key, ext = match.groups()
        if ext != ext.lower():
            problems.append(f"{name}: {info.name}: extension {ext!r} is not lowercase")
        if member_key != key:
            if key is not None:
                yield key, files
            key, files = member_key, {}
        if ext in files:
            problems.append(f"{name}: sample {key} has two {ext!r} files")
        files[ext] = data
    if key is not None:
        yield key, files


def check_shards(paths: list[Path]) -> tuple[dict[str, int], list[str]]:
    """Samples per shard and every format problem found (each names its shard and member)."""
    problems: list[str] = []
    counts: dict[str, int] = {}
    seen: dict[str, str] = {}
    fields: frozenset[str] | None = None
    signatures: dict[str, object] = {}
    for path in paths:
        name, count = path.name, 0
        try:
            with open(path, "rb") as f:
                for key, files in iter_samples(f, name, problems):
                    count += 1
                    check_sample(name, key, files, seen, problems, signatures)
                    if fields is None:
                        fields = frozenset(files)
                    elif frozenset(files) != fields:
                        problems.append(f"{name}: sample {key} has fields {sorted(files)}, the first sample had {sorted(fields)}")
        except (tarfile.TarError, OSError, EOFError) as e:
            problems.append(f"{name}: not a readable tar archive ({type(e).__name__}: {e})")
        counts[name] = count
    return counts, problems


def check_sample(
    name: str, key: str, files: dict[str, bytes], seen: dict[str, str], problems: list[str], signatures: dict[str, object]
) -> None:
    """Key uniqueness, and JSON fields that parse, hold no nulls and keep their types."""
    if key in seen:
        where = "in this shard (its files are not adjacent)" if seen[key] == name else f"in {seen[key]}"
        problems.append(f"{name}: key {key} is used again {where}")
    seen.setdefault(key, name)
    for ext in (e for e in files if e.split(".")[-1] == "json"):
        try:
            value = json.loads(files[ext])
        except ValueError as e:
            problems.append(f"{name}: {key}.{ext} is not valid JSON ({e})")
            continue
        for null in find_nulls(value, ext):
            problems.append(
                f"{name}: {key}.{ext}: {null} is null (readers infer types from the first samples, "
                "so a null there breaks later ones)"
            )
        signatures[ext] = merge_types(signatures.get(ext), json_types(value), f"{name}: {key}.{ext}", problems)


def find_nulls(value, where: str) -> Iterator[str]:
    if value is None:
        yield where
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from find_nulls(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from find_nulls(v, f"{where}[{i}]")
