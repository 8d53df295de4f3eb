"""The JATS extractor against real articles from many publishers (../shared/fixtures/jats) and against
small articles written here for the cases those files do not have."""

from __future__ import annotations

import json
import re

import pytest
from conftest import fixture_dir
from lxml import etree

from medloom.literature import jats
from medloom.literature.licenses import commercial_use, normalise_license, parse_allowed

# read by a person from each file's <permissions> (or, lacking one, its copyright statement)
LICENSES = {
    "biorxiv_223354_fig_without_graphic.xml": "all rights reserved",
    "elife_00007_multirid.xml": "CC BY",
    "elife_00666_boxedtext_app_figgroup.xml": "CC BY",
    "elife_poa_e06828_nobody.xml": "CC BY",
    "encoda_pkg_elife-30274-v1/main.jats.xml": "CC BY",
    "epmc_hindawi_PMC2774577.xml": "CC BY",
    "epmc_scirep_PMC6385181.xml": "CC BY",
    "epmc_springer_abdomimaging_PMC2386533.xml": "unknown",
    "jats4r_example-1_MALFORMED_undeclared_xlink.xml": "unknown",
    "pmc_annonc_mds526.nxml": "CC BY-NC",
    "pmc_bjc_6605965a_nofig_nolicense.nxml": "unknown",
    "pmc_bmc_1471-2180-11-174.nxml": "CC BY",
    "pmc_bmc_1472-6831-8-11_nofig.nxml": "CC BY",
    "pmc_ehp_ehp-116-1694.nxml": "public domain",
    "pmc_jcb_inbrief_PMC2185558_unlabelled.xml": "CC BY-NC-SA",
    "pmc_kcj_PMC3717426_floats.xml": "CC BY-NC",
    "pmc_oncotarget_PMC5828200.nxml": "CC BY",
    "pmc_plosntd_pntd.0002065.nxml": "CC BY",
    "pmc_plosone_pone.0000217.nxml": "CC BY",
    "pmc_plosone_pone.0046493.nxml": "CC BY",
    "pmc_springer_nanoconv_PMC7417471.nxml": "CC BY",
}
LATE = {"pmc-release", "update", "corrected", "retracted", "accepted", "received"}


def expected_articles():
    root = fixture_dir("jats")
    return root, json.loads((root / "expected.json").read_text())


def test_every_fixture_has_a_licence_row():
    _, expected = expected_articles()
    assert {e["file"] for e in expected} == set(LICENSES)


@pytest.mark.parametrize("name", sorted(LICENSES))
def test_conformance_with_expected_json(name):
    root, expected = expected_articles()
    facts = next(e for e in expected if e["file"] == name)
    parsed = jats.extract((root / name).read_bytes())
    assert (parsed.recovered is not None) == (facts["malformed"] is not None)
    assert len(parsed.articles) == facts["n_articles"]
    for art, exp in zip(parsed.articles, facts["articles"]):
        # metadata
        ids = exp["article_ids"]
        pmc = ids.get("pmc") or ids.get("pmcid")
        assert art["pmcid"] == ("PMC" + re.sub(r"\D", "", pmc) if pmc else "")
        assert art["pmid"] == ids.get("pmid", "")
        assert art["doi"] == ids.get("doi", "")
        assert art["title"] == " ".join((exp["title"] or "").split())
        assert art["journal"] == (exp.get("journal_title") or "")
        assert art["publisher"] == (exp.get("publisher") or "")
        assert art["article_type"] == (exp["article_type"] or "")
        assert len(art["keywords"]) == exp["n_kwd"]
        assert len(art["abstracts"]) == exp["n_abstract"]
        if exp["n_abstract"]:
            assert abs(len(art["abstracts"][0]) - exp["abstract_chars_first"]) <= 0.05 * exp["abstract_chars_first"] + 5
        years = [int(d["year"]) for d in exp["pub_dates"] if d["type"] not in LATE and d["year"]]
        assert art["year"] == (min(years) if years else None)
        # licence
        assert art["license"] == LICENSES[name]
        assert art["commercial_use"] == commercial_use(LICENSES[name])
        lic = exp["license"] or {}
        if lic.get("xlink:href"):
            assert art["license_url"] == lic["xlink:href"]
        # figures: every one, wherever it sits, with ids, labels, hrefs, where, and reference counts
        figs = {f["fig_id"]: f for f in art["figures"]}
        assert list(figs) == [f["id"] for f in exp["figs"]]
        for ef in exp["figs"]:
            f = figs[ef["id"]]
            assert f["label"] == (ef["label"] or "")
            assert f["graphics"] == ef["graphic_hrefs"]
            assert f["where"] == ef["context"]
            assert f["xref_count"] == ef["xref_fig"]
            if ef["caption_title"]:
                assert f["caption_title"] == " ".join(ef["caption_title"].split())
                assert f["caption"].startswith(f["caption_title"] + " ") or f["caption"] == f["caption_title"]
            # TeX source and DOI object ids are left out of captions, so they may be a little shorter
            assert 0.7 * ef["caption_chars"] <= len(f["caption"]) <= ef["caption_chars"] + 2
            assert (f["own_license"] is not None) == ef["own_permissions"]
            if ef["xref_fig_outside_own_fig"]:
                assert f["contexts"], ef["id"]
            else:
                assert f["contexts"] == []


def test_figure_permissions_override_the_article_licence():
    root, _ = expected_articles()
    art = jats.extract((root / "elife_00666_boxedtext_app_figgroup.xml").read_bytes()).articles[0]
    fig1 = next(f for f in art["figures"] if f["fig_id"] == "fig1")
    assert art["license"] == "CC BY"
    assert fig1["own_license"]["license"] == "all rights reserved"
    assert "eLife" in fig1["own_license"]["copyright"]


def test_citing_sentences_are_whole_sentences():
    root, _ = expected_articles()
    art = jats.extract((root / "encoda_pkg_elife-30274-v1" / "main.jats.xml").read_bytes()).articles[0]
    fig1 = next(f for f in art["figures"] if f["fig_id"] == "fig1")
    assert fig1["contexts"] == [
        "For cells maintained in both lots of serum, treatment with tetracycline resulted in a strong decrease in "
        "c-Myc protein levels (Figure 1A).",
        "Total RNA was isolated from P493-6 cells 0, 1, and 24 hr after tetracycline release and the amount of RNA "
        "per 1,000 cells was quantified (Figure 1B).",
    ]
    multi = jats.extract((root / "elife_00007_multirid.xml").read_bytes()).articles[0]
    for f in multi["figures"]:
        for sentence in f["contexts"]:
            assert sentence[0].isupper() or sentence[0] in "(0123456789", sentence
            assert sentence.endswith((".", ")", "?", "!", ":")) or len(sentence) > 20


def test_the_malformed_article_is_recovered_with_the_parser_message():
    root, _ = expected_articles()
    parsed = jats.extract((root / "jats4r_example-1_MALFORMED_undeclared_xlink.xml").read_bytes())
    assert "Namespace prefix xlink" in parsed.recovered
    assert parsed.articles[0]["doi"] == "10.12345/publisher.87654"


def test_garbage_is_unreadable():
    with pytest.raises(jats.UnreadableXML):
        jats.extract(b"\x00\x01 not xml at all")


def _body(path) -> bytes:
    """An article element without its XML declaration and DOCTYPE, for wrapping."""
    return etree.tostring(etree.parse(str(path)).getroot())


def test_europe_pmc_articles_wrapper():
    root, expected = expected_articles()
    names = ["pmc_plosone_pone.0046493.nxml", "epmc_hindawi_PMC2774577.xml", "pmc_kcj_PMC3717426_floats.xml"]
    data = b"<articles>" + b"".join(_body(root / n) for n in names) + b"</articles>"
    parsed = jats.extract(data)
    assert [a["pmcid"] for a in parsed.articles] == ["PMC3460867", "PMC2774577", "PMC3717426"]
    for art, name in zip(parsed.articles, names):
        exp = next(e for e in expected if e["file"] == name)["articles"][0]
        assert [(f["fig_id"], f["xref_count"]) for f in art["figures"]] == [(f["id"], f["xref_fig"]) for f in exp["figs"]]


def test_oai_pmh_response_with_jats_in_a_default_namespace():
    root, _ = expected_articles()
    plain = jats.extract((root / "pmc_ehp_ehp-116-1694.nxml").read_bytes()).articles[0]
    ns = b"https://jats.nlm.nih.gov/ns/archiving/1.3/"
    article = _body(root / "pmc_ehp_ehp-116-1694.nxml").replace(b"<article ", b'<article xmlns="' + ns + b'" ', 1)
    oai = (
        b'<?xml version="1.0" encoding="UTF-8"?><OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/">'
        b"<responseDate>2026-01-01T00:00:00Z</responseDate><GetRecord><record><header>"
        b"<identifier>oai:pubmedcentral.nih.gov:2599765</identifier></header><metadata>"
        + article
        + b"</metadata></record></GetRecord></OAI-PMH>"
    )
    tree = etree.fromstring(oai)
    assert tree.find(".//article") is None and tree.find(f".//{{{ns.decode()}}}fig") is not None
    parsed = jats.extract(oai)
    assert len(parsed.articles) == 1
    got = parsed.articles[0]
    for key in ("pmcid", "pmid", "doi", "title", "journal", "year", "license", "license_url", "keywords"):
        assert got[key] == plain[key], key
    assert got["figures"] == plain["figures"]
    assert len(got["figures"]) == 3


PANELS = b"""<article xmlns:xlink="http://www.w3.org/1999/xlink" article-type="research-article">
<front><article-meta><article-id pub-id-type="pmc">123</article-id>
<permissions><license license-type="cc-by-nc-nd"><license-p>Some licence text.</license-p></license></permissions>
</article-meta></front>
<body><sec><p>Panels are shown in <xref ref-type="fig" rid="f1">Fig. 1</xref>. The table is
<xref ref-type="table" rid="t1">Table 1</xref>, see also <xref ref-type="fig" rid="f1 f2">Figs. 1 and 2</xref>.</p>
<fig id="f1"><label>Figure 1</label><caption><title>Two panels</title><p>Left <inline-formula><inline-graphic
 xlink:href="eq1.gif"/></inline-formula> and right.</p></caption>
<graphic xlink:href="f1a"/><graphic xlink:href="f1b.tif"/>
<alternatives><graphic xlink:href="f1c.tif"/><graphic xlink:href="f1c.jpg"/></alternatives>
<disp-formula><graphic xlink:href="formula.gif"/></disp-formula></fig>
<fig id="f2"><caption><p>No image at all.</p></caption></fig>
<table-wrap id="t1"><label>Table 1</label><caption><p>A table as an image.</p></caption><graphic xlink:href="t1.gif"/>
</table-wrap>
<p>An equation <disp-formula><graphic xlink:href="eq2.gif"/></disp-formula> is not a figure.</p>
</sec></body></article>"""


def test_panels_alternatives_equations_and_tables():
    art = jats.extract(PANELS).articles[0]
    f1, f2 = art["figures"]
    assert f1["graphics"] == ["f1a", "f1b.tif", "f1c.tif"]  # one per panel; alternatives are one image
    assert f1["caption"] == "Two panels Left and right."
    assert f1["xref_count"] == 2 and f2["xref_count"] == 1  # a space-separated rid list counts for each
    assert f2["graphics"] == []
    assert art["license"] == "CC BY-NC-ND" and art["license_source"] == "license-type"
    assert art["commercial_use"] is False
    with_tables = jats.extract(PANELS, tables=True).articles[0]["figures"]
    assert [(f["fig_id"], f["kind"], f["graphics"], f["xref_count"]) for f in with_tables[2:]] == [("t1", "table", ["t1.gif"], 1)]


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"urls": ["http://creativecommons.org/licenses/by-nc-sa/3.0/igo/"]}, "CC BY-NC-SA"),
        ({"urls": ["https://creativecommons.org/publicdomain/zero/1.0/"]}, "CC0"),
        ({"urls": ["http://creativecommons.org/licenses/by-nd/4.0"]}, "CC BY-ND"),
        ({"urls": ["https://www.elsevier.com/tdm/userlicense/1.0/"]}, "other"),
        ({"license_type": "cc-by-sa"}, "CC BY-SA"),
        (
            {
                "license_type": "open-access",
                "prose": "Distributed under a Creative Commons Attribution-NonCommercial-NoDerivatives 4.0 License.",
            },
            "CC BY-NC-ND",
        ),
        ({"prose": "This work is in the public domain."}, "public domain"),
        ({"prose": "Reuse requires permission from the publisher.", "present": True}, "other"),
        ({"copyright_statement": "(c) 2010 Someone"}, "unknown"),
        ({}, "unknown"),
    ],
)
def test_licence_normalisation(kwargs, expected):
    assert normalise_license(**kwargs)[0] == expected


def test_recipe_licence_names_and_groups():
    assert parse_allowed(["cc-by", "CC BY 4.0", "cc0"]) == {"CC BY", "CC0"}
    assert parse_allowed(["commercial"]) == {"CC0", "CC BY", "CC BY-SA", "CC BY-ND", "public domain"}
    assert "CC BY-NC-ND" in parse_allowed(["noncommercial"])
    with pytest.raises(ValueError, match="bogus"):
        parse_allowed(["CC BY", "bogus"])


def test_reference_lists_are_dropped_only_when_safe():
    art = (
        b"<article><body><p>x</p></body><back><ref-list><title>R</title><ref-list><ref>a</ref></ref-list>"
        b"<ref-list/><ref>b</ref></ref-list><app><fig id='f'/></app></back></article>"
    )
    assert jats.drop_reference_lists(art) == b"<article><body><p>x</p></body><back><app><fig id='f'/></app></back></article>"
    odd = b"<article><body><!-- <ref-list> --><fig id='f'/></body><back><ref-list></ref-list></back></article>"
    assert jats.drop_reference_lists(odd) == odd  # the count went wrong: a figure would be lost, so keep all
    assert jats.drop_reference_lists(b"<article/>") == b"<article/>"
