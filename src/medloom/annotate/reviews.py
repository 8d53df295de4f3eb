"""People's verdicts on generated texts (the audit page of `medloom serve`), kept beside the annotations.

A verdict names a record, the text judged (`field`: caption, roi_text, or question: a question's stem), the
decision (accepted, edited, rejected), the new text of an edit, who, when, and the text as they saw it
(`previous`). `LOOM/annotations/reviews.json` lists them in order. They are applied to `annotations.parquet`
when given, and again by every `medloom annotate` run, so a re-run keeps them; a verdict on a text the re-run
no longer produces is not applied (the reviewer never saw the new text).

An edit replaces the text. A rejection falls back to the template's caption (none when the template's was
the text rejected), empties an ROI description, and removes a question. Each verdict is also kept on the row
(`reviews`), so a reader of the annotations sees what a person decided.

A verdict keeps what it changed (`before`), so it can be undone: the row gets that back, and the entry in
`reviews.json` is marked `undone` (who, when) rather than deleted; annotate runs skip undone verdicts.
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import layout
from ..outputs import written_by_medloom
from .questions import INSTRUCTION, LETTERS

REVIEWS = "reviews.json"
DECISIONS = ("accepted", "edited", "rejected")
FIELDS = ("caption", "roi_text", "question")


def read_reviews(loom: Path) -> list[dict]:
    path = layout.annotations_dir(loom) / REVIEWS
    return json.loads(path.read_text(encoding="utf-8")) if written_by_medloom(path) else []


def current_text(row: dict, field: str, previous: str) -> str | None:
    """The text a verdict concerns as the row has it now (None: not there any more)."""
    if field == "question":
        return previous if any(q["question"] == previous for q in row.get("vqa") or []) else None
    return row.get(field)


def before(row: dict, field: str, previous: str) -> dict:
    """What a verdict on `previous` may change, as the row has it now (kept with the verdict, for undo)."""
    if field == "question":
        for i, q in enumerate(row.get("vqa") or []):
            if q["question"] == previous:
                return {"index": i, "question": dict(q)}
        return {}
    if field == "caption":
        return {"caption": row.get("caption") or "", "caption_source": row.get("caption_source") or ""}
    return {field: row.get(field) or ""}


def _key(review: dict) -> tuple:
    return tuple(review.get(k) for k in ("field", "decision", "by", "at", "previous"))


def undo_review(row: dict, review: dict) -> dict:
    """The row as it was before `review`, which must be the latest verdict in effect on its text; a
    ValueError says why not."""
    field, decision, previous = review["field"], review["decision"], review["previous"]
    entries = list(row.get("reviews") or [])
    at = max((i for i, r in enumerate(entries) if _key(r) == _key(review)), default=None)
    if at is None:
        raise ValueError(
            f"that verdict on the {field.replace('_', ' ')} is not in effect on the row (a new "
            "annotate run no longer produces the text it judged)"
        )
    thread = {previous, review.get("text") or previous}
    if any(r["field"] == field and (field != "question" or r["previous"] in thread) for r in entries[at + 1 :]):
        raise ValueError(f"a later verdict changed this {field.replace('_', ' ')}: undo that one first")
    kept = review.get("before") or {}
    if field == "question" and decision != "accepted" and not kept.get("question"):
        raise ValueError(
            "this verdict was given before verdicts could be undone; mark it undone in "
            "annotations/reviews.json and run `medloom annotate` again"
        )
    if field == "caption" and decision != "accepted":
        row["caption"] = kept.get("caption", previous)
        row["caption_source"] = kept.get("caption_source") or ("template" if previous == row.get("template_caption") else "llm")
    elif field == "roi_text" and decision != "accepted":
        row["roi_text"] = kept.get("roi_text", previous)
    elif field == "question" and decision == "edited":
        row["vqa"] = [dict(kept["question"]) if q["question"] == review["text"] else q for q in row.get("vqa") or []]
    elif field == "question" and decision == "rejected":
        vqa = list(row.get("vqa") or [])
        vqa.insert(min(int(kept.get("index", len(vqa))), len(vqa)), dict(kept["question"]))
        row["vqa"] = vqa
    del entries[at]
    row["reviews"] = entries
    return row


def apply_review(row: dict, review: dict) -> dict:
    field, decision, previous = review["field"], review["decision"], review["previous"]
    if field == "caption":
        if decision == "edited":
            row["caption"], row["caption_source"] = review["text"], "reviewer"
        elif decision == "rejected":
            fallback = row.get("template_caption") or ""
            row["caption"] = fallback if fallback != previous else ""
            row["caption_source"] = (
                "template (the reviewer rejected the LLM's text)" if row["caption"] else "none (the reviewer rejected it)"
            )
    elif field == "roi_text" and decision != "accepted":
        row["roi_text"] = review["text"] if decision == "edited" else ""
    elif field == "question" and decision != "accepted":
        kept = []
        for q in row.get("vqa") or []:
            if q["question"] != previous:
                kept.append(q)
            elif decision == "edited":
                lines = [f"{LETTERS[k]}. {o}" for k, o in enumerate(q["options"] or [])]
                prompt = "\n".join([review["text"], *lines, INSTRUCTION]) if lines else review["text"]
                kept.append(dict(q, question=review["text"], prompt=prompt, source="reviewer"))
        row["vqa"] = kept
    row["reviews"] = list(row.get("reviews") or []) + [{k: review[k] for k in ("field", "decision", "by", "at", "previous")}]
    return row


def apply_reviews(rows: list[dict], reviews: list[dict]) -> list[dict]:
    by_id = {r["id"]: r for r in rows}
    for review in reviews:
        if review.get("undone"):
            continue
        row = by_id.get(review["id"])
        if row is not None and current_text(row, review["field"], review["previous"]) == review["previous"]:
            apply_review(row, review)
    return rows
