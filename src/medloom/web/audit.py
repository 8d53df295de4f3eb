"""The audit page's queues, one card per text: a record stays in a queue while one of its texts there has no
verdict (judging its caption leaves its flagged question in view), a verdict shows the text it judged and can be
undone, and an LLM's rewrite that failed its check is shown beside the template's text that was kept."""

from __future__ import annotations

STATES = {"flagged": "failed a check", "llm": "written by an LLM", "reviewed": "reviewed"}
PER_PAGE = 20
# SQL narrowing the annotation rows to those that may be in a queue (the rest is decided per text, here)
CANDIDATES = {
    "flagged": "len(flags) > 0",
    "llm": "caption_source = 'llm' OR len([q FOR q IN vqa IF q.source = 'llm']) > 0",
    "reviewed": "len(reviews) > 0",
}
NAMES = {"caption": "caption", "roi_text": "ROI description", "question": "question"}


def texts(ann: dict) -> list[dict]:
    """Every text of an annotation row a reviewer may judge: whether a check flagged it, whether an LLM wrote
    it, whether a verdict on it is in effect, and the LLM's failed rewrite of it, if any."""
    flags = ann.get("flags") or []
    reviews = ann.get("reviews") or []
    failed = ann.get("llm_failed") or []
    out = []
    failed_caption = [f for f in failed if f["field"] == "caption"]
    if ann.get("caption"):
        template = ann.get("template_caption") or ""
        out.append(
            {
                "field": "caption",
                "title": f"caption ({ann.get('caption_source')})",
                "text": ann["caption"],
                "template": template if template != ann["caption"] else "",
                "flagged": any(f.startswith(("caption ", "llm caption ")) for f in flags),
                "llm": ann.get("caption_source") == "llm",
                "judged": any(r["field"] == "caption" for r in reviews),
                "failed": failed_caption,
            }
        )
    if ann.get("roi_text"):
        out.append(
            {
                "field": "roi_text",
                "title": "ROI description",
                "text": ann["roi_text"],
                "template": "",
                "flagged": any(f.startswith("roi_text ") for f in flags),
                "llm": False,
                "judged": any(r["field"] == "roi_text" for r in reviews),
                "failed": [],
            }
        )
    template_flag = any(f.startswith("question ") for f in flags)
    llm_flag = any(f.startswith("llm question ") for f in flags)
    failed_stems = {f["template"] for f in failed if f["field"] == "question"}
    for q in ann.get("vqa") or []:
        mine = [f for f in failed if f["field"] == "question" and f["template"] == q["question"]]
        out.append(
            {
                "field": "question",
                "title": f"question ({q.get('source')}, {q.get('kind')})",
                "text": q["question"],
                "template": "",
                # an LLM flag names no question: the failed rewrites say which, when the row has them
                "flagged": template_flag or (llm_flag and (bool(mine) or not failed_stems)),
                "llm": q.get("source") == "llm",
                "judged": q.get("source") == "reviewer"
                or any(r["field"] == "question" and r["previous"] == q["question"] for r in reviews),
                "failed": mine,
            }
        )
    return out


def pending(ann: dict, state: str) -> list[dict]:
    """The texts of the row in the queue `state` (flagged or llm) with no verdict yet."""
    return [t for t in texts(ann) if not t["judged"] and t[state]]


def in_queue(ann: dict, state: str) -> bool:
    return bool(ann.get("reviews")) if state == "reviewed" else bool(pending(ann, state))


def verdicts(ann: dict, entries: dict[tuple, dict]) -> list[dict]:
    """The verdicts in effect on the row, each with the text it judged and what it left (from reviews.json's
    entry, `entries` keyed by id, field, previous, by, at)."""
    out = []
    for r in ann.get("reviews") or []:
        entry = entries.get((ann["id"], r["field"], r["previous"], r["by"], r["at"]), {})
        if r["decision"] == "edited":
            now = entry.get("text", "")
        elif r["decision"] == "accepted":
            now = r["previous"]
        elif r["field"] == "caption":
            now = ann.get("caption") or ""
        else:
            now = ""
        out.append(dict(r, name=NAMES.get(r["field"], r["field"]), now=now))
    return out
