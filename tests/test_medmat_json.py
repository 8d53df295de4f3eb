"""Med-MAT's question JSON, out (`--format medmat`) and in (the `medmat` reader), against Med-MAT's published records.

The records below are copied as published: the README's sample (FreedomIntelligence/Med-MAT README.md at d7721ae,
"Data Construction") and the first records of four question files on Hugging Face
(FreedomIntelligence/Med-MAT: Original_Medical_Datasets/ori--02-train.json and ori--04-train.json at f03e9a7 /
main, Aggregated_Subsets/Subset--03-train.json and Subset--05-train.json at main). The images are small ones the
test makes at the paths the records name."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from conftest import cli, make_image, rows, run_ingest, write_recipe

from medloom.annotate.questions import item
from medloom.annotate.step import AnnotateSettings, annotate
from medloom.export import medmat as medmat_json
from medloom.export.training import export_training
from medloom.registry.recipes import DATA_DIR

KIDNEY = "med-mat/CT_Kindney_Dataset/CT-KIDNEY-DATASET-Normal-Cyst-Tumor-Stone/CT-KIDNEY-DATASET-Normal-Cyst-Tumor-Stone"
INSTR = "Answer with the option's letter from the given choices directly."

README_SAMPLE = {
    "id": 1,
    "caption": "Cyst",
    "image": f"{KIDNEY}/Cyst/Cyst- (561).jpg",
    "Question": "Review this kidney CT scan and determine the possible condition it represents.",
    "Answer": "Cyst",
    "Question-choice": "Review this kidney CT scan and determine the possible condition it represents.\nA: Stone\nB: Cyst\n"
    "C: Normal\nD: Tumor\nAnswer with the option's letter from the given choices directly.",
    "Answer-choice": "B",
    "data-no": "2",
}


def rec(id_, caption, image, question, answer, options, letter, no) -> dict:
    """A published record, its `Question-choice` spelled out as the files do."""
    lines = "".join(f"{'ABCD'[i]}: {o}\n" for i, o in enumerate(options))
    return {
        "id": id_,
        "caption": caption,
        "image": image,
        "Question": question,
        "Answer": answer,
        "Question-choice": f"{question}\n{lines}{INSTR}",
        "Answer-choice": letter,
        "data-no": no,
    }


ORI_02 = [
    rec(
        1,
        "Normal",
        f"{KIDNEY}/Normal/Normal- (2213).jpg",
        "Please analyze this kidney CT image and identify the condition it indicates.",
        "Normal",
        ["Cyst", "Normal", "Stone", "Tumor"],
        "B",
        "2",
    ),  # fmt: skip
    rec(
        2,
        "Normal",
        f"{KIDNEY}/Normal/Normal- (645).jpg",
        "Could you assess this kidney CT image and identify any condition it reveals?",
        "Normal",
        ["Tumor", "Stone", "Cyst", "Normal"],
        "D",
        "2",
    ),  # fmt: skip
]
ORI_04 = [
    rec(
        1,
        "Normal",
        "med-mat/COVID_CT_COVID-CT/COVID-CT-master/Images-processed/CT_NonCOVID/1702.png",
        "This is a chest CT image of a patient. Please determine whether the patient has covid or is normal.",
        "Normal",
        ["Normal", "Covid"],
        "A",
        "4",
    ),  # fmt: skip
    rec(
        2,
        "Normal",
        "med-mat/COVID_CT_COVID-CT/COVID-CT-master/Images-processed/CT_NonCOVID/56%0.jpg",
        "Based on this chest CT image, can you identify if the patient is normal or has COVID-19?",
        "Normal",
        ["Normal", "Covid"],
        "A",
        "4",
    ),  # fmt: skip
]
SUBSET_03 = [
    rec(
        1,
        "Normal",
        "med-mat/COVID-19-CT/COVID-19-CT SCAN IMAGES_datasets/COVID-19-CT SCAN IMAGES_COVID_datasets/COVID/"
        "COVID-19-CT SCAN IMAGES_Neg_Samples_datasets/NORMAL2-IM-0416-0001-0002.jpeg",
        "Could you assess this chest CT image and determine if it indicates COVID-19 or a normal condition?",
        "Normal",
        ["Covid", "Normal"],
        "B",
        "6",
    ),  # fmt: skip
    rec(
        2,
        "Covid",
        "med-mat/COVID_CT_COVID-CT/COVID-CT-master/Images-processed/CT_COVID/2020.03.11.20033159-p12-45%5.png",
        "Based on this chest CT image, can you identify if the patient is normal or has COVID-19?",
        "Covid",
        ["Normal", "Covid"],
        "B",
        "4",
    ),  # fmt: skip
]
SUBSET_05 = [
    rec(
        1,
        "Hemorrhage",
        "med-mat/Head_CT/head_ct/head_ct/035.png",
        "Please analyze this brain CT scan and determine if there is a hemorrhage. "
        "Reply 'Hemorrhage' if found, or 'Normal' if absent.",
        "Hemorrhage",
        ["Normal", "Hemorrhage"],
        "B",
        "7",
    ),  # fmt: skip
    rec(
        2,
        "Normal",
        "med-mat/Head_CT/head_ct/head_ct/146.png",
        "Examine this brain CT image and respond with 'Hemorrhage' if one is detected, or 'Normal' if none is present.",
        "Normal",
        ["Normal", "Hemorrhage"],
        "A",
        "7",
    ),  # fmt: skip
]
PUBLISHED = {
    "Original_Medical_Datasets/ori--02-train.json": ORI_02,
    "Original_Medical_Datasets/ori--04-train.json": ORI_04,
    "Aggregated_Subsets/Subset--03-train.json": SUBSET_03,
    "Aggregated_Subsets/Subset--05-train.json": SUBSET_05,
}


def test_the_sample_record_is_spelled_as_published():
    """The helper writes the README's sample exactly (so the file records above are as published too)."""
    assert rec(1, "Cyst", f"{KIDNEY}/Cyst/Cyst- (561).jpg", README_SAMPLE["Question"], "Cyst",
               ["Stone", "Cyst", "Normal", "Tumor"], "B", "2") == README_SAMPLE  # fmt: skip
    assert list(README_SAMPLE) == ["id", "caption", "image", "Question", "Answer", "Question-choice", "Answer-choice", "data-no"]


def kidney_preset(tmp_path: Path) -> tuple[Path, Path]:
    """`init --preset medmat:2`'s recipe over CT Kidney images in the published layout (four class folders)."""
    cli("init", tmp_path, "--preset", "medmat:2")
    recipe = yaml.safe_load((tmp_path / "recipe.yaml").read_text())
    source = recipe["sources"][0]
    assert source["name"] == "medmat-002"
    base = tmp_path / source["path"]
    for i, name in enumerate(
        ["Cyst/Cyst- (561).jpg", "Normal/Normal- (2213).jpg", "Stone/Stone- (1).jpg", "Tumor/Tumor- (1).jpg"]
    ):
        make_image(base / name, seed=i)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({**recipe, "salt": "test-salt"}, sort_keys=False))
    loom, reports = run_ingest(tmp_path / "recipe.yaml")
    assert reports["medmat-002"].error is None
    return loom, base


def test_the_readme_sample_from_a_preset_source(tmp_path):
    """The README's sample, for its image (in preset 2's layout) and its question: medloom's record equals it field
    by field, in the field order, in the file Med-MAT names (and the subset's)."""
    loom, _ = kidney_preset(tmp_path)
    row = next(r for r in rows(loom, "SELECT *, 'train' AS split FROM records") if r["uri"] == "Cyst/Cyst- (561).jpg")
    assert row["labels"] == ["cyst"]  # the preset's label_map: Cyst -> cyst; the caption is the name as written
    question = item(
        "multiple-choice",
        README_SAMPLE["Question"],
        "cyst",
        options=["stone", "cyst", "normal", "tumor"],
        option_labels=["stone", "cyst", "normal", "tumor"],
        answer_letter="B",
        answer_label="cyst",
        source="template",
    )
    names = medmat_json.original_names({"Cyst": "cyst", "Normal": "normal", "Stone": "stone", "Tumor": "tumor"})
    image = medmat_json.image_path(row, "jpg", "images/x.jpg")
    assert image == README_SAMPLE["image"]
    groups = medmat_json.file_groups(medmat_json.items(row, {"vqa": [question]}, image, names))
    assert sorted(groups) == ["Aggregated_Subsets/Subset--02-train.json", "Original_Medical_Datasets/ori--02-train.json"]
    for records in groups.values():
        assert records == [README_SAMPLE] and list(records[0]) == list(README_SAMPLE)


def test_export_writes_med_mats_layout(tmp_path):
    """The whole export on a preset source: Med-MAT's files and folders, images at their `image` paths, the
    original label in `caption` and the options, `normal` never renamed, the instruction line, data-no "2"."""
    loom, _ = kidney_preset(tmp_path)
    annotate(loom, AnnotateSettings(rois=False), workers=1, quiet=True)
    out = tmp_path / "out"
    report = export_training(loom, out, "medmat", workers=1, quiet=True)
    assert report.files == ["Aggregated_Subsets/Subset--02-train.json", "Original_Medical_Datasets/ori--02-train.json"]
    data = json.loads((out / "Original_Medical_Datasets/ori--02-train.json").read_text())
    assert [r["id"] for r in data] == [1, 2, 3, 4] and {r["data-no"] for r in data} == {"2"}
    assert {r["caption"] for r in data} == {"Cyst", "Normal", "Stone", "Tumor"}
    for r in data:
        assert list(r) == list(README_SAMPLE)
        assert (out / r["image"]).is_file() and r["image"].startswith(f"{KIDNEY}/{r['caption']}/")
        options = [line.split(": ", 1)[1] for line in r["Question-choice"].split("\n")[1:-1]]
        assert r["Question-choice"] == medmat_json.prompt(r["Question"], options) and r["Question-choice"].endswith(INSTR)
        assert options["ABCD".index(r["Answer-choice"])] == r["Answer"] == r["caption"]
        assert set(options) <= {"Cyst", "Normal", "Stone", "Tumor"}
    assert (out / "Original_Medical_Datasets/ori--02-train.json").read_text() == json.dumps(data, ensure_ascii=False, indent=4)


def published_tree(tmp_path: Path) -> Path:
    root = tmp_path / DATA_DIR / "Med-MAT"
    for name, records in PUBLISHED.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(medmat_json.text(records), encoding="utf-8")
    return root


def test_published_records_round_trip(tmp_path):
    """Med-MAT's files in, their images beside them: exported again, every file is the same, byte for byte."""
    root = published_tree(tmp_path)
    for n, records in enumerate(PUBLISHED.values()):
        for i, r in enumerate(records):
            make_image(root / r["image"], seed=10 * n + i, fmt="JPEG" if r["image"].endswith(("jpg", "jpeg")) else "PNG")
    recipe = write_recipe(
        tmp_path,
        [{"name": "medmat", "reader": "medmat", "path": str(root), "modality": "CT", "anatomy": "chest", "task": "disease"}],
    )
    loom, reports = run_ingest(recipe)
    assert reports["medmat"].error is None
    assert rows(loom, "SELECT * FROM quarantine") == []
    records = {r["uri"]: r for r in rows(loom, "SELECT uri, labels, source_split FROM records")}
    assert len(records) == 8 and records[ORI_02[0]["image"]]["labels"] == ["Normal"]
    assert records[SUBSET_05[0]["image"]] == {"uri": SUBSET_05[0]["image"], "labels": ["Hemorrhage"], "source_split": "train"}
    annotate(loom, AnnotateSettings(rois=False), workers=1, quiet=True)
    mc = rows(loom, "SELECT a.vqa FROM annotations a JOIN records r USING (id) WHERE r.uri = '" + ORI_02[1]["image"] + "'")
    kept = [q for q in mc[0]["vqa"] if q["kind"] == "multiple-choice"]
    assert [(q["question"], q["options"], q["answer"], q["answer_letter"], q["prompt"], q["source"]) for q in kept] == [
        (ORI_02[1]["Question"], ["Tumor", "Stone", "Cyst", "Normal"], "Normal", "D", ORI_02[1]["Question-choice"], "medmat")
    ]
    out = tmp_path / "out"
    report = export_training(loom, out, "medmat", workers=1, quiet=True, image_format="keep")
    assert report.files == sorted(PUBLISHED)
    for name in PUBLISHED:
        assert (out / name).read_bytes() == (root / name).read_bytes(), name
        assert all((out / r["image"]).is_file() for r in PUBLISHED[name])


def test_missing_images_and_bad_records_are_quarantined(tmp_path):
    """An image not downloaded, a record whose letter is not its answer: each a row naming the file and the
    record; the rest of the file is read."""
    root = published_tree(tmp_path)
    bad = dict(SUBSET_05[1], **{"Answer-choice": "B"})
    (root / "Aggregated_Subsets/Subset--05-train.json").write_text(medmat_json.text([SUBSET_05[0], bad]))
    for r in ORI_02 + SUBSET_05:
        make_image(root / r["image"])
    recipe = write_recipe(
        tmp_path,
        [{"name": "medmat", "reader": "medmat", "path": str(root), "modality": "CT", "anatomy": "chest", "task": "disease"}],
    )
    loom, _ = run_ingest(recipe)
    found = sorted((q["path"], q["reason"]) for q in rows(loom, "SELECT * FROM quarantine"))
    assert found == [
        ("Aggregated_Subsets/Subset--03-train.json:1", "missing_image"),
        ("Aggregated_Subsets/Subset--03-train.json:2", "missing_image"),
        ("Aggregated_Subsets/Subset--05-train.json:2", "bad_annotation"),
        ("Original_Medical_Datasets/ori--04-train.json:1", "missing_image"),
        ("Original_Medical_Datasets/ori--04-train.json:2", "missing_image"),
    ]
    message = rows(loom, "SELECT message FROM quarantine WHERE path = 'Original_Medical_Datasets/ori--04-train.json:2'")[0]
    assert "record id 2" in message["message"] and "56%0.jpg" in message["message"]
    assert len(rows(loom, "SELECT id FROM records")) == 3
