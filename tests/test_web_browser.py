"""End to end in headless Chromium (Debian's `chromium`, driven by Playwright's Python client) against a real
`medloom serve`: facets (OR within one), keyboard, an ROI box where the catalog says, machine proposals drawn
apart in their own colours with their toggles and hover title, no script from data runs, labelling a cluster and
applying it after its preview, resolving a duplicate group, rejecting and undoing a verdict on the audit page, the
token cookie of two servers on one host, and texts that stay inside their charts and cards."""

from __future__ import annotations

import http.server
import io
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import rows
from PIL import Image
from test_web import MASK_BOX, build_odd_loom, build_web_loom, start_server

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-gpu",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    loom = build_web_loom(tmp_path_factory.mktemp("browser"))
    proc, url = start_server(loom)
    try:
        yield loom, url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.dialogs = []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    yield pg
    context.close()


def test_overview_facet_keyboard_and_record(served, page):
    loom, url = served
    page.goto(url)
    total = rows(loom, "SELECT count(*) AS n FROM records")[0]["n"]
    assert page.inner_text("#total-records") == str(total)
    assert page.locator("svg.chart").count() >= 5
    page.click("a[href='/grid']")
    page.click(".facet[data-facet='source'] a.facet-value[data-value='seg']")
    assert page.inner_text("#grid-total") == "3"
    assert "source=seg" in page.url and page.locator("#tiles .tile").count() == 3
    page.click(".facet[data-facet='source'] a.facet-value[data-value='seg']")  # off again
    assert page.inner_text("#grid-total") == str(total)
    page.fill("#where", "width = 80 AND height = 60")
    page.click("form.where button")
    assert page.inner_text("#grid-total") == "3"
    page.keyboard.press("ArrowRight")
    second = page.evaluate("document.activeElement.getAttribute('data-id')")
    page.keyboard.press("Enter")
    page.wait_for_url("**/record?id=*")
    assert page.inner_text("h1.record-id") == second
    # every thumbnail on the grid loaded (made by the executor at start)
    page.goto(url + "grid")
    page.wait_for_load_state("networkidle")
    widths = page.eval_on_selector_all("#tiles img", "els => els.map(e => e.naturalWidth)")
    assert len(widths) == total and all(w > 0 for w in widths)


def stroke_box(png: bytes, color: str, tol: int = 12) -> tuple[int, int, int, int] | None:
    """The bounding box of the pixels drawn in the stroke colour."""
    arr = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    target = np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)])
    ys, xs = np.nonzero(np.abs(arr - target).max(axis=2) <= tol)
    if not len(xs):
        return None
    return xs.min(), ys.min(), xs.max(), ys.max()


def test_roi_box_is_drawn_where_the_catalog_says(served, page):
    loom, url = served
    rec = rows(loom, "SELECT id, width, height, rois FROM records WHERE source = 'seg' ORDER BY id LIMIT 1")[0]
    page.goto(url + "record?id=" + rec["id"])
    page.wait_for_load_state("networkidle")
    stage = page.locator("#stage")
    shot = stage.screenshot()
    box = stage.bounding_box()
    color = page.get_attribute(".roi-box", "stroke")
    found = stroke_box(shot, color)
    assert found is not None, "no ROI box in the screenshot"
    sx, sy = box["width"] / rec["width"], box["height"] / rec["height"]
    x0, y0, x1, y1 = rec["rois"][0]["bbox"]
    assert [x0 * rec["width"], y0 * rec["height"], x1 * rec["width"], y1 * rec["height"]] == pytest.approx(MASK_BOX, abs=1e-3)
    want = (x0 * rec["width"] * sx, y0 * rec["height"] * sy, x1 * rec["width"] * sx, y1 * rec["height"] * sy)
    # a 3 px stroke centred on the box's edge
    assert np.allclose(found, want, atol=4), (found, want)
    # the mask is drawn too, and both go with the label's toggle
    assert page.locator("#overlay image").count() == 1
    page.uncheck(".roi-toggle[data-label='lesion']")
    assert stroke_box(stage.screenshot(), color) is None
    page.check(".roi-toggle[data-label='lesion']")
    assert stroke_box(stage.screenshot(), color) is not None


def test_no_script_from_data_runs(served, page):
    loom, url = served
    rid = rows(loom, "SELECT id FROM records WHERE caption LIKE '%<script>%'")[0]["id"]
    page.goto(url + "record?id=" + rid)
    page.wait_for_load_state("networkidle")
    assert "<script>window.__pwned = 1" in page.inner_text("#source-caption")
    assert "<img src=x" in page.inner_text("#labels")
    page.goto(url + "grid")
    page.wait_for_load_state("networkidle")
    page.goto(url)
    page.wait_for_load_state("networkidle")
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.evaluate("typeof window.__pwned2") == "undefined"
    assert page.dialogs == []


def test_label_a_cluster_and_resolve_a_duplicate_group(served, page):
    loom, url = served
    page.goto(url + "clusters")
    page.click("#cluster-2 a")
    page.fill("#annotator", "alice")
    page.select_option("#global", "microscopy")
    page.check("input[name='local'][value='blood smear']")
    page.select_option("#panel", "single")
    page.click("#save-label")
    page.wait_for_url("**/cluster?c=2&saved=1")
    assert "alice: microscopy (blood smear), single" in page.inner_text("ul.votes")
    labels = yaml.safe_load((Path(loom) / "curation" / "labels" / "alice.yaml").read_text())
    assert labels["clusters"] == {2: {"panel": "single", "global": "microscopy", "local": ["blood smear"]}}
    page.goto(url + "clusters")
    page.click("#apply-concepts")  # what changes first, then the apply
    page.wait_for_url("**/concepts/apply")
    assert "microscopy" in page.inner_text("#changes tr[data-cluster='2']")
    page.click("#confirm-apply")
    page.wait_for_url("**/clusters?applied=1")
    assert {r["global_concept"] for r in rows(loom, "SELECT global_concept FROM concepts WHERE cluster = 2")} == {"microscopy"}
    assert "microscopy" in page.inner_text("#cluster-2")
    # the duplicate group of the planted copy: keep the training copy
    group = rows(loom, "SELECT * FROM dedup WHERE id LIKE '%red0%' ORDER BY id")
    page.goto(url + "duplicates")
    form = page.locator(f"#group-{group[0]['group']}")
    form.locator(f"input[name='keep'][value='{group[1]['id']}']").check()
    form.locator("input[name='curator']").fill("dana")
    form.locator("button").click()
    page.wait_for_url("**/duplicates?page=0*")
    after = {r["id"]: r for r in rows(loom, "SELECT * FROM dedup WHERE id LIKE '%red0%'")}
    assert after[group[1]["id"]]["keep"] and not after[group[0]["id"]]["keep"]
    assert after[group[1]["id"]]["decided_by"] == "dana"
    assert "chosen by dana" in page.inner_text(f"#group-{group[0]['group']}")


def test_a_facet_adds_values_with_or(served, page):
    loom, url = served
    page.goto(url + "grid")
    page.click(".facet[data-facet='source'] a.facet-value[data-value='seg']")
    assert page.inner_text("#grid-total") == "3"
    page.click(".facet[data-facet='source'] a.facet-value[data-value='reports']", timeout=5000)  # still offered
    seg_or_reports = rows(loom, "SELECT count(*) AS n FROM records WHERE source IN ('seg', 'reports')")[0]["n"]
    assert page.inner_text("#grid-total") == str(seg_or_reports) == "7"
    assert "source=seg" in page.url and "source=reports" in page.url


def test_reject_and_undo_a_caption_on_the_audit_page(served, page):
    loom, url = served
    page.goto(url + "audit")
    item = page.locator(".audit-item").first
    rid = item.get_attribute("data-id")
    caption = rows(loom, f"SELECT caption FROM annotations WHERE id = '{rid}'")[0]["caption"]
    card = item.locator("form.audit-text[data-field='caption']")
    card.locator("input[name='reviewer']").fill("erin")
    card.locator("button[value='rejected']").click()
    page.wait_for_url(re.compile(r".*/audit\?state=flagged.*"))
    assert rows(loom, f"SELECT caption FROM annotations WHERE id = '{rid}'")[0]["caption"] != caption
    page.goto(url + "audit?state=reviewed")
    verdict = page.locator(f".audit-item[data-id='{rid}'] form.verdict[data-field='caption']")
    assert "rejected" in verdict.inner_text() and caption in verdict.inner_text()  # the text judged
    verdict.locator("input[name='reviewer']").fill("erin")
    verdict.locator("button.undo").click(timeout=5000)
    page.wait_for_url(re.compile(r".*/audit\?state=reviewed.*"))
    assert rows(loom, f"SELECT caption FROM annotations WHERE id = '{rid}'")[0]["caption"] == caption
    page.goto(url + "audit")
    assert caption in page.locator(f".audit-item[data-id='{rid}'] form.audit-text[data-field='caption']").inner_text()


class CookieJarServer:
    """A plain HTTP server on another port of the same host that records the Cookie headers it receives."""

    def __init__(self):
        self.seen: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.seen.append(self.headers.get("Cookie") or "")
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"other server")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def test_two_servers_with_tokens_on_one_host(served, browser):
    loom, _ = served
    first, url_a = start_server(loom, "--token", "token-of-a")
    second, url_b = start_server(loom, "--token", "token-of-b")
    other = CookieJarServer()
    context = browser.new_context()
    try:
        pg = context.new_page()
        shown = []
        for printed in (url_a, url_b):
            assert pg.goto(printed).status == 200
            shown.append(pg.url)
        base_a, base_b = url_a.split("?")[0], url_b.split("?")[0]
        for base in (base_a, base_b, base_a):  # neither server's cookie locks the other out
            assert pg.goto(base + "grid").status == 200, base
        assert shown == [base_a, base_b]  # the token is out of the address bar
        pg.goto(other.url)
        sent = " ".join(other.seen)
        assert "medloom_token_" in sent  # a browser sends cookies to every port of a host...
        assert "token-of-a" not in sent and "token-of-b" not in sent  # ...but no token goes with them
    finally:
        context.close()
        other.httpd.shutdown()
        for proc in (first, second):
            proc.terminate()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def odd_served(tmp_path_factory):
    """A loom with a long label and duplicates whose ids are long (test_web.build_odd_loom)."""
    proc, url = start_server(build_odd_loom(tmp_path_factory.mktemp("odd")))
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_chart_labels_stay_inside_their_charts(odd_served, page):
    page.goto(odd_served)
    out = page.eval_on_selector_all(
        "svg.chart",
        """charts => charts.flatMap(svg => {
        const width = svg.width.baseVal.value;
        return [...svg.querySelectorAll('text')].map(t => t.getBBox()).filter(b => b.x < 0 || b.x + b.width > width)
            .map(b => [b.x, b.width, width]); })""",
    )
    assert page.locator("svg.chart").count() >= 5 and out == []
    assert "WWWW" in page.inner_text("#section-label")


def test_long_ids_stay_inside_duplicate_cards(odd_served, page):
    page.goto(odd_served + "duplicates")
    cards = page.eval_on_selector_all(
        ".dup",
        """cards => cards.map(c => {
        const box = c.getBoundingClientRect(), text = document.createRange();
        text.selectNodeContents(c.querySelector('a'));  // where the id's letters are drawn, not the link's box
        const drawn = text.getBoundingClientRect();
        return [drawn.left >= box.left - 1 && drawn.right <= box.right + 1, c.querySelector('a').textContent.length]; })""",
    )
    assert cards and max(n for _, n in cards) > 100 and all(inside for inside, _ in cards)


@pytest.fixture(scope="module")
def proposals_served(tmp_path_factory):
    from test_propose_exports import build_proposal_loom

    loom = build_proposal_loom(tmp_path_factory.mktemp("browser-proposals"))
    proc, url = start_server(loom)
    try:
        yield loom, url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_proposals_are_drawn_apart_toggled_and_named_on_hover(proposals_served, page):
    loom, url = proposals_served
    recs = rows(loom, "SELECT id, width, height, rois FROM records ORDER BY id")
    found = {r["id"]: r["rois"] for r in rows(loom, "SELECT id, rois FROM proposals ORDER BY id")}
    for rec, accepted in ((recs[0], True), (recs[1], False)):
        page.goto(url + "record?id=" + rec["id"])
        page.wait_for_load_state("networkidle")
        stage = page.locator("#stage")
        box = stage.bounding_box()
        sx, sy = box["width"] / rec["width"], box["height"] / rec["height"]
        lesion = page.get_attribute(".roi-box", "stroke")
        proposal = page.get_attribute(".proposal-box", "stroke")
        assert proposal == ("#ffffff" if accepted else "#b4ff00") and proposal != lesion
        x0, y0, x1, y1 = found[rec["id"]][0]["bbox"]
        want = (x0 * rec["width"] * sx, y0 * rec["height"] * sy, x1 * rec["width"] * sx, y1 * rec["height"] * sy)
        drawn = stroke_box(stage.screenshot(), proposal, tol=6)
        assert drawn is not None and np.allclose(drawn, want, atol=4), (drawn, want)
        assert stroke_box(stage.screenshot(), lesion) is not None  # the dataset's own lesion, in its own colour
        state = "accepted" if accepted else "pending"
        # the toggle hides the proposals and only them; the label toggle hides the lesion and only it
        page.uncheck(f".proposal-toggle[data-state='{state}']")
        shot = stage.screenshot()
        assert stroke_box(shot, proposal, tol=6) is None and stroke_box(shot, lesion) is not None
        page.check(f".proposal-toggle[data-state='{state}']")
        page.uncheck(".roi-toggle[data-label='lesion']")
        shot = stage.screenshot()
        assert stroke_box(shot, proposal, tol=6) is not None and stroke_box(shot, lesion) is None
        # method, version, score and acceptance: the hover title and the table
        title = page.text_content(f"#overlay g.proposal.{state} title")
        assert title.startswith("breast: machine proposal by breast 1, score 0.")
        assert title.endswith("accepted by reader1" if accepted else "not accepted")
        cells = page.inner_text("#proposals tr.proposal-row")
        assert "breast 1" in cells and ("accepted by reader1" in cells if accepted else "not accepted" in cells)
        page.hover(f"#overlay g.proposal.{state} image")  # the pointer on the proposal reaches its group (the title's)
        assert page.evaluate("document.querySelectorAll('#overlay g.proposal:hover').length") == 1
