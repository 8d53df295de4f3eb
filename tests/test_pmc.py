"""The pmc reader end to end: real articles in PMC OA packages and folders, records queried with DuckDB,
licence filtering, MeSH terms, quarantine accounting, and exports that read figures out of packages."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
import webdataset as wds
from conftest import fixture_dir, make_image, rows, run_ingest, write_recipe
from PIL import Image

from medloom.export import ExportOptions, export
from medloom.export.verify import verify
from medloom.imaging import image_facts
from medloom.recipe import RecipeError, load_recipe

MEDLINE = """<?xml version="1.0"?>
<PubmedArticleSet><PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM"><PMID Version="1">23029536</PMID>
<Article><ArticleTitle>MmPPOX Inhibits ...</ArticleTitle></Article>
<MeshHeadingList>
<MeshHeading><DescriptorName UI="D009169" MajorTopicYN="N">Mycobacterium tuberculosis</DescriptorName>
<QualifierName UI="Q000187" MajorTopicYN="Y">drug effects</QualifierName></MeshHeading>
<MeshHeading><DescriptorName UI="D008049" MajorTopicYN="N">Lipase</DescriptorName></MeshHeading>
</MeshHeadingList></MedlineCitation></PubmedArticle>
<PubmedArticle><MedlineCitation><PMID Version="1">1</PMID><MeshHeadingList><MeshHeading>
<DescriptorName>Other</DescriptorName></MeshHeading></MeshHeadingList></MedlineCitation></PubmedArticle>
</PubmedArticleSet>
"""


def package(path: Path, files: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def image_bytes(tmp: Path, name: str, seed: int, size=(80, 60)) -> bytes:
    fmt = {"gif": "GIF", "tif": "TIFF", "png": "PNG"}.get(name.rsplit(".", 1)[-1], "JPEG")
    return make_image(tmp / "img" / name, size=size, seed=seed, fmt=fmt).read_bytes()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Packages and folders built from the real fixture articles, with generated figure images."""
    jats = fixture_dir("jats")
    tmp = tmp_path_factory.mktemp("pmc")
    data = tmp / "data"
    # 1. a PMC OA package whose hrefs are dotted and extension-less (pone.0046493.g001)
    files = {"PMC3460867/pone.0046493.nxml": (jats / "pmc_plosone_pone.0046493.nxml").read_bytes()}
    for i, ext in enumerate(["jpg", "png", "gif", "tif"], 1):
        files[f"PMC3460867/pone.0046493.g00{i}.{ext}"] = image_bytes(tmp, f"pone.0046493.g00{i}.{ext}", i)
    files["PMC3460867/pone.0046493.s001.pdf"] = b"%PDF supplementary"
    package(data / "packages" / "PMC3460867.tar.gz", files)
    # 2. a package with a figure-group and supplements (eLife), hrefs with extensions
    enc = jats / "encoda_pkg_elife-30274-v1"
    package(data / "packages" / "elife-30274.tgz", {f"elife-30274/{p.name}": p.read_bytes() for p in sorted(enc.iterdir())})
    # 3. a folder of XML with images beside it; one image is missing
    floats = data / "folder" / "kcj"
    floats.mkdir(parents=True)
    shutil.copy(jats / "pmc_kcj_PMC3717426_floats.xml", floats)
    for i in (1, 2, 3):
        make_image(floats / f"kcj-43-416-g00{i}.jpg", size=(70, 50), seed=10 + i)
    hindawi = data / "folder" / "hindawi"
    hindawi.mkdir()
    shutil.copy(jats / "epmc_hindawi_PMC2774577.xml", hindawi)
    make_image(hindawi / "ABI2008-897019.001.gif", size=(40, 40), seed=20, fmt="GIF")
    # 4. text-only articles: a figure without a graphic, no figures, malformed XML, not XML at all
    text = data / "folder" / "text"
    text.mkdir()
    for name in (
        "biorxiv_223354_fig_without_graphic.xml",
        "pmc_bjc_6605965a_nofig_nolicense.nxml",
        "jats4r_example-1_MALFORMED_undeclared_xlink.xml",
    ):
        shutil.copy(jats / name, text)
    (text / "broken.nxml").write_bytes(b"\x00\x01\x02 this is not XML")
    with gzip.open(data / "medline.xml.gz", "wt") as f:
        f.write(MEDLINE)
    recipe = write_recipe(tmp, [dict(name="pmc", reader="pmc", path=str(data), mesh_from="medline.xml.gz")])
    loom, reports = run_ingest(recipe, workers=2)
    return tmp, data, loom, reports["pmc"]


def test_every_figure_of_the_packages_is_a_record(corpus):
    tmp, data, loom, report = corpus
    got = rows(
        loom,
        "SELECT id, uri, article.pmcid AS pmcid, article.fig_id AS fig_id, article.graphic AS graphic, "
        "article.file AS file, width, height FROM records WHERE uri LIKE 'packages/%' ORDER BY id",
    )
    pone = [r for r in got if r["pmcid"] == "PMC3460867"]
    assert [(r["fig_id"], r["graphic"], r["file"]) for r in pone] == [
        (f"pone-0046493-g00{i}", f"pone.0046493.g00{i}", f"PMC3460867/pone.0046493.g00{i}.{ext}")
        for i, ext in enumerate(["jpg", "png", "gif", "tif"], 1)
    ]
    assert all(r["uri"] == "packages/PMC3460867.tar.gz" for r in pone)
    assert all((r["width"], r["height"]) == (80, 60) for r in pone)
    # every figure of the eLife package resolves to its file (as expected.json lists them)
    expected = json.loads((fixture_dir("jats") / "expected.json").read_text())
    enc = next(e for e in expected if e["file"].startswith("encoda_pkg"))["articles"][0]["figs"]
    elife = [r for r in got if r["uri"] == "packages/elife-30274.tgz"]
    assert sorted(r["file"] for r in elife) == sorted(f"elife-30274/{f['resolved_files'][0]}" for f in enc)
    ids = [r["id"] for r in rows(loom, "SELECT id FROM records")]
    assert len(ids) == len(set(ids))


def test_article_fields_are_queryable(corpus):
    _, _, loom, _ = corpus
    (r,) = rows(
        loom,
        "SELECT article.pmcid AS pmcid, article.pmid AS pmid, article.doi AS doi, article.title AS title, "
        "article.journal AS journal, article.year AS year, article.fig_id AS fig_id, "
        "article.fig_label AS fig_label, article.graphic AS graphic, article.xref_count AS xrefs, "
        "article.mesh AS mesh, article.contexts AS contexts, caption, license, commercial_use, task "
        "FROM records WHERE article.fig_id = 'pone-0046493-g002'",
    )
    assert r["pmcid"] == "PMC3460867" and r["pmid"] == "23029536" and r["doi"] == "10.1371/journal.pone.0046493"
    assert r["title"].startswith("MmPPOX Inhibits Mycobacterium tuberculosis")
    assert (r["journal"], r["year"], r["fig_label"], r["graphic"]) == ("PLoS ONE", 2012, "Figure 2", "pone.0046493.g002")
    assert r["xrefs"] == 3 and len(r["contexts"]) >= 1
    assert r["caption"].startswith("Inhibition of Lip-HSL proteins by MmPPOX. ")
    assert (r["license"], r["commercial_use"], r["task"]) == ("CC BY", True, "figure captioning")
    assert r["mesh"] == ["Mycobacterium tuberculosis", "Mycobacterium tuberculosis/drug effects", "Lipase"]
    others = rows(loom, "SELECT DISTINCT len(article.mesh) AS n FROM records WHERE article.pmid <> '23029536'")
    assert others == [{"n": 0}]


def test_folders_dotted_hrefs_and_missing_files(corpus):
    _, _, loom, _ = corpus
    kcj = rows(loom, "SELECT uri, license, commercial_use FROM records WHERE article.pmcid = 'PMC3717426' ORDER BY uri")
    assert [r["uri"] for r in kcj] == [f"folder/kcj/kcj-43-416-g00{i}.jpg" for i in (1, 2, 3)]
    assert {(r["license"], r["commercial_use"]) for r in kcj} == {("CC BY-NC", False)}
    (hindawi,) = rows(loom, "SELECT uri, article.graphic AS graphic FROM records WHERE article.pmcid = 'PMC2774577'")
    assert hindawi == {"uri": "folder/hindawi/ABI2008-897019.001.gif", "graphic": "ABI2008-897019.001"}
    (missing,) = rows(loom, "SELECT * FROM quarantine WHERE path LIKE 'folder/kcj/%'")
    assert missing["reason"] == "graphic_not_found" and missing["scope"] == "input"
    assert "'kcj-43-416-g004'" in missing["message"]


def test_problems_are_reported_and_counted(corpus):
    _, _, loom, report = corpus
    reasons = {(r["path"], r["reason"], r["scope"]): r["message"] for r in rows(loom, "SELECT * FROM quarantine")}
    text = "folder/text/"
    assert "figS10" in reasons[(text + "biorxiv_223354_fig_without_graphic.xml", "figure_without_graphic", "input")]
    assert (
        "Namespace prefix xlink"
        in reasons[(text + "jats4r_example-1_MALFORMED_undeclared_xlink.xml", "xml_recovered", "warning")]
    )
    assert (text + "pmc_bjc_6605965a_nofig_nolicense.nxml", "article_without_figures", "warning") in reasons
    assert (text + "broken.nxml", "xml_unreadable", "input") in reasons
    (n,) = rows(loom, "SELECT count(*) AS n FROM quarantine WHERE reason = 'graphic_not_found' AND path LIKE '%biorxiv%'")
    assert n["n"] == 14
    # figures are the unit: in = records + quarantined + filtered
    records = rows(loom, "SELECT count(*) AS n FROM records")[0]["n"]
    assert report.records == records == report.inputs_ok == 4 + 5 + 3 + 1
    assert report.inputs == report.inputs_ok + report.quarantined_inputs + sum(report.filtered.values())
    assert report.quarantined_inputs == 1 + 14 + 1 + 1  # kcj g004, biorxiv graphics, figS10, broken.nxml


def test_a_second_run_decodes_nothing(corpus):
    tmp, _, loom, _ = corpus
    _, reports = run_ingest(tmp / "recipe.yaml")
    assert reports["pmc"].parts_decoded == 0


def test_licence_filter(corpus, tmp_path):
    _, data, _, _ = corpus
    recipe = write_recipe(tmp_path, [dict(name="cc", reader="pmc", path=str(data / "folder"), licenses=["commercial"])])
    loom, reports = run_ingest(recipe)
    assert {r["license"] for r in rows(loom, "SELECT DISTINCT license FROM records")} == {"CC BY"}
    filtered = rows(loom, "SELECT * FROM quarantine WHERE scope = 'filtered'")
    # the CC BY-NC article's three figures with files and the one without; biorxiv's are all rights reserved
    assert {r["reason"] for r in filtered} == {"license"}
    assert any("'CC BY-NC'" in r["message"] for r in filtered)
    report = reports["cc"]
    assert report.filtered == {"license": len(filtered)}
    assert report.inputs == report.inputs_ok + report.quarantined_inputs + len(filtered)
    from medloom.stats import catalog_stats

    stats = catalog_stats(loom)
    assert stats["filtered_reasons"] == {"license": len(filtered)}
    assert "license" not in stats["quarantine_reasons"]
    assert stats["sources"]["cc"]["filtered"] == len(filtered)


def test_unknown_licence_names_are_recipe_errors(tmp_path):
    (tmp_path / "d").mkdir()
    recipe = write_recipe(tmp_path, [dict(name="x", reader="pmc", path="d", licenses=["CC BY", "free-ish"])])
    with pytest.raises(RecipeError, match="free-ish"):
        load_recipe(recipe)


def test_export_reads_figures_out_of_packages(corpus, tmp_path):
    tmp, data, loom, _ = corpus
    report = export(loom, tmp_path / "wds", ExportOptions(image_format="png"), workers=1, quiet=True)
    assert report.quarantined == 0 and report.exported == 13
    assert verify(tmp_path / "wds").ok
    catalog = {r["id"]: r for r in rows(loom, "SELECT id, pixel_hash, article.pmcid AS pmcid FROM records")}
    ds = wds.WebDataset(str(tmp_path / "wds" / "train-000000.tar"), shardshuffle=False)
    seen = 0
    for sample in ds:
        meta = json.loads(sample["json"])
        rec = catalog[meta["id"]]
        assert meta["article"]["pmcid"] == rec["pmcid"]
        assert sample["txt"].decode() == meta["caption"]
        im = Image.open(io.BytesIO(sample["png"]))
        if meta["article"]["file"].endswith((".png", ".jpg", ".tif")):  # lossless round trip of the decoded pixels
            assert image_facts(im).pixel_hash == rec["pixel_hash"]
        seen += 1
    assert seen == 13
    pq_report = export(loom, tmp_path / "pq", ExportOptions(format="parquet"), workers=1, quiet=True)
    assert pq_report.exported == 13
    import duckdb

    n = (
        duckdb.connect()
        .execute(f"SELECT count(*) FROM '{tmp_path / 'pq'}/*.parquet' WHERE article.pmcid = 'PMC3460867'")
        .fetchall()
    )
    assert n == [(4,)]


def test_panels_tables_and_a_europe_pmc_file_through_ingest(tmp_path):
    from test_jats import PANELS

    jats = fixture_dir("jats")
    data = tmp_path / "data"
    data.mkdir()
    (data / "panels.nxml").write_bytes(PANELS)
    for i, name in enumerate(["f1a.png", "f1b.tif", "f1c.jpg", "t1.gif"]):
        make_image(data / name, size=(30 + i, 20), seed=i, fmt={"tif": "TIFF", "gif": "GIF"}.get(name[-3:]))
    from lxml import etree

    bodies = [
        etree.tostring(etree.parse(str(jats / n)).getroot())
        for n in ("pmc_ehp_ehp-116-1694.nxml", "pmc_kcj_PMC3717426_floats.xml")
    ]
    (data / "epmc").mkdir()
    (data / "epmc" / "europepmc.xml").write_bytes(b"<articles>" + b"".join(bodies) + b"</articles>")
    for i in (1, 2, 3):
        make_image(data / "epmc" / f"ehp-116-1694f{i}.jpg", size=(50, 40), seed=30 + i)
    recipe = write_recipe(tmp_path, [dict(name="p", reader="pmc", path=str(data), tables=True)])
    loom, reports = run_ingest(recipe)
    got = rows(
        loom,
        "SELECT id, article.panel AS panel, article.panels AS panels, article.fig_kind AS kind, width "
        "FROM records WHERE uri NOT LIKE 'epmc/%' ORDER BY id",
    )
    assert [(r["id"], r["panel"], r["panels"], r["kind"], r["width"]) for r in got] == [
        ("p/panels_nxml/f1/0", 0, 3, "figure", 30),
        ("p/panels_nxml/f1/1", 1, 3, "figure", 31),
        ("p/panels_nxml/f1/2", 2, 3, "figure", 32),
        ("p/panels_nxml/t1", 0, 1, "table", 33),
    ]
    (q,) = rows(loom, "SELECT * FROM quarantine WHERE path = 'panels.nxml'")
    assert q["reason"] == "figure_without_graphic" and q["record_id"] == "p/panels_nxml/f2"
    epmc = rows(loom, "SELECT id, article.pmcid AS pmcid FROM records WHERE uri LIKE 'epmc/%' ORDER BY id")
    assert [r["id"] for r in epmc] == [f"p/epmc/europepmc_xml/PMC2599765/f{i}-ehp-116-1694" for i in (1, 2, 3)]
    missing = rows(loom, "SELECT record_id FROM quarantine WHERE reason = 'graphic_not_found' ORDER BY 1")
    assert [r["record_id"] for r in missing] == [f"p/epmc/europepmc_xml/PMC3717426/F{i}" for i in (1, 2, 3, 4)]
    assert reports["p"].inputs == 4 + 3 + 1 + 4
