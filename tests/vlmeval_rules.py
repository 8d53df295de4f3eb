"""VLMEvalKit's own rules for reading a benchmark TSV, copied so that tests/test_vlmeval_export.py can run them on
medloom's `--format vlmeval-tsv` output (VLMEvalKit itself cannot be installed here: it pulls torch and
torchvision).

From https://github.com/open-compass/VLMEvalKit at commit e8e78f05f3080fe28154f2130321f17951c3be94. Copyright 2023
VLMEvalKit Authors; Apache License 2.0 (http://www.apache.org/licenses/LICENSE-2.0). Copied, with only what ties
them to VLMEvalKit's package left out (`self` as a parameter, the download of a named dataset, the logger):

- `vlmeval/smp/file.py`: `load`'s TSV handler `load_tsv` (`pd.read_csv(f, sep='\\t')`).
- `vlmeval/smp/misc.py`: `istype`, `toliststr`.
- `vlmeval/smp/vlm.py`: `decode_base64_to_image`, `decode_base64_to_image_file`, `read_ok`.
- `vlmeval/dataset/__init__.py`: `build_dataset`'s choice of class for a dataset it does not know (`custom_kind`:
  the branch after `data = load(data_file)`).
- `vlmeval/dataset/image_base.py`: `ImageBaseDataset.__init__` from `data = self.load_data(dataset)` on
  (`dataset_data`), `dump_image`.
- `vlmeval/dataset/image_mcq.py`: `ImageMCQDataset.build_prompt`.
- `vlmeval/dataset/utils/multiple_choice.py`: `build_choices`, `MMB_abbrs`, `report_acc`, and the part of
  `mcq_vanilla_eval` that maps each `index` to its `answer` (`GT`); `eval_vanilla` with `model=None` (exact
  matching: `extract_answer_from_item` returns `can_infer`'s letter, else 'Z') and `can_infer` itself, which
  benchmarks/answers.py already holds verbatim (`vlmeval/utils/matching_util.py`).
"""

from __future__ import annotations

import base64
import importlib.util
import io
import os
import os.path as osp
import string
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


# ---- vlmeval/smp/file.py ---------------------------------------------------------------------------------------
def load_tsv(f):
    return pd.read_csv(f, sep="\t")


# ---- vlmeval/smp/misc.py ---------------------------------------------------------------------------------------
def istype(s, type):
    if isinstance(s, type):
        return True
    try:
        return isinstance(eval(s), type)
    except Exception:
        return False


def toliststr(s):
    if isinstance(s, str) and len(s) > 1 and (s[0] == "[") and (s[-1] == "]"):
        return [str(x) for x in eval(s)]
    elif isinstance(s, str):
        return [s]
    elif isinstance(s, list):
        return [str(x) for x in s]
    raise NotImplementedError


# ---- vlmeval/smp/vlm.py ----------------------------------------------------------------------------------------
def decode_base64_to_image(base64_string, target_size=-1):
    image_data = base64.b64decode(base64_string)
    image = Image.open(io.BytesIO(image_data))
    if image.mode in ("RGBA", "P", "LA"):
        image = image.convert("RGB")
    if target_size > 0:
        image.thumbnail((target_size, target_size))
    return image


def decode_base64_to_image_file(base64_string, image_path, target_size=-1):
    image = decode_base64_to_image(base64_string, target_size=target_size)
    base_dir = osp.dirname(image_path)
    if not osp.exists(base_dir):
        os.makedirs(base_dir, exist_ok=True)
    image.save(image_path)


def read_ok(img_path):
    if not osp.exists(img_path):
        return False
    try:
        im = Image.open(img_path)
        assert im.size[0] > 0 and im.size[1] > 0
        return True
    except Exception:
        return False


# ---- vlmeval/dataset/__init__.py, build_dataset (a dataset it does not know) -----------------------------------
def custom_kind(data) -> str | None:
    if "question" not in [x.lower() for x in data.columns]:
        return None  # "does not have a `question` column. Dataset building failed."
    if "A" in data and "B" in data:
        if "image" in data or "image_path" in data:
            return "CustomMCQDataset"
        else:
            return "CustomTextMCQDataset"
    else:
        return "CustomVQADataset"


# ---- vlmeval/dataset/image_base.py, ImageBaseDataset ----------------------------------------------------------
def dataset_data(data, skip_noimg=True):
    """`ImageBaseDataset.__init__` after `load_data`: returns (data, meta_only)."""
    if skip_noimg and "image" in data:
        data = data[~pd.isna(data["image"])]

    data["index"] = [str(x) for x in data["index"]]

    meta_only = True

    # The image field can store the base64 encoded image or another question index (for saving space)
    if "image" in data:
        data["image"] = [str(x) if not pd.isna(x) else "" for x in data["image"]]
        image_map = {x: y for x, y in zip(data["index"], data["image"])}
        for k in image_map:
            if len(image_map[k]) <= 64 and len(image_map[k]) > 0:
                idx = image_map[k]
                assert idx in image_map and len(image_map[idx]) > 64
                image_map[k] = image_map[idx]

        images = [toliststr(image_map[k]) for k in data["index"]]
        data["image"] = [x[0] if len(x) == 1 else x for x in images]
        meta_only = False

    if "image_path" in data:
        paths = [toliststr(x) for x in data["image_path"]]
        data["image_path"] = [x[0] if len(x) == 1 else x for x in paths]

    if np.all([istype(x, int) for x in data["index"]]):
        data["index"] = [int(x) for x in data["index"]]
    return data, meta_only


def dump_image(img_root, line):
    os.makedirs(img_root, exist_ok=True)

    if "image" in line:
        if isinstance(line["image"], list):
            tgt_path = []
            if "image_path" in line:
                image_path = line["image_path"]
            else:
                index = line["index"]
                image_path = [f"{index}_{i}.png" for i in range(len(line["image"]))]
            for img, im_name in zip(line["image"], image_path):
                path = osp.join(img_root, im_name)
                if not read_ok(path):
                    decode_base64_to_image_file(img, path)
                tgt_path.append(path)

        elif isinstance(line["image"], str) and "image_path" in line:
            assert isinstance(line["image_path"], str)
            tgt_path = osp.join(img_root, line["image_path"])
            if not read_ok(tgt_path):
                decode_base64_to_image_file(line["image"], tgt_path)
            tgt_path = [tgt_path]
        else:
            tgt_path = osp.join(img_root, f"{line['index']}.png")
            if not read_ok(tgt_path):
                decode_base64_to_image_file(line["image"], tgt_path)
            tgt_path = [tgt_path]
    else:
        assert "image_path" in line
        tgt_path = toliststr(line["image_path"])
        read_ok_flag = [read_ok(x) for x in tgt_path]
        # Might be the Relative Path
        if not all(read_ok_flag):
            tgt_path_abs = [osp.join(img_root, x) for x in tgt_path]
            read_ok_flag = [read_ok(x) for x in tgt_path_abs]
            assert read_ok_flag, f"Field `image` is missing and we could not find {tgt_path} both as absolute or relative paths. "  # noqa
            tgt_path = tgt_path_abs

    return tgt_path


# ---- vlmeval/dataset/image_mcq.py, ImageMCQDataset.build_prompt -----------------------------------------------
def build_prompt(data, meta_only, img_root, line):
    if isinstance(line, int):
        line = data.iloc[line]

    if meta_only:
        tgt_path = toliststr(line["image_path"])
    else:
        tgt_path = dump_image(img_root, line)

    question = line["question"]
    options = {cand: line[cand] for cand in string.ascii_uppercase if cand in line and not pd.isna(line[cand])}
    options_prompt = "Options:\n"
    for key, item in options.items():
        options_prompt += f"{key}. {item}\n"
    hint = line["hint"] if ("hint" in line and not pd.isna(line["hint"])) else None
    prompt = ""
    if hint is not None:
        prompt += f"Hint: {hint}\n"
    prompt += f"Question: {question}\n"
    if len(options):
        prompt += options_prompt
        prompt += "Please select the correct answer from the options above. \n"

    msgs = []
    if isinstance(tgt_path, list):
        msgs.extend([dict(type="image", value=p) for p in tgt_path])
    else:
        msgs = [dict(type="image", value=tgt_path)]
    msgs.append(dict(type="text", value=prompt))

    return msgs


# ---- vlmeval/dataset/utils/multiple_choice.py -----------------------------------------------------------------
MMB_abbrs = {
    "coarse_perception": "CP",
    "finegrained_perception (instance-level)": "FP-S",
    "finegrained_perception (cross-instance)": "FP-C",
    "logic_reasoning": "LR",
    "relation_reasoning": "RR",
    "attribute_reasoning": "AR",
}


def build_choices(item):
    ret = {}
    for ch in string.ascii_uppercase:
        if ch in item and (not pd.isna(item[ch])):
            ret[ch] = item[ch]
    return ret


def report_acc(df):
    # assert group in [None, 'category', 'l2-category']
    res = defaultdict(list)

    if "split" in df:
        splits = list(set(df["split"]))
        res["split"] = splits
    else:
        df["split"] = ["none"] * len(df)
        res["split"] = ["none"]

    for group in [None, "l2-category", "category"]:
        if group is None:
            res["Overall"] = [np.mean(df[df["split"] == sp]["hit"]) for sp in res["split"]]
        elif group not in df:
            continue
        else:
            abilities = list(set(df[group]))
            abilities.sort()
            for ab in abilities:
                ab_name = MMB_abbrs[ab] if ab in MMB_abbrs else ab
                sub_df = df[df[group] == ab]
                res[ab_name] = [np.mean(sub_df[sub_df["split"] == sp]["hit"]) for sp in res["split"]]
    return pd.DataFrame(res)


def _can_infer():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "answers.py"
    spec = importlib.util.spec_from_file_location("medloom_bench_answers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.can_infer


def eval_vanilla_exact(data, meta):
    """`mcq_vanilla_eval` with `model=None` (VLMEvalKit's `exact_matching`): each prediction's letter by
    `can_infer`, else 'Z', against the `answer` of the same `index` in the dataset; sets `hit`."""
    can_infer = _can_infer()
    answer_map = {i: c for i, c in zip(meta["index"], meta["answer"])}
    data = data[data["index"].isin(answer_map)]
    data["GT"] = [answer_map[idx] for idx in data["index"]]
    hits = []
    for i in range(len(data)):
        item = data.iloc[i]
        ret = can_infer(item["prediction"], build_choices(item))
        opt = ret if ret else "Z"
        hits.append(1 if opt == item["GT"] else 0)
    data["hit"] = hits
    data.pop("GT")
    return data
