"""Decontamination through the CLI: `leakage LOOM --against BENCH` finds the records of a training loom that hold
a benchmark loom's test images (a byte copy, a re-encoded copy, a resized copy) or questions (copied, or copied
with words added), and `export --exclude BENCH` keeps them out of the export, with a report of what was left out."""

from __future__ import annotations

import csv
import json
import tarfile

from conftest import cli, make_image, rows, write_recipe
from PIL import Image

# PMC-VQA's release: `test.csv` beside `images/`, the choices written ` A:text`, Answer_label the letter
PMC_HEADER = ["Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D", "Answer_label"]
BENCH_QUESTIONS = {
    "PMC1064097_F1.jpg": ("What is the size of the hypodense lesion seen in the left hepatic lobe?", "2 cm"),
    "PMC1064097_F2.jpg": ("Which vessel is compressed by the mass shown in the contrast enhanced image?", "Aorta"),
    "PMC2211542_F3.jpg": ("What structure does the arrow point to in the sagittal T2 weighted image?", "Aorta"),
    "PMC2211542_F4.jpg": ("Which finding is visible along the posterior wall of the right atrium?", "2 cm"),
}
TEMPLATE = "What imaging modality was used to acquire this figure?"  # asked of every benchmark image


def pmc_vqa(root, split: str, questions: list[tuple[str, str, str]], seeds: dict[str, int]) -> None:
    """A PMC-VQA style `{split}.csv` with `images/`: (figure, question, answer) rows, answers among the choices."""
    for name, seed in seeds.items():
        make_image(root / "images" / name, size=(160, 120), seed=seed)
    with open(root / f"{split}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(PMC_HEADER)
        for figure, question, answer in questions:
            choices = ["2 cm", "Aorta", "CT", "MRI"]
            w.writerow(
                [figure, question, answer, *(f" {'ABCD'[k]}:{c}" for k, c in enumerate(choices)), "ABCD"[choices.index(answer)]]
            )


def make_looms(tmp_path):
    """The benchmark (four test figures, each with its question and the template one) and a training loom: an
    image folder with a byte copy of F1, F2 re-encoded as JPEG, F3 resized, and two images of its own; a PMC-VQA
    style training set on images of its own, with F4's question copied (other case and punctuation), F1's
    question with words added, the template question and a short question the benchmark asks too."""
    bench_root = tmp_path / "PMC-VQA"
    pmc_vqa(
        bench_root,
        "test",
        [(f, q, a) for f, (q, a) in BENCH_QUESTIONS.items()]
        + [(f, TEMPLATE, "CT") for f in BENCH_QUESTIONS]
        + [("PMC1064097_F1.jpg", "Is this a CT image?", "CT")],
        {name: 100 + k for k, name in enumerate(BENCH_QUESTIONS)},
    )
    cli("ingest", write_recipe(tmp_path / "bench", [dict(name="pmcvqa", reader="vqa", path=str(bench_root))]), "-q")

    images = bench_root / "images"
    folder = tmp_path / "train_data" / "train" / "liver"
    folder.mkdir(parents=True)
    (folder / "copy.jpg").write_bytes((images / "PMC1064097_F1.jpg").read_bytes())
    Image.open(images / "PMC1064097_F2.jpg").save(folder / "reencoded.jpg", quality=60)
    Image.open(images / "PMC2211542_F3.jpg").resize((120, 90), Image.LANCZOS).save(folder / "resized.png")
    make_image(folder / "own1.png", size=(160, 120), seed=7)
    make_image(folder / "own2.png", size=(160, 120), seed=8)
    train_vqa = tmp_path / "train_vqa"
    pmc_vqa(
        train_vqa,
        "train",
        [
            ("own_a.jpg", "which FINDING is visible along the posterior wall of the right atrium", "2 cm"),
            ("own_b.jpg", "In this CT, what is the size of the hypodense lesion seen in the left hepatic lobe?", "2 cm"),
            ("own_c.jpg", TEMPLATE, "CT"),
            ("own_c.jpg", "Is this a CT image?", "CT"),
            ("own_d.jpg", "What is the size of the cyst seen in the right renal pole?", "2 cm"),
        ],
        {"own_a.jpg": 11, "own_b.jpg": 12, "own_c.jpg": 13, "own_d.jpg": 14},
    )
    recipe = write_recipe(
        tmp_path / "train",
        [
            dict(
                name="folder",
                reader="imagefolder",
                path=str(tmp_path / "train_data"),
                modality="CT",
                anatomy="liver",
                task="disease",
            ),
            dict(name="qa", reader="vqa", path=str(train_vqa)),
        ],
    )
    cli("ingest", recipe, "-q")
    return tmp_path / "train" / "loom", tmp_path / "bench" / "loom"


FOUND = [
    ("folder/train/liver/copy_jpg", ["exact-image"], "pmcvqa/images/PMC1064097_F1_jpg"),
    ("folder/train/liver/reencoded_jpg", ["near-image"], "pmcvqa/images/PMC1064097_F2_jpg"),
    ("folder/train/liver/resized_png", ["near-image"], "pmcvqa/images/PMC2211542_F3_jpg"),
    ("qa/images/own_a_jpg", ["question-exact"], "pmcvqa/images/PMC2211542_F4_jpg"),
    ("qa/images/own_b_jpg", ["question-overlap"], "pmcvqa/images/PMC1064097_F1_jpg"),
]


def test_leakage_against_a_benchmark_loom(tmp_path):
    train, bench = make_looms(tmp_path)
    assert len(rows(train, "SELECT id FROM records")) == 9
    got = json.loads(cli("leakage", train, "--against", bench, "--json").stdout)
    assert [(r["id"], r["reasons"], r["matches"][0]["against_id"]) for r in got["records_found"]] == FOUND
    assert (got["records"], got["against_records"], got["contaminated"]) == (9, 4, 5)
    assert got["by_reason"] == {"exact-image": 1, "near-image": 2, "question-exact": 1, "question-overlap": 1}
    assert (got["short_questions"], got["template_questions"]) == (1, 1)  # "Is this a CT image?", TEMPLATE
    near = [m for r in got["records_found"] for m in r["matches"] if m["reason"] == "near-image"]
    assert all(0 < m["distance"] <= 6 for m in near)
    copied = got["records_found"][3]["matches"][0]
    assert (copied["question"], copied["against_question"], copied["overlap"]) == (
        "which FINDING is visible along the posterior wall of the right atrium",
        BENCH_QUESTIONS["PMC2211542_F4.jpg"][0],
        1.0,
    )
    assert got["records_found"][4]["matches"][0]["overlap"] == 1.0  # every 3-gram of F1's question, words added
    assert json.loads((train / "curation" / "contamination.json").read_text())["contaminated"] == 5
    # the table: each record and why
    printed = cli("leakage", train, "--against", bench).stdout
    assert "5 of 9 records" in printed and "question-overlap" in printed and "phash distance" in printed
    # exact copies only, without questions: the byte copy alone
    got = json.loads(cli("leakage", train, "--against", bench, "--near", "-1", "--no-questions", "--json").stdout)
    assert [r["id"] for r in got["records_found"]] == ["folder/train/liver/copy_jpg"]
    # the benchmark's train split holds none of them
    got = json.loads(cli("leakage", train, "--against", bench, "--against-split", "train", "--json").stdout)
    assert (got["against_records"], got["contaminated"]) == (0, 0)
    assert "the loom itself" in cli("leakage", train, "--against", train, check=False).stderr


def test_export_exclude_keeps_contaminated_records_out(tmp_path):
    train, bench = make_looms(tmp_path)
    out = tmp_path / "wds"
    result = cli("export", train, "--format", "webdataset", "--out", out, "--exclude", bench, "-q")
    assert "excluded 5 of 9 records" in result.stdout
    keys, pixels = set(), set()
    for tar in out.glob("*.tar"):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                if m.name.endswith(".json"):
                    sample = json.loads(t.extractfile(m).read())
                    keys.add(sample["id"])
                    pixels.add(sample["pixel_hash"])
    expected = {r["id"] for r in rows(train, "SELECT id FROM records")} - {f[0] for f in FOUND}
    assert (
        keys
        == expected
        == {"folder/train/liver/own1_png", "folder/train/liver/own2_png", "qa/images/own_c_jpg", "qa/images/own_d_jpg"}
    )
    bench_pixels = {r["pixel_hash"] for r in rows(bench, "SELECT pixel_hash FROM records")}
    assert not pixels & bench_pixels
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["excluded"]["records"] == 5 and manifest["excluded"]["against"] == [str(bench)]
    assert manifest["excluded"]["by_reason"]["near-image"] == 2
    listed = json.loads((out / "excluded.json").read_text())
    assert [r["id"] for r in listed["records_found"]] == [f[0] for f in FOUND]
    assert "excluded" in (out / "README.md").read_text()
    # again without --exclude: everything, and no stale exclusion report
    cli("export", train, "--format", "webdataset", "--out", out, "--overwrite", "-q")
    assert "excluded" not in json.loads((out / "manifest.json").read_text())
    assert not (out / "excluded.json").exists()
    # Parquet shards (the same selection rule; --exclude repeated): none of them either
    pq_out = tmp_path / "pq"
    cli("export", train, "--format", "parquet", "--out", pq_out, "--exclude", bench, "--exclude", bench, "-q")
    import pyarrow.parquet as pq

    ids = {i for f in pq_out.glob("*.parquet") for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()}
    assert ids == expected
    # VLMEvalKit's TSV of the training questions: neither the copied question nor the one with words added
    tsv_out = tmp_path / "tsv"
    report = json.loads(cli("export", train, "--format", "vlmeval-tsv", "--out", tsv_out, "--exclude", bench, "--json").stdout)
    assert report["excluded"]["records"] == 5 and (tsv_out / "excluded.json").is_file()
    with open(tsv_out / "test_train.tsv", newline="") as f:
        questions = [(r["record_id"], r["question"]) for r in csv.DictReader(f, delimiter="\t")]
    assert questions == [
        ("qa/images/own_c_jpg", TEMPLATE),
        ("qa/images/own_c_jpg", "Is this a CT image?"),
        ("qa/images/own_d_jpg", "What is the size of the cyst seen in the right renal pole?"),
    ]


def test_exclude_names_a_loom(tmp_path):
    train, _ = make_looms(tmp_path)
    result = cli("export", train, "--out", tmp_path / "x", "--exclude", tmp_path / "nowhere", check=False)
    assert result.returncode != 0 and "no catalog" in result.stderr
    assert not (tmp_path / "nowhere").exists()  # reading a loom never creates one


def test_question_join_finds_every_pair_over_the_threshold():
    """The prefix-filtered 3-gram join against comparing every pair, on questions copied with random edits."""
    import random
    from collections import Counter

    from medloom.curate.decontam import TEMPLATE_RECORDS, ContaminationReport, Side, ngrams, question_matches, question_words

    rng = random.Random(3)
    vocab = [f"w{k}" for k in range(25)]
    bench = [" ".join(rng.choices(vocab, k=rng.randint(6, 14))) for _ in range(150)]
    train = []
    for _ in range(300):
        words = rng.choice(bench).split()
        for _ in range(rng.randint(0, 3)):
            words[rng.randrange(len(words))] = rng.choice(vocab)
        train.append(" ".join(words))

    def side(texts):
        return Side(
            [str(k) for k in range(len(texts))],
            ["s"] * len(texts),
            ["test"] * len(texts),
            [None] * len(texts),
            [None] * len(texts),
            [[t] for t in texts],
        )

    for overlap in (0.5, 0.8):
        found = question_matches(side(train), side(bench), overlap, ContaminationReport("a", ["b"], ["test"]))
        got = {(i, j) for i, j, *_ in found}
        brute = set()
        in_train, in_bench = Counter(map(question_words, train)), Counter(map(question_words, bench))
        for i, t in enumerate(train):
            for j, b in enumerate(bench):
                tw, bw = question_words(t), question_words(b)
                if max(in_train[bw], in_bench[bw]) > TEMPLATE_RECORDS:  # a template: on more records of a loom
                    continue
                if tw == bw or len(ngrams(tw) & ngrams(bw)) / len(ngrams(bw)) >= overlap:
                    brute.add((i, j))
        assert got == brute and len(got) > 50
