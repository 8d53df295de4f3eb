"""`medloom pmc fetch` against a real local HTTP server that answers ranges, fails on purpose and counts
requests: retries, resumed partial downloads, the licence filter, the log, and a second run that fetches
nothing."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import random
import tarfile
import threading

import pytest
from conftest import cli

from medloom.literature.fetch import fetch, read_file_list, select

HEADER = "File,Article Citation,Accession ID,Last Updated (YYYY-MM-DD HH:MM:SS),PMID,License\n"
LICENSES = ["CC BY", "CC BY-NC", "CC0", "NO-CC CODE", "CC BY-NC-ND", "CC BY-SA"]


def make_package(accession: str, seed: int) -> bytes:
    buf = io.BytesIO()
    payload = random.Random(seed).randbytes(400_000)  # incompressible: a package of about 400 KB
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (
            (f"{accession}/article.nxml", f"<article><front/><!-- {seed} --></article>".encode()),
            (f"{accession}/fig1.jpg", payload),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Server:
    """Serves {path: bytes}; `plan[path]` lists what to do on successive requests: "503", "429", "cut"
    (send half the body, then drop the connection), "404"; then it serves normally (with ranges)."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.plan, self.log = files, {}, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path.lstrip("/")
                rng = self.headers.get("Range")
                outer.log.append((path, rng))
                actions = outer.plan.get(path, [])
                action = actions.pop(0) if actions else "ok"
                if action in ("503", "429", "404", "wait") or path not in outer.files:
                    code = int(action) if action not in ("ok", "wait") else (429 if action == "wait" else 404)
                    self.send_response(code)
                    if code == 429:
                        self.send_header("Retry-After", "3600" if action == "wait" else "0")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = outer.files[path]
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                body = data[start:]
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if action == "cut":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/pub/pmc/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def gets(self, name: str) -> list:
        return [r for r in self.log if r[0].endswith(name)]


@pytest.fixture
def service(tmp_path):
    files, lines = {}, [HEADER]
    for i, lic in enumerate(LICENSES):
        acc = f"PMC{1000 + i}"
        path = f"oa_package/0{i}/a{i}/{acc}.tar.gz"
        files[f"pub/pmc/{path}"] = make_package(acc, i)
        lines.append(f'{path},"J Test. 2020; {i}:1-2",{acc},2020-01-0{i + 1} 10:00:00,{9000 + i},{lic}\n')
    listing = tmp_path / "oa_file_list.csv"
    listing.write_text("".join(lines))
    server = Server(files)
    yield server, listing, files
    server.httpd.shutdown()


def test_file_list_and_licence_groups(service):
    _, listing, _ = service
    packages = read_file_list(listing)
    assert [p.license for p in packages] == ["CC BY", "CC BY-NC", "CC0", "other", "CC BY-NC-ND", "CC BY-SA"]
    assert [p.accession for p in select(packages, "commercial")] == ["PMC1000", "PMC1002", "PMC1005"]
    assert len(select(packages, "noncommercial")) == 5
    assert len(select(packages, "all", limit=2)) == 2


def test_retries_resume_log_and_a_second_run_fetches_nothing(service, tmp_path):
    server, listing, files = service
    server.plan = {"pub/pmc/oa_package/00/a0/PMC1000.tar.gz": ["503", "429"], "pub/pmc/oa_package/02/a2/PMC1002.tar.gz": ["cut"]}
    out = tmp_path / "out"
    packages = select(read_file_list(listing), "commercial")
    report = fetch(packages, out, base_url=server.url, workers=2, retries=3, backoff=0.01, timeout=5)
    assert report.failed == [] and report.fetched == 3 and report.skipped == 0
    for p in packages:
        assert (out / p.name).read_bytes() == files[f"pub/pmc/{p.path}"]
    assert not any((out / ".partial").iterdir())
    assert len(server.gets("PMC1000.tar.gz")) == 3  # two refusals, then the file
    cut = server.gets("PMC1002.tar.gz")
    half = len(files["pub/pmc/oa_package/02/a2/PMC1002.tar.gz"]) // 2
    assert cut[0][1] is None and cut[1][1].startswith("bytes=")  # resumed where the cut left it
    assert 0 < int(cut[1][1][6:-1]) <= half
    log = [json.loads(line) for line in (out / "fetch-log.jsonl").read_text().splitlines()]
    assert {e["name"]: e["attempts"] for e in log} == {"PMC1000.tar.gz": 3, "PMC1002.tar.gz": 2, "PMC1005.tar.gz": 1}
    assert all(e["sha256"] == hashlib.sha256((out / e["name"]).read_bytes()).hexdigest() for e in log)
    # second run: nothing fetched, not even asked for
    before = len(server.log)
    again = fetch(packages, out, base_url=server.url, workers=2, retries=3, backoff=0.01)
    assert (again.fetched, again.skipped, len(server.log)) == (0, 3, before)
    # a wider selection fetches only what is missing
    more = fetch(select(read_file_list(listing), "noncommercial"), out, base_url=server.url, backoff=0.01)
    assert (more.fetched, more.skipped) == (2, 3)


def test_a_corrupt_partial_is_restarted_and_a_missing_package_fails_visibly(service, tmp_path):
    server, listing, files = service
    out = tmp_path / "out"
    (out / ".partial").mkdir(parents=True)
    target = files["pub/pmc/oa_package/00/a0/PMC1000.tar.gz"]
    (out / ".partial" / "PMC1000.tar.gz.part").write_bytes(b"garbage!" + target[8:1000])  # a wrong start
    server.plan = {"pub/pmc/oa_package/05/a5/PMC1005.tar.gz": ["404"] * 10}
    report = fetch(select(read_file_list(listing), "commercial"), out, base_url=server.url, retries=2, backoff=0.01)
    assert (out / "PMC1000.tar.gz").read_bytes() == target
    assert [f["name"] for f in report.failed] == ["PMC1005.tar.gz"] and "404" in report.failed[0]["error"]
    assert len(server.gets("PMC1005.tar.gz")) == 1  # a 404 is not retried
    assert not (out / "PMC1005.tar.gz").exists()
    log = [json.loads(line) for line in (out / "fetch-log.jsonl").read_text().splitlines()]
    assert {e["name"]: e["status"] for e in log}["PMC1005.tar.gz"] == "failed"
    with gzip.open(out / "PMC1000.tar.gz") as f:
        assert f.read()


def test_cli(service, tmp_path):
    server, listing, _ = service
    out = tmp_path / "cli"
    cmd = [
        "pmc",
        "fetch",
        "--file-list",
        str(listing),
        "--out",
        str(out),
        "--licenses",
        "commercial",
        "--limit",
        "2",
        "--base-url",
        server.url,
        "--json",
    ]
    proc = cli(*cmd)
    assert json.loads(proc.stdout)["fetched"] == 2
    assert sorted(p.name for p in out.glob("*.tar.gz")) == ["PMC1000.tar.gz", "PMC1002.tar.gz"]
    bad = cli(*cmd[:3], tmp_path / "nope.csv", *cmd[4:], check=False)
    assert bad.returncode == 2 and "file list not found" in bad.stderr
    wrong = cli(*cmd[:7], "some", *cmd[8:], check=False)
    assert wrong.returncode == 2 and "choose one of" in wrong.stderr


def test_the_older_tab_separated_file_list(tmp_path):
    listing = tmp_path / "oa_file_list.txt"
    listing.write_text(
        "2024-01-01 00:00:00\n"
        "oa_package/08/e0/PMC13900.tar.gz\tBreast Cancer Res. 2001\tPMC13900\tPMID:11250746\tNO-CC CODE\n"
        "oa_package/b0/ac/PMC13901.tar.gz\tBreast Cancer Res. 2001\tPMC13901\tPMID:11250747\tCC BY\n"
    )
    packages = read_file_list(listing)
    assert [(p.accession, p.pmid, p.license, p.name) for p in packages] == [
        ("PMC13900", "11250746", "other", "PMC13900.tar.gz"),
        ("PMC13901", "11250747", "CC BY", "PMC13901.tar.gz"),
    ]
    assert [p.accession for p in select(packages, "commercial")] == ["PMC13901"]


def test_budgets_and_someone_elses_file(service, tmp_path):
    """A server asking to wait an hour fails the package at once; a package over --max-bytes fails and leaves
    no partial file; a file of the user's at a package's name is never replaced."""
    server, listing, files = service
    packages = select(read_file_list(listing), "all")
    out = tmp_path / "out"
    out.mkdir()
    (out / packages[2].name).write_bytes(b"my own copy")
    server.plan[f"pub/pmc/{packages[0].path}"] = ["wait"]
    report = fetch(packages[:2], out, base_url=server.url, workers=2, retries=3, backoff=0.01, max_bytes=300_000, max_wait=60)
    failed = {f["name"]: f for f in report.failed}
    assert "over --max-wait" in failed[packages[0].name]["error"] and failed[packages[0].name]["attempts"] == 1
    assert len(server.gets(packages[0].name)) == 1  # asked once, not retried for an hour
    assert "over --max-bytes" in failed[packages[1].name]["error"]
    report = fetch(packages[2:3], out, base_url=server.url, retries=0)
    assert "medloom did not write it" in report.failed[0]["error"]
    assert (out / packages[2].name).read_bytes() == b"my own copy"
    assert not any((out / ".partial").iterdir()) and report.fetched == 0
