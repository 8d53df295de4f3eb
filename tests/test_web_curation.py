"""`medloom serve`'s curation pages against real looms through the real app (httpx in-process): the audit queue
works per text, shows what was judged and undoes it; applying cluster labels merges every label file and the
votes applied earlier, and says what changes first; a label outside the taxonomy is a warning, not a 500."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import cli, make_image, rows, run_ingest, write_recipe

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from test_llm import ChatServer  # noqa: E402
from test_web import build_web_loom, client, csrf_of  # noqa: E402

from medloom.annotate import AnnotateSettings, annotate  # noqa: E402

QUESTION_PROMPT = "Rephrase the question; do not answer it and do not name any finding."


@pytest.fixture(scope="module")
def web_loom(tmp_path_factory) -> Path:
    return build_web_loom(tmp_path_factory.mktemp("web"))


@pytest.fixture(scope="module")
def llm_loom(tmp_path_factory) -> Path:
    """24 chest films annotated through a local LLM server: its captions for covid-19 fail their check (the
    template's is kept, the LLM's text is kept aside), and every question rewrite fails (no answer), so
    covid-19 records have two flagged texts, the others a flagged question and an LLM caption."""
    root = tmp_path_factory.mktemp("llm")
    for i in range(24):
        make_image(root / "cxr" / ("normal", "pneumonia", "covid-19")[i % 3] / f"c{i:02d}.png", size=(40, 30), seed=i)
    recipe = write_recipe(
        root, [dict(name="cxr", reader="imagefolder", path="cxr", modality="X-ray", anatomy="chest", task="disease")]
    )
    loom, _ = run_ingest(recipe)
    server = ChatServer()
    server.plan[QUESTION_PROMPT] = ["400"] * 1000
    try:
        annotate(loom, settings(server), workers=1, quiet=True)
    finally:
        server.close()
    return loom


def settings(server) -> AnnotateSettings:
    return AnnotateSettings(rois=False, llm_url=server.url, llm_model="m", llm_concurrency=2)


def cards(page: str, record_id: str) -> str:
    found = re.search(rf'<div class="audit-item" id="a-{re.escape(record_id)}".*?(?=<div class="audit-item"|</main>)', page, re.S)
    return found.group(0) if found else ""


def test_audit_works_per_text_shows_what_was_judged_and_undoes_it(llm_loom, tmp_path):
    loom = tmp_path / "loom"
    shutil.copytree(llm_loom, loom, symlinks=True)
    c = client(loom)
    ann = {a["id"]: a for a in rows(loom, "SELECT * FROM annotations")}
    covid = sorted(i for i in ann if "covid-19" in i)
    normal = sorted(i for i in ann if "/normal/" in i)
    token = csrf_of(c.get("/audit").text)

    def judge(rid: str, field: str, decision: str, seen: str, state: str = "flagged", text: str = ""):
        r = c.post(
            "/audit/review",
            data={
                "csrf": token,
                "id": rid,
                "field": field,
                "decision": decision,
                "reviewer": "erin",
                "seen": seen,
                "state": state,
                "text": text,
            },
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text

    # the LLM's failed caption is shown beside the template's that was kept
    first = cards(c.get("/audit").text, covid[0])
    assert "A CT scan of the brain." in first and "does not name" in first
    assert first.count('class="audit-text"') == 2  # the caption and the question the LLM failed to rewrite
    # paging: 20 records a page, every flagged record on one of the two pages
    pages = [c.get("/audit", params={"page": p}).text for p in (0, 1)]
    assert [p.count('class="audit-item"') for p in pages] == [20, 4] and "page 1 of 2" in pages[0]
    assert 'class="next-page"' in pages[0] and 'class="prev-page"' in pages[1]
    # judging one text of a record leaves its other flagged text in the queue
    judge(covid[0], "caption", "accepted", ann[covid[0]]["caption"])
    left = cards(c.get("/audit").text, covid[0])
    assert left.count('class="audit-text"') == 1 and 'data-field="question"' in left
    assert 'class="verdict" data-field="caption" data-decision="accepted"' in left
    # ... and in the LLM queue: a normal record's LLM caption stays after its flagged question is judged
    assert cards(c.get("/audit", params={"state": "llm"}).text, normal[0])
    question = ann[normal[0]]["vqa"][0]["question"]
    judge(normal[0], "question", "accepted", question)
    llm_card = cards(c.get("/audit", params={"state": "llm"}).text, normal[0])
    assert 'class="audit-text" data-field="caption"' in llm_card
    # a rejected text shows with its verdict and the text it judged, and can be undone
    caption, template = ann[covid[1]]["caption"], ann[covid[1]]["caption_source"]
    judge(covid[1], "caption", "rejected", caption)
    assert rows(loom, f"SELECT caption FROM annotations WHERE id = '{covid[1]}'")[0]["caption"] == ""
    reviewed = cards(c.get("/audit", params={"state": "reviewed"}).text, covid[1])
    verdict = re.search(r'<form method="post" action="/audit/undo".*?</form>', reviewed, re.S).group(0)
    assert 'data-decision="rejected"' in verdict and f">{caption}<" in verdict and "erin" in verdict
    fields = dict(re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', verdict))
    r = c.post("/audit/undo", data={**fields, "previous": caption, "reviewer": "erin"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    after = rows(loom, f"SELECT caption, caption_source, reviews FROM annotations WHERE id = '{covid[1]}'")[0]
    assert (after["caption"], after["caption_source"], after["reviews"]) == (caption, template, [])
    assert 'data-field="caption"' in cards(c.get("/audit").text, covid[1])  # back in the queue
    r = c.post("/audit/undo", data={**fields, "previous": caption, "reviewer": "erin"})
    assert r.status_code == 404 and "undone already" in r.text
    # a rejected question comes back where it was, whole
    vqa = ann[covid[2]]["vqa"]
    judge(covid[2], "question", "rejected", vqa[0]["question"])
    assert len(rows(loom, f"SELECT vqa FROM annotations WHERE id = '{covid[2]}'")[0]["vqa"]) == len(vqa) - 1
    r = c.post(
        "/audit/undo",
        data={
            "csrf": token,
            "id": covid[2],
            "field": "question",
            "previous": vqa[0]["question"],
            "by": "erin",
            "at": json.loads((loom / "annotations" / "reviews.json").read_text())[-1]["at"],
            "reviewer": "erin",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    assert rows(loom, f"SELECT vqa FROM annotations WHERE id = '{covid[2]}'")[0]["vqa"] == vqa
    # the undone verdicts stay in reviews.json, marked; a new annotate run does not apply them
    reviews = json.loads((loom / "annotations" / "reviews.json").read_text())
    assert [(r["id"], r["decision"], bool(r.get("undone"))) for r in reviews] == [
        (covid[0], "accepted", False),
        (normal[0], "accepted", False),
        (covid[1], "rejected", True),
        (covid[2], "rejected", True),
    ]
    server = ChatServer()
    server.plan[QUESTION_PROMPT] = ["400"] * 1000
    try:
        annotate(loom, settings(server), workers=1, quiet=True)  # from the LLM cache
    finally:
        server.close()
    again = {a["id"]: a for a in rows(loom, "SELECT * FROM annotations")}
    assert again[covid[1]]["caption"] == caption and again[covid[2]]["vqa"] == vqa
    assert [r["decision"] for r in again[covid[0]]["reviews"]] == ["accepted"]


def label_file(folder: Path, name: str, clusters: dict) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"annotator": name, "clusters": clusters}))
    return path


def test_apply_merges_the_labels_applied_earlier_and_says_what_changes_first(web_loom, tmp_path):
    loom = tmp_path / "loom"
    shutil.copytree(web_loom, loom, symlinks=True)
    outside = tmp_path / "labels"
    outside.mkdir()
    a = label_file(outside, "alice", {0: {"global": "microscopy"}, 1: {"global": "microscopy"}})
    b = label_file(outside, "bob", {0: {"global": "microscopy"}, 1: {"global": "diagrams"}})
    cli("concepts", loom, "--apply", a, "--apply", b)  # applied from the command line
    applied = {r["cluster"]: r["global_concept"] for r in rows(loom, "SELECT DISTINCT cluster, global_concept FROM concepts")}
    assert applied == {0: "microscopy", 1: "microscopy", 2: "unlabelled"}
    c = client(loom)
    page = c.get("/clusters").text
    assert re.search(r"Annotators[^:]*: alice, bob;", page) and "mean agreement 0.75" in page
    token = csrf_of(c.get("/cluster", params={"c": 2}).text)
    r = c.post(
        "/cluster/label", data={"csrf": token, "cluster": "2", "annotator": "carol", "global": "diagrams"}, follow_redirects=False
    )
    assert r.status_code == 303
    # the preview: what changes, cluster by cluster, and nothing written yet
    stamp = (loom / "curation" / "concepts.parquet").stat().st_mtime_ns
    preview = c.get("/concepts/apply").text
    assert (loom / "curation" / "concepts.parquet").stat().st_mtime_ns == stamp
    changed = re.findall(r'<tr data-cluster="(\d+)">(.*?)</tr>', preview, re.S)
    assert [cl for cl, _ in changed] == ["2"] and "diagrams" in changed[0][1]
    assert "alice, bob" in re.search(r'id="label-sources">(.*?)</ul>', preview, re.S).group(1)
    plan = re.search(r'name="plan" value="([^"]+)"', preview).group(1)
    r = c.post("/concepts/apply", data={"csrf": token, "plan": plan}, follow_redirects=False)
    assert r.status_code == 303
    after = {r["cluster"]: r["global_concept"] for r in rows(loom, "SELECT DISTINCT cluster, global_concept FROM concepts")}
    assert after == {0: "microscopy", 1: "microscopy", 2: "diagrams"}  # alice's and bob's votes kept
    report = json.loads((loom / "curation" / "concepts.json").read_text())
    assert report["annotators"] == ["alice", "bob", "carol"] and report["agreement"]["1"] == 0.5
    # labels that changed after the preview are not applied blind
    r = c.post(
        "/cluster/label", data={"csrf": token, "cluster": "0", "annotator": "carol", "global": "diagrams"}, follow_redirects=False
    )
    r = c.post("/concepts/apply", data={"csrf": token, "plan": plan})
    assert r.status_code == 400 and "changed since the preview" in r.text


def test_a_label_outside_the_taxonomy_is_a_warning_not_an_error(web_loom, tmp_path):
    loom = tmp_path / "loom"
    shutil.copytree(web_loom, loom, symlinks=True)
    taxonomy = tmp_path / "taxonomy.yaml"
    taxonomy.write_text(yaml.safe_dump({"global": {"astrology": [], "microscopy": ["blood smear"]}}))
    other = client(loom, taxonomy=taxonomy)  # another server, another taxonomy, wrote zoe's labels
    token = csrf_of(other.get("/cluster", params={"c": 0}).text)
    r = other.post(
        "/cluster/label", data={"csrf": token, "cluster": "0", "annotator": "zoe", "global": "astrology"}, follow_redirects=False
    )
    assert r.status_code == 303
    c = client(loom)
    token = csrf_of(c.get("/cluster", params={"c": 1}).text)
    r = c.post(
        "/cluster/label", data={"csrf": token, "cluster": "1", "annotator": "yan", "global": "microscopy"}, follow_redirects=False
    )
    assert r.status_code == 303
    for path, params in (("/clusters", {}), ("/cluster", {"c": 0}), ("/concepts/apply", {})):
        r = c.get(path, params=params)
        assert r.status_code == 200, (path, r.text)
        warning = re.search(r'id="label-warnings">(.*?)</div>', r.text, re.S).group(1)
        assert "zoe.yaml" in warning and "astrology" in warning
    assert "yan: microscopy" in c.get("/cluster", params={"c": 1}).text  # the other file's labels still count
    assert 'id="confirm-apply"' not in c.get("/concepts/apply").text
