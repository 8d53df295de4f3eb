"""Transformers models from local folders (built here, small and untrained: no weights can be downloaded).
`--model hf-clip:FOLDER`, a CLIP model, for zero-shot, retrieval and multiple choice: every score is checked
against the model's own forward pass on the same pixels and texts. `--model hf:FOLDER`, a LLaVA model, for
multiple choice: every answer is checked against the model's own greedy generation, and a second run reads
them all from the cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import cli, rows, write_recipe
from PIL import Image, ImageDraw

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

CLASSES = ("disc", "square", "cross")


def bpe(words: list[str], special: list[str]):
    """A byte-level BPE tokenizer trained on a few words; specials first (ids 0, 1, 2, ...)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        [" ".join(words)] * 5,
        trainers.BpeTrainer(vocab_size=300, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)])
    extra = {"extra_special_tokens": {"image_token": "<image>"}} if "<image>" in special else {}
    return tok, PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=512,
        **extra,
    )


def build_clip(folder: Path) -> None:
    """A one-layer CLIP, saved as transformers does."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tok, tokenizer = bpe(f"a microscopy image of blood showing {' '.join(CLASSES)}.".split(), ["<unk>", "<s>", "</s>", "<pad>"])
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=tok.get_vocab_size(),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=64,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=3,
        ),
        vision_config=dict(
            image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2
        ),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)


def draw(kind: str, rng: np.random.Generator) -> Image.Image:
    im = Image.new("RGB", (80, 80), tuple(int(x) for x in rng.integers(0, 80, 3)))
    d = ImageDraw.Draw(im)
    x, y = (int(v) for v in rng.integers(10, 30, 2))
    colour = tuple(int(v) for v in rng.integers(150, 255, 3))
    if kind == "disc":
        d.ellipse([x, y, x + 40, y + 40], fill=colour)
    elif kind == "square":
        d.rectangle([x, y, x + 40, y + 40], fill=colour)
    else:
        d.rectangle([x + 15, y, x + 25, y + 40], fill=colour)
        d.rectangle([x, y + 15, x + 40, y + 25], fill=colour)
    return im


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hfclip")
    rng = np.random.default_rng(5)
    for kind in CLASSES:
        (tmp / "data" / kind).mkdir(parents=True)
        for i in range(6):
            draw(kind, rng).save(tmp / "data" / kind / f"{kind}{i}.png")
    recipe = write_recipe(
        tmp,
        [
            dict(
                name="shapes",
                reader="imagefolder",
                path=str(tmp / "data"),
                modality="microscopy",
                anatomy="blood",
                task="cell type",
            )
        ],
    )
    cli("ingest", recipe, "-q")
    cli("split", tmp / "loom", "--by", "record", "--test", "0.5", "--val", "0", "--seed", "1", "--json")
    build_clip(tmp / "clip")
    (tmp / "t.txt").write_text("a microscopy image of blood showing {c}.\n")
    files = {r["id"]: tmp / "data" / r["uri"] for r in rows(tmp / "loom", "SELECT id, uri FROM records")}
    return {"tmp": tmp, "loom": tmp / "loom", "clip": tmp / "clip", "files": files}


def forward(folder: Path, images: list[Image.Image], texts: list[str]) -> np.ndarray:
    """The model's own logits_per_image, loaded and run without medloom."""
    import torch
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(folder).eval()
    tokens = AutoTokenizer.from_pretrained(folder)(texts, padding=True, return_tensors="pt")
    pixels = AutoImageProcessor.from_pretrained(folder)(images=images, return_tensors="pt")
    with torch.inference_mode():
        return model(**tokens, **pixels).logits_per_image.numpy()


def test_zeroshot_scores_are_the_models_logits(setup, tmp_path):
    run = tmp_path / "zs"
    cli(
        "eval",
        "zeroshot",
        setup["loom"],
        "--model",
        f"hf-clip:{setup['clip']}",
        "--out",
        run,
        "--templates",
        setup["tmp"] / "t.txt",
        "-q",
    )
    preds = sorted(pq.read_table(run / "predictions.parquet").to_pylist(), key=lambda p: p["record_id"])
    classes = sorted(CLASSES)
    logits = forward(
        setup["clip"],
        [Image.open(setup["files"][p["record_id"]]).convert("RGB") for p in preds],
        [f"a microscopy image of blood showing {c}." for c in classes],
    )
    assert len(preds) == 9
    for p, row in zip(preds, logits):
        assert np.allclose(p["scores"], row, atol=1e-3)
        assert p["predicted"] == classes[int(np.argmax(row))]
    results = json.loads((run / "results.json").read_text())
    assert results["overall"]["n"] == 9 and results["settings"]["model"] == f"hf-clip:{setup['clip']}"


def test_multiple_choice_and_retrieval_with_an_hf_clip_model(setup, tmp_path):
    from medloom.export.clipbench import templates

    run = tmp_path / "mc"
    cli("eval", "vqa", setup["loom"], "--model", f"hf-clip:{setup['clip']}", "--out", run, "-q")
    preds = pq.read_table(run / "predictions.parquet").to_pylist()
    assert len(preds) == 9 and all(p["rule"] == "similarity" for p in preds)
    prompts = templates("microscopy", "blood")
    import torch
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(setup["clip"]).eval()
    tokenizer, processor = AutoTokenizer.from_pretrained(setup["clip"]), AutoImageProcessor.from_pretrained(setup["clip"])
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    for p in preds:
        texts = [t.format(c=o) for o in p["options"] for t in prompts]
        with torch.inference_mode():
            text = model.get_text_features(**tokenizer(texts, padding=True, return_tensors="pt"))
            image = model.get_image_features(
                **processor(images=[Image.open(setup["files"][p["record_id"]]).convert("RGB")], return_tensors="pt")
            )
        text = unit(getattr(text, "pooler_output", text).numpy())
        image = unit(getattr(image, "pooler_output", image).numpy()[0])
        options = unit(text.reshape(len(p["options"]), len(prompts), -1).mean(1))  # each option: its prompts' mean
        assert np.allclose(p["scores"], options @ image, atol=1e-4)
        assert p["parsed"] == "ABCD"[int(np.argmax(options @ image))]
    ret = json.loads(
        cli(
            "eval", "retrieval", setup["loom"], "--model", f"hf-clip:{setup['clip']}", "--out", tmp_path / "ret", "--json", "-q"
        ).stdout
    )
    assert ret["images"] == 9 and 0 <= ret["image_to_text"]["R@1"] <= 1


def test_an_hf_folder_that_is_not_a_clip_model_is_a_clear_error(setup, tmp_path):
    proc = cli("eval", "zeroshot", setup["loom"], "--model", f"hf-clip:{tmp_path}", "--out", tmp_path / "r", check=False)
    assert proc.returncode == 2 and "no config.json" in proc.stderr
    (tmp_path / "config.json").write_text("{}")
    proc = cli("eval", "zeroshot", setup["loom"], "--model", f"hf-clip:{tmp_path}", "--out", tmp_path / "r", check=False)
    assert proc.returncode == 2 and "does not load as a CLIP-style model" in proc.stderr


LLAVA_WORDS = "A B C D answer option letter the is disc square cross showing".split()
LLAVA_TEMPLATE = (
    "{% for m in messages %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}\n{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_llava(folder: Path, words: list[str] = LLAVA_WORDS, template: str = LLAVA_TEMPLATE) -> None:
    """A one-layer LLaVA (CLIP vision tower, Llama text model) with its processor and chat template, knowing
    `words` (tests/test_cg_mllm.py builds its own with other words and Med-MAT's answer turn)."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tok, tokenizer = bpe(words, ["<unk>", "<s>", "</s>", "<pad>", "<image>"])
    LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        chat_template=template,
        image_token="<image>",
        num_additional_image_tokens=1,
    ).save_pretrained(folder)
    torch.manual_seed(0)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2
        ),
        text_config=LlamaConfig(
            vocab_size=tok.get_vocab_size(),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=512,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=3,
        ),
        image_token_index=tok.token_to_id("<image>"),
        vision_feature_layer=-1,
    )
    LlavaForConditionalGeneration(config).save_pretrained(folder)


def test_a_local_vision_language_model_answers_and_is_cached(setup, tmp_path):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from medloom.evaluate.answers import parse_answer

    folder = tmp_path / "llava"
    build_llava(folder)
    run = tmp_path / "run"
    args = ["eval", "vqa", setup["loom"], "--model", f"hf:{folder}", "--out", run, "--no-images", "-q"]
    cli(*args)
    preds = pq.read_table(run / "predictions.parquet").to_pylist()
    assert len(preds) == 9
    processor, model = AutoProcessor.from_pretrained(folder), AutoModelForImageTextToText.from_pretrained(folder).eval()
    for p in preds:  # the model's own greedy answer to the same chat turn
        chat = [{"role": "user", "content": [{"type": "text", "text": p["prompt"]}]}]
        inputs = processor(text=[processor.apply_chat_template(chat, add_generation_prompt=True)], return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=64, do_sample=False)
        assert p["raw"] == processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        assert (p["parsed"], p["rule"]) == parse_answer(p["raw"], p["options"])
        assert p["model"] == f"hf:{folder}"
    again = json.loads(cli(*args[:-1], "--json").stdout)
    assert again["llm"]["cached"] == 9 and again["llm"]["requests"] == 0  # nothing generated twice
    # with the images (rendered JPEGs through the processor's image path)
    with_images = json.loads(
        cli("eval", "vqa", setup["loom"], "--model", f"hf:{folder}", "--out", tmp_path / "img", "--json").stdout
    )
    assert with_images["complete"] and with_images["llm"]["answered"] == 9
    proc = cli("eval", "vqa", setup["loom"], "--model", f"hf:{tmp_path}", "--out", tmp_path / "bad", check=False)
    assert proc.returncode == 2 and "no config.json" in proc.stderr
