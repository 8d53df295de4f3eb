"""End to end in headless Chromium (Debian's `chromium`, driven by Playwright's Python client) against a real
`medloom serve`: facets, keyboard, an ROI box where the catalog says, no script from data runs, labelling a
cluster and resolving a duplicate group through the forms."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import rows
from PIL import Image
from test_web import MASK_BOX, build_web_loom, start_server

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-gpu",
        "--disable-sync", "--no-first-run", "--disable-quic"]


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
    target = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])
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
    assert [x0 * rec["width"], y0 * rec["height"], x1 * rec["width"], y1 * rec["height"]] == \
        pytest.approx(MASK_BOX, abs=1e-3)
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
    page.click("#apply-concepts")
    page.wait_for_url("**/clusters?applied=1")
    assert {r["global_concept"] for r in rows(loom, "SELECT global_concept FROM concepts WHERE cluster = 2")} == \
        {"microscopy"}
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
