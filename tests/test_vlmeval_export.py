"""`export --format vlmeval-tsv` through the CLI, checked with VLMEvalKit's own TSV rules (tests/vlmeval_rules.py,
copied from VLMEvalKit at commit e8e78f05: load, the image references, dump_image, build_prompt, the exact-matching
evaluation and report_acc) and read back by medloom's own `vlmeval_tsv` reader."""

from __future__ import annotations

import csv
import io
import json

import vlmeval_rules as vk
from conftest import cli, make_image, rows, write_recipe
from PIL import Image
from test_vqa_benchmarks import write_vlmeval_tsv

from medloom.records import source_questions


def benchmark_loom(tmp_path):
    """GMAI-MMBench_VAL.tsv as VLMEvalKit ships it (a hint with a quote and a newline, an image shared by two
    questions, a question without options) and PMC-VQA's `test_clean.csv` (four choices, one of them `None`, which
    pandas would read as missing, on a second question)."""
    write_vlmeval_tsv(tmp_path / "LMUData", tmp_path)
    pmc = tmp_path / "pmcvqa"
    make_image(pmc / "images" / "PMC1064097_F1.jpg", size=(48, 40), seed=22)
    with open(pmc / "test_clean.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D", "Answer_label"])
        w.writerow(
            ["PMC1064097_F1.jpg", "What imaging modality was used?", "CT scan", " A:MRI", " B:CT scan", " C:PET", " D:US", "B"]
        )
        w.writerow(["PMC1064097_F1.jpg", "Which abnormality is seen?", "Mass", " A:Mass", " B:None", " C:Cyst", " D:Clot", "A"])
    recipe = write_recipe(
        tmp_path,
        [
            dict(name="gmai", reader="vlmeval_tsv", path=str(tmp_path / "LMUData"), anatomy="chest"),
            dict(name="pmcvqa", reader="vqa", path=str(pmc)),
        ],
        name="medbench",
    )
    cli("ingest", recipe, "-q")
    return tmp_path / "loom"


def test_vlmeval_tsv_export_reads_in_vlmevalkit_and_back(tmp_path):
    loom = benchmark_loom(tmp_path)
    out = tmp_path / "export"
    result = cli("export", loom, "--format", "vlmeval-tsv", "--out", out, "--image-format", "png", "--json")
    report = json.loads(result.stdout)
    assert report["files"] == {"medbench_test.tsv": 1, "medbench_val.tsv": 2, "medbench_val_open.tsv": 1}
    assert (report["questions"], report["multiple_choice"], report["open"]) == ("source", 3, 1)
    assert report["skipped"] == {"read_as_missing_by_pandas": 1}
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "manifest.json",
        "medbench_test.tsv",
        "medbench_val.tsv",
        "medbench_val_open.tsv",
    ]

    # VLMEvalKit: an unknown dataset with question, A, B and image is a custom multiple-choice set
    data = vk.load_tsv(out / "medbench_val.tsv")
    assert vk.custom_kind(data) == "CustomMCQDataset"
    assert list(data.columns) == [
        "index", "image", "question", "hint", "A", "B", "C", "answer",
        "category", "l2-category", "split", "modality", "organ", "record_id", "question_id",
    ]  # fmt: skip
    data, meta_only = vk.dataset_data(data)
    assert not meta_only and list(data["index"]) == [0, 1]  # integer indexes, as circular evaluation needs
    assert data["image"][0] == data["image"][1]  # the second row's image is the first's, by reference
    prompts = [vk.build_prompt(data, meta_only, str(tmp_path / "vk_images"), i) for i in range(len(data))]
    assert [p[-1]["value"] for p in prompts] == [
        'Hint: Look at the "left"\nside\nQuestion: What is shown?\nOptions:\nA. Pneumonia\nB. Normal\nC. Nodule\n'
        "Please select the correct answer from the options above. \n",
        "Question: Which modality?\nOptions:\nA. CT\nB. X-ray\nPlease select the correct answer from the options above. \n",
    ]
    original = Image.open(io.BytesIO(vk.base64.b64decode(data["image"][0])))
    dumped = Image.open(prompts[0][0]["value"])
    assert dumped.size == original.size == (40, 32) and dumped.tobytes() == original.convert("RGB").tobytes()
    # its exact-matching evaluation: one right reply, one wrong, grouped by split, l2-category and category
    data["prediction"] = ["A", "The answer is A. CT"]
    scored = vk.report_acc(vk.eval_vanilla_exact(data.copy(), data))
    assert scored.to_dict("list") == {
        "split": ["val"],
        "Overall": [0.5],
        "X-ray": [0.5],
        "Disease Diagnosis": [1.0],
        "Modality Recognition": [0.0],
    }
    test = vk.load_tsv(out / "medbench_test.tsv")
    assert (vk.custom_kind(test), list(test["answer"]), list(test["D"])) == ("CustomMCQDataset", ["B"], ["US"])
    assert vk.custom_kind(vk.load_tsv(out / "medbench_val_open.tsv")) == "CustomVQADataset"

    # medloom's own reader reads the export back: the same questions, MAT terms and pixels
    recipe = write_recipe(tmp_path / "back", [dict(name="back", reader="vlmeval_tsv", path=str(out))])
    cli("ingest", recipe, "-q")
    back = tmp_path / "back" / "loom"
    assert rows(back, "SELECT count(*) AS n FROM quarantine") == [{"n": 0}]

    def questions(folder):
        """Per record (split, MAT, pixels) its questions; a question without a type is exported with its task
        (here the record's, unknown) as `category`, which the reader then takes as its type."""
        got = {}
        for r in rows(folder, "SELECT source_split, modality, anatomy, task, pixel_hash, meta FROM records"):
            for q in source_questions(r["meta"]):
                key = (r["source_split"], r["modality"], r["anatomy"], r["pixel_hash"])
                kind = q["question_type"] or q["task"] or r["task"]
                got.setdefault(key, []).append(
                    (q["question"], q["options"], q["answer"], q["answer_letter"], q["answer_type"], kind)
                )
        return {k: sorted(v) for k, v in got.items()}

    expected = questions(loom)
    expected[next(k for k in expected if k[0] == "test")].remove(
        ("Which abnormality is seen?", ["Mass", "None", "Cyst", "Clot"], "Mass", "A", "closed", "unknown")
    )
    assert questions(back) == expected
    assert json.loads((out / "manifest.json").read_text())["format"] == "vlmeval-tsv"


def test_generated_questions_by_option(tmp_path):
    """A loom with no source questions: `auto` exports the multiple-choice questions `annotate` generated, and
    `--questions source` finds none."""
    root = tmp_path / "data"
    for i in range(6):
        make_image(root / ("pneumonia", "normal", "effusion")[i % 3] / f"img{i}.png", seed=60 + i)
    recipe = write_recipe(
        tmp_path, [dict(name="cxr", reader="imagefolder", path=str(root), modality="X-ray", anatomy="chest", task="disease")]
    )
    cli("ingest", recipe, "-q")
    loom = tmp_path / "loom"
    cli("annotate", loom, "-q")
    out = tmp_path / "export"
    report = json.loads(cli("export", loom, "--format", "vlmeval-tsv", "--out", out, "--json").stdout)
    generated = [q for r in rows(loom, "SELECT vqa FROM annotations") for q in r["vqa"] if q["kind"] == "multiple-choice"]
    assert report["questions"] == "generated" and report["multiple_choice"] == len(generated) > 0
    data = vk.load_tsv(out / "test_train.tsv")
    assert vk.custom_kind(data) == "CustomMCQDataset"
    assert sorted(data["question"]) == sorted(q["question"] for q in generated)
    assert sorted(data["answer"]) == sorted(q["answer_letter"] for q in generated)
    assert set(data["category"]) == {"disease"} and set(data["l2-category"]) == {"X-ray"}
    source = json.loads(
        cli("export", loom, "--format", "vlmeval-tsv", "--out", tmp_path / "s", "--questions", "source", "--json").stdout
    )
    assert (source["multiple_choice"], source["open"], source["files"]) == (0, 0, {})
    bad = cli("export", loom, "--format", "vlmeval-tsv", "--out", tmp_path / "b", "--questions", "both", check=False)
    assert bad.returncode != 0 and "auto, source or generated" in bad.stderr
