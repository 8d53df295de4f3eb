"""The answer parser's cascade (`medloom.evaluate.answers`): each rule on the replies it exists for, and the
labelled reply set (tests/data/vqa_replies.jsonl, written by tests/data/make_vqa_replies.py): no more than
0.5% of its replies mapped to an option they did not choose, no more than 10% of its answerable replies
left invalid."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from medloom.evaluate.answers import parse_answer

OPTIONS = ["pleural effusion", "effusion", "cyst", "normal findings"]
REPLIES = Path(__file__).parent / "data" / "vqa_replies.jsonl"


@pytest.mark.parametrize(
    "reply, letter, rule",
    [
        # markdown, reasoning blocks, stop tokens: cleaned before any rule
        ("**Answer:** D", "D", "answer-is"),
        ("### Answer\n**C** - Cyst", "C", "answer-is"),
        ("<think>It could be A, the fluid... no.</think>\n\nC", "C", "letter"),
        ("<think>\nA or B? Looking again, the lesion is round", "", "invalid"),  # an unfinished reply
        ("C<|im_end|>", "C", "letter"),
        ("<|im_start|>assistant\nB</s>", "B", "letter"),
        ("The answer is D.<|eot_id|>", "D", "answer-is"),
        ("Ｃ", "C", "letter"),  # full width
        # JSON: plain, fenced, single-quoted, the option's text as the value
        ('{"answer": "C"}', "C", "json"),
        ('```json\n{"answer": "B", "reason": "fluid"}\n```', "B", "json"),
        ("{'answer': 'D'}", "D", "json"),
        ('{"answer": "cyst"}', "C", "json"),
        ('{"answer": "B or C"}', "", "invalid"),
        # explicit choices, in English, Chinese and Spanish
        ("I choose A.", "A", "answer-is"),
        ("I'd go with B.", "B", "answer-is"),
        ("A is correct.", "A", "answer-is"),
        ("答案是 B", "B", "answer-is"),
        ("选B", "B", "answer-is"),
        ("答案：（C）", "C", "answer-is"),
        ("La respuesta es C.", "C", "answer-is"),
        ("Elijo la opción D.", "D", "answer-is"),
        ("Option A is incorrect. The answer is C.", "C", "answer-is"),
        # self-correction: the text after "wait"/"actually" decides
        ("A. Wait, actually D.", "D", "self-correction"),
        ("The answer is B. On second thought, it's C.", "C", "self-correction"),
        ("答案是 A。不对，应该是 C。", "C", "self-correction"),
        ("Actually, the answer is B.", "B", "answer-is"),
        # letters written as options
        ("I think (C) fits best", "C", "option-letter"),
        ("The lesion is round and anechoic, typical of a cyst. **C**", "C", "option-letter"),
        ("C is my final answer", "C", "answer-is"),
        ("Option A (pleural effusion) is incorrect. Option C (cyst) is correct.", "C", "answer-is"),
        ("A. pleural effusion - unlikely\nC. cyst - matches the image", "C", "option-letter"),
        # option texts: rejected ones do not count, near spellings do
        ("no cyst; it is an effusion", "B", "option-text"),
        ("This is definitely not a cyst. It is an effusion.", "B", "option-text"),
        ("There is no evidence of effusion; findings suggest a cyst.", "C", "option-text"),
        ("Cyst. An effusion would layer dependently.", "C", "option-text"),
        ("Cyst rather than effusion.", "C", "option-text"),
        ("I chose cyst because the image lacks the features of effusion.", "C", "option-text"),
        ("It shows a pleural efusion.", "A", "option-text"),
        ("Findings consistent with normal finding.", "D", "option-text"),
        # never a confident wrong mapping
        ("A: cyst", "", "invalid"),  # a letter with another option's text
        ("The answer is A (cyst).", "", "invalid"),
        ("Cyst (B)", "", "invalid"),
        ("D or A", "", "invalid"),  # hedges
        ("It could be either cyst or effusion.", "", "invalid"),
        ("B/C", "", "invalid"),
        ("A. pleural effusion\nB. effusion\nC. cyst\nD. normal findings", "", "invalid"),  # the list echoed
        ("The image shows both a cyst and an effusion.", "", "invalid"),
        ("Not cyst.", "", "invalid"),
        ("I cannot tell from this image.", "", "invalid"),
        ("The answer is C. Effusion was considered, but it is less likely.", "C", "answer-is"),
    ],
)
def test_each_rule(reply, letter, rule):
    assert parse_answer(reply, OPTIONS) == (letter, rule)


def test_the_labelled_reply_set():
    rows = [json.loads(line) for line in REPLIES.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 300
    assert {"terse", "markdown", "json", "think", "stop-token", "chinese", "spanish", "verbose", "reasoning"} <= {
        r["case"] for r in rows
    }
    assert {"rejection", "explain", "correction", "near-spelling", "hedge", "echo", "contradiction"} <= {r["case"] for r in rows}
    wrong, invalid, answerable = [], [], 0
    for r in rows:
        letter, _ = parse_answer(r["reply"], r["options"])
        truth = "" if r["label"] == "invalid" else r["label"]
        answerable += bool(truth)
        if letter and letter != truth:
            wrong.append(r)
        elif truth and not letter:
            invalid.append(r)
    assert len(wrong) <= 0.005 * len(rows), [(r["reply"], r["label"]) for r in wrong]
    assert len(invalid) <= 0.10 * answerable, Counter(r["case"] for r in invalid)
