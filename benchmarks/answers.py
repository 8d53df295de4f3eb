"""Answer parsing: medloom's cascade against VLMEvalKit's `can_infer` and lmms-eval's MMMU parser, on the
labelled reply set tests/data/vqa_replies.jsonl (366 replies; each labelled with the option it chooses, or
"invalid").

For each parser it prints: right (the reply's choice), wrong (an option the reply did not choose, on an
answerable reply or an invalid one), invalid-but-answerable (the reply chose, the parser found nothing), and
medloom's right mappings as a ratio of each evaluator's (the named baselines).

The two reference functions are copied below verbatim (only their logger and the `os.environ` VERBOSE switch
left as they are), so the script needs neither package:

- VLMEvalKit (https://github.com/open-compass/VLMEvalKit, commit e8e78f05f3080fe28154f2130321f17951c3be94,
  vlmeval/utils/matching_util.py: `can_infer_option`, `can_infer_text`, `can_infer`). Copyright 2023
  VLMEvalKit Authors; Apache License 2.0. Its `_VERBOSE_ANSWER_RE` fallback included. A return of False or
  "Z" is taken as no answer.
- lmms-eval (https://github.com/EvolvingLMMs-Lab/lmms-eval, commit 75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3,
  lmms_eval/tasks/_task_utils/mmmu_mcq_utils.py: `parse_mmmu_multi_choice_response`, which MMMU's
  `parse_multi_choice_response` calls). MIT License (lmms-eval's LICENSE: the lm-evaluation-harness MIT
  licence). Where it finds no candidate it picks an option at random (`random.choice`); that pick is counted
  here apart ("random"), seeded, and its wrong picks are counted wrong.

Usage: python benchmarks/answers.py [--data tests/data/vqa_replies.jsonl]
"""

from __future__ import annotations

import argparse
import copy as cp
import json
import os
import random
import re
import string
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from medloom.evaluate.answers import parse_answer  # noqa: E402


class _Log:
    def info(self, *args):
        pass


logger = _Log()

# ---- VLMEvalKit, vlmeval/utils/matching_util.py (Apache-2.0), verbatim ------------------------------------
_VERBOSE_ANSWER_RE = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")


def can_infer_option(answer, choices):
    verbose = os.environ.get("VERBOSE", 0)
    # Choices is a dictionary
    if "Failed to obtain answer via API" in answer:
        return False

    reject_to_answer = [
        "Sorry, I can't help with images of people yet.",
        "I can't process this file.",
        "I'm sorry, but without the image provided",
        "Cannot determine the answer",
    ]
    for err in reject_to_answer:
        if err in answer:
            return "Z"

    def count_choice(splits, choices, prefix="", suffix=""):
        cnt = 0
        for c in choices:
            if prefix + c + suffix in splits:
                cnt += 1
        return cnt

    answer_mod = cp.copy(answer)
    chars = ".()[],:;!*#{}"
    for c in chars:
        answer_mod = answer_mod.replace(c, " ")

    splits = [x.strip() for x in answer_mod.split()]
    count = count_choice(splits, choices)

    if count == 1:
        for ch in choices:
            if "A" in splits and len(splits) > 3 and verbose:
                logger.info(f"A might be a quantifier in the string: {answer}.")
                return False
            if ch in splits and splits.index(ch) > (len(splits) - 5):
                return ch
    elif count == 0 and count_choice(splits, {"Z", ""}) == 1:
        return "Z"

    match = _VERBOSE_ANSWER_RE.search(answer or "")
    if match and match.group(1).upper() in choices:
        return match.group(1).upper()

    return False


def can_infer_text(answer, choices):
    answer = answer.lower()
    if len(answer) > 2 * sum(len(str(v)) for v in choices.values()):
        return False
    assert isinstance(choices, dict)
    for k in choices:
        assert k in string.ascii_uppercase
        choices[k] = str(choices[k]).lower()
    cands = []
    for k in choices:
        if choices[k] in answer:
            cands.append(k)
    if len(cands) == 1:
        return cands[0]
    return False


def can_infer(answer, choices):
    answer = str(answer)
    copt = can_infer_option(answer, choices)
    return copt if copt else can_infer_text(answer, choices)


# ---- lmms-eval, lmms_eval/tasks/_task_utils/mmmu_mcq_utils.py (MIT), verbatim -----------------------------
def parse_mmmu_multi_choice_response(response, all_choices, index2ans):
    for char in [",", ".", "!", "?", ";", ":", "'"]:
        response = response.strip(char)
    response = " " + response + " "

    index_ans = True
    ans_with_brack = False
    candidates = []

    for choice in all_choices:
        if f"({choice})" in response:
            candidates.append(choice)
            ans_with_brack = True

    if len(candidates) == 0:
        for choice in all_choices:
            if f"{choice} " in response:
                candidates.append(choice)

    if len(candidates) == 0:
        for choice in all_choices:
            if f"{choice}." in response:
                candidates.append(choice)

    if len(candidates) == 0 and len(response.split()) > 5:
        for index, ans in index2ans.items():
            if ans.lower() in response.lower():
                candidates.append(index)
                index_ans = False

    if len(candidates) == 0:
        pred_index = random.choice(all_choices)
    elif len(candidates) > 1:
        start_indexes = []
        if index_ans:
            if ans_with_brack:
                for can in candidates:
                    start_indexes.append(response.rfind(f"({can})"))
            else:
                for can in candidates:
                    start_indexes.append(response.rfind(f" {can} "))
        else:
            for can in candidates:
                start_indexes.append(response.lower().rfind(index2ans[can].lower()))
        pred_index = candidates[np.argmax(start_indexes)]
    else:
        pred_index = candidates[0]

    return pred_index


# ---- scoring -------------------------------------------------------------------------------------------------
LETTERS = "ABCDEFGHIJ"


def vlmeval(reply: str, options: list[str]) -> tuple[str, bool]:
    choices = {LETTERS[i]: o for i, o in enumerate(options)}
    got = can_infer(reply, choices)
    return (got if got and got != "Z" else ""), False


def lmms_eval(reply: str, options: list[str]) -> tuple[str, bool]:
    letters = list(LETTERS[: len(options)])
    index2ans = dict(zip(letters, options))
    guessed = []
    real_choice = random.choice

    def choice(seq):  # lmms-eval's own random pick, seeded; noted so that the table can count it apart
        guessed.append(True)
        return real_choice(seq)

    random.choice = choice
    try:
        got = parse_mmmu_multi_choice_response(reply, letters, index2ans)
    finally:
        random.choice = real_choice
    return got, bool(guessed)


def medloom(reply: str, options: list[str]) -> tuple[str, bool]:
    return parse_answer(reply, options)[0], False


def score(parser, rows: list[dict]) -> dict:
    random.seed(0)
    out = {"right": 0, "wrong": 0, "invalid_answerable": 0, "random": 0, "random_wrong": 0, "answerable": 0, "n": len(rows)}
    for r in rows:
        truth = "" if r["label"] == "invalid" else r["label"]
        got, guessed = parser(r["reply"], list(r["options"]))
        out["answerable"] += bool(truth)
        out["random"] += guessed
        if got and got == truth:
            out["right"] += 1
        elif got:
            out["wrong"] += 1
            out["random_wrong"] += guessed
        elif truth:
            out["invalid_answerable"] += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / "tests" / "data" / "vqa_replies.jsonl")
    args = ap.parse_args()
    rows = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()]
    results = {
        name: score(fn, rows)
        for name, fn in (("medloom", medloom), ("VLMEvalKit can_infer", vlmeval), ("lmms-eval MMMU", lmms_eval))
    }
    ours = results["medloom"]
    print(f"{len(rows)} replies, {ours['answerable']} answerable, {len(rows) - ours['answerable']} invalid by label")
    head = ("parser", "right", "wrong", "of them random", "invalid-but-answerable", "medloom right")
    print(f"{head[0]:22} {head[1]:>5} {head[2]:>13} {head[3]:>15} {head[4]:>23} {head[5]:>14}")
    for name, s in results.items():
        print(
            f"{name:22} {s['right']:>5} {s['wrong']:>5} ({s['wrong'] / s['n']:5.1%}) {s['random_wrong']:>15} "
            f"{s['invalid_answerable']:>13} ({s['invalid_answerable'] / s['answerable']:5.1%}) "
            f"{ours['right'] / max(s['right'], 1):>13.2f}x"
        )


if __name__ == "__main__":
    main()
