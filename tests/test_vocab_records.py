import pytest

from medloom.imaging import hash_buffer
from medloom.records import licence_commercial_use, record_id
from medloom.vocab import UnknownTermError, default_vocabulary


@pytest.mark.parametrize(
    "kind,term,canonical",
    [
        ("modality", "CXR", "X-ray"),
        ("modality", "chest radiograph", "X-ray"),
        ("modality", "DX", "X-ray"),
        ("modality", "FP", "fundus photography"),
        ("modality", "Fundus Photography", "fundus photography"),
        ("modality", "MR", "MRI"),
        ("modality", "US", "ultrasound"),
        ("modality", "H&E", "pathology"),
        ("anatomy", "CHEST", "chest"),
        ("anatomy", "EXTREMITY", "lower limb"),
        ("anatomy", "retina", "retina"),
        ("anatomy", "ocular", "eye"),
        ("task", "COVID-19", "covid-19"),
        ("task", "covid19", "covid-19"),
        ("task", "grading", "level"),
        ("task", "tumour", "cancer"),
    ],
)
def test_synonyms_normalise(kind, term, canonical):
    assert default_vocabulary().normalise(kind, term) == canonical


def test_vocabulary_covers_med_mat():
    v = default_vocabulary()
    assert len(v.canonical["modality"]) - 1 >= 11  # minus "unknown"
    assert len(v.canonical["anatomy"]) - 1 >= 14
    for task in (
        "covid-19",
        "cancer",
        "disease",
        "state",
        "level",
        "quality",
        "cell type",
        "lesion detection",
        "organ segmentation",
    ):
        assert task in v.canonical["task"]


def test_unknown_term_lists_closest():
    with pytest.raises(UnknownTermError) as e:
        default_vocabulary().normalise("modality", "ultrasond")
    assert "ultrasound" in e.value.suggestions
    assert "vocabulary:" in str(e.value)


def test_declared_terms_extend_the_vocabulary():
    v = default_vocabulary().extended({"anatomy": [{"name": "hippocampus", "synonyms": ["hippocampal"]}]})
    assert v.normalise("anatomy", "Hippocampal") == "hippocampus"
    with pytest.raises(UnknownTermError):
        default_vocabulary().normalise("anatomy", "hippocampus")


def test_record_ids_are_stable_and_dot_free():
    assert record_id("src", "a/b.c/img.01.PNG") == "src/a/b_c/img_01_png"
    assert record_id("src", "x.png") != record_id("src", "x.jpg")
    assert record_id("src", "v.dcm", 3) == "src/v_dcm/00003"
    assert "." not in record_id("my.src", "a.b/c.d.e")


def test_licences():
    assert licence_commercial_use("CC BY 4.0") is True
    assert licence_commercial_use("CC BY-NC-SA 4.0") is False
    assert licence_commercial_use("") is None
    assert licence_commercial_use("see website") is None


def test_pixel_hash_is_128_bits():
    assert len(hash_buffer(b"abc", "L:1x3")) == 32
