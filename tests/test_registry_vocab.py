"""The vocabulary against Med-MAT's own terms: every M, A and T written in the registry (Med-MAT's README tables,
`src/medloom/registry/medmat.yaml`) normalises, to a term of its own where Med-MAT tells two apart, and Med-MAT's
abbreviations and task categories resolve (issue 35 item 5)."""

from __future__ import annotations

from collections import defaultdict

import pytest

from medloom.registry import COLUMN, load, raw
from medloom.vocab import default_vocabulary, term_key

# Med-MAT writes one modality or area two ways: these written forms are one term each (X-Ray / X-ray are one key)
SAME = {"modality": [{"US", "Ultrasound"}], "anatomy": [{"Teeth", "Mouth"}]}  # Teeth: rows 16, 17; Mouth: their subsets
# the paper's task categories (Tables 3 and 4 name them), and the detection / segmentation families of its Det/Seg subsets
CATEGORIES = {"disease", "covid-19", "cancer", "state", "level", "quality", "cell type"}
DET_SEG = {"lesion segmentation", "organ segmentation", "instrument segmentation", "lesion detection"}
# datasets whose task is not their subset's, each a contradiction the registry annotates (row 1: Med-MAT's subset 1
# says picture quality of a cervix-type set; row 103: the dataset table says surgical instruments of an organ set)
NOT_THEIR_SUBSETS = {1: ("state", "quality"), 103: ("instrument segmentation", "organ segmentation")}


@pytest.fixture(scope="module")
def reg():
    return load()


def rows(reg):
    return [*reg.datasets, *reg.subsets]


@pytest.mark.parametrize("kind", ["modality", "anatomy", "task"])
def test_every_written_term_normalises(reg, kind):
    missing = [(r.number, getattr(r, COLUMN[kind])) for r in rows(reg) if r.normalised[kind] is None]
    assert missing == []
    assert reg.unknown_terms[kind] == []


@pytest.mark.parametrize("kind", ["modality", "anatomy"])
def test_modalities_and_areas_are_distinct_where_med_mat_distinguishes(reg, kind):
    """Two written terms share a normalised term only when they are one thing written two ways (SAME)."""
    vocab = default_vocabulary()
    by_term: dict[str, set[str]] = defaultdict(set)
    for r in rows(reg):
        written = getattr(r, COLUMN[kind])
        assert r.normalised[kind] == vocab.normalise(kind, written)  # as written, through the vocabulary alone
        by_term[r.normalised[kind]].add(written)
    merged = [group for group in by_term.values() if len({term_key(w) for w in group}) > 1]
    assert sorted(map(sorted, merged)) == sorted(map(sorted, SAME.get(kind, [])))


def test_areas_med_mat_keeps_apart(reg):
    area = {r.area: r.normalised["anatomy"] for r in rows(reg)}
    assert area["Fundus"] == "fundus" and area["Retina"] == "retina"  # FP subsets 14-17, 34, 51-53; OCT subset 23
    assert area["Bladder"] == "bladder" and area["Kidney"] == "kidney"
    assert area["Intestine"] == "intestine" and area["Thyroid"] == "thyroid"
    assert area["Teeth"] == area["Mouth"] == "oral cavity"
    assert area["Bones"] == "bone" and area["Cell"] == "cell"
    vocab = default_vocabulary()
    assert vocab.normalise("anatomy", "urinary bladder") == "bladder" != vocab.normalise("anatomy", "renal")
    assert vocab.normalise("anatomy", "colon") == "colon" != vocab.normalise("anatomy", "bowel") == "intestine"
    assert vocab.normalise("anatomy", "neck") == "head and neck" != vocab.normalise("anatomy", "thyroid gland")


@pytest.mark.parametrize(
    "written,term",
    [
        ("Co", "colposcopy"),
        ("CT", "CT"),
        ("Der", "dermoscopy"),
        ("DP", "digital photography"),
        ("End", "endoscopy"),
        ("FP", "fundus photography"),
        ("Mic", "microscopy"),
        ("MRI", "MRI"),
        ("OCT", "OCT"),
        ("US", "ultrasound"),
        ("Ultrasound", "ultrasound"),
        ("X-Ray", "X-ray"),
        ("X-ray", "X-ray"),
    ],
)
def test_med_mat_modality_abbreviations_resolve(reg, written, term):
    assert default_vocabulary().normalise("modality", written) == term
    assert {r.normalised["modality"] for r in rows(reg) if r.modality == written} == {term}


@pytest.mark.parametrize(
    "written,term",
    [
        ("Diseases", "disease"),
        ("COVID", "covid-19"),
        ("Cancer", "cancer"),
        ("State", "state"),
        ("Level", "level"),
        ("Quality", "quality"),
        ("Cell identification", "cell type"),
    ],
)
def test_the_papers_task_categories_resolve(written, term):
    assert default_vocabulary().normalise("task", written) == term


def test_each_subset_has_one_category_and_each_dataset_its_subsets(reg):
    for s in reg.subsets:
        expected = DET_SEG if "Det" in s.task or "Seg" in s.task else CATEGORIES
        assert s.normalised["task"] in expected, (s.number, s.task, s.normalised["task"])
    for d in reg.datasets:
        (subset,) = reg.subsets_of(d.number)
        pair = (d.normalised["task"], subset.normalised["task"])
        if d.number in NOT_THEIR_SUBSETS:
            assert pair == NOT_THEIR_SUBSETS[d.number]
        else:
            assert pair[0] == pair[1], (d.number, d.task, subset.number, subset.task, pair)
    assert "contradicts" in reg.subset(1).note and "contradicts" in reg.dataset(103).note


def test_task_categories_as_the_paper_names_them(reg):
    """Table 4 of the paper names the task its related subsets bring (../shared/fixtures/medmat/cg_tables_3_4.csv):
    Cancer - Subset07 and Subset21, State - Subset09 and Subset26, Diseases - Subset02 and Subset08; Table 3's
    X-ray Lung State is tuberculosis (subset 30), its CT Brain State hemorrhage (subset 5), Mic Cell Level the
    prostate cancer grade (subset 19)."""
    task = {s.number: s.normalised["task"] for s in reg.subsets}
    assert (task[7], task[21]) == ("cancer", "cancer")
    assert (task[9], task[26], task[30], task[5]) == ("state",) * 4
    assert (task[2], task[8]) == ("disease", "disease")
    assert (task[19], task[12], task[25], task[16], task[34], task[35]) == ("level",) * 6
    assert (task[3], task[28]) == ("covid-19", "covid-19")
    assert (task[1], task[17]) == ("quality", "quality")
    assert (task[18], task[20]) == ("cell type", "cell type")
    # a generic dataset text takes its subset's category; the same text lands in different categories
    assert reg.dataset(2).normalised["task"] == "disease"  # "Normal or Cyst or Tumor" in Kidney Diseases
    multi = {d.number: d.normalised["task"] for d in reg.datasets if d.task == "Multi Classification"}
    assert multi[33] == "cell type" and multi[41] == "cancer" and multi[44] == multi[64] == "disease"


def test_task_readings_are_needed_and_normalise():
    """A reading is kept only where the vocabulary does not know the written text, and reads to a term."""
    vocab, data = default_vocabulary(), raw()
    readings = data["task_readings"]
    for what in ("subsets", "datasets"):
        numbered = {r["number"]: r for r in data[what]}
        for number, reading in readings[what].items():
            assert vocab.normalise("task", numbered[number]["task"], strict=False) == "unknown", (what, number)
            assert vocab.normalise("task", reading) == numbered[number]["normalised"]["task"]


@pytest.mark.parametrize(
    "kind,term,canonical",
    [
        ("task", "tuberculosis", "state"),
        ("task", "fracture", "state"),
        ("task", "Fractured", "state"),
        ("task", "hemorrhage", "state"),
        ("task", "cervix type", "state"),
        ("task", "bone age", "level"),
        ("task", "cleanliness", "level"),
        ("task", "tissue type", "cell type"),
        ("task", "protein localisation", "protein localisation"),
        ("task", "subcellular localization", "protein localisation"),
        ("task", "surgical instrument segmentation", "instrument segmentation"),
        ("task", "vessel segmentation", "organ segmentation"),
        ("task", "polyp segmentation", "lesion segmentation"),
        ("anatomy", "prostate", "prostate"),
        ("anatomy", "Prostatic", "prostate"),
    ],
)
def test_terms_the_presets_needed(kind, term, canonical):
    assert default_vocabulary().normalise(kind, term) == canonical


def test_presets_use_the_vocabularys_own_terms():
    """A preset's `mat` is medloom's terms for the source: canonical ones (the recipe writes them as they are)."""
    from medloom.registry.presets import presets

    vocab = default_vocabulary()
    for number, preset in presets("medmat").items():
        for kind, term in preset.mat.items():
            assert term in vocab.canonical[kind], (number, kind, term)
    found = {n: p.mat for n, p in presets("medmat").items()}
    assert {found[n]["task"] for n in (1, 7, 51, 54, 59, 79)} == {"state"}  # cervix type, hemorrhage, fracture, TB
    assert found[84]["task"] == "protein localisation" and found[94]["task"] == "instrument segmentation"
    assert found[34]["anatomy"] == found[96]["anatomy"] == "prostate" and found[98]["anatomy"] == "thyroid"
    assert found[21]["anatomy"] == "fundus" and found[47]["anatomy"] == "retina"
