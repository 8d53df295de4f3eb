"""Medical VQA benchmarks in their published files (`vqa`, `vlmeval_tsv`, `vqa_parquet` readers) through the CLI:
ingest, the source questions and MAT terms stored, quarantine rows, `eval vqa` against a local chat server, and
open / closed scoring checked against lmms-eval's SLAKE rules (tests/lmms_eval_slake.py)."""

from __future__ import annotations

import base64
import csv
import io
import json
import pickle

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import cli, load_json, make_image, rows, write_recipe
from PIL import Image
from test_eval import Server

from medloom.records import source_questions


def jpeg(tmp_path, seed: int) -> bytes:
    """A tiny JPEG's bytes (for the formats that hold images inside a table)."""
    return make_image(tmp_path / "made" / f"{seed}.jpg", size=(40, 32), seed=seed).read_bytes()


def write_vqa_rad(root):
    """VQA-RAD as published on OSF: `VQA_RAD Dataset Public.json` (a list, answers sometimes numbers, test
    questions marked by phrase_type test_*) and `VQA_RAD Image Folder/synpic*.jpg`."""
    folder = root / "VQA_RAD Image Folder"
    make_image(folder / "synpic54610.jpg", seed=1)
    make_image(folder / "synpic29265.jpg", seed=2)
    entries = [
        dict(
            qid=1,
            image_name="synpic54610.jpg",
            image_organ="HEAD",
            answer="Yes",
            answer_type="CLOSED",
            question_type="PRES",
            question="Are regions of the brain infarcted?",
            phrase_type="freeform",
            qid_linked_id="03f451ca-de62-4617-9679-e836026a7642",
            image_case_url="https://medpix.nlm.nih.gov/case?id=x",
            question_rephrase="NULL",
            question_relation="NULL",
            question_frame="NULL",
            evaluation="not evaluated",
        ),
        dict(
            qid=2,
            image_name="synpic54610.jpg",
            image_organ="HEAD",
            answer="Left temporal lobe",
            answer_type="OPEN",
            question_type="POS",
            question="Where is the lesion?",
            phrase_type="test_freeform",
        ),
        dict(
            qid=3,
            image_name="synpic29265.jpg",
            image_organ="CHEST",
            answer=2,
            answer_type="OPEN",
            question_type="COUNT",
            question="How many nodules are there?",
            phrase_type="test_para",
        ),
        dict(
            qid=4,
            image_name="synpic29265.jpg",
            image_organ="CHEST",
            answer="No",
            answer_type="CLOSED",
            question_type="PRES",
            question="Is there a pneumothorax?",
            phrase_type="test_freeform",
        ),
        dict(
            qid=5,
            image_name="synpic00000.jpg",
            image_organ="ABD",
            answer="No",
            answer_type="CLOSED",
            question_type="PRES",
            question="Is the liver enlarged?",
            phrase_type="test_freeform",
        ),
        dict(
            qid=6,
            image_name="synpic29265.jpg",
            image_organ="CHEST",
            answer="",
            answer_type="OPEN",
            question_type="SIZE",
            question="How big?",
            phrase_type="test_freeform",
        ),
    ]
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(entries, indent=1))


def test_vqa_rad_json(tmp_path):
    root = tmp_path / "vqarad"
    write_vqa_rad(root)
    recipe = write_recipe(tmp_path, [dict(name="vqarad", reader="vqa", path=str(root), modality="MRI")])
    cli("ingest", recipe, "-q")
    loom = tmp_path / "loom"
    recs = rows(loom, "SELECT id, source_split, modality, anatomy, task, meta FROM records ORDER BY id")
    assert [(r["id"], r["source_split"], r["modality"], r["anatomy"]) for r in recs] == [
        ("vqarad/VQA_RAD_Image_Folder/synpic29265_jpg", "test", "MRI", "chest"),
        ("vqarad/VQA_RAD_Image_Folder/synpic54610_jpg/test", "test", "MRI", "brain"),
        ("vqarad/VQA_RAD_Image_Folder/synpic54610_jpg/train", "train", "MRI", "brain"),
    ]
    qs = source_questions(recs[0]["meta"])
    assert [(q["id"], q["question"], q["answer"], q["answer_type"], q["question_type"]) for q in qs] == [
        ("3", "How many nodules are there?", "2", "open", "COUNT"),
        ("4", "Is there a pneumothorax?", "No", "closed", "PRES"),
    ]
    quarantine = rows(loom, "SELECT path, reason FROM quarantine ORDER BY path")
    assert quarantine == [
        {"path": "VQA_RAD Dataset Public.json[4]", "reason": "missing_image"},
        {"path": "VQA_RAD Dataset Public.json[5]", "reason": "bad_question"},
    ]


def write_slake(root):
    """SLAKE 1.0 as released: `train.json`, `validate.json`, `test.json` beside `imgs/xmlabN/source.jpg` (every
    image is `source.jpg` in its own folder, with `detection.json` and `mask.png` beside it); questions in English
    and Chinese."""
    for n in (1, 2):
        make_image(root / "imgs" / f"xmlab{n}" / "source.jpg", seed=10 + n)
        (root / "imgs" / f"xmlab{n}" / "detection.json").write_text('[{"Liver": [1, 2, 3, 4]}]')

    def q(qid, img, question, answer, kind, content, lang="en", modality="CT", location="Abdomen"):
        return dict(
            img_id=int(img[5:6]),
            img_name=f"{img}/source.jpg",
            question=question,
            answer=answer,
            q_lang=lang,
            location=location,
            modality=modality,
            answer_type=kind,
            base_type="vqa",
            content_type=content,
            triple=["vhead", "_", "_"],
            qid=qid,
        )

    test = [
        q(1, "xmlab1", "What modality is used to take this image?", "CT", "OPEN", "Modality"),
        q(2, "xmlab1", "Does the picture contain liver?", "Yes", "CLOSED", "Organ"),
        q(3, "xmlab1", "Where is the liver?", "Left", "OPEN", "Position"),
        q(4, "xmlab1", "图中有肝脏吗?", "是", "CLOSED", "Organ", lang="zh"),
        q(
            5,
            "xmlab2",
            "Which organ is abnormal?",
            "Left Lung, Right",
            "OPEN",
            "Abnormality",
            modality="X-Ray",
            location="Chest_lung",
        ),
        q(6, "xmlab2", "Is the lung healthy?", "No", "CLOSED", "Abnormality", modality="X-Ray", location="Chest_lung"),
    ]
    (root / "test.json").write_text(json.dumps(test, ensure_ascii=False))
    (root / "validate.json").write_text(
        json.dumps([q(7, "xmlab2", "Is this an MRI?", "No", "CLOSED", "Modality", modality="X-Ray", location="Chest_lung")])
    )
    (root / "train.json").write_text(json.dumps([q(8, "xmlab3", "Is this a CT?", "Yes", "CLOSED", "Modality")]))


def test_slake_json(tmp_path):
    root = tmp_path / "Slake1.0"
    write_slake(root)
    recipe = write_recipe(tmp_path, [dict(name="slake", reader="vqa", path=str(root))])
    cli("ingest", recipe, "-q")
    loom = tmp_path / "loom"
    recs = rows(loom, "SELECT id, source_split, modality, anatomy, task, meta FROM records ORDER BY id")
    assert [(r["id"], r["source_split"], r["modality"], r["anatomy"], r["task"]) for r in recs] == [
        ("slake/imgs/xmlab1/source_jpg", "test", "CT", "abdomen", "organ recognition"),
        ("slake/imgs/xmlab2/source_jpg/test", "test", "X-ray", "chest", "disease"),
        ("slake/imgs/xmlab2/source_jpg/val", "val", "X-ray", "chest", "modality recognition"),
    ]
    qs = source_questions(recs[0]["meta"])
    assert [(q["question"], q["answer"], q["answer_type"], q["language"], q["task"]) for q in qs] == [
        ("What modality is used to take this image?", "CT", "open", "en", "modality recognition"),
        ("Does the picture contain liver?", "Yes", "closed", "en", "organ recognition"),
        ("Where is the liver?", "Left", "open", "en", ""),
        ("图中有肝脏吗?", "是", "closed", "zh", "organ recognition"),
    ]
    assert rows(loom, "SELECT path, reason FROM quarantine ORDER BY path") == [
        {"path": "train.json[0]", "reason": "missing_image"}
    ]
    # only English questions, as lmms-eval's slake_en
    recipe = write_recipe(tmp_path / "en", [dict(name="slake", reader="vqa", path=str(root), language="en")])
    cli("ingest", recipe, "-q")
    metas = rows(tmp_path / "en" / "loom", "SELECT meta FROM records ORDER BY id")
    assert [len(source_questions(m["meta"])) for m in metas] == [3, 2, 1]


def test_pathvqa_pickle_pmc_vqa_csv_omnimedvqa_json(tmp_path):
    """PathVQA's `qas/test/test_qa.pkl` (a pickled list of {image, question, answer}, `images/test/test_0001.jpg`);
    PMC-VQA's `test_clean.csv` (Choice cells written ` A:text`, Answer_label the letter) with `images/`; OmniMedVQA's
    `QA_information/Open-access/<dataset>.json` with `Images/<dataset>/...`."""
    path_root = tmp_path / "pvqa"
    make_image(path_root / "images" / "test" / "test_0001.jpg", seed=21)
    (path_root / "qas" / "test").mkdir(parents=True)
    qa = [
        {"image": "test_0001", "question": "What is present?", "answer": "granuloma"},
        {"image": "test_0001", "question": "Is there inflammation?", "answer": "yes"},
    ]
    (path_root / "qas" / "test" / "test_qa.pkl").write_bytes(pickle.dumps(qa))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (path_root / "qas" / "test" / "evil_qa.pkl").write_bytes(pickle.dumps([Evil()]))

    pmc_root = tmp_path / "pmcvqa"
    make_image(pmc_root / "images" / "PMC1064097_F1.jpg", seed=22)
    with open(pmc_root / "test_clean.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D", "Answer_label"])
        w.writerow(
            [
                "PMC1064097_F1.jpg",
                "What imaging modality was used?",
                "CT scan",
                " A:MRI ",
                " B:CT scan ",
                " C:PET ",
                " D:Ultrasound ",
                "B",
            ]
        )
        w.writerow(["PMC1064097_F1.jpg", "Which lobe?", "Upper", " A:Upper", " B:Lower", "", "", "E"])

    omni_root = tmp_path / "OmniMedVQA"
    make_image(omni_root / "Images" / "ACRIMA" / "Im553_g_ACRIMA.png", seed=23)
    (omni_root / "QA_information" / "Open-access").mkdir(parents=True)
    (omni_root / "QA_information" / "Open-access" / "ACRIMA.json").write_text(
        json.dumps(
            [
                {
                    "dataset": "ACRIMA",
                    "question_id": "ACRIMA_0001",
                    "question_type": "Disease Diagnosis",
                    "question": "What is the diagnosis?",
                    "gt_answer": "Glaucoma",
                    "image_path": "Images/ACRIMA/Im553_g_ACRIMA.png",
                    "option_A": "Normal",
                    "option_B": "Glaucoma",
                    "modality_type": "Fundus Photography",
                },
                {
                    "dataset": "ACRIMA",
                    "question_id": "ACRIMA_0002",
                    "question_type": "Modality Recognition",
                    "question": "What modality?",
                    "gt_answer": "Fundus",
                    "image_path": "Images/ACRIMA/Im553_g_ACRIMA.png",
                    "option_A": "CT",
                    "option_B": "MRI",
                    "modality": "Fundus Photography",
                },
            ]
        )
    )
    recipe = write_recipe(
        tmp_path,
        [
            dict(name="pathvqa", reader="vqa", path=str(path_root)),
            dict(name="pmcvqa", reader="vqa", path=str(pmc_root)),
            dict(name="omni", reader="vqa", path=str(omni_root)),
        ],
    )
    cli("ingest", recipe, "-q")
    loom = tmp_path / "loom"
    recs = {r["id"]: r for r in rows(loom, "SELECT id, source_split, modality, anatomy, task, meta FROM records")}
    assert sorted(recs) == [
        "omni/Images/ACRIMA/Im553_g_ACRIMA_png",
        "pathvqa/images/test/test_0001_jpg",
        "pmcvqa/images/PMC1064097_F1_jpg",
    ]
    path_rec = recs["pathvqa/images/test/test_0001_jpg"]
    assert (path_rec["source_split"], path_rec["modality"]) == ("test", "pathology")
    assert [(q["answer"], q["answer_type"]) for q in source_questions(path_rec["meta"])] == [
        ("granuloma", "open"),
        ("yes", "closed"),
    ]
    (pmc_q,) = source_questions(recs["pmcvqa/images/PMC1064097_F1_jpg"]["meta"])
    assert (pmc_q["options"], pmc_q["answer"], pmc_q["answer_letter"], pmc_q["answer_type"]) == (
        ["MRI", "CT scan", "PET", "Ultrasound"],
        "CT scan",
        "B",
        "closed",
    )
    omni = recs["omni/Images/ACRIMA/Im553_g_ACRIMA_png"]
    assert (omni["source_split"], omni["modality"], omni["anatomy"], omni["task"]) == (
        "test",
        "fundus photography",
        "unknown",
        "disease",
    )
    (omni_q,) = source_questions(omni["meta"])
    assert (omni_q["id"], omni_q["options"], omni_q["answer_letter"]) == ("ACRIMA_0001", ["Normal", "Glaucoma"], "B")
    assert rows(loom, "SELECT source, path, reason FROM quarantine ORDER BY source, path") == [
        {"source": "omni", "path": "QA_information/Open-access/ACRIMA.json[1]", "reason": "bad_question"},
        {"source": "pathvqa", "path": "qas/test/evil_qa.pkl", "reason": "unreadable_questions"},
        {"source": "pmcvqa", "path": "test_clean.csv:3", "reason": "bad_question"},
    ]


def write_vlmeval_tsv(root, tmp_path):
    """A VLMEvalKit TSV as `to_csv(sep='\\t')` writes it (GMAI-MMBench_VAL's columns): index, image (base64; a
    short value is another row's index), question, A..D, answer (a letter), category; a hint with a newline is
    quoted; a PathVQA-style row without options; a row whose image is neither."""
    root.mkdir(parents=True)
    one, two = (base64.b64encode(jpeg(tmp_path, s)).decode() for s in (31, 32))
    header = ["index", "image", "question", "hint", "A", "B", "C", "D", "answer", "category", "modality"]
    body = [
        [
            "0",
            one,
            "What is shown?",
            'Look at the "left"\nside',
            "Pneumonia",
            "Normal",
            "Nodule",
            "",
            "A",
            "Disease Diagnosis",
            "X-Ray",
        ],
        ["1", "0", "Which modality?", "", "CT", "X-ray", "", "", "B", "Modality Recognition", "X-Ray"],
        ["2", two, "Is there a fracture?", "", "", "", "", "", "no", "", "CT"],
        ["3", "99", "Dangling reference?", "", "A1", "B1", "", "", "A", "", ""],
    ]
    with open(root / "GMAI-MMBench_VAL.tsv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(header)
        w.writerows(body)


def test_vlmeval_tsv(tmp_path):
    root = tmp_path / "LMUData"
    write_vlmeval_tsv(root, tmp_path)
    recipe = write_recipe(tmp_path, [dict(name="gmai", reader="vlmeval_tsv", path=str(root), anatomy="chest")])
    cli("ingest", recipe, "-q")
    loom = tmp_path / "loom"
    recs = rows(loom, "SELECT id, source_split, modality, anatomy, task, width, height, meta FROM records ORDER BY id")
    assert [(r["id"], r["source_split"], r["modality"], r["anatomy"], r["task"], r["width"], r["height"]) for r in recs] == [
        ("gmai/GMAI-MMBench_VAL_tsv/0", "val", "X-ray", "chest", "disease", 40, 32),
        ("gmai/GMAI-MMBench_VAL_tsv/2", "val", "CT", "chest", "unknown", 40, 32),
    ]
    qs = source_questions(recs[0]["meta"])
    assert [(q["id"], q["question"], q["options"], q["answer"], q["answer_letter"]) for q in qs] == [
        ("0", 'Hint: Look at the "left"\nside\nQuestion: What is shown?', ["Pneumonia", "Normal", "Nodule"], "Pneumonia", "A"),
        ("1", "Which modality?", ["CT", "X-ray"], "X-ray", "B"),
    ]
    assert [(q["answer"], q["answer_type"]) for q in source_questions(recs[1]["meta"])] == [("no", "closed")]
    assert rows(loom, "SELECT path, reason FROM quarantine") == [{"path": "GMAI-MMBench_VAL.tsv:6", "reason": "missing_image"}]
    # the image comes back out of its row (checked against its hash at ingest) when exported
    cli("export", loom, "--format", "parquet", "--out", tmp_path / "export", "-q")
    exported = pq.read_table(next((tmp_path / "export").rglob("*.parquet"))).column("image").to_pylist()
    assert [Image.open(io.BytesIO(x["bytes"])).size for x in exported] == [(40, 32), (40, 32)]


def write_hf_parquet(root, tmp_path):
    """Hugging Face datasets' VQA-RAD (`flaviagiammarino/vqa-rad`, as lmms-eval loads such sets): `data/test-00000-
    of-00001.parquet` with image (struct {bytes, path}), question, answer; each question row repeats its image."""
    (root / "data").mkdir(parents=True)
    one, two = jpeg(tmp_path, 41), jpeg(tmp_path, 42)
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "image": pa.array(
                [
                    {"bytes": one, "path": None},
                    {"bytes": one, "path": None},
                    {"bytes": two, "path": None},
                    {"bytes": None, "path": None},
                ],
                image,
            ),
            "question": ["is there a mass?", "where is the mass?", "is this a ct?", "what organ?"],
            "answer": ["yes", "left lung", "no", "liver"],
        }
    )
    pq.write_table(table, root / "data" / "test-00000-of-00001.parquet", row_group_size=2)


def test_hf_parquet(tmp_path):
    root = tmp_path / "vqa-rad"
    write_hf_parquet(root, tmp_path)
    recipe = write_recipe(
        tmp_path, [dict(name="vqarad_hf", reader="vqa_parquet", path=str(root), modality="CT", anatomy="chest")]
    )
    cli("ingest", recipe, "-q")
    loom = tmp_path / "loom"
    recs = rows(loom, "SELECT id, source_split, width, meta FROM records ORDER BY id")
    assert [(r["id"], r["source_split"], r["width"]) for r in recs] == [
        ("vqarad_hf/data/test-00000-of-00001_parquet/0_0", "test", 40),
        ("vqarad_hf/data/test-00000-of-00001_parquet/1_0", "test", 40),
    ]
    assert [[(q["question"], q["answer_type"]) for q in source_questions(r["meta"])] for r in recs] == [
        [("is there a mass?", "closed"), ("where is the mass?", "open")],
        [("is this a ct?", "closed")],
    ]
    assert rows(loom, "SELECT path, reason FROM quarantine") == [
        {"path": "data/test-00000-of-00001.parquet#1:1", "reason": "missing_image"}
    ]


# a model's replies to SLAKE's test questions: forms lmms-eval's normalisation does and does not equate
SLAKE_REPLIES = {
    "What modality is used to take this image?": "CT (computed tomography).",
    "Does the picture contain liver?": "Yes, the liver is visible.",
    "Where is the liver?": "Left side of the abdomen",
    "图中有肝脏吗?": "是的。",
    "Which organ is abnormal?": "left lung right",
    "Is the lung healthy?": "Yes",
}


def test_eval_slake_matches_lmms_eval(tmp_path):
    """`eval vqa` on SLAKE's own questions: medloom's exact match overall, on open and on closed questions equals
    lmms-eval's `slake_accuracy`, `slake_open_accuracy` and `slake_closed_accuracy` (its functions, copied in
    tests/lmms_eval_slake.py, run on the same replies); closed accuracy reads yes/no, token recall open words."""
    import lmms_eval_slake as lmms

    root = tmp_path / "Slake1.0"
    write_slake(root)
    recipe = write_recipe(tmp_path, [dict(name="slake", reader="vqa", path=str(root))])
    cli("ingest", recipe, "-q")
    server = Server(answer=lambda prompt: SLAKE_REPLIES[prompt.split("\n")[0]])
    try:
        proc = cli(
            "eval", "vqa", tmp_path / "loom", "--model", f"openai:{server.url}#m", "--out", tmp_path / "run", "--workers", "1"
        )
    finally:
        server.close()
    assert sorted(line.split("\n")[0] for line in server.log) == sorted(SLAKE_REPLIES)
    assert all(line.endswith("\nAnswer the question using a single word or phrase.") for line in server.log)
    results = load_json(tmp_path / "run" / "results.json")
    bench = results["benchmark"]
    docs = {d["question"]: d for d in json.loads((root / "test.json").read_text())}
    preds = pq.read_table(tmp_path / "run" / "predictions.parquet").to_pylist()
    records = []
    for p in preds:
        question = p["prompt"].split("\n")[0]
        records.append(lmms.slake_process_results(docs[question], [p["raw"]]))
        assert p["exact_match"] == records[-1]["is_correct"]
    assert bench["overall"]["exact_match"]["value"] == pytest.approx(lmms.slake_aggregate_accuracy(records))
    assert bench["by_answer_type"]["open"]["open_exact_match"]["value"] == pytest.approx(
        lmms.slake_aggregate_open_accuracy(records)
    )
    assert bench["by_answer_type"]["closed"]["closed_exact_match"]["value"] == pytest.approx(
        lmms.slake_aggregate_closed_accuracy(records)
    )
    assert lmms.slake_aggregate_accuracy(records) == pytest.approx(3 / 6)
    # medloom's own closed accuracy reads "Yes, the liver is visible." as yes
    assert bench["overall"]["closed_accuracy"]["value"] == pytest.approx(2 / 3)
    # open: CT (exact), "Left side of the abdomen" (all of "left"), "left lung right" (exact)
    assert bench["overall"]["open_token_recall"]["value"] == pytest.approx(1.0)
    assert bench["overall"]["open_exact_match"]["value"] == pytest.approx(2 / 3)
    overall = bench["overall"]["closed_accuracy"]
    assert overall["n"] == 3 and overall["wilson95"][0] < 2 / 3 < overall["wilson95"][1]
    # a question whose type is no MAT task (Position) counts under its record's task
    assert {k: v["n"] for k, v in bench["by_triplet"].items()} == {
        "CT / abdomen / modality recognition": 1,
        "CT / abdomen / organ recognition": 3,
        "X-ray / chest / disease": 2,
    }
    assert bench["by_language"]["zh"]["n"] == 1
    assert results["settings"]["question_kind"] == "source"
    assert "benchmark questions" in proc.stdout and "open token recall" in proc.stdout


def test_every_format_evaluates_through_the_cli(tmp_path):
    """Each published format, ingested into one loom, asked by `eval vqa` (multiple choice by letter, free answers
    as text) and reported per source; generated questions are not asked (the loom has only source questions)."""
    write_vqa_rad(tmp_path / "vqarad")
    write_slake(tmp_path / "slake")
    write_vlmeval_tsv(tmp_path / "tsv", tmp_path)
    (tmp_path / "tsv" / "GMAI-MMBench_VAL.tsv").rename(tmp_path / "tsv" / "MedXpertQA_MM_test.tsv")
    write_hf_parquet(tmp_path / "hf", tmp_path)
    omni = tmp_path / "omni"
    make_image(omni / "Images" / "X" / "a.png", seed=5)
    (omni / "QA_information" / "Open-access").mkdir(parents=True)
    (omni / "QA_information" / "Open-access" / "X.json").write_text(
        json.dumps(
            [
                {
                    "question_id": "X_1",
                    "question_type": "Modality Recognition",
                    "question": "What modality?",
                    "gt_answer": "MRI",
                    "image_path": "Images/X/a.png",
                    "option_A": "CT",
                    "option_B": "MRI",
                    "modality_type": "MR",
                }
            ]
        )
    )
    recipe = write_recipe(
        tmp_path,
        [
            dict(name="vqarad", reader="vqa", path=str(tmp_path / "vqarad"), modality="CT"),
            dict(name="slake", reader="vqa", path=str(tmp_path / "slake")),
            dict(name="tsv", reader="vlmeval_tsv", path=str(tmp_path / "tsv")),
            dict(name="hf", reader="vqa_parquet", path=str(tmp_path / "hf"), modality="CT", anatomy="chest"),
            dict(name="omni", reader="vqa", path=str(omni)),
        ],
    )
    cli("ingest", recipe, "-q", check=False)
    server = Server(answer=lambda prompt: "B" if "\nA. " in prompt else "yes")
    try:
        cli(
            "eval",
            "vqa",
            tmp_path / "loom",
            "--model",
            f"openai:{server.url}#m",
            "--out",
            tmp_path / "run",
            "--workers",
            "1",
            "-q",
        )
    finally:
        server.close()
    results = load_json(tmp_path / "run" / "results.json")
    by_source = results["benchmark"]["by_source"]
    assert {k: (v["closed"], v["open"]) for k, v in by_source.items()} == {
        "hf": (2, 1),
        "omni": (1, 0),
        "slake": (3, 3),
        "tsv": (3, 0),
        "vqarad": (1, 2),
    }
    # omni: B is MRI (right); tsv: row 0's answer is A (wrong), row 1's B (right), "yes" to a "no" (wrong)
    assert by_source["omni"]["closed_accuracy"]["value"] == 1.0
    assert by_source["tsv"]["closed_accuracy"]["value"] == pytest.approx(1 / 3)
    preds = pq.read_table(tmp_path / "run" / "predictions.parquet")
    assert set(preds.column("rule").to_pylist()) == {"letter", "yes-no", "exact-match"}
