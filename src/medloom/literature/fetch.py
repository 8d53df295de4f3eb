"""Download PMC Open Access packages named in the service's file list (`oa_file_list.csv`).

A connection pool shared by a few threads, retries with exponential back-off (honouring `Retry-After`)
on time-outs, dropped connections, 429 and 5xx, resumption of partial downloads with HTTP ranges, a
gzip integrity check before a package is renamed into place, and a JSON-lines log of every outcome.
A second run skips every package already complete, so it fetches only what is missing or updated.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import random
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FetchError
from ..net import retry_after as parse_retry_after
from ..outputs import ForeignFileError, OutputFolder, sha256_file
from .licenses import GROUPS, from_prose, from_type

DEFAULT_BASE_URL = "https://ftp.ncbi.nlm.nih.gov/pub/pmc/"
LOG = "fetch-log.jsonl"
PARTIAL = ".partial"
LICENSE_CHOICES = ("commercial", "noncommercial", "all")
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_BYTES = 4 << 30  # a package larger than this (announced or received) fails, and its partial file is removed
MAX_WAIT_S = 300.0  # the longest Retry-After honoured; a server asking for more fails the package at once


class TooLarge(OSError):
    """A download over the byte limit: retrying would fetch it again."""


@dataclass(frozen=True)
class Package:
    path: str  # relative to the service's base URL (oa_package/08/e0/PMC13900.tar.gz)
    accession: str
    pmid: str
    license: str  # normalised (CC BY, CC BY-NC, ..., other)
    updated: str

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass
class FetchReport:
    selected: int = 0
    skipped: int = 0  # already complete
    fetched: int = 0
    failed: list[dict] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {
            "selected": self.selected,
            "skipped": self.skipped,
            "fetched": self.fetched,
            "failed": self.failed,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
        }

    def lines(self, folder: Path) -> list[str]:
        return [
            f"pmc fetch: {self.selected} selected = {self.skipped} already complete + {self.fetched} fetched "
            f"({self.bytes / 1e6:.1f} MB) + {len(self.failed)} failed",
            f"packages: {folder} (log: {Path(folder) / 'fetch-log.jsonl'})",
        ]

    def warnings(self) -> list[tuple[str, str]]:
        return [("failed", f"{f['name']}: {f['error']} after {f['attempts']} attempt(s)") for f in self.failed[:20]]


def file_license(text: str) -> str:
    """The file list's licence column ("CC BY", "CC BY-NC-SA", "NO-CC CODE") as a normalised name."""
    text = (text or "").strip()
    if not text:
        return "unknown"
    return from_type(text) or from_prose(text) or ("CC0" if text.upper() == "CC0" else "other")


def read_file_list(path: str | os.PathLike) -> list[Package]:
    """Both layouts the service publishes: `oa_file_list.csv` (with a header) and the older tab-separated
    `oa_file_list.txt` (a date on the first line; file, citation, accession, [PMID,] licence)."""
    path = Path(path)
    if not path.is_file():
        raise FetchError(f"{path}: file list not found (download oa_file_list.csv from {DEFAULT_BASE_URL})")
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        first = f.readline()
        if "," in first and "file" in first.lower():
            header = next(csv.reader([first]))
            cols = {name.split("(")[0].strip().lower(): i for i, name in enumerate(header)}
            need = {"file", "accession id"}
            if not need <= cols.keys():
                raise FetchError(f"{path}: the header {header} lacks the column(s) {sorted(need - cols.keys())}")

            def get(row: list[str], name: str) -> str:
                i = cols.get(name)
                return row[i].strip() if i is not None and i < len(row) else ""

            rows = [
                Package(
                    get(r, "file"),
                    get(r, "accession id"),
                    get(r, "pmid"),
                    file_license(get(r, "license")),
                    get(r, "last updated"),
                )
                for r in csv.reader(f)
                if r
            ]
        else:
            rows = []
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) < 3:
                    continue
                pmid = next((p.removeprefix("PMID:") for p in parts[3:] if p.startswith("PMID:")), "")
                license = parts[-1] if len(parts) >= 4 and not parts[-1].startswith("PMID:") else ""
                rows.append(Package(parts[0].strip(), parts[2].strip(), pmid, file_license(license), ""))
    bad = [p for p in rows if not p.path or not p.name.endswith((".tar.gz", ".tgz", ".pdf"))]
    if bad:
        raise FetchError(f"{path}: {len(bad)} row(s) name no package, first: {bad[0]}")
    return rows


def select(packages: list[Package], licenses: str = "all", limit: int | None = None) -> list[Package]:
    if licenses not in LICENSE_CHOICES:
        raise FetchError(f"--licenses {licenses!r}: choose one of {', '.join(LICENSE_CHOICES)}")
    keep = packages if licenses == "all" else [p for p in packages if p.license in GROUPS[licenses]]
    return keep[:limit] if limit is not None else keep


# ---- the log ------------------------------------------------------------------------------------------


def read_log(out: Path) -> dict[str, dict]:
    """The last successful entry per package name (a torn last line from a kill is ignored)."""
    done: dict[str, dict] = {}
    path = out / LOG
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("status") == "ok":
            done[entry["name"]] = entry
        else:
            done.pop(entry.get("name"), None)
    return done


def is_complete(out: Path, package: Package, log: dict[str, dict]) -> bool:
    entry = log.get(package.name)
    final = out / package.name
    return (
        entry is not None
        and final.is_file()
        and final.stat().st_size == entry["bytes"]
        and entry.get("updated", "") == package.updated
    )


def check_gzip(path: Path) -> None:
    """Read the whole gzip stream so a truncated or corrupt download never counts as complete."""
    with gzip.open(path, "rb") as f:
        while f.read(1 << 20):
            pass


# ---- download -----------------------------------------------------------------------------------------


class Downloader:
    """One pool of HTTP connections; `get(package)` downloads one package with retries and resumption."""

    def __init__(
        self,
        out: Path,
        base_url: str,
        *,
        workers: int,
        retries: int,
        timeout: float,
        backoff: float,
        log: Callable[[dict], None],
        max_bytes: int = MAX_BYTES,
        max_wait: float = MAX_WAIT_S,
        claim: Callable[[str], object] = lambda rel: None,
    ):
        import urllib3

        self.out, self.base_url = out, base_url.rstrip("/") + "/"
        self.retries, self.backoff, self.log = retries, backoff, log
        self.max_bytes, self.max_wait, self.claim = max_bytes, max_wait, claim
        self.http = urllib3.PoolManager(
            maxsize=workers,
            block=True,
            retries=False,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            headers={"User-Agent": "medloom-pmc-fetch"},
        )
        self._errors = (urllib3.exceptions.HTTPError, OSError, zlib.error, EOFError)

    def get(self, package: Package) -> dict:
        partial = self.out / PARTIAL / (package.name + ".part")
        try:
            self.claim(f"{PARTIAL}/{package.name}.part")
        except ForeignFileError as e:
            return self.log_entry(package, "failed", 0, error=str(e), url=self.base_url + package.path.lstrip("/"))
        url = self.base_url + package.path.lstrip("/")
        attempts, last = 0, ""
        while attempts <= self.retries:
            attempts += 1
            try:
                status, retry_after = self._download(url, partial)
                if status is None:
                    if package.name.endswith((".gz", ".tgz")):
                        check_gzip(partial)
                    size, digest = partial.stat().st_size, sha256_file(partial)
                    self.claim(package.name)  # refuses to replace a file of the user's at that name
                    os.replace(partial, self.out / package.name)
                    return self.log_entry(package, "ok", attempts, bytes=size, sha256=digest)
                last = f"HTTP {status}"
                if status not in RETRY_STATUS:
                    break
                if retry_after is not None and retry_after > self.max_wait:
                    last += f" (the server asked to wait {retry_after:.0f} s, over --max-wait {self.max_wait:.0f} s)"
                    break
            except TooLarge as e:
                partial.unlink(missing_ok=True)
                last = str(e)
                break
            except ForeignFileError as e:
                last = str(e)
                break
            except self._errors as e:
                last, retry_after = f"{type(e).__name__}: {e}", None
                if isinstance(e, (zlib.error, EOFError, gzip.BadGzipFile)):
                    partial.unlink(missing_ok=True)  # corrupt, not short: start again
            if attempts <= self.retries:
                time.sleep(
                    retry_after if retry_after is not None else self.backoff * (2 ** (attempts - 1)) * (0.5 + random.random())
                )
        return self.log_entry(package, "failed", attempts, error=last, url=url)

    def _download(self, url: str, partial: Path) -> tuple[int | None, float | None]:
        """Append the rest of the file to `partial`; (None, None) when complete, else (status, retry-after)."""
        partial.parent.mkdir(parents=True, exist_ok=True)
        have = partial.stat().st_size if partial.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        resp = self.http.request("GET", url, headers=headers, preload_content=False)
        try:
            if resp.status == 416 and have:  # already whole
                return None, None
            if resp.status not in (200, 206):
                return resp.status, parse_retry_after(resp.headers.get("Retry-After"))
            mode = "ab" if resp.status == 206 else "wb"  # a server that ignores ranges sends it all again
            expected = resp.headers.get("Content-Length")
            start = have if resp.status == 206 else 0
            if expected is not None and expected.isdigit() and start + int(expected) > self.max_bytes:
                raise TooLarge(f"the package is {start + int(expected)} bytes, over --max-bytes {self.max_bytes}")
            written = 0
            with open(partial, mode) as f:
                for chunk in resp.stream(1 << 16):
                    written += len(chunk)
                    if start + written > self.max_bytes:
                        raise TooLarge(f"the package passed --max-bytes {self.max_bytes} while downloading")
                    f.write(chunk)
            if expected is not None and written < int(expected):
                raise OSError(f"connection closed after {written} of {expected} bytes")
            return None, None
        finally:
            resp.release_conn()

    def log_entry(self, package: Package, status: str, attempts: int, **more) -> dict:
        entry = {
            "name": package.name,
            "accession": package.accession,
            "path": package.path,
            "status": status,
            "attempts": attempts,
            "updated": package.updated,
            "license": package.license,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **more,
        }
        self.log(entry)
        return entry


def fetch(
    packages: Iterable[Package],
    out: Path,
    *,
    base_url: str = DEFAULT_BASE_URL,
    workers: int = 4,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 1.0,
    progress: Callable[[int], None] | None = None,
    max_bytes: int = MAX_BYTES,
    max_wait: float = MAX_WAIT_S,
) -> FetchReport:
    """Download every package not already complete in `out`; never raises for a single package."""
    out = Path(out)
    packages = list(packages)
    report = FetchReport(selected=len(packages))
    started = time.perf_counter()
    log = read_log(out)
    # a folder fetched before the written-files record: the log, the packages it names and the partial downloads
    # under medloom's own `.partial/` names are ours
    folder = OutputFolder(out, adopt=[LOG, *log, *(f"{PARTIAL}/{p.name}.part" for p in packages)])
    folder.ensure()
    folder.claim(LOG)
    claim_lock = threading.Lock()

    def claim(rel: str) -> None:
        with claim_lock:
            folder.claim(rel)

    todo = [p for p in packages if not is_complete(out, p, log)]
    report.skipped = len(packages) - len(todo)
    lock = threading.Lock()
    with open(out / LOG, "a", encoding="utf-8") as logfile:

        def write(entry: dict) -> None:
            with lock:
                logfile.write(json.dumps(entry) + "\n")
                logfile.flush()

        downloader = Downloader(
            out,
            base_url,
            workers=workers,
            retries=retries,
            timeout=timeout,
            backoff=backoff,
            log=write,
            max_bytes=max_bytes,
            max_wait=max_wait,
            claim=claim,
        )
        theirs = [p for p in todo if not folder.is_owned(p.name) and (out / p.name).exists()]
        for package in theirs:  # never downloaded: the name is taken by a file medloom did not write
            entry = downloader.log_entry(
                package,
                "failed",
                0,
                url=base_url + package.path,
                error=f"{out / package.name} exists and medloom did not write it; move it away to fetch the package",
            )
            report.failed.append({k: entry[k] for k in ("name", "url", "error", "attempts")})
        todo = [p for p in todo if p not in theirs]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for entry in pool.map(downloader.get, todo):
                if entry["status"] == "ok":
                    report.fetched += 1
                    report.bytes += entry["bytes"]
                else:
                    report.failed.append({k: entry[k] for k in ("name", "url", "error", "attempts")})
                if progress:
                    progress(1)
    report.seconds = time.perf_counter() - started
    return report
