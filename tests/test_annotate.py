"""Annotation: grammar, captions, ROI descriptions, knowledge base, VQA rules, checks, determinism, the
training-format exports, and the step through the CLI."""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import cli, make_image, rows, run_ingest, write_recipe
from PIL import Image

from medloom.annotate import AnnotateSettings, annotate
from medloom.annotate.captions import TEMPLATES, make_caption, task_family
from medloom.annotate.checks import TextChecker
from medloom.annotate.knowledge import load_knowledge
from medloom.annotate.questions import INSTRUCTION, QUESTIONS, multiple_choice, open_questions
from medloom.annotate.regions import describe_regions, patient_sides, relation
from medloom.export.training import export_training
from medloom.vocab import default_vocabulary
from medloom.vocab.words import counted, join_words, label_words, plural, with_article

KB = load_knowledge()
CHECK = TextChecker(default_vocabulary(), KB)


def record(**kw) -> dict:
    base = {
        "id": "s/x",
        "source": "s",
        "modality": "X-ray",
        "anatomy": "chest",
        "task": "disease",
        "labels": ["pneumonia"],
        "label_space": ["normal", "pneumonia", "covid-19", "tuberculosis", "effusion", "pleural effusion"],
        "rois": [],
        "width": 100,
        "height": 80,
        "meta": None,
    }
    return base | kw


@pytest.mark.parametrize(
    "phrase, expected",
    [
        ("MRI image", "an MRI image"),
        ("CT image", "a CT image"),
        ("X-ray image", "an X-ray image"),
        ("uterus", "a uterus"),
        ("effusion", "an effusion"),
        ("hour", "an hour"),
        ("OCT image", "an OCT image"),
        ("US image", "a US image"),
        ("fundus photograph", "a fundus photograph"),
        ("endoscopy image", "an endoscopy image"),
    ],
)
def test_articles(phrase, expected):
    assert with_article(phrase) == expected


def test_plurals_lists_and_label_words():
    assert [plural("polyp", 2), plural("mass", 2), plural("opacity", 3), plural("lesion", 1), plural("edema", 2)] == [
        "polyps",
        "masses",
        "opacities",
        "lesion",
        "edema",
    ]
    assert counted("nodule", 1) == "one nodule" and counted("nodule", 12) == "12 nodules"
    assert join_words(["a"]) == "a" and join_words(["a", "b"]) == "a and b" and join_words(["a", "b", "c"]) == "a, b and c"
    assert label_words("pleural_effusion") == "pleural effusion" and label_words("NoFinding") == "no finding"
    assert label_words("COVID-19") == "COVID-19"


def test_captions_per_family_are_grammatical_and_seeded():
    rec = record()
    assert task_family(rec) == "classification"
    captions = {make_caption(rec, random.Random(seed))[0] for seed in range(40)}
    assert len(captions) == len(TEMPLATES["classification"])  # every template gets used
    for c in captions:
        assert c[0].isupper() and c.endswith(".") and "  " not in c and "pneumonia" in c
        assert "chest radiograph" in c.lower() and "image" not in c and "X-ray" not in c  # the study once
    assert make_caption(rec, random.Random(7)) == make_caption(rec, random.Random(7))
    multi = record(labels=["effusion", "pneumonia", "covid-19"])
    text, family = make_caption(multi, random.Random(1))
    assert family == "multi-label" and "effusion, pneumonia and covid-19" in text
    rois = [{"label": "polyp", "bbox": [0.1, 0.1, 0.3, 0.3], "area": 0.04, "rle": []}] * 2
    det, family = make_caption(record(modality="endoscopy", anatomy="colon", rois=rois, labels=["polyp"]), random.Random(0))
    assert family == "detection" and "two polyps" in det.lower()
    grade, family = make_caption(record(task="level", labels=["grade 2"]), random.Random(0))
    assert family == "grading" and "grade 2" in grade
    mine, _ = make_caption(rec, random.Random(0), {"classification": ["Radiograph: {finding}!"] * 50})
    assert mine == "Radiograph: pneumonia!"


def test_knowledge_base_lookup_and_custom_files(tmp_path):
    assert KB.lookup("pleural effusion").term == "pleural effusion"
    assert KB.lookup("effusion").term == "pleural effusion"  # a synonym
    assert KB.lookup("left pleural effusion").term == "pleural effusion"  # BM25, sharing words with the term
    assert KB.lookup("zebra stripes") is None
    custom = tmp_path / "kb.jsonl"
    custom.write_text(json.dumps({"term": "bezoar", "synonyms": ["trichobezoar"], "definition": "a mass in the gut."}) + "\n")
    assert load_knowledge(custom).lookup("trichobezoar").definition == "a mass in the gut."
    bad = tmp_path / "bad.yaml"
    bad.write_text("- term: x\n")
    with pytest.raises(ValueError, match="definition"):
        load_knowledge(bad)


def test_multiple_choice_rules():
    rng = random.Random(3)
    for seed in range(50):
        rng = random.Random(seed)
        rec = record(labels=["effusion", "pneumonia"])  # multi-label: exactly one correct option
        q = multiple_choice(rec, "multi-label", rng, KB)
        assert 2 <= len(q["options"]) <= 4 and len(set(q["options"])) == len(q["options"])
        assert q["options"]["ABCD".index(q["answer_letter"])] == q["answer"]
        correct = [o for o in q["option_labels"] if o in rec["labels"] or o == "pleural effusion"]
        assert len(correct) == 1  # "pleural effusion" is a synonym of the label "effusion": never a distractor
        assert q["prompt"].endswith(INSTRUCTION) and q["prompt"].count("\n") == len(q["options"]) + 1
    small = multiple_choice(record(label_space=["normal", "pneumonia"]), "classification", random.Random(0), KB)
    assert sorted(small["options"]) == ["normal", "pneumonia"]  # a class has one name: options, answers, prompts
    assert multiple_choice(record(label_space=["pneumonia"]), "classification", random.Random(0), KB) is None
    letters = {multiple_choice(record(), "classification", random.Random(s), KB)["answer_letter"] for s in range(40)}
    assert letters == set("ABCD")  # shuffled by seed
    assert all(len(QUESTIONS[f]) >= 6 for f in QUESTIONS)


def test_open_yes_no_and_grounding_questions():
    rois = [
        {"label": "nodule", "bbox": [0.1, 0.2, 0.3, 0.4], "area": 0.04, "rle": []},
        {"label": "mass", "bbox": [0.5, 0.5, 0.9, 0.9], "area": 0.16, "rle": []},
        {"label": "mass", "bbox": [0.6, 0.1, 0.7, 0.2], "area": 0.01, "rle": []},
    ]
    qs = open_questions(record(rois=rois, labels=["nodule", "mass"]), "detection", random.Random(0), KB)
    grounding = [q for q in qs if q["kind"] == "grounding"]
    assert [(q["answer_label"], q["box"]) for q in grounding] == [("nodule", [0.1, 0.2, 0.3, 0.4])]  # masses: two
    assert grounding[0]["answer"] == "[0.100, 0.200, 0.300, 0.400]"
    cls = open_questions(record(), "classification", random.Random(0), KB)
    assert [q["kind"] for q in cls] == ["open", "yes-no", "yes-no"]
    assert cls[1]["answer"] == "Yes." and cls[2]["answer"] == "No." and cls[2]["answer_label"] != "pneumonia"


def test_region_descriptions():
    h, w = 80, 100
    gray = np.full((h, w), 100, np.uint8)
    a = np.zeros((h, w), bool)
    a[5:25, 5:25] = True  # upper left, bright, square
    b = np.zeros((h, w), bool)
    b[55:60, 60:95] = True  # lower right, dark, elongated
    gray[a] = 220
    gray[b] = 10
    from medloom.imaging import mask_regions

    regions, _ = mask_regions(a.astype(np.uint8) + 2 * b.astype(np.uint8), {1: "cyst", 2: "stone"})
    rois = [{"label": r["label"], "bbox": r["bbox"], "area": r["area"], "rle": r["rle"]} for r in regions]
    rec = record(rois=rois, width=w, height=h, modality="CT", anatomy="kidney")
    out = describe_regions(rec, gray)
    cyst, stone = sorted(out["rois"], key=lambda r: r["label"])
    assert cyst["location"] == "upper left of the image" and cyst["shape"] == "round" and cyst["size"] == "medium-sized"
    assert cyst["brightness"] == "brighter than" and stone["brightness"] == "darker than"
    assert stone["location"] == "lower right of the image" and stone["shape"] == "elongated"
    assert abs(cyst["area_share"] - 400 / 8000) < 1e-3
    assert out["relations"][0]["relation"] in ("is above", "is to the left of")
    assert out["text"].startswith("Kidney CT with a cyst outlined and the stone outlined.")  # a stone: a structure
    assert "The cyst is medium-sized and round, in the upper left of the image (5.0% of the image)" in out["text"]
    assert "hyperdense to" in out["text"] and "hypodense to" in out["text"]  # CT's own words for brightness
    assert CHECK.problems(out["text"], rec, ["cyst", "stone"]) == []
    # patient sides from DICOM orientation: rows running to the patient's left put their right on the image left
    assert patient_sides(rec, {"ImageOrientationPatient": [1, 0, 0, 0, 1, 0]}) == {"left": "right", "right": "left"}
    assert patient_sides(rec, {"PatientOrientation": "['R', 'F']"}) == {"left": "left", "right": "right"}
    assert patient_sides(rec, {}) is None
    dicom = describe_regions(rec | {"meta": json.dumps({"ImageOrientationPatient": [1, 0, 0, 0, 1, 0]})}, gray)
    assert sorted(r["location"] for r in dicom["rois"]) == [
        "lower part of the patient's left side",
        "upper part of the patient's right side",
    ]
    apart = ({"bbox": [0.1, 0.1, 0.2, 0.2]}, {"bbox": [0.7, 0.1, 0.8, 0.2]})
    assert relation(*apart) == "is to the left of"
    assert relation(*apart, {"left": "right", "right": "left"}) == "is to the patient's right of"
    touching = relation({"bbox": [0.1, 0.1, 0.3, 0.3]}, {"bbox": [0.31, 0.1, 0.5, 0.3]})
    assert touching == "is adjacent to"
    assert relation({"bbox": [0.1, 0.1, 0.3, 0.3]}, {"bbox": [0.2, 0.2, 0.5, 0.5]}) == "overlaps"


def test_checks_flag_missing_labels_and_foreign_terms():
    rec = record(modality="fundus photography", anatomy="eye", labels=["glaucoma"])
    assert CHECK.problems("A fundus photograph of the eye showing glaucoma.", rec, ["glaucoma"]) == []
    assert CHECK.problems("A fundus photograph showing a glaucomatous disc.", rec, ["glaucoma"]) == []  # synonym
    bad = CHECK.problems("A CT scan of the brain.", rec, ["glaucoma"])
    assert any("does not name 'glaucoma'" in p for p in bad)
    assert any("modality 'CT'" in p for p in bad) and any("anatomy 'brain'" in p for p in bad)
    assert CHECK.problems("Let us look at the eye; glaucoma.", rec, ["glaucoma"]) == []  # "us" is not US


@pytest.fixture(scope="module")
def loom(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("annotate")
    for i in range(12):
        make_image(tmp / "cxr" / ("normal", "pneumonia", "covid-19")[i % 3] / f"c{i}.png", size=(64, 48), seed=i)
    (tmp / "seg" / "masks").mkdir(parents=True)
    for i in range(4):
        make_image(tmp / "seg" / "images" / f"s{i}.png", size=(60, 60), seed=50 + i)
        mask = np.zeros((60, 60), np.uint8)
        mask[5 + i : 20 + i, 8:30] = 255
        if i % 2:
            mask[35:50, 35:55] = 255  # a second lesion: no grounding question (which one would it be?)
        Image.fromarray(mask).save(tmp / "seg" / "masks" / f"s{i}.png")
    recipe = write_recipe(
        tmp,
        [
            dict(name="cxr", reader="imagefolder", path="cxr", modality="X-ray", anatomy="chest", task="disease"),
            dict(
                name="seg",
                reader="masks",
                path="seg",
                modality="dermoscopy",
                anatomy="skin",
                task="lesion segmentation",
                mask_label="lesion",
            ),
        ],
        annotate={"seed": 5, "templates": {"classification": ["Chest film: {finding}."]}},
    )
    loom_dir, _ = run_ingest(recipe)
    return tmp, loom_dir, recipe


def test_annotate_is_deterministic_and_independent_of_workers(loom, tmp_path):
    _, loom_dir, _ = loom
    one = annotate(loom_dir, AnnotateSettings(seed=1), workers=1, quiet=True)
    first = pq.read_table(loom_dir / "annotations" / "annotations.parquet")
    two = annotate(loom_dir, AnnotateSettings(seed=1), workers=2, quiet=True)
    assert pq.read_table(loom_dir / "annotations" / "annotations.parquet").equals(first)
    assert one.questions == two.questions and one.captions == 16 and one.roi_descriptions == 4
    other = annotate(loom_dir, AnnotateSettings(seed=2), workers=1, quiet=True)
    assert not pq.read_table(loom_dir / "annotations" / "annotations.parquet").equals(first)
    assert other.flags == {}  # every templated text passes its check
    got = rows(loom_dir, "SELECT a.caption, a.vqa, r.labels FROM annotations a JOIN records r USING (id) WHERE r.source = 'cxr'")
    for r in got:
        mc = [q for q in r["vqa"] if q["kind"] == "multiple-choice"]
        assert len(mc) == 1 and mc[0]["answer_label"] == r["labels"][0] and len(mc[0]["options"]) == 3


def test_cli_recipe_step_show_and_training_exports(loom):
    tmp, loom_dir, recipe = loom
    proc = cli("annotate", recipe, "-q", "--json")
    report = json.loads(proc.stdout)
    assert report["captions"] == 16 and report["questions"]["grounding"] == 2
    caps = rows(loom_dir, "SELECT a.caption FROM annotations a JOIN records r USING (id) WHERE r.source = 'cxr'")
    assert any(c["caption"].startswith("Chest film: ") for c in caps)  # the recipe's template joins the built-in ones
    shown = cli("show", loom_dir, "seg/images/s1_png")
    ann = json.loads(shown.stdout)["annotations"]
    assert "lesion" in ann["roi_text"] and ann["roi_facts"][0]["label"] == "lesion"
    for fmt in ("medmat", "llava", "sharegpt"):
        out = tmp / f"train-{fmt}"
        rep = export_training(loom_dir, out, fmt, workers=1, quiet=True)
        assert rep.files == [f"{fmt}-train.json"]  # one file per split; these sources define none: train
        data = json.loads((out / f"{fmt}-train.json").read_text())
        assert rep.items == len(data) > 0 and all(i.get("split", "train") == "train" for i in data)  # medmat: in the name
        for item in data:
            for image in item.get("images", [item.get("image")]):
                with Image.open(out / image) as im:
                    im.verify()
        if fmt == "medmat":  # Med-MAT's record (tests/test_medmat_json.py); these sources have no Med-MAT number
            assert all(
                list(i) == ["id", "caption", "image", "Question", "Answer", "Question-choice", "Answer-choice", "data-no"]
                for i in data
            )
            i = data[0]
            options = [line.split(": ", 1)[1] for line in i["Question-choice"].split("\n")[1:-1]]
            assert options["ABCD".index(i["Answer-choice"])] == i["Answer"] and i["data-no"] in ("cxr", "seg")
            assert [i["id"] for i in data] == list(range(1, 13))  # one per multiple-choice question: masks have one label
        elif fmt == "llava":
            assert data[0]["conversations"][0]["value"].startswith("<image>\n")
            assert [t["from"] for t in data[0]["conversations"][:2]] == ["human", "gpt"]
        else:
            assert data[0]["messages"][0]["content"].startswith("<image>") and data[0]["messages"][1]["role"] == "assistant"
            info = json.loads((out / "dataset_info.json").read_text())["test_train"]  # the recipe's name, the split
            assert info["formatting"] == "sharegpt" and info["columns"]["images"] == "images"


def test_size_against_the_organ_mask():
    from medloom.imaging import mask_regions

    mask = np.zeros((50, 50), np.uint8)
    mask[10:40, 10:40] = 1  # the liver: 900 pixels
    mask[20:25, 20:30] = 2  # a lesion inside it: 50 pixels
    regions, _ = mask_regions(mask, {1: "liver", 2: "lesion"})
    rec = record(rois=regions, width=50, height=50, modality="CT", anatomy="liver", labels=[])
    out = describe_regions(rec, None)
    facts = {r["label"]: r for r in out["rois"]}
    assert facts["liver"]["organ_share"] == -1.0
    assert abs(facts["lesion"]["organ_share"] - 50 / 900) < 1e-3  # the organ is the liver with the lesion in it
    assert "of the organ" in out["text"] and facts["lesion"]["brightness"] == ""  # no pixels, no brightness


def mni152_slice_with_parts() -> tuple[np.ndarray, np.ndarray]:
    """nilearn's MNI152 brain mask and template on the lowest axial slice where the mask falls into several
    connected regions (the brain leaves the slice and comes back, as the demo's slices do)."""
    from nilearn import datasets
    from scipy import ndimage

    mask = np.asarray(datasets.load_mni152_brain_mask(resolution=2).dataobj) > 0
    brain = np.asarray(datasets.load_mni152_template(resolution=2).dataobj, dtype=np.float64)
    for z in range(mask.shape[2]):
        if ndimage.label(mask[:, :, z], structure=np.ones((3, 3)))[1] >= 2 and mask[:, :, z].sum() > 200:
            grey = (255 * brain[:, :, z] / brain.max()).astype(np.uint8)
            return mask[:, :, z].T.astype(np.uint8), grey.T
    raise AssertionError("no slice of the MNI152 mask with several regions")


def test_a_structure_in_parts_is_one_and_lesions_are_counted():
    from medloom.annotate.captions import fill
    from medloom.annotate.structures import instance_words, object_counts
    from medloom.imaging import mask_regions

    mask, grey = mni152_slice_with_parts()
    h, w = mask.shape
    regions = mask_regions(mask, {1: "brain"})[0]
    assert len(regions) >= 2
    rec = record(modality="MRI", anatomy="brain", task="segmentation", labels=[], rois=regions, width=w, height=h)
    # the brain is one structure in parts: "one brain", never "three brains"
    out = describe_regions(rec, grey)
    assert [(r["label"], r["count"], r["parts"]) for r in out["rois"]] == [("brain", 1, len(regions))]
    assert out["text"].startswith("Brain MRI with a whole-brain mask. The brain is ")  # never "one brain"
    assert f"in {len(regions)} separate parts" in out["text"] and "brains" not in out["text"]
    assert out["relations"] == []
    caption = fill("{Study} with {objects}.", rec)
    assert (
        caption == "Brain MRI with a whole-brain mask."
        and CHECK.problems(caption, rec, ["brain"], object_counts(regions, instance_words(None))) == []
    )
    # its grounding box is the union of its parts'
    grounding = [q for q in open_questions(rec, "segmentation", random.Random(0), KB) if q["kind"] == "grounding"]
    union = [
        min(r["bbox"][0] for r in regions),
        min(r["bbox"][1] for r in regions),
        max(r["bbox"][2] for r in regions),
        max(r["bbox"][3] for r in regions),
    ]
    assert len(grounding) == 1 and grounding[0]["box"] == [round(float(v), 3) for v in union]
    # the same regions labelled as a lesion kind are instances, counted one by one
    nodules = [r | {"label": "nodule"} for r in regions]
    counted_out = describe_regions(record(rois=nodules, labels=[], width=w, height=h), grey)
    assert [r["count"] for r in counted_out["rois"]] == [len(regions)] * len(regions)
    assert f"{counted('nodule', len(regions))}" in counted_out["text"]
    # which labels count is the recipe's choice: `instances: [brain]` counts the brain's regions
    words = instance_words(["brain"])
    assert object_counts(regions, words) == {"brain": len(regions)}
    assert object_counts(nodules, words) == {"nodule": 1}  # not named: a structure now
    # boxes without masks are instances whatever their label
    boxes = [r | {"rle": []} for r in regions]
    assert object_counts(boxes, instance_words(None)) == {"brain": len(regions)}


@pytest.mark.parametrize(
    "text, counts, wrong",
    [
        ("An MRI image of the brain with three brains outlined.", {"brain": 1}, ["says 3 'brains' where the ROIs show 1"]),
        ("A CT image with two small round nodules.", {"nodule": 2}, []),
        ("A CT image with 3 nodules.", {"nodule": 2}, ["says 3 'nodules' where the ROIs show 2"]),
        ("Several polyps are seen.", {"polyp": 1}, ["says several 'polyps' where the ROIs show 1"]),
        ("A single nodule.", {"nodule": 4}, ["says 1 'nodule' where the ROIs show 4"]),
        ("Nodule 1 overlaps nodule 2; one of the nodules is large.", {"nodule": 2}, []),
        ("The brain is an oval region in 3 parts.", {"brain": 1}, []),
        ("Two lesions, no count of nodules.", {"nodule": 1}, []),
    ],
)
def test_the_checker_rejects_count_words_that_contradict_the_rois(text, counts, wrong):
    assert CHECK.wrong_counts(text, counts) == wrong


def test_a_partial_annotate_keeps_every_kind_and_record_it_was_not_asked_to_redo(loom, tmp_path):
    """`annotate --captions` (or --rois, --vqa, --where) after a full run: the questions, ROI texts, reviews and
    the records outside the selection stay as they were; eval vqa still finds its questions."""
    from medloom.web.decisions import review_text

    _, loom_dir, _ = loom
    annotate(loom_dir, AnnotateSettings(seed=3), workers=1, quiet=True)
    full = {r["id"]: r for r in pq.read_table(loom_dir / "annotations" / "annotations.parquet").to_pylist()}
    seg = next(i for i, r in full.items() if r["roi_text"])
    cxr = next(i for i, r in full.items() if any(q["kind"] == "multiple-choice" for q in r["vqa"]))
    stem = next(q["question"] for q in full[cxr]["vqa"] if q["kind"] == "open")
    review_text(loom_dir, cxr, "question", "edited", "ann", text="What does this chest film show?", seen=stem)
    review_text(loom_dir, seg, "roi_text", "edited", "ann", text="A reviewed lesion description.", seen=full[seg]["roi_text"])
    reviewed = {r["id"]: r for r in pq.read_table(loom_dir / "annotations" / "annotations.parquet").to_pylist()}

    report = annotate(loom_dir, AnnotateSettings(captions=True, rois=False, vqa=False, seed=4), workers=1, quiet=True)
    now = {r["id"]: r for r in pq.read_table(loom_dir / "annotations" / "annotations.parquet").to_pylist()}
    assert set(now) == set(full)
    assert sum(now[i]["caption"] != full[i]["caption"] for i in now) > 0  # the captions were made again
    for i, row in now.items():
        assert row["vqa"] == reviewed[i]["vqa"] and row["roi_text"] == reviewed[i]["roi_text"]
        assert row["roi_facts"] == reviewed[i]["roi_facts"] and row["reviews"] == reviewed[i]["reviews"]
    assert now[seg]["roi_text"] == "A reviewed lesion description."
    assert any(q["question"] == "What does this chest film show?" for q in now[cxr]["vqa"])
    assert report.questions == {k: sum(q["kind"] == k for r in full.values() for q in r["vqa"]) for k in report.questions}
    assert report.redone == ["captions"]

    # --vqa on one source only: the other source's rows are kept whole, this one's captions kept
    annotate(
        loom_dir, AnnotateSettings(captions=False, rois=False, vqa=True, seed=9), workers=1, quiet=True, where="source = 'cxr'"
    )
    after = {r["id"]: r for r in pq.read_table(loom_dir / "annotations" / "annotations.parquet").to_pylist()}
    assert set(after) == set(full)
    assert all(after[i] == now[i] for i in after if not i.startswith("cxr/"))
    assert all(after[i]["caption"] == now[i]["caption"] for i in after if i.startswith("cxr/"))
    assert any(after[i]["vqa"] != now[i]["vqa"] for i in after if i.startswith("cxr/"))  # seed 9: new questions
    manifest = json.loads((loom_dir / "annotations" / "manifest.json").read_text())
    assert {k: v["seed"] for k, v in manifest["made_by"].items()} == {"captions": 4, "rois": 3, "vqa": 9}
