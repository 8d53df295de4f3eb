"""`medloom serve` and `medloom report`: the app's pages, its guards, its writes, driven through a real Starlette app
(httpx in-process) and a real uvicorn server; the browser tests are in test_web_browser.py."""

from __future__ import annotations

import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
import yaml
from conftest import CLI_ENV, cli, make_image, rows, run_ingest, write_recipe
from PIL import Image

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.testclient import TestClient  # noqa: E402

from medloom.annotate.step import AnnotateSettings, annotate  # noqa: E402
from medloom.curate.cluster import cluster  # noqa: E402
from medloom.curate.concepts import apply_labels  # noqa: E402
from medloom.curate.dedup import dedup  # noqa: E402
from medloom.curate.embed import embed  # noqa: E402
from medloom.locks import hold  # noqa: E402
from medloom.web.app import make_app  # noqa: E402

SCRIPT_CAPTION = "<script>window.__pwned = 1; alert(1)</script> chest film"
EVIL_LABEL = "<img src=x onerror=window.__pwned2=1>"
MASK_BOX = (30, 20, 60, 40)  # x0, y0, x1, y1 in pixels of an 80x60 image


def build_web_loom(root: Path) -> Path:
    """Three visual families (clusters), an exact copy in a test split (a duplicate group), masks with a known
    box, a CSV whose caption holds a script and whose label holds markup, and captions that fail a check."""
    rng = np.random.default_rng(0)
    fam = root / "data" / "fam"
    for i in range(8):
        yy, xx = np.mgrid[0:64, 0:64]
        red = np.clip(np.stack([np.full((64, 64), 200), rng.normal(40, 20, (64, 64)), rng.normal(40, 20, (64, 64))], -1), 0, 255)
        stripes = np.stack([((xx + i) % 8 < 4) * 200 + 20] * 3, -1)
        disc = np.stack([((xx - 32 - i % 5) ** 2 + (yy - 30) ** 2 < 200) * 255] * 3, -1)
        for name, arr in (("red", red), ("stripes", stripes), ("disc", disc)):
            (fam / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr.astype(np.uint8)).save(fam / name / f"{name}{i}.png")
    (fam / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a quarantine row
    (root / "data" / "copies" / "test" / "red").mkdir(parents=True)
    shutil.copy(fam / "red" / "red0.png", root / "data" / "copies" / "test" / "red" / "red0.png")
    seg = root / "data" / "seg"
    (seg / "images").mkdir(parents=True)
    (seg / "masks").mkdir(parents=True)
    for i in range(3):
        make_image(seg / "images" / f"s{i}.png", size=(80, 60), seed=70 + i)
        mask = np.zeros((60, 80), np.uint8)
        x0, y0, x1, y1 = MASK_BOX
        mask[y0:y1, x0:x1] = 255
        Image.fromarray(mask).save(seg / "masks" / f"s{i}.png")
    rep = root / "data" / "reports"
    lines = ["file,finding,report"]
    for i in range(4):
        make_image(rep / f"r{i}.jpg", size=(90, 60), seed=300 + i)
        label = EVIL_LABEL if i == 0 else ("nodule", "normal")[i % 2]
        caption = SCRIPT_CAPTION if i == 0 else "Small nodule."
        lines.append(f'r{i}.jpg,{label},"{caption}"')
    (rep / "labels.csv").write_text("\n".join(lines) + "\n")
    boxes = root / "data" / "boxes"
    make_image(boxes / "b0.png", seed=400)
    # one good box and one with no width: the record is kept, the box is a quarantine row about it
    (boxes / "boxes.csv").write_text("file,cell,x0,y0,x1,y1\nb0.png,cell,10,10,30,30\nb0.png,cell,5,5,5,20\n")
    (root / "data" / "dicom").mkdir(parents=True)
    shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm"), root / "data" / "dicom" / "CT_small.dcm")
    recipe = write_recipe(
        root,
        [
            dict(
                name="fam",
                reader="imagefolder",
                path="data/fam",
                modality="microscopy",
                anatomy="cell",
                task="cell type",
                license="CC BY 4.0",
            ),
            dict(
                name="copies",
                reader="imagefolder",
                path="data/copies",
                modality="microscopy",
                anatomy="cell",
                task="cell type",
                license="CC BY 4.0",
            ),
            dict(
                name="seg",
                reader="masks",
                path="data/seg",
                modality="dermoscopy",
                anatomy="skin",
                task="lesion segmentation",
                mask_label="lesion",
                license="CC BY-NC 4.0",
            ),
            dict(
                name="reports",
                reader="csv",
                path="data/reports",
                csv="labels.csv",
                image_column="file",
                label_column="finding",
                caption_column="report",
                modality="X-ray",
                anatomy="chest",
                task="disease",
            ),
            dict(name="dcm", reader="dicom", path="data/dicom", task="disease"),
            dict(
                name="boxes",
                reader="csv",
                path="data/boxes",
                csv="boxes.csv",
                image_column="file",
                label_column="cell",
                box_columns=dict(xmin="x0", ymin="y0", xmax="x1", ymax="y1"),
                modality="microscopy",
                anatomy="blood",
                task="cell detection",
            ),
        ],
        annotate={"seed": 0, "templates": {"classification": ["A CT scan showing {finding}."]}},
    )
    loom, _ = run_ingest(recipe)
    annotate(
        loom, AnnotateSettings(seed=0, templates={"classification": ["A CT scan showing {finding}."]}), workers=1, quiet=True
    )
    embed(loom, "builtin", workers=1, quiet=True)
    cluster(loom, 3, pca=8, seed=0, quiet=True)
    dedup(loom, near=None)  # exact copies only: the one planted
    return loom


@pytest.fixture(scope="module")
def web_loom(tmp_path_factory) -> Path:
    return build_web_loom(tmp_path_factory.mktemp("web"))


LONG_LABEL = "W" * 36


def build_odd_loom(root: Path) -> Path:
    """A DICOM file whose Burned In Annotation tag is YES beside one without; a pair of duplicates with long
    ids and a long label; a source none of whose files could be read."""
    dicom = root / "data" / "dicom"
    dicom.mkdir(parents=True)
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    ds.save_as(dicom / "plain.dcm")
    ds.BurnedInAnnotation = "YES"
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".1"
    ds.save_as(dicom / "tagged.dcm")
    long = root / "data" / "long" / LONG_LABEL
    make_image(long / ("a" * 100 + ".png"), seed=1)
    shutil.copy(long / ("a" * 100 + ".png"), long / ("b" * 100 + ".png"))
    (root / "data" / "none" / "cls").mkdir(parents=True)
    (root / "data" / "none" / "cls" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    recipe = write_recipe(
        root,
        [
            dict(name="dcm", reader="dicom", path="data/dicom", task="disease"),
            dict(name="long", reader="imagefolder", path="data/long", modality="X-ray", anatomy="chest", task="disease"),
            dict(name="none", reader="imagefolder", path="data/none", modality="X-ray", anatomy="chest", task="disease"),
        ],
    )
    loom, _ = run_ingest(recipe)
    dedup(loom, near=None)
    return loom


@pytest.fixture(scope="module")
def odd_loom(tmp_path_factory) -> Path:
    return build_odd_loom(tmp_path_factory.mktemp("odd"))


def client(loom: Path, **kwargs) -> TestClient:
    return TestClient(make_app(loom, **kwargs), base_url="http://127.0.0.1:8765")


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def test_overview_grid_and_record_pages(web_loom):
    c = client(web_loom)
    total = rows(web_loom, "SELECT count(*) AS n FROM records")[0]["n"]
    home = c.get("/")
    assert home.status_code == 200 and f'id="total-records">{total}<' in home.text
    assert "<svg" in home.text and "microscopy / cell / cell type" in home.text
    grid = c.get("/grid")
    assert f'id="grid-total">{total}<' in grid.text and grid.text.count('class="tile"') == total
    seg = c.get("/grid", params={"source": "seg"})
    assert 'id="grid-total">3<' in seg.text
    both = c.get("/grid", params=[("source", "seg"), ("source", "reports")])
    assert 'id="grid-total">7<' in both.text
    where = c.get("/grid", params={"where": "width = 80 AND height = 60"})
    assert 'id="grid-total">3<' in where.text
    label = c.get("/grid", params={"label": "nodule"})
    n_nodule = rows(web_loom, "SELECT count(*) AS n FROM records WHERE list_contains(labels, 'nodule')")[0]["n"]
    assert n_nodule == 1 and f'id="grid-total">{n_nodule}<' in label.text
    dup = c.get("/grid", params={"duplicate": "marked out"})
    marked = rows(web_loom, "SELECT count(*) AS n FROM dedup WHERE NOT keep")[0]["n"]
    assert marked == 4 and f'id="grid-total">{marked}<' in dup.text  # the planted copy, and discs i and i + 5
    group = rows(web_loom, "SELECT \"group\" FROM dedup WHERE id = 'fam/red/red0_png'")[0]["group"]
    assert 'id="grid-total">2<' in c.get("/grid", params={"group": str(group)}).text
    about_kept = rows(
        web_loom,
        "SELECT reason, count(DISTINCT record_id) AS n FROM quarantine WHERE record_id <> '' "
        "AND record_id IN (SELECT id FROM records) GROUP BY reason",
    )
    assert about_kept == [{"reason": "zero_area_box", "n": 1}]
    assert 'id="grid-total">1<' in c.get("/grid", params={"quarantine": "zero_area_box"}).text
    assert 'id="grid-total">1<' in c.get("/grid", params={"where": "quarantine LIKE '%zero_area%'"}).text
    flagged = c.get("/grid", params={"text": "flagged"})
    n_flagged = rows(web_loom, "SELECT count(*) AS n FROM annotations WHERE len(flags) > 0")[0]["n"]
    assert n_flagged > 0 and f'id="grid-total">{n_flagged}<' in flagged.text
    rid = rows(web_loom, "SELECT id FROM records WHERE source = 'seg' ORDER BY id LIMIT 1")[0]["id"]
    page = c.get("/record", params={"id": rid})
    assert page.status_code == 200 and 'class="roi-box"' in page.text and "/mask?" in page.text
    x0, y0, x1, y1 = MASK_BOX
    box = re.search(
        r'class="roi-box" data-index="0" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"', page.text
    ).groups()
    assert [float(v) for v in box] == pytest.approx([x0, y0, x1 - x0, y1 - y0], abs=1e-4)
    mask = Image.open(io.BytesIO(c.get("/mask", params={"id": rid, "roi": 0}).content))
    alpha = np.asarray(mask)[..., 3]
    assert alpha[y0:y1, x0:x1].all() and alpha.sum() == alpha[y0:y1, x0:x1].sum()
    thumb = c.get("/thumb", params={"id": rid})
    assert thumb.headers["content-type"] == "image/jpeg" and max(Image.open(io.BytesIO(thumb.content)).size) <= 192
    quarantine = c.get("/quarantine").text
    reason = rows(web_loom, "SELECT reason FROM quarantine WHERE path LIKE '%broken.png'")[0]["reason"]
    assert "red/broken.png" in quarantine and f"{reason} (1)" in quarantine
    similar = c.get("/similar", params={"id": rid})
    assert similar.status_code == 200 and similar.text.count('class="tile"') == 12


def test_every_text_from_data_is_escaped(web_loom):
    c = client(web_loom)
    rid = rows(web_loom, "SELECT id FROM records WHERE caption LIKE '%<script>%'")[0]["id"]
    for page in (
        c.get("/record", params={"id": rid}).text,
        c.get("/grid").text,
        c.get("/").text,
        c.get("/grid", params={"label": EVIL_LABEL}).text,
    ):
        assert "<script>window" not in page and "<img src=x" not in page
    assert "&lt;script&gt;window.__pwned = 1" in c.get("/record", params={"id": rid}).text
    assert "&lt;img src=x onerror=window.__pwned2=1&gt;" in c.get("/grid").text
    # the only scripts on a page are the app's own file, and the policy forbids inline ones
    page = c.get("/record", params={"id": rid})
    assert re.findall(r"<script[^>]*>", page.text) == ['<script src="/static/app.js">']
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_files_are_served_by_record_id_only(web_loom):
    c = client(web_loom)
    for path, params in (
        ("/thumb", {"id": "../../../../etc/passwd"}),
        ("/image", {"id": "/etc/passwd"}),
        ("/thumb", {"id": "fam/../../recipe.yaml"}),
        ("/mask", {"id": "..", "roi": "0"}),
        ("/image", {"id": "%2e%2e%2f%2e%2e%2fetc%2fpasswd"}),
    ):
        r = c.get(path, params=params)
        assert r.status_code == 404 and "no record" in r.text and "root:" not in r.text
    for raw in (
        "/static/..%2F..%2Fapp.py",
        "/static/../web/app.py",
        "/static/%2e%2e/index.py",
        "/static/app.py",
        "/..%2f..%2fetc/passwd",
    ):
        r = c.get(raw)
        assert r.status_code == 404 and "import" not in r.text
    # the WHERE box reads the records, never the disk
    r = c.get("/grid", params={"where": "EXISTS (SELECT * FROM read_csv('/etc/passwd'))"})
    assert r.status_code == 400 and "root:" not in r.text
    r = c.get("/grid", params={"where": "true; COPY items TO '/tmp/x.csv'"})
    assert r.status_code == 400 and "one condition" in r.text
    r = c.get("/grid", params={"where": "id IN (SELECT * FROM glob('/etc/*'))"})
    assert r.status_code == 400


def test_malformed_requests_get_a_message_never_a_traceback(web_loom):
    c = client(web_loom)
    cases = [
        ("/grid?page=x", 400, "not a number"),
        ("/grid?nosuch=1", 400, "unknown filter"),
        ("/grid?where=width%20%3E", 400, "not valid"),
        ("/record", 400, "`id` is missing"),
        ("/record?id=nope", 404, "no record"),
        ("/cluster?c=abc", 400, "whole number"),
        ("/cluster?c=999", 404, "no cluster"),
        ("/mask?id=x", 400, "missing"),
        ("/nowhere", 404, "Not Found"),
        ("/audit?state=weird", 400, "audit shows"),
        ("/similar?id=nope", 404, "no record"),
        ("/quarantine?reason=nosuch", 200, "Quarantine"),
    ]
    rid = rows(web_loom, "SELECT id FROM records WHERE source = 'fam' LIMIT 1")[0]["id"]
    cases += [
        (f"/image?id={rid}&wc=40&ww=400", 400, "DICOM and NIfTI"),
        (f"/mask?id={rid}&roi=3", 404, "no ROI"),
        (f"/image?id={rid}&wc=nan", 400, "finite"),
    ]
    for url, status, text in cases:
        r = c.get(url)
        assert r.status_code == status and text in r.text and "Traceback" not in r.text, (url, r.status_code, r.text)
    assert c.post("/cluster/label").status_code == 403
    assert c.put("/grid").status_code == 405


def test_writes_need_the_csrf_token_and_are_refused_read_only(web_loom, tmp_path):
    loom = tmp_path / "loom"
    shutil.copytree(web_loom, loom, symlinks=True)
    c = client(loom)
    form = {"cluster": "0", "annotator": "alice", "global": "microscopy"}
    r = c.post("/cluster/label", data=form)
    assert r.status_code == 403 and "CSRF" in r.text
    r = c.post("/cluster/label", data={**form, "csrf": "forged"})
    assert r.status_code == 403
    assert not (loom / "curation" / "labels").exists()
    ro = client(loom, read_only=True)
    page = ro.get("/cluster", params={"c": 0}).text
    assert 'id="label-form"' not in page
    r = ro.post("/cluster/label", data={**form, "csrf": "anything"})
    assert r.status_code == 403 and "read-only" in r.text
    token = csrf_of(c.get("/cluster", params={"c": 0}).text)
    r = c.post("/cluster/label", data={**form, "csrf": token, "annotator": "../../evil"})
    assert r.status_code == 400 and "annotator name" in r.text
    r = c.post("/cluster/label", data={**form, "csrf": token, "global": "astrology"})
    assert r.status_code == 400 and "astrology" in r.text
    r = c.post("/cluster/label", data={**form, "csrf": token, "x": "y" * 70000})
    assert r.status_code == 400 and "larger than" in r.text
    assert not (loom / "curation" / "labels").exists()
    (loom / "curation" / "labels").mkdir()
    (loom / "curation" / "labels" / "zoe.yaml").write_text("my own notes")  # not medloom's: never overwritten
    r = c.post("/cluster/label", data={**form, "csrf": token, "annotator": "zoe"})
    assert r.status_code == 409 and "will not be overwritten" in r.text
    assert (loom / "curation" / "labels" / "zoe.yaml").read_text() == "my own notes"


def test_token_and_host_guards(web_loom):
    c = client(web_loom, token="s3cret", host="0.0.0.0")
    assert c.get("/").status_code == 401
    assert c.get("/", params={"token": "wrong"}).status_code == 401
    # the token leaves the address bar: the same page without it, the cookie set on the way; the cookie is
    # named after the server's port and holds no token (a browser sends it to every port of the host)
    r = c.get("/grid", params={"token": "s3cret", "source": "seg"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/grid?source=seg"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("medloom_token_8765=") and "s3cret" not in cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert c.get("/grid").status_code == 200  # the cookie carries it from here
    # a path that looks like another host stays on this one
    r = c.get("http://127.0.0.1:8765//evil.example/x?token=s3cret", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/evil.example/x"
    # the cookie of a server with another token on another port of the host is not this one's
    other = TestClient(make_app(web_loom, token="other", host="0.0.0.0"), base_url="http://127.0.0.1:8766")
    assert other.get("/", params={"token": "other"}).status_code == 200
    c.cookies.update(other.cookies)
    assert c.get("/grid").status_code == 200 and other.get("/grid").status_code == 200
    assert (
        client(web_loom, token="s3cret", host="0.0.0.0").get("/", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    )
    local = client(web_loom)
    assert local.get("/", headers={"host": "evil.example:8765"}).status_code == 421
    proc = cli("serve", web_loom, "--host", "0.0.0.0", check=False)
    assert proc.returncode == 2 and "--token" in proc.stderr


def test_labels_choices_and_reviews_are_written_where_the_steps_read_them(web_loom, tmp_path):
    loom = tmp_path / "loom"
    shutil.copytree(web_loom, loom, symlinks=True)
    c = client(loom)
    token = csrf_of(c.get("/cluster", params={"c": 1}).text)
    # two annotators label cluster 1; they disagree on the global concept, then a third breaks the tie
    for name, concept, local in (
        ("alice", "microscopy", ["blood smear"]),
        ("bob", "diagrams", []),
        ("carol", "microscopy", ["blood smear"]),
    ):
        r = c.post(
            "/cluster/label",
            data={"csrf": token, "cluster": "1", "annotator": name, "global": concept, "panel": "single", "local": local},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
    files = sorted((loom / "curation" / "labels").glob("*.yaml"))
    assert [f.stem for f in files] == ["alice", "bob", "carol"]
    assert yaml.safe_load(files[0].read_text())["clusters"] == {
        1: {"panel": "single", "global": "microscopy", "local": ["blood smear"]}
    }
    report = apply_labels(loom, files)
    assert report.decisions["1"]["global"] == "microscopy" and report.agreement["1"] == pytest.approx(2 / 3)
    page = c.get("/clusters").text
    assert "alice: microscopy" in page and "bob: diagrams" in page and "0.67" in page
    for cl in rows(loom, "SELECT DISTINCT cluster FROM clusters"):  # each row's strip: the 6 nearest its centre
        nearest = [
            r["id"] for r in rows(loom, f"SELECT id FROM clusters WHERE cluster = {cl['cluster']} ORDER BY distance, id LIMIT 6")
        ]
        strip = re.search(rf'id="cluster-{cl["cluster"]}".*?<td class="strip">(.*?)</td>', page, re.S).group(1)
        assert re.findall(r'alt="([^"]+)"', strip) == nearest
    r = c.post("/concepts/apply", data={"csrf": token}, follow_redirects=False)  # not before the preview
    assert r.status_code == 400 and "/concepts/apply" in r.text
    plan = re.search(r'name="plan" value="([^"]+)"', c.get("/concepts/apply").text).group(1)
    r = c.post("/concepts/apply", data={"csrf": token, "plan": plan}, follow_redirects=False)
    assert r.status_code == 303
    got = {r["global_concept"] for r in rows(loom, "SELECT * FROM concepts WHERE cluster = 1")}
    assert got == {"microscopy"}
    # the duplicate group: keep the training copy instead of the test copy
    group = rows(loom, "SELECT * FROM dedup WHERE id LIKE '%red0%' ORDER BY id")
    assert len(group) == 2 and [g["keep"] for g in group] == [True, False]  # copies/test/... kept first
    train_copy = group[1]["id"]
    token = csrf_of(c.get("/duplicates").text)
    r = c.post(
        "/duplicates/keep",
        data={"csrf": token, "group": str(group[0]["group"]), "keep": train_copy, "curator": "dana"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    after = {g["id"]: g for g in rows(loom, "SELECT * FROM dedup")}
    assert after[train_copy]["keep"] and not after[group[0]["id"]]["keep"]
    assert after[group[0]["id"]]["duplicate_of"] == train_copy and after[group[0]["id"]]["reason"] == "curator"
    assert after[train_copy]["decided_by"] == "dana" and after[train_copy]["decided_at"]
    report, _, kept = dedup(loom, near=None)  # a new dedup run keeps the curator's choice
    assert train_copy in kept and group[0]["id"] not in kept and report.by_reason.get("curator") == 1
    again = {g["id"]: g for g in rows(loom, "SELECT * FROM dedup")}
    assert again[train_copy]["keep"] and again[train_copy]["decided_by"] == "dana"
    with hold(loom, command="medloom ingest (a test)"):  # another writer holds the loom: nothing is written
        r = c.post(
            "/duplicates/keep", data={"csrf": token, "group": str(group[0]["group"]), "keep": group[0]["id"], "curator": "dana"}
        )
        assert r.status_code == 409 and "medloom ingest (a test)" in r.text and "not saved" in r.text
    assert {g["id"]: g["keep"] for g in rows(loom, "SELECT * FROM dedup")}[train_copy]
    r = c.post(
        "/duplicates/keep", data={"csrf": token, "group": str(group[0]["group"]), "keep": "fam/red/red1_png", "curator": "dana"}
    )
    assert r.status_code == 400 and "not in duplicate group" in r.text
    # audit: edit a flagged caption, reject another, edit one question and reject another; a new annotate run
    # keeps every verdict
    flagged = [r["id"] for r in rows(loom, "SELECT id FROM annotations WHERE len(flags) > 0 ORDER BY id")]
    assert len(flagged) >= 2
    page = c.get("/audit").text
    assert all(f'data-id="{i}"' in page for i in flagged[:2]) and 'data-field="caption"' in page
    ann0 = rows(loom, f"SELECT caption, vqa FROM annotations WHERE id = '{flagged[0]}'")[0]
    seen, q0, q1 = ann0["caption"], ann0["vqa"][0], ann0["vqa"][1]
    verdicts = [
        ("caption", "edited", "An X-ray image of the chest.", seen, flagged[0]),
        (
            "caption",
            "rejected",
            "",
            rows(loom, f"SELECT caption FROM annotations WHERE id = '{flagged[1]}'")[0]["caption"],
            flagged[1],
        ),
        ("question", "edited", "Which finding does this image show?", q0["question"], flagged[0]),
        ("question", "rejected", "", q1["question"], flagged[0]),
    ]
    for field, decision, text, previous, rid in verdicts:
        r = c.post(
            "/audit/review",
            data={
                "csrf": token,
                "id": rid,
                "field": field,
                "decision": decision,
                "reviewer": "erin",
                "text": text,
                "seen": previous,
            },
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
    r = c.post(
        "/audit/review",
        data={
            "csrf": token,
            "id": flagged[1],
            "field": "caption",
            "decision": "accepted",
            "reviewer": "erin",
            "seen": "a caption no longer there",
        },
    )
    assert r.status_code == 400 and "changed since the page was loaded" in r.text
    r = c.post(
        "/audit/review",
        data={"csrf": token, "id": flagged[1], "field": "texts", "decision": "accepted", "reviewer": "erin", "seen": ""},
    )
    assert r.status_code == 400 and "use one of caption, roi_text, question" in r.text

    def check():
        ann = {a["id"]: a for a in rows(loom, "SELECT * FROM annotations")}
        first = ann[flagged[0]]
        assert first["caption"] == "An X-ray image of the chest." and first["caption_source"] == "reviewer"
        assert [(v["field"], v["decision"], v["by"]) for v in first["reviews"]] == [
            ("caption", "edited", "erin"),
            ("question", "edited", "erin"),
            ("question", "rejected", "erin"),
        ]
        assert first["reviews"][0]["previous"] == seen
        questions = {q["question"]: q for q in first["vqa"]}
        assert q1["question"] not in questions and len(first["vqa"]) == len(ann0["vqa"]) - 1
        edited = questions["Which finding does this image show?"]
        assert edited["source"] == "reviewer" and edited["prompt"].startswith("Which finding does this image show?")
        assert edited["answer"] == q0["answer"] and edited["options"] == q0["options"]
        assert ann[flagged[1]]["caption"] == "" and ann[flagged[1]]["reviews"][0]["decision"] == "rejected"
        if len(flagged) > 2:
            assert not ann[flagged[2]]["reviews"]

    check()
    reviews = json.loads((loom / "annotations" / "reviews.json").read_text())
    assert [(r["id"], r["field"], r["decision"]) for r in reviews] == [(v[4], v[0], v[1]) for v in verdicts]
    annotate(
        loom, AnnotateSettings(seed=0, templates={"classification": ["A CT scan showing {finding}."]}), workers=1, quiet=True
    )
    check()
    assert 'id="grid-total">2<' in c.get("/grid", params={"text": "reviewed"}).text
    assert "Which finding does this image show?" in c.get("/audit", params={"state": "reviewed"}).text
    # the LLaVA export takes the reviewed caption
    out = tmp_path / "llava"
    cli("export", loom, "--format", "llava", "--out", out)
    texts = json.dumps(json.loads((out / "llava-train.json").read_text()))
    assert "An X-ray image of the chest." in texts


def test_report_is_one_file_that_opens_offline(web_loom, tmp_path):
    out = tmp_path / "report.html"
    proc = cli("report", web_loom, "--out", out)
    assert "report:" in proc.stdout
    html = out.read_text()
    total = rows(web_loom, "SELECT count(*) AS n FROM records")[0]["n"]
    assert f'id="total-records">{total}<' in html and html.count("<svg") >= 6
    assert not re.search(r'(src|href)="(https?:)?//', html) and "<script" not in html and "<link" not in html
    assert "&lt;img src=x onerror" in html and "<img src=x" not in html
    reasons = rows(web_loom, "SELECT reason, count(*) AS n FROM quarantine GROUP BY 1")
    assert reasons and all(f">{r['reason']}<" in html for r in reasons)
    cli("report", web_loom, "--out", out)  # its own report is replaced
    foreign = tmp_path / "notes.html"
    foreign.write_text("<p>my notes</p>")
    proc = cli("report", web_loom, "--out", foreign, check=False)
    assert proc.returncode == 2 and "not a medloom report" in proc.stderr and foreign.read_text() == "<p>my notes</p>"


def start_server(loom: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """`medloom serve` on a free port; returns the process and its URL (read from what it prints)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "medloom.cli", "serve", str(loom), "--port", "0", "-q", "--workers", "1", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**CLI_ENV, **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}},  # the code under test
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        line = proc.stdout.readline()
        if "medloom serve: http" in line:
            return proc, line.split()[2]
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read())
    proc.kill()
    raise AssertionError("medloom serve did not start")


def test_serve_keeps_serving_while_an_ingest_runs(web_loom, tmp_path):
    import httpx

    loom = tmp_path / "loom"
    shutil.copytree(web_loom, loom, symlinks=True)
    recipe_path = web_loom.parent / "recipe.yaml"
    recipe = yaml.safe_load(recipe_path.read_text())
    more = tmp_path / "more"
    for i in range(300):
        make_image(more / f"c{i % 3}" / f"m{i}.png", size=(96, 96), seed=1000 + i)
    recipe["sources"] = [dict(s, path=str(web_loom.parent / s["path"])) for s in recipe["sources"]]
    recipe["sources"].append(
        dict(name="more", reader="imagefolder", path=str(more), modality="CT", anatomy="lung", task="disease")
    )
    recipe["loom"] = str(loom)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    proc, url = start_server(loom)
    try:
        busy = cli("serve", loom, "--port", url.rsplit(":", 1)[1].strip("/"), "-q", check=False)
        assert busy.returncode == 2 and "cannot listen" in busy.stderr and "Traceback" not in busy.stderr
        before = httpx.get(url + "grid").text
        n0 = int(re.search(r'id="grid-total">([\d,]+)<', before).group(1).replace(",", ""))
        from medloom.web.thumbs import read_index

        assert len(read_index(loom / "cache" / "thumbs")) == n0
        ingest = subprocess.Popen(
            [sys.executable, "-m", "medloom.cli", "ingest", str(tmp_path / "recipe.yaml"), "-q", "-w", "1"],
            env=CLI_ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        seen, statuses = set(), []
        while ingest.poll() is None:
            for path in ("grid", "", "grid?source=more", "quarantine"):
                r = httpx.get(url + path, timeout=30)
                statuses.append(r.status_code)
            seen.add(int(re.search(r'id="grid-total">([\d,]+)<', httpx.get(url + "grid").text).group(1).replace(",", "")))
        assert ingest.returncode == 0, ingest.stderr.read()
        assert set(statuses) == {200} and len(statuses) >= 8
        after = httpx.get(url + "grid").text
        assert f'id="grid-total">{n0 + 300}<' in after
        # a thumbnail of a record ingested after start is made on demand, and cached
        rid = rows(loom, "SELECT id FROM records WHERE source = 'more' LIMIT 1")[0]["id"]
        r = httpx.get(url + "thumb", params={"id": rid})
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_window_and_level_of_a_dicom_record(web_loom):
    from pydicom.pixels import apply_modality_lut

    from medloom.imaging import window_to_uint8

    c = client(web_loom)
    rec = rows(web_loom, "SELECT id, render FROM records WHERE source = 'dcm'")[0]
    page = c.get("/record", params={"id": rec["id"]}).text
    assert 'id="window-form"' in page and f'value="{rec["render"]["window_center"]}"' in page
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    values = apply_modality_lut(ds.pixel_array, ds)
    for params, (center, width) in (
        ({}, (rec["render"]["window_center"], rec["render"]["window_width"])),
        ({"wc": "100", "ww": "50"}, (100.0, 50.0)),
        ({"ww": "2000"}, (rec["render"]["window_center"], 2000.0)),
    ):
        r = c.get("/image", params={"id": rec["id"], **params})
        got = np.asarray(Image.open(io.BytesIO(r.content)))
        assert r.status_code == 200 and np.array_equal(got, window_to_uint8(values, center, width)), params
    assert c.get("/image", params={"id": rec["id"], "ww": "-5"}).status_code == 400


def test_thumbnails_are_made_once_by_the_executor(web_loom, tmp_path):
    from medloom import catalog
    from medloom.view.render import render_sources
    from medloom.web.thumbs import THUMBS, build_thumbnails, read_index, read_thumb, render_thumb, thumb_key

    loom = tmp_path / "loom"
    shutil.copytree(web_loom, loom, symlinks=True, ignore=shutil.ignore_patterns("thumbs"))
    sources = render_sources(catalog.read_manifest(loom))
    made = build_thumbnails(loom, catalog.connect(loom), sources, workers=2, quiet=True)
    n = rows(loom, "SELECT count(*) AS n FROM records")[0]["n"]
    assert made == {"records": n, "cached": 0, "made": n, "failed": 0}
    index = read_index(loom / THUMBS)
    assert len(index) == n and len({pack for pack, _, _ in index.values()}) == len(list((loom / THUMBS).glob("pack-*")))
    for r in rows(loom, "SELECT * FROM records ORDER BY id"):
        assert read_thumb(loom / THUMBS, index[thumb_key(r["id"], r["pixel_hash"])]) == render_thumb(r, sources, {})
    again = build_thumbnails(loom, catalog.connect(loom), sources, workers=2, quiet=True)
    assert again == {"records": n, "cached": n, "made": 0, "failed": 0}
    assert not list((loom / THUMBS).rglob(".*.tmp*"))
    # a file in the folder that is not a pack of ours is skipped, and left alone
    (loom / THUMBS / "pack-notes.bin").write_bytes(b"my notes")
    assert read_index(loom / THUMBS) == index and (loom / THUMBS / "pack-notes.bin").read_bytes() == b"my notes"


def test_hosts_a_request_may_name(web_loom):
    auth = {"Authorization": "Bearer s3cret"}
    wide = client(web_loom, token="s3cret", host="0.0.0.0")  # all interfaces: addresses, not any name
    for host, status in (
        ("evil.example", 421),
        ("evil.example:8765", 421),
        ("192.168.1.20:8765", 200),
        ("[fe80::1]:8765", 200),
        ("LocalHost:8765", 200),
    ):
        assert wide.get("/", headers={**auth, "host": host}).status_code == status, host
    r = wide.get("/", headers={**auth, "host": "Medloom.Example.org"})
    assert r.status_code == 421 and "--allow-host medloom.example.org" in r.text
    named = client(web_loom, token="s3cret", host="0.0.0.0", allow_hosts=["medloom.example.org"])
    for host in ("medloom.example.org", "MEDLOOM.EXAMPLE.ORG:8765", "medloom.example.org."):
        assert named.get("/", headers={**auth, "host": host}).status_code == 200, host
    one = client(web_loom, token="s3cret", host="192.168.1.20")  # one address: that one only
    for host, status in (("192.168.1.20:8765", 200), ("10.0.0.1", 421), ("localhost", 421), ("evil.example", 421)):
        assert one.get("/", headers={**auth, "host": host}).status_code == status, host
    assert client(web_loom).get("/", headers={"host": "LOCALHOST:8765"}).status_code == 200
    proc = cli("serve", "--help")
    assert "--allow-host" in proc.stdout and "--filter-timeout" in proc.stdout and "--filter-memory" in proc.stdout


def test_writes_from_another_origin_are_refused(web_loom, tmp_path):
    loom = tmp_path / "loom"
    shutil.copytree(web_loom, loom, symlinks=True)
    c = client(loom)
    form = {
        "cluster": "0",
        "annotator": "alice",
        "global": "microscopy",
        "csrf": csrf_of(c.get("/cluster", params={"c": 0}).text),
    }
    for headers in (
        {"origin": "http://evil.example"},
        {"origin": "null"},
        {"origin": "http://127.0.0.1:9999"},
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
        {"origin": "http://127.0.0.1:8765", "sec-fetch-site": "cross-site"},
    ):
        r = c.post("/cluster/label", data=form, headers=headers)
        assert r.status_code == 403 and "refused" in r.text, headers
    assert not (loom / "curation" / "labels").exists()
    r = c.post(
        "/cluster/label",
        data=form,
        headers={"origin": "http://127.0.0.1:8765", "sec-fetch-site": "same-origin"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and (loom / "curation" / "labels" / "alice.yaml").is_file()


def test_the_where_box_is_one_condition_within_budgets(web_loom):
    c = client(web_loom, filter_seconds=1.5, filter_memory_mb=64)
    total = rows(web_loom, "SELECT count(*) AS n FROM records")[0]["n"]
    # closing the wrapping parenthesis early and commenting the rest out: refused, not run
    for where, text in (
        ("false) OR (true) --", "did not open"),
        ("true -- x", "comments"),
        ("false) OR (true", "did not open"),
        ("false) OR true OR (false", "did not open"),
        ("(width > 1", "left open"),
        ("true /* x */", "comments"),
        ("false; SELECT 1", "no `;`"),
    ):
        r = c.get("/grid", params={"where": where})
        assert r.status_code == 400 and "one condition" in r.text and text in r.text, (where, r.text)
    # what looks like them inside a string literal is text
    assert 'id="grid-total">0<' in c.get("/grid", params={"where": "caption = 'a) -- ; /* (b'"}).text
    assert f'id="grid-total">{total}<' in c.get("/grid", params={"where": "(width > 0) AND (height > 0)"}).text
    r = c.get("/grid", params={"where": "(SELECT count(*) FROM range(1000000000000)) > 0"})
    assert r.status_code == 400 and "longer than 1.5 s" in r.text and "--filter-timeout" in r.text
    r = c.get("/grid", params={"where": "(SELECT list_sum(range(20000000))) > 0"})  # a 160 MB list
    assert r.status_code == 400 and "more than 64 MiB" in r.text and "--filter-memory" in r.text
    assert f'id="grid-total">{total}<' in c.get("/grid").text and c.get("/").status_code == 200  # still serving
    r = c.get("/grid", params={"where": "width > 70"})  # the sandbox runs the next filter
    n = rows(web_loom, "SELECT count(*) AS n FROM records WHERE width > 70")[0]["n"]
    assert r.status_code == 200 and f'id="grid-total">{n}<' in r.text
    # once for the count, the rows and every facet of a page, and not again for its other pages
    sandbox = c.app.state.medloom.index.sandbox
    runs = sandbox.runs
    for params in ({"where": "width < 70"}, {"where": "width < 70", "page": "1"}, {"where": "width < 70", "source": "fam"}):
        assert c.get("/grid", params=params).status_code == 200
    assert sandbox.runs == runs + 1


def test_a_slow_filter_stalls_no_other_page_and_sigterm_stops_the_server(web_loom):
    import threading

    import httpx

    proc, url = start_server(web_loom, "--filter-timeout", "120")
    slow: list = []
    thread = threading.Thread(
        target=lambda: slow.append(
            httpx.get(url + "grid", params={"where": "(SELECT count(*) FROM range(100000000000000)) > 0"}, timeout=180)
        )
    )
    try:
        thread.start()
        time.sleep(1.0)  # the filter is running in its sandbox
        rid = rows(web_loom, "SELECT id FROM records ORDER BY id LIMIT 1")[0]["id"]
        for path, params in (("grid", {}), ("record", {"id": rid}), ("grid", {"source": "seg"}), ("", {})):
            assert httpx.get(url + path, params=params, timeout=60).status_code == 200
        assert thread.is_alive() and not slow  # those answered while the slow filter still ran
        proc.terminate()
        proc.wait(timeout=20)  # not the 120 s the filter may run: it is stopped with the server
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    thread.join(timeout=30)
    assert not thread.is_alive()


def test_quarantine_links_lead_to_records(web_loom):
    c = client(web_loom)
    page = c.get("/quarantine").text  # broken.png's row names the record it would have been: no link
    links = re.findall(r'href="(/record\?[^"]+)"', page)
    assert "red/broken.png" in page and links
    assert all(c.get(html.unescape(link)).status_code == 200 for link in links)


def test_a_huge_page_number_is_a_400_that_says_so(web_loom):
    c = client(web_loom)
    for path in ("/duplicates", "/grid", "/audit"):
        r = c.get(path, params={"page": str(10**20)})
        assert r.status_code == 400 and "out of range" in r.text, path


def test_a_chosen_facet_keeps_its_other_values(web_loom):
    seg = client(web_loom).get("/grid", params={"source": "seg"}).text  # to add them: OR within a facet
    source_facet = re.search(r'data-facet="source">(.*?)</div>', seg, re.S).group(1)
    assert 'data-value="reports"' in source_facet and 'data-value="fam"' in source_facet


def test_the_overview_says_when_no_split_was_assigned(web_loom):
    split = re.search(r'id="section-split">(.*?)</section>', client(web_loom).get("/").text, re.S).group(1)
    assert "(none)" in split and ">train<" not in split and "No split assigned" in split  # as `medloom stats`


def test_the_record_page_flags_burned_in_text(odd_loom):
    c = client(odd_loom)
    by_uri = {r["uri"]: r["id"] for r in rows(odd_loom, "SELECT id, uri FROM records WHERE source = 'dcm'")}
    tagged = c.get("/record", params={"id": by_uri["tagged.dcm"]}).text
    assert 'id="burned-in"' in tagged and "Burned In Annotation tag is YES" in tagged
    assert 'id="burned-in"' not in c.get("/record", params={"id": by_uri["plain.dcm"]}).text


def test_the_overview_counts_the_sources_it_draws(odd_loom):
    home = client(odd_loom).get("/").text
    bars = re.search(r'id="section-source">.*?</svg>', home, re.S).group(0).count("<rect")
    assert bars == 2 and re.search(r"records from (<[^>]+>)?2(<[^>]+>)? source", home)
    assert "1 with no records: none" in home


def test_the_report_does_not_embed_where_the_loom_lies(odd_loom, tmp_path):
    out = tmp_path / "report.html"
    cli("report", odd_loom, "--out", out)
    report = out.read_text()
    assert "<h1>test</h1>" in report  # the recipe's name
    assert str(odd_loom.resolve()) not in report and str(tmp_path.parent) not in report
