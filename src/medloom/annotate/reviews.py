"""People's verdicts on generated captions (the audit page of `medloom serve`), kept beside the annotations.

`LOOM/annotations/reviews.json` lists every verdict in order: record id, decision (accepted, edited,
rejected), the new text of an edit, who, when, and the caption they judged. They are applied to
`annotations.parquet` when given and again by every `medloom annotate` run, so a re-run keeps them; a
verdict on a text the re-run no longer produces is not applied (the reviewer never saw the new text).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..outputs import written_by_medloom

REVIEWS = "reviews.json"
DECISIONS = ("accepted", "edited", "rejected")


def read_reviews(loom: Path) -> list[dict]:
    path = Path(loom) / "annotations" / REVIEWS
    return json.loads(path.read_text(encoding="utf-8")) if written_by_medloom(path) else []


def apply_review(row: dict, review: dict) -> dict:
    """The annotation row as the verdict leaves it: an edit replaces the caption, a rejection falls back to
    the template's caption (or none, when the template's was the text rejected)."""
    previous = row["caption"]
    if review["decision"] == "edited":
        row["caption"], row["caption_source"] = review["text"], "reviewer"
    elif review["decision"] == "rejected":
        fallback = row.get("template_caption") or ""
        row["caption"] = fallback if fallback != previous else ""
        row["caption_source"] = "template (the reviewer rejected the LLM's text)" if row["caption"] else \
            "none (the reviewer rejected it)"
    row["review"] = {"decision": review["decision"], "by": review["by"], "at": review["at"], "previous": previous}
    return row


def apply_reviews(rows: list[dict], reviews: list[dict]) -> list[dict]:
    by_id = {r["id"]: r for r in rows}
    for review in reviews:
        row = by_id.get(review["id"])
        if row is not None and row["caption"] == review["previous"]:
            apply_review(row, review)
    return rows
