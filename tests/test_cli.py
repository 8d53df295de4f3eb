"""The command line as a user runs it: arguments, output, exit codes (in the test's process: the console script
in a fresh interpreter is tests/test_ingest.py's)."""

import csv
import io
import json

import pytest
import yaml
from conftest import cli as medloom
from conftest import make_image, write_recipe


@pytest.fixture(scope="module")
def loom(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    for i in range(6):
        make_image(tmp / "data" / ("cyst", "stone", "tumor")[i % 3] / f"k{i}.png", seed=i)
    (tmp / "data" / "cyst" / "bad.png").write_text("oops")
    recipe = write_recipe(
        tmp,
        [
            dict(
                name="kidney-ct",
                reader="imagefolder",
                path="data",
                modality="CT",
                anatomy="kidney",
                task="disease",
                license="CC BY 4.0",
            )
        ],
    )
    proc = medloom("ingest", recipe, "-q")
    assert "kidney-ct" in proc.stdout and "unreadable 1" in proc.stderr
    return tmp / "loom", recipe


@pytest.mark.parametrize(
    "cmd",
    [
        "",
        "init",
        "ingest",
        "stats",
        "query",
        "show",
        "export",
        "verify",
        "pmc",
        "pmc fetch",
        "annotate",
        "dedup",
        "leakage",
        "embed",
        "cluster",
        "concepts",
        "subset",
        "split",
        "subsets",
        "cg",
        "cg matrix",
        "cg plan",
    ],
)
def test_help_everywhere(cmd):
    proc = medloom(*cmd.split(), "--help")
    assert "Usage" in proc.stdout


def test_init_writes_a_documented_template(tmp_path):
    medloom("init", tmp_path / "proj")
    text = (tmp_path / "proj" / "recipe.yaml").read_text()
    parsed = yaml.safe_load(text)
    assert parsed["sources"][0]["reader"] == "imagefolder"
    for reader in ("imagefolder", "csv", "coco", "voc", "yolo", "masks", "dicom", "nifti"):
        assert f"reader: {reader}" in text
    for key in ("label_separator", "box_columns", "mask_labels", "only_mask_slices", "window", "stride"):
        assert key in text
    assert medloom("init", tmp_path / "proj", check=False).returncode == 2  # no silent overwrite
    proc = medloom("ingest", tmp_path / "proj" / "recipe.yaml", check=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_recipe_errors_are_all_reported_with_suggestions(tmp_path):
    recipe = write_recipe(
        tmp_path,
        [
            dict(name="a", reader="imagefolder", path=".", modality="xray", anatomy="chset", task="disease"),
            dict(name="b", reader="csv", path=".", csv="x.csv", image_colum="f", modality="CT", anatomy="lung", task="covid"),
            dict(name="c", reader="imagefolder", path=".", modality="CT", anatomy="lung"),
        ],
    )
    proc = medloom("ingest", recipe, check=False)
    assert proc.returncode == 2
    assert "chset" in proc.stderr and "chest" in proc.stderr
    assert "image_colum" in proc.stderr and "image_column" in proc.stderr
    assert "`task:` is required" in proc.stderr


def test_stats_json(loom):
    stats = json.loads(medloom("stats", loom[0], "--json").stdout)
    assert stats["records"] == 6 and stats["quarantined"] == 1
    assert stats["by_source"] == {"kidney-ct": 6}
    assert stats["by_mat"] == {"CT|kidney|disease": 6}
    assert stats["by_label"] == {"cyst": 2, "stone": 2, "tumor": 2}
    assert stats["quarantine_reasons"] == {"unreadable": 1}
    assert "records" in medloom("stats", loom[0]).stdout


def test_query_formats(loom):
    out = json.loads(medloom("query", loom[0], "SELECT id, labels FROM records ORDER BY id", "--format", "json").stdout)
    assert out[0] == {"id": "kidney-ct/cyst/k0_png", "labels": ["cyst"]}
    table = list(
        csv.DictReader(io.StringIO(medloom("query", loom[0], "SELECT reason, path FROM quarantine", "-f", "csv").stdout))
    )
    assert table == [{"reason": "unreadable", "path": "cyst/bad.png"}]
    assert "kidney-ct/cyst/k0_png" in medloom("query", loom[0], "SELECT id FROM records").stdout
    shown = medloom("query", loom[0], "SELECT 'pip install medloom[dicom-codecs]' AS hint").stdout
    assert "medloom[dicom-codecs]" in shown  # user data is never read as rich markup
    bad = medloom("query", loom[0], "SELECT nope FROM records", check=False)
    assert bad.returncode == 2 and "SQL failed" in bad.stderr
    # a name that is no view of the loom is never a Python object of medloom's own code (`split` is a command)
    unknown = medloom("query", loom[0], "SELECT * FROM split", check=False)
    assert unknown.returncode == 2 and "split does not exist" in unknown.stderr, unknown.stderr
    assert "this loom's views: quarantine, records" in unknown.stderr and "cli.py" not in unknown.stderr
    # messages are the same on every run: no Python object addresses
    message = json.loads(medloom("query", loom[0], "SELECT message FROM quarantine", "-f", "json").stdout)[0]["message"]
    assert message == "not an image Pillow can read: cannot identify image file", message


def test_show(loom):
    rec = json.loads(medloom("show", loom[0], "kidney-ct/stone/k1_png").stdout)
    assert rec["labels"] == ["stone"] and rec["width"] == 64 and len(rec["pixel_hash"]) == 32
    missing = medloom("show", loom[0], "kidney-ct/stone/k1", check=False)
    assert missing.returncode == 2 and "kidney-ct/stone/k1_png" in missing.stderr


def test_strict_exit_code(loom):
    assert medloom("ingest", loom[1], "-q", "--strict", check=False).returncode == 1
    assert medloom("ingest", loom[1], "-q").returncode == 0


def test_stats_on_a_folder_without_catalog(tmp_path):
    proc = medloom("stats", tmp_path, check=False)
    assert proc.returncode == 2 and "medloom ingest" in proc.stderr
