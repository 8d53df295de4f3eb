"""lmms-eval's SLAKE scoring, copied for tests/test_vqa_benchmarks.py to run on medloom's predictions.

From https://github.com/EvolvingLMMs-Lab/lmms-eval, `lmms_eval/tasks/slake/utils.py` at commit
0a75d6bab2ec6a5e402cecd153cb23b2b4b8ee71 (the file's last change; repository HEAD 75571cfe), MIT License,
Copyright (c) 2025 LMMs-Lab. Copied: `normalize_answer` and its helpers, the record that `slake_process_results`
makes, `_accuracy`, `_accuracy_for` and the overall / open / closed aggregations; left out: image loading,
`datasets` and logging (the breakdown log). The code is otherwise unchanged but for the type hints, which the
project's linter rewrote (`Dict[str, Any]` as `dict[str, Any]`).
"""

import re
import string
from collections.abc import Iterable
from typing import Any

import numpy as np

ANSWER_TYPE_OPEN = "OPEN"
ANSWER_TYPE_CLOSED = "CLOSED"

EN_YES = {"yes", "yeah", "yep", "true"}
EN_NO = {"no", "nope", "false"}
ZH_YES = {"是", "是的", "有", "包含", "可以", "能", "会", "正常"}
ZH_NO = {"否", "不是", "没有", "无", "不包含", "不能", "不会", "不可以", "不正常", "异常"}
ZH_PUNCTUATION = "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～、，。；：《》？【】（）"


def slake_process_results(doc: dict[str, Any], results: list[str]) -> dict[str, Any]:
    """Normalize a generated answer and return the per-sample SLAKE metric record (one, not one per metric)."""
    prediction = results[0] if results else ""
    target = doc["answer"]
    pred_norm = normalize_answer(prediction)
    target_norm = normalize_answer(target)
    is_correct = pred_norm == target_norm
    return {
        "id": str(doc.get("qid") or doc.get("id") or ""),
        "prediction": prediction,
        "prediction_normalized": pred_norm,
        "target": target,
        "target_normalized": target_norm,
        "language": _normalize_language(doc.get("q_lang")),
        "answer_type": _normalize_answer_type(doc.get("answer_type")),
        "modality": _normalize_group_value(doc.get("modality")),
        "content_type": _normalize_group_value(doc.get("content_type")),
        "is_correct": is_correct,
    }


def normalize_answer(answer: Any) -> str:
    """Normalize English and Chinese short answers for exact-match scoring."""
    text = "" if answer is None else str(answer)
    text = text.strip().lower()
    text = re.sub(r"\([^)]*\)", " ", text)
    text = re.sub(r"（[^）]*）", " ", text)
    punctuation_table = str.maketrans({char: " " for char in string.punctuation + ZH_PUNCTUATION})
    text = text.translate(punctuation_table)
    text = re.sub(r"\s+", " ", text).strip()
    text = _normalize_medical_aliases(text)
    text = _normalize_yes_no(text)
    return text


def slake_aggregate_accuracy(results: list[dict[str, Any]]) -> float:
    return _accuracy(results)


def slake_aggregate_open_accuracy(results: list[dict[str, Any]]) -> float:
    return _accuracy_for(results, "answer_type", ANSWER_TYPE_OPEN.lower())


def slake_aggregate_closed_accuracy(results: list[dict[str, Any]]) -> float:
    return _accuracy_for(results, "answer_type", ANSWER_TYPE_CLOSED.lower())


def _accuracy(results: Iterable[dict[str, Any]]) -> float:
    results = list(results)
    if len(results) == 0:
        return 0.0
    return float(np.mean([sample["is_correct"] for sample in results]))


def _accuracy_for(results: list[dict[str, Any]], key: str, value: str) -> float:
    filtered = [sample for sample in results if sample.get(key) == value]
    return _accuracy(filtered)


def _normalize_yes_no(text: str) -> str:
    if text in EN_YES or text in ZH_YES:
        return "yes"
    if text in EN_NO or text in ZH_NO:
        return "no"
    return text


def _normalize_medical_aliases(text: str) -> str:
    if text in {"x ray", "xray"}:
        return "xray"
    return text


def _normalize_language(value: Any) -> str:
    return str(value or "").strip().lower()


def _normalize_answer_type(value: Any) -> str:
    return str(value or "").strip().lower()


def _normalize_group_value(value: Any) -> str:
    return str(value or "").strip().lower()
