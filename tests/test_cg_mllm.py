"""`medloom cg run --trainer hf-lora`: a vision-language model fine-tuned with LoRA per experiment, on a tiny random
LLaVA (CLIP vision tower, Llama text model, built here: no weights can be downloaded) and the generated world of
examples/cg. Checked: no target record reaches training (each adapter's training records against the target's test
ids), the items are Med-MAT's `Question-choice` prompts and the model is asked them as `eval vqa --model hf:` asks,
the adapter `hf:` loads is peft's own merge, a resumed run trains nothing twice and a killed one restarts cleanly,
and `--baseline-model` adds a pretrained Baseline column (a tiny CLIP, `hf-clip:`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import cg_world, cli, rows

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
pytest.importorskip("peft")

from test_eval_hf import build_clip  # noqa: E402
from test_eval_hf import build_llava as hf_build_llava  # noqa: E402 - the same tiny models, skipped without transformers

ROOT = Path(__file__).resolve().parents[1]
TARGET = "CT_brain_cancer"
INSTRUCTION = "Answer with the option's letter from the given choices directly."
# a chat template with both roles, as real models have: the assistant's turn ends with </s>
TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}"
    "<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}\n{% else %}ASSISTANT: {{ m['content'][0]['text'] }}</s>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
RUN = ["--trainer", "hf-lora", "--steps", "2", "--batch-size", "2", "--lr", "0.01", "-w", "1"]


def build_llava(folder: Path) -> None:
    """test_eval_hf's one-layer LLaVA with this world's words and a chat template that ends the answer turn."""
    hf_build_llava(
        folder, "A B C D answer option letter the is tumour oedema normal CT MRI brain lung".split(), template=TEMPLATE
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cgmllm")
    cg_world(tmp, 4)  # the directions pooled and the ablations: 12 experiments; the combinations train alike
    build_llava(tmp / "llava")
    build_clip(tmp / "clip")
    plan = tmp / "loom" / "experiments"
    first = json.loads(
        cli(
            "cg", "run", plan, "--out", tmp / "results", *RUN, "--model", f"hf:{tmp / 'llava'}",
            "--baseline-model", f"hf-clip:{tmp / 'clip'}", "--json", "-q",
        ).stdout
    )  # fmt: skip
    return {"tmp": tmp, "loom": tmp / "loom", "plan": plan, "results": tmp / "results", "first": first}


def target_ids(loom: Path) -> set[str]:
    return {r["id"] for r in rows(loom, "SELECT id FROM records WHERE modality = 'CT' AND anatomy = 'brain' AND task = 'cancer'")}


def test_every_experiment_fine_tunes_without_the_target_and_is_asked_on_it(world):
    from medloom.catalog import read_salt
    from medloom.records import salted_id

    loom, results = world["loom"], world["results"]
    salt = read_salt(loom)
    target = target_ids(loom)
    experiments = sorted(p.parent for p in (world["plan"] / TARGET).glob("*/manifest.json"))
    assert len(experiments) == 12 and world["first"]["trained"] == 12
    for folder in experiments:
        train_ids = set((folder / "train.txt").read_text().split())
        run = results / TARGET / folder.name / "seed-0"  # one seed: seed-0
        trained = json.loads((run / "adapter" / "train.json").read_text())
        keys = set(trained["record_keys"])
        # the records whose items trained the adapter: the mix's, never the target's
        assert keys and keys <= {salted_id(salt, i) for i in train_ids}
        assert not keys & {salted_id(salt, i) for i in target}
        # every experiment: the same steps and examples, whatever its mix's size
        assert len(trained["losses"]) == 2 and trained["examples_seen"] == 4 and trained["device"] == "cpu"
        assert json.loads((run / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
            world["tmp"] / "llava"
        )
        preds = pq.read_table(run / "mc" / "predictions.parquet").to_pylist()
        assert {p["record_id"] for p in preds} == target  # the target's test records, all of them
        for p in preds:  # Med-MAT's Question-choice, asked of the adapter, with the plan's 3 options
            lines = p["prompt"].splitlines()
            assert lines[-1] == INSTRUCTION and [x[:3] for x in lines[1:-1]] == ["A: ", "B: ", "C: "]
            assert p["model"] == f"hf:{run / 'adapter'}"
        settings = json.loads((run / "mc" / "results.json").read_text())["settings"]
        assert settings["prompt_format"] == "medmat" and Path(settings["experiment"]).parent == folder.parent
    # the Baseline is the model as it is, Med-MAT's Baseline
    base = json.loads((results / TARGET / "baseline" / "seed-0" / "mc" / "results.json").read_text())["settings"]
    assert base["model"] == f"hf:{world['tmp'] / 'llava'}" and not (results / TARGET / "baseline" / "seed-0" / "adapter").exists()


def test_the_adapter_hf_loads_is_peft_merged_into_its_base(world):
    """`eval vqa --model hf:ADAPTER` answers as the base model with peft's adapter merged, generated here without
    medloom's loader, on the same rendered image; and the adapter moved the model (LoRA's B is no longer zero)."""
    import io

    import torch
    from peft import PeftModel
    from PIL import Image
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from medloom.catalog import connect
    from medloom.train.mcq import render_images

    run = world["results"] / TARGET / "related-fixed-task" / "seed-0"
    weights = load_file(run / "adapter" / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())
    assert all("language_model" in k for k in weights)  # the vision tower and the projector stay as they are
    processor = AutoProcessor.from_pretrained(world["tmp"] / "llava")
    base = AutoModelForImageTextToText.from_pretrained(world["tmp"] / "llava")
    model = PeftModel.from_pretrained(base, run / "adapter").merge_and_unload().eval()
    preds = pq.read_table(run / "mc" / "predictions.parquet").to_pylist()[:3]
    records = (
        connect(world["loom"])
        .sql("SELECT * FROM records WHERE id IN (" + ", ".join(f"'{p['record_id']}'" for p in preds) + ")")
        .to_arrow_table()
    )
    images, _ = render_images(world["loom"], records, 1)
    for p in preds:
        image = Image.open(io.BytesIO(images[p["record_id"]])).convert("RGB")
        chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": p["prompt"]}]}]
        inputs = processor(
            images=[image], text=[processor.apply_chat_template(chat, add_generation_prompt=True)], return_tensors="pt"
        )
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=64, do_sample=False)
        assert p["raw"] == processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def test_training_examples_are_the_prompt_then_the_answer_turn(world):
    """The loss is on the assistant's turn only: the letter and the template's end of turn after the prompt that
    `eval vqa` sends."""
    from PIL import Image
    from transformers import AutoProcessor

    from medloom.models.hf_vlm import chat_prompt
    from medloom.train.mllm import encode

    processor = AutoProcessor.from_pretrained(world["tmp"] / "llava")
    question = f"Is there a tumour in this CT image of the brain?\nA: tumour\nB: normal\n{INSTRUCTION}"
    example = encode(processor, Image.new("RGB", (40, 40)), question, "B")
    ids, labels = example["input_ids"][0], example["labels"][0]
    prompt = processor(images=[Image.new("RGB", (40, 40))], text=[chat_prompt(processor, 1, question)], return_tensors="pt")
    n = prompt["input_ids"].shape[1]
    assert ids[:n].tolist() == prompt["input_ids"][0].tolist() and (labels[:n] == -100).all()
    assert processor.tokenizer.decode(labels[n:]) == " B</s>\n" and (labels[n:] == ids[n:]).all()
    assert example["attention_mask"].shape == ids[None].shape


def test_report_has_the_pretrained_baseline_beside_the_others(world):
    results = world["results"]
    report = json.loads((results / "report" / "mc.json").read_text())
    cells = report["targets"]["CT|brain|cancer"]["runs"]
    assert cells["baseline-pretrained"]["model"] == f"hf-clip:{world['tmp'] / 'clip'}"
    assert cells["baseline-pretrained"]["n"] == len(target_ids(world["loom"]))
    assert "vs_baseline-plus" not in cells["baseline-pretrained"]  # a model asked as it is is never starred
    assert "vs_baseline-plus" in cells["related-fixed-task"]
    text = (results / "report" / "mc.md").read_text()
    headers = [line for line in text.splitlines() if line.startswith("| target")]
    # every table (here the pooled directions, the ablations): the pretrained one beside Baseline
    assert len(headers) == 2 and all(" | Baseline | Baseline (pretrained) | Baseline+ | " in h for h in headers)
    assert (
        f"Baseline: `hf:{world['tmp'] / 'llava'}`" in text and f"Baseline (pretrained): `hf-clip:{world['tmp'] / 'clip'}`" in text
    )
    # the CLIP baseline has zero-shot scores too; the fine-tuned chat models say why they have none
    zs = json.loads((results / "report" / "zeroshot.json").read_text())["targets"]["CT|brain|cancer"]["runs"]
    assert zs["baseline-pretrained"]["n"] == len(target_ids(world["loom"]))
    assert "answers in words" in zs["all-related"]["missing"]


def test_eval_refuses_the_adapters_training_records(world):
    adapter = world["results"] / TARGET / "all-related" / "seed-0" / "adapter"
    proc = cli(
        "eval", "vqa", world["loom"], "--model", f"hf:{adapter}", "--split", "train", "--out", world["tmp"] / "x", check=False
    )
    assert proc.returncode == 2 and "were used to train" in proc.stderr


def test_a_resumed_run_trains_nothing_twice(world, tmp_path):
    """Killed right after its third adapter, then after the next one: each run goes on where the last stopped
    (an adapter whose train.json is written is evaluated, never trained again); an adapter cut before its
    train.json is trained again from nothing; a last run trains nothing."""
    plan = tmp_path / "plan"
    names = ["all-related", "baseline-plus", "related-fixed-task", "without-area", "without-task"]  # the run's order
    for name in names:
        shutil.copytree(world["plan"] / TARGET / name, plan / TARGET / name)
    results = tmp_path / "results"
    args = ["cg", "run", plan, "--out", results, "--loom", world["loom"], *RUN, "--model", f"hf:{world['tmp'] / 'llava'}"]
    env = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}
    adapter = lambda n: results / TARGET / n / "seed-0" / "adapter"  # noqa: E731

    def killed_after(n: int) -> None:
        proc = cli(*args, "-q", fresh=True, check=False, env={**env, "MEDLOOM_TEST_KILL_AFTER_TRAINING": str(n)})
        assert proc.returncode == -signal.SIGKILL, proc.stderr

    killed_after(3)
    assert [n for n in names if (adapter(n) / "train.json").is_file()] == names[:3]
    assert not (results / TARGET / "related-fixed-task" / "seed-0" / "mc").exists()  # killed before its evaluation
    stamps = {n: (adapter(n) / "train.json").stat().st_mtime_ns for n in names[:3]}
    killed_after(1)  # the first adapter this run trains is without-area's: related-fixed-task's was kept
    assert {n: (adapter(n) / "train.json").stat().st_mtime_ns for n in names[:3]} == stamps
    assert (results / TARGET / "related-fixed-task" / "seed-0" / "mc" / "results.json").is_file()
    assert (adapter("without-area") / "train.json").is_file() and not (adapter("without-task") / "train.json").exists()
    # as if killed while saving: the weights half written, train.json not yet
    (adapter("without-area") / "train.json").unlink()
    (adapter("without-area") / "adapter_model.safetensors").write_bytes(b"half")
    again = json.loads(cli(*args, "--json", "-q").stdout)
    assert again["trained"] == 2 and again["reused"] == 4  # without-area again, without-task; the baseline and 3 done
    assert {n: (adapter(n) / "train.json").stat().st_mtime_ns for n in names[:3]} == stamps
    report = json.loads((results / "report" / "mc.json").read_text())["targets"]["CT|brain|cancer"]["runs"]
    assert all(report[n]["n"] == len(target_ids(world["loom"])) for n in names)
    last = json.loads(cli(*args, "--json", "-q").stdout)
    assert last["trained"] == 0 and last["reused"] == len(names) + 1


def test_seeds_give_one_adapter_each_and_a_short_pool_is_not_trained(world, tmp_path):
    """`--seeds 0,1` with hf-lora: one adapter per experiment and seed (`seed-S/adapter`, trained with that seed);
    the Baseline (the model as it is) and the pretrained Baseline asked once per target, in seed-0; an experiment
    the plan left untrained (`short`) is n/a with its reason, never trained."""
    plan = tmp_path / "plan"
    for name in ("baseline-plus", "related-fixed-task"):
        shutil.copytree(world["plan"] / TARGET / name, plan / TARGET / name)
    manifest = plan / TARGET / "related-fixed-task" / "manifest.json"
    m = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**m, "short": "its pool has 3 records, fewer than the train size 16"}))
    (plan / TARGET / "related-fixed-task" / "train.txt").write_text("")
    results = tmp_path / "results"
    llava, clip = world["tmp"] / "llava", world["tmp"] / "clip"
    args = ["cg", "run", plan, "--out", results, "--loom", world["loom"], *RUN, "--model", f"hf:{llava}", "--seeds", "0,1"]
    first = json.loads(cli(*args, "--baseline-model", f"hf-clip:{clip}", "--json", "-q").stdout)
    assert first["trained"] == 2 and first["skipped"] == 2  # baseline-plus twice; related-fixed-task n/a twice
    for seed in (0, 1):
        trained = json.loads((results / TARGET / "baseline-plus" / f"seed-{seed}" / "adapter" / "train.json").read_text())
        assert trained["settings"]["seed"] == seed
        assert not (results / TARGET / "related-fixed-task" / f"seed-{seed}" / "adapter").exists()
    for name in ("baseline", "baseline-pretrained"):
        assert [p.name for p in (results / TARGET / name).iterdir()] == ["seed-0"]
    report = json.loads((results / "report" / "mc.json").read_text())
    cells = report["targets"]["CT|brain|cancer"]["runs"]
    assert report["seeds"] == ["0", "1"] and set(cells["baseline-plus"]["seeds"]) == {"0", "1"}
    assert set(cells["baseline"]["seeds"]) == {"0"} and "fewer than the train size" in cells["related-fixed-task"]["missing"]
    assert report["comparisons"] == {}  # nothing trained to test; the two Baselines are never tested


def test_bad_options_are_clear_errors(world, tmp_path):
    plan = world["plan"]
    proc = cli("cg", "run", plan, "--out", tmp_path / "r", "--trainer", "hf-lora", check=False)
    assert proc.returncode == 2 and "needs --model" in proc.stderr
    proc = cli("cg", "run", plan, "--out", tmp_path / "r", *RUN, "--model", f"hf:{tmp_path}", check=False)
    assert proc.returncode == 2 and "no config.json" in proc.stderr
    proc = cli("cg", "run", plan, "--out", tmp_path / "r", *RUN, "--model", "openai:http://x/v1#m", check=False)
    assert proc.returncode == 2 and "give hf:FOLDER" in proc.stderr
    proc = cli("cg", "run", plan, "--out", tmp_path / "r", "--trainer", "swift", "--model", "hf:x", check=False)
    assert proc.returncode == 2 and "--emit-configs" in proc.stderr
    proc = cli("cg", "run", plan, "--out", tmp_path / "r", "--baseline-model", "nope:x", check=False)
    assert proc.returncode == 2 and "openai:http://HOST:PORT/v1#MODEL" in proc.stderr


LLAMAFACTORY_SITE = Path(os.environ.get("MEDLOOM_LLAMAFACTORY_SITE", "/tmp/llamafactory-site"))
SWIFT_VENV = Path(os.environ.get("MEDLOOM_SWIFT_VENV", "/tmp/venv-swift"))
CONSUMERS = Path(__file__).resolve().parent / "consumers"


def emitted(world, tmp_path: Path, trainer: str) -> tuple[Path, dict]:
    out = tmp_path / trainer
    written = json.loads(
        cli(
            "cg", "run", world["plan"], "--out", out, "--trainer", trainer, "--emit-configs", "--model",
            f"hf:{world['tmp'] / 'llava'}", "--steps", "3", "--batch-size", "4", "-w", "1", "--json", "-q",
        ).stdout
    )  # fmt: skip
    return out, written


def check_items(world, folder: Path, rows: list[dict], out: Path) -> None:
    """An experiment's emitted rows: the items hf-lora trains on (its train.txt's records, never the target's),
    one user turn (the image, Med-MAT's prompt) and one assistant turn (the letter), images under OUT."""
    from medloom.train.mcq import experiment_items

    items, _ = experiment_items(world["loom"], folder)
    train_ids = set((folder / "train.txt").read_text().split())
    assert [r["id"] for r in rows] == [i["record_id"] for i in items] and {r["id"] for r in rows} <= train_ids
    assert not {r["id"] for r in rows} & target_ids(world["loom"])
    for row, item in zip(rows, items):
        assert row["messages"] == [
            {"role": "user", "content": "<image>" + item["prompt"]},
            {"role": "assistant", "content": item["answer"]},
        ]
        if item["options"]:  # Med-MAT's multiple choice; a detection subset's records: grounding (box) questions
            assert item["prompt"].endswith(f"\n{INSTRUCTION}") and "\nA: " in item["prompt"]
        else:
            assert item["prompt"].endswith("Answer with a normalised box [x0, y0, x1, y1].")
            assert item["answer"].startswith(("[", "There is no oedema"))  # a negative image: none to locate
        assert len(row["images"]) == 1 and (out / row["images"][0]).is_file()


def test_llamafactory_configs_and_datasets_for_every_experiment(world, tmp_path):
    import yaml

    out, written = emitted(world, tmp_path, "llamafactory")
    assert written["template"] == "llava" and len(written["experiments"]) == 12
    info = json.loads((out / "dataset_info.json").read_text())
    script = (out / "run.sh").read_text()
    for folder in sorted(p.parent for p in (world["plan"] / TARGET).glob("*/manifest.json")):
        rel = f"{TARGET}/{folder.name}/seed-0"
        config = yaml.safe_load((out / rel / "llamafactory.yaml").read_text())
        entry = info[config["dataset"]]
        assert entry["formatting"] == "sharegpt" and Path(config["dataset_dir"], entry["file_name"]) == out / rel / "data.json"
        # every experiment: the same steps of the same number of examples
        assert (config["max_steps"], config["per_device_train_batch_size"], config["gradient_accumulation_steps"]) == (3, 1, 4)
        assert config["finetuning_type"] == "lora" and config["model_name_or_path"] == str(world["tmp"] / "llava")
        check_items(world, folder, json.loads((out / rel / "data.json").read_text()), out)
        assert f"llamafactory-cli train {rel}/llamafactory.yaml" in script
        assert f"--model hf:{rel}/adapter --prompt-format medmat --out {rel}/mc" in script
    if not (LLAMAFACTORY_SITE / "llamafactory").is_dir():
        pytest.skip(f"no LLaMA-Factory at {LLAMAFACTORY_SITE} (`make consumers`)")
    rel = f"{TARGET}/related-fixed-task/seed-0"
    proc = subprocess.run(
        [sys.executable, CONSUMERS / "llamafactory_check.py", out / rel / "llamafactory.yaml"],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            "PATH": "/usr/bin:/bin",
            "HF_HUB_OFFLINE": "1",
            "DISABLE_VERSION_CHECK": "1",  # LLaMA-Factory 0.9.5 pins an older transformers; its data code is the same
            "PYTHONPATH": os.pathsep.join([str(LLAMAFACTORY_SITE), *filter(None, [os.environ.get("PYTHONPATH")])]),
        },
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    read = json.loads(proc.stdout.splitlines()[-1])
    rows = json.loads((out / rel / "data.json").read_text())
    assert read["max_steps"] == 3 and read["accumulation"] == 4 and read["lora_rank"] == 8 and read["formatting"] == ["sharegpt"]
    assert len(read["examples"]) == len(rows)
    for example, row in zip(read["examples"], rows):  # the converter's turns, and each image found in media_dir
        assert example["_prompt"] == row["messages"][:1] and example["_response"] == row["messages"][1:]
        assert example["_images"] == [str(out / row["images"][0])]


def test_swift_arguments_and_datasets_for_every_experiment(world, tmp_path):
    out, written = emitted(world, tmp_path, "swift")
    script = (out / "run.sh").read_text()
    assert 'export ROOT_IMAGE_DIR="$PWD"' in script
    for folder in sorted(p.parent for p in (world["plan"] / TARGET).glob("*/manifest.json")):
        rel = f"{TARGET}/{folder.name}/seed-0"
        args = json.loads((out / rel / "swift-args.json").read_text())
        value = dict(zip(args[::2], args[1::2])).get  # flag -> its value: every flag has one
        assert value("--dataset") == f"{rel}/train.jsonl" and value("--output_dir") == f"{rel}/adapter"
        assert (value("--max_steps"), value("--per_device_train_batch_size"), value("--gradient_accumulation_steps")) == (
            "3",
            "1",
            "4",
        )
        rows = [json.loads(line) for line in (out / rel / "train.jsonl").read_text().splitlines()]
        check_items(world, folder, rows, out)
        assert f"--model hf:{rel}/adapter/checkpoint-3 --prompt-format medmat --out {rel}/mc" in script
    python = SWIFT_VENV / "bin" / "python"
    if not python.is_file():
        pytest.skip(f"no ms-swift venv at {SWIFT_VENV} (`make consumers`)")
    rel = f"{TARGET}/related-fixed-task/seed-0"
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "ROOT_IMAGE_DIR": str(out)}
    args = json.loads((out / rel / "swift-args.json").read_text())
    parsed = subprocess.run(
        [python, CONSUMERS / "swift_args.py", *args], capture_output=True, text=True, timeout=300, env=env, cwd=out
    )
    assert parsed.returncode == 0, parsed.stderr[-3000:]
    result = json.loads(parsed.stdout.splitlines()[-1])
    assert result["remaining"] == [] and result["tuner"] == "lora" and result["dataset"] == [f"{rel}/train.jsonl"]
    loaded = subprocess.run(
        [python, CONSUMERS / "swift_dataset.py", f"{rel}/train.jsonl"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=out,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    read = json.loads(loaded.stdout.splitlines()[-1])
    rows = [json.loads(line) for line in (out / rel / "train.jsonl").read_text().splitlines()]
    assert [r["messages"] for r in read["rows"]] == [r["messages"] for r in rows]  # every row kept, as written
    assert [r["images"] for r in read["rows"]] == [r["images"] for r in rows]


def test_the_emitted_script_evaluates_and_reports(world, tmp_path):
    """run.sh as written, with a stand-in for `llamafactory-cli train` that puts an adapter where the config says
    (hf-lora's, copied): medloom's own lines evaluate each adapter and the base model and print the tables."""
    plan = tmp_path / "plan"
    for name in ("baseline-plus", "related-fixed-task"):
        shutil.copytree(world["plan"] / TARGET / name, plan / TARGET / name)
    out = tmp_path / "lf"
    cli(
        "cg", "run", plan, "--out", out, "--loom", world["loom"], "--trainer", "llamafactory", "--emit-configs",
        "--model", f"hf:{world['tmp'] / 'llava'}", "--steps", "2", "-w", "1", "-q",
    )  # fmt: skip
    tools = tmp_path / "bin"
    tools.mkdir()
    adapter = world["results"] / TARGET / "all-related" / "seed-0" / "adapter"
    (tools / "llamafactory-cli").write_text(
        f"#!{sys.executable}\nimport shutil, sys, yaml\nconfig = yaml.safe_load(open(sys.argv[2]))\n"
        f"shutil.copytree({str(adapter)!r}, config['output_dir'], ignore=shutil.ignore_patterns('train.json'))\n"
    )
    (tools / "medloom").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m medloom.cli "$@"\n')
    for tool in tools.iterdir():
        tool.chmod(0o755)
    env = {"PATH": f"{tools}:/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    env |= {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}
    proc = subprocess.run(["bash", out / "run.sh"], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((out / "report" / "report.json").read_text())["targets"]["CT|brain|cancer"]["runs"]
    assert set(report) == {"baseline", "baseline-plus", "related-fixed-task"}
    assert all(cell["n"] == len(target_ids(world["loom"])) for cell in report.values())
    assert report["related-fixed-task"]["model"] == f"hf:{TARGET}/related-fixed-task/seed-0/adapter"
    assert "Directions pooled" in proc.stdout  # related-fixed-task: the fixed-task direction pooled
