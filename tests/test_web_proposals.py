"""Machine ROI proposals (`medloom propose`) in `medloom serve`: drawn apart from the dataset's own ROIs, in
colours of their own (white once accepted, chartreuse and dashed while they wait), with their method, version,
score and acceptance on hover (an SVG title) and in the record page's table, and masks served in those colours.
The browser test (toggles, what is drawn where) is in test_web_browser.py. The grid's proposals facet: accepted,
not accepted, none.

Source: mammograms in the layout of a segmentation set with one mask per image (images/NAME.png beside
masks/NAME.png, as the `masks` reader reads CBIS-DDSM-style crops): the dataset's ROI is the lesion, the
`breast` method proposes the breast region."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, rows
from PIL import Image

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from test_propose_exports import build_body_loom, build_proposal_loom  # noqa: E402
from test_web import client  # noqa: E402


@pytest.fixture(scope="module")
def proposal_loom(tmp_path_factory) -> Path:
    return build_proposal_loom(tmp_path_factory.mktemp("web-proposals"))


def test_record_page_shows_proposals_apart_with_their_method_and_state(proposal_loom):
    c = client(proposal_loom)
    ids = [r["id"] for r in rows(proposal_loom, "SELECT id FROM records ORDER BY id")]
    page = c.get("/record", params={"id": ids[0]}).text
    # the dataset's lesion stays a label-coloured ROI; the proposal is a group of its own, in white, solid
    assert page.count('<g class="roi"') == 1 and 'data-label="lesion"' in page
    assert page.count('<g class="proposal accepted"') == 1 and '<g class="proposal pending"' not in page
    assert 'stroke="#ffffff"' in page and "stroke-dasharray" not in page
    assert "breast: machine proposal by breast 1, score 0." in page and "accepted by reader1</title>" in page
    assert 'class="proposal-toggle" data-state="accepted"' in page and "accepted (1)" in page
    assert 'id="proposals"' in page and "breast 1" in page and "accepted by reader1 at " in page
    other = c.get("/record", params={"id": ids[1]}).text
    assert '<g class="proposal pending"' in other and 'stroke="#b4ff00"' in other and "stroke-dasharray: 6 4" in other
    assert "not accepted (not in exports; medloom propose --accept)" in other and "not accepted</title>" in other
    # the proposal's mask, in its state's colour; the dataset's mask in the label's
    png = c.get("/mask", params={"id": ids[0], "roi": "0", "source": "proposal"})
    arr = np.asarray(Image.open(io.BytesIO(png.content)).convert("RGBA"))
    assert png.status_code == 200 and {tuple(v) for v in arr[arr[..., 3] > 0][:, :3]} == {(255, 255, 255)}
    pending = np.asarray(Image.open(io.BytesIO(c.get("/mask", params={"id": ids[1], "roi": "0", "source": "proposal"}).content)))
    assert {tuple(v) for v in pending[pending[..., 3] > 0][:, :3]} == {(0xB4, 0xFF, 0x00)}
    missing = c.get("/mask", params={"id": ids[0], "roi": "3", "source": "proposal"})
    assert missing.status_code == 404 and "has no proposed ROI 3" in missing.text


def facet_counts(html: str, name: str) -> dict[str, int]:
    """The counts a grid page shows for one facet's values."""
    found = re.search(rf'data-facet="{name}">(.*?)</div>', html, re.S)
    if not found:
        return {}
    return {
        v: int(n.replace(",", ""))
        for v, n in re.findall(r'data-value="([^"]*)"[^>]*>[^<]*</a> <span class="num">([\d,]+)<', found.group(1))
    }


def tiles(html: str) -> set[str]:
    return set(re.findall(r'class="tile" href="[^"]*" data-id="([^"]+)"', html))


def test_grid_proposals_facet_counts_filters_and_follows_an_acceptance(tmp_path):
    """`body` proposed on four of five scans (one refused: no background; one never proposed), one accepted: the
    facet says accepted / not accepted / none, leaves its own choice out of its counts (OR within, AND across), and
    the cached table is rebuilt when a proposal is accepted while the server runs."""
    loom, names = build_body_loom(tmp_path)
    c = client(loom)
    grid = c.get("/grid").text
    assert facet_counts(grid, "proposals") == {"accepted": 1, "not accepted": 2, "none": 2}
    assert "Machine ROI proposals" in grid
    chosen = c.get("/grid", params={"proposals": "accepted"}).text
    assert 'id="grid-total">1<' in chosen and tiles(chosen) == {names["s0"]}
    assert facet_counts(chosen, "proposals") == {"accepted": 1, "not accepted": 2, "none": 2}  # its own choice left out
    assert 'class="facet-value on" data-value="accepted"' in chosen
    assert facet_counts(chosen, "source") == {"scans": 1}
    either = c.get("/grid?proposals=accepted&proposals=none").text  # OR within the facet, a shareable URL
    assert tiles(either) == {names[n] for n in ("s0", "s3", "s4")}
    both = c.get("/grid", params={"proposals": "not accepted", "where": "uri LIKE '%s1%'"}).text  # AND across
    assert tiles(both) == {names["s1"]} and facet_counts(both, "proposals") == {"not accepted": 1}
    cli("propose", loom, "--method", "body", "--where", f"id = '{names['s1']}'", "--accept", "--by", "reader1", "-q")
    after = c.get("/grid", params={"proposals": "accepted"}).text
    assert tiles(after) == {names["s0"], names["s1"]}
    assert facet_counts(after, "proposals") == {"accepted": 2, "not accepted": 1, "none": 2}
