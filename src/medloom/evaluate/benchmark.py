"""Scoring a benchmark's own questions (records.SOURCE_QUESTIONS: VQA-RAD, SLAKE, PathVQA, PMC-VQA, OmniMedVQA,
VLMEvalKit TSVs): closed questions by accuracy, open questions by exact match after normalisation and by token
recall, each named, per answer type, per MAT triplet and per source, with intervals.

The metrics, as the evaluators that publish numbers on these benchmarks compute them:

- `exact_match`: the reply and the answer normalised as lmms-eval's SLAKE task does (`lmms_eval/tasks/slake/
  utils.py`, `normalize_answer`, commit 0a75d6b: lower case; text in parentheses, ASCII or full-width, dropped;
  ASCII and Chinese punctuation to spaces; spaces collapsed; `x ray`/`xray` as `xray`; yes/no words of English
  and Chinese as `yes`/`no`), then equal. Over every question it is lmms-eval's `slake_accuracy`, over the open
  and the closed ones its `slake_open_accuracy` and `slake_closed_accuracy` (tests/test_vqa_benchmarks.py runs
  lmms-eval's functions on the same replies).
- `token_recall` (open questions): the share of the answer's distinct words (after the same normalisation;
  each CJK character a word) that the reply contains, the "recall" of the LLaVA-Med evaluation of VQA-RAD,
  SLAKE and PathVQA (`llava/eval/run_eval.py`, `calculate_f1score`), which counts the words of the answer the
  reply has; a reply that says more is not penalised.
- `closed_accuracy` (closed questions): a question with options is right when the answer parser
  (`answers.parse_answer`) reads the right letter; a yes/no question when the reply's first yes or no word
  (normalised as above) is the answer's (the "yes/no accuracy" of the VQA-RAD and SLAKE papers and LLaVA-Med);
  any other closed question ("left or right?") by exact match.

`accuracy` in results.json's usual tables is `closed_accuracy` for closed questions and `exact_match` for open
ones. Every proportion has its 95% Wilson interval and every metric a 95% bootstrap interval resampling
patients (images where the patient is unknown).
"""

from __future__ import annotations

import re
import string
from collections import defaultdict

from ..records import source_questions
from .answers import LETTERS, parse_answer
from .stats import cluster_bootstrap, wilson

# lmms-eval's SLAKE prompt for a free answer (`post_prompt` of lmms_eval/tasks/slake/_default_template_yaml)
OPEN_INSTRUCTION = "Answer the question using a single word or phrase."
EN_YES, EN_NO = {"yes", "yeah", "yep", "true"}, {"no", "nope", "false"}
ZH_YES = {"是", "是的", "有", "包含", "可以", "能", "会", "正常"}
ZH_NO = {"否", "不是", "没有", "无", "不包含", "不能", "不会", "不可以", "不正常", "异常"}
ZH_PUNCTUATION = "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～、，。；：《》？【】（）"
_SPACES = str.maketrans({c: " " for c in string.punctuation + ZH_PUNCTUATION})
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def normalise(text) -> str:
    """lmms-eval's SLAKE normalisation (see the module's docstring), restated."""
    text = "" if text is None else str(text)
    text = text.strip().lower()
    text = re.sub(r"\([^)]*\)", " ", text)
    text = re.sub(r"（[^）]*）", " ", text)
    text = re.sub(r"\s+", " ", text.translate(_SPACES)).strip()
    if text in ("x ray", "xray"):
        text = "xray"
    if text in EN_YES or text in ZH_YES:
        return "yes"
    if text in EN_NO or text in ZH_NO:
        return "no"
    return text


def words(text: str) -> set[str]:
    """The distinct words of a normalised text, each CJK character one."""
    return {w for part in text.split() for w in (_CJK.findall(part) + [_CJK.sub("", part)] if _CJK.search(part) else [part]) if w}


def exact_match(reply, answer) -> bool:
    return normalise(reply) == normalise(answer)


def token_recall(reply, answer) -> float:
    want = words(normalise(answer))
    return len(want & words(normalise(reply))) / len(want) if want else 0.0


def polarity(reply) -> str:
    """The first yes or no of a reply ("No, the lung is clear." is no), else ""."""
    text = normalise(reply)
    if text in ("yes", "no"):
        return text
    for word in text.split():
        if word in EN_YES or word in ZH_YES:
            return "yes"
        if word in EN_NO or word in ZH_NO:
            return "no"
    return ""


def free_prompt(question: str) -> str:
    return f"{question}\n{OPEN_INSTRUCTION}"


def build_source_items(rows: list[dict], circular: bool, choice_prompt) -> list[dict]:
    """One item per source question (per rotation of its options with `circular`); a question with options is
    asked as multiple choice (`choice_prompt(question, options)`), one without as a free answer."""
    items = []
    for row in rows:
        for qi, q in enumerate(source_questions(row.get("meta"))):
            base = {
                "row": row,
                "record_id": row["id"],
                "question": qi,
                "source": row["source"],
                "modality": row["modality"] or "",
                "anatomy": row["anatomy"] or "",
                "task": q.get("task") or row["task"] or "",
                "patient": row["patient_id"] or "",
                "answer_label": q["answer"],
                "answer_type": q["answer_type"],
                "question_type": q.get("question_type") or "",
                "language": q.get("language") or "",
                "source_answer": q["answer"],
            }
            options = list(q.get("options") or [])
            if not options or not q.get("answer_letter"):
                items.append({**base, "rotation": 0, "prompt": free_prompt(q["question"]), "options": [], "answer": q["answer"]})
                continue
            truth = LETTERS.index(q["answer_letter"])
            for r in range(len(options)) if circular else [0]:
                shown = options[r:] + options[:r]
                prompt = choice_prompt(q["question"], shown)
                items.append(
                    {**base, "rotation": r, "prompt": prompt, "options": shown, "answer": LETTERS[(truth - r) % len(options)]}
                )
    return items


def score_item(item: dict) -> None:
    """Fill parsed, rule, correct, invalid, exact_match and token_recall of an answered item."""
    raw = item["raw"] or ""
    if item.get("rule") == "truncated":  # cut at --max-tokens: wrong, and counted apart from invalid
        item["correct"] = item["exact_match"] = item["invalid"] = False
        item["token_recall"] = 0.0
        return
    if item["options"]:
        if "rule" not in item:
            item["parsed"], item["rule"] = parse_answer(raw, item["options"])
        item["correct"] = item["parsed"] == item["answer"]
        item["exact_match"], item["token_recall"] = item["correct"], float(item["correct"])
    else:
        answer = item["source_answer"]
        item["parsed"] = normalise(raw)
        item["exact_match"], item["token_recall"] = exact_match(raw, answer), token_recall(raw, answer)
        if item["answer_type"] == "closed" and normalise(answer) in ("yes", "no"):
            item["rule"], item["correct"] = "yes-no", polarity(raw) == normalise(answer)
        else:
            item["rule"], item["correct"] = "exact-match", item["exact_match"]
        if not raw.strip():
            item["rule"] = "invalid"
    item["invalid"] = item["rule"] == "invalid"


def _interval_of(values: list[float], clusters: list[str], seed: int, proportion: bool) -> dict:
    n = len(values)
    if not n:
        return {"n": 0, "value": None, "wilson95": None, "bootstrap95": None}
    value = sum(values) / n
    lo, hi = cluster_bootstrap(values, clusters, seed=seed)
    out = {"n": n, "value": value, "bootstrap95": [lo, hi]}
    if proportion:
        out["wilson95"] = list(wilson(int(round(sum(values))), n))
    return out


def group_metrics(units: list[dict], seed: int) -> dict:
    """The named metrics of a group of questions: closed_accuracy (closed), open_exact_match and
    open_token_recall (open), exact_match (all)."""
    closed = [u for u in units if u["answer_type"] == "closed"]
    opened = [u for u in units if u["answer_type"] != "closed"]

    def metric(group: list[dict], key: str, proportion: bool = True) -> dict:
        return _interval_of([float(u[key]) for u in group], [u["cluster"] for u in group], seed, proportion)

    return {
        "n": len(units),
        "closed": len(closed),
        "open": len(opened),
        "closed_accuracy": metric(closed, "correct"),
        "closed_exact_match": metric(closed, "exact_match"),
        "open_exact_match": metric(opened, "exact_match"),
        "open_token_recall": metric(opened, "token_recall", proportion=False),
        "exact_match": metric(units, "exact_match"),
    }


def summarise_benchmark(rows: list[dict], seed: int = 0) -> dict:
    """Per question (every rotation right with `--circular`), then the named metrics overall, per answer type,
    per language, per MAT triplet and per source."""
    grouped: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        grouped[(r["record_id"], r["question"])].append(r)
    units = []
    for group in grouped.values():
        first = group[0]
        units.append(
            {
                "answer_type": first["answer_type"],
                "correct": all(g["correct"] for g in group),
                "exact_match": all(g["exact_match"] for g in group),
                "token_recall": min(g["token_recall"] for g in group),
                "cluster": first["patient"] or f"record:{first['record_id']}",
                "triplet": f"{first['modality']} / {first['anatomy']} / {first['task']}",
                "source": first["source"],
                "language": first.get("language") or "",
            }
        )
    out = {"metrics": ["closed_accuracy", "closed_exact_match", "open_exact_match", "open_token_recall", "exact_match"]}
    out["overall"] = group_metrics(units, seed)
    for key, name in (
        ("answer_type", "by_answer_type"),
        ("language", "by_language"),
        ("triplet", "by_triplet"),
        ("source", "by_source"),
    ):
        groups: dict[str, list[dict]] = defaultdict(list)
        for u in units:
            groups[u[key]].append(u)
        out[name] = {k: group_metrics(v, seed) for k, v in sorted(groups.items())}
    return out
