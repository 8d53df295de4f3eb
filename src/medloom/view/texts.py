"""Which text a record exports with: one rule for every format.

A record can have up to three captions:

- `source`: the dataset's own words about the image: a CSV's caption column, a PMC figure's caption (with
  `citing=True`, followed by the sentences of the article that cite the figure);
- `annotation`: the caption `medloom annotate` made (from a template, or rewritten by an LLM and checked);
- `template`: a sentence built from the MAT triplet alone ("A CT image of the brain."), true of every record.

`--text` chooses:

| mode | the text |
|---|---|
| `auto` (default) | the source caption when there is one, else the annotation caption, else the MAT sentence |
| `source` | the source caption only |
| `annotation` | the annotation caption only |
| `both` | the source caption, then the annotation caption (each when present) |

so with `auto` every record has a non-empty text, as CLIP trainers need; with the other modes a record can
have none, and `--require-text` leaves such records out (counted as filtered). ROI descriptions and
questions travel beside the text (the sample JSON's `annotation`, the training formats' turns).
"""

from __future__ import annotations

TEXT_MODES = ("auto", "source", "annotation", "both")


def source_caption(row: dict, citing: bool = False) -> str:
    caption = (row.get("caption") or "").strip()
    contexts = list(((row.get("article") or {}).get("contexts")) or []) if citing else []
    return " ".join([caption, *contexts]).strip()


def choose_text(row: dict, mode: str = "auto", citing: bool = False) -> tuple[str, str]:
    """(text, where it came from: source | annotation | both | template | "")."""
    from ..vocab.words import mat_caption

    source = source_caption(row, citing)
    annotation = (row.get("ann_caption") or "").strip()
    if mode == "source":
        return source, "source" if source else ""
    if mode == "annotation":
        return annotation, "annotation" if annotation else ""
    if mode == "both":
        parts = [t for t in (source, annotation) if t]
        return " ".join(parts), ("both" if len(parts) == 2 else ("source" if source else "annotation")) if parts else ""
    if source:
        return source, "source"
    if annotation:
        return annotation, "annotation"
    return mat_caption(row), "template"


def text_condition(mode: str, citing: bool = False) -> str:
    """SQL over the selection keeping records that have text under `mode` (for `--require-text`)."""
    source = "coalesce(caption, '') <> ''" + (" OR coalesce(len(article.contexts), 0) > 0" if citing else "")
    annotation = "coalesce(ann_caption, '') <> ''"
    return {"auto": "", "source": source, "annotation": annotation, "both": f"({source}) OR ({annotation})"}[mode]


def annotation_metadata(row: dict) -> dict:
    """A record's annotations as they travel in exports (never null: "" and [] when missing)."""
    questions = []
    for q in row.get("ann_vqa") or []:
        questions.append(
            {
                "kind": q["kind"] or "",
                "question": q["question"] or "",
                "options": list(q["options"] or []),
                "answer": q["answer"] or "",
                "answer_letter": q["answer_letter"] or "",
                "prompt": q["prompt"] or "",
                "box": [float(v) for v in q["box"] or []],
            }
        )
    return {
        "caption": row.get("ann_caption") or "",
        "caption_source": row.get("ann_caption_source") or "",
        "roi_text": row.get("ann_roi_text") or "",
        "questions": questions,
    }
