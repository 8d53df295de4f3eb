"""The LLM pass of `annotate --llm` (main process): an OpenAI-compatible server rewrites captions, ROI
descriptions and multiple-choice stems, grounded in the same catalog facts and retrieved knowledge the
templates are written from; every answer passes the same checks as the template text (checks.py), and
the template text is kept where it does not (`llm_failed` keeps the refused text and why)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .. import layout
from ..engine.progress import progress_bar
from ..models.chat import user_message
from ..vocab.words import label_words
from .checks import TextChecker
from .prose import study
from .questions import INSTRUCTION, LETTERS
from .structures import object_counts

SYSTEM = (
    "You write text about a medical image for a training dataset, as a radiologist would write it. Use only "
    "the facts given. Keep the finding names exactly as given, do not add findings, and do not mention any "
    "imaging modality or body part other than the ones given. State no count, side, position, size or "
    "percentage that the facts do not give. A region whose source is 'proposal' was proposed by a machine: "
    "call it a candidate region, never annotated. Take medical knowledge only from the knowledge given, "
    "with its identifier unchanged. Reply with the text only."
)

ROI_KEYS = ("label", "index", "count", "parts", "location", "area_share", "size", "shape", "brightness", "texture")


def grounding(row: dict, ann: dict) -> dict:
    """The facts an LLM may state: the study, findings, each region's facts (and whether people drew it or
    a method proposed it), the relations between regions, and the knowledge retrieved per finding."""
    meta = json.loads(row["meta"]) if row.get("meta") else None
    facts: dict = {
        "study": study(row, meta),
        "modality": row["modality"],
        "anatomy": row["anatomy"],
        "findings": [label_words(x) for x in row["labels"] or []],
    }
    if ann["roi_facts"]:
        facts["regions"] = [{k: r[k] for k in ROI_KEYS} | {"source": r.get("roi_source") or "dataset"} for r in ann["roi_facts"]]
        facts["relations"] = [
            f"{ann['roi_facts'][r['a']]['label']} {ann['roi_facts'][r['a']]['index']} {r['relation']} "
            f"{ann['roi_facts'][r['b']]['label']} {ann['roi_facts'][r['b']]['index']}"
            for r in ann["relations"] or []
        ]
    if ann.get("knowledge"):
        facts["knowledge"] = [
            {"finding": label_words(k["label"]), "id": k["id"], "term": k["term"], "definition": k["definition"]}
            for k in ann["knowledge"]
        ]
    return facts


def _refuse(ann: dict, field: str, template: str, text: str, problems: list[str]) -> None:
    ann["flags"] += [f"llm {field} {p}" for p in problems]
    ann["llm_failed"] = [
        *(ann.get("llm_failed") or []),
        {"field": field, "template": template, "text": text, "problems": problems},
    ]


def llm_pass(
    rows: list[dict],
    anns: dict[str, dict],
    s: Any,  # step.AnnotateSettings (not imported: step imports this module)
    loom: Path,
    sources: dict,
    checker: TextChecker,
    quiet: bool,
) -> dict:
    """Rewrite captions, ROI descriptions and multiple-choice question stems; keep the template text where
    the answer fails its check or never came."""
    from ..models.chat import LLMClient

    client = LLMClient(
        s.llm_url,
        s.llm_model,
        layout.cache_dir(loom, "llm"),
        concurrency=s.llm_concurrency,
        retries=s.llm_retries,
        timeout=s.llm_timeout,
        max_wait=s.llm_max_wait,
        allow_insecure_key=s.llm_allow_insecure_key,
    )
    jobs = []  # (record, annotation, what, messages)
    for row in rows:
        ann = anns[row["id"]]
        images = [_jpeg(row, sources)] if s.llm_images else []
        facts = json.dumps(grounding(row, ann), ensure_ascii=False)
        if ann["caption"]:
            prompt = (
                f"Facts: {facts}\nCaption to rewrite: {ann['template_caption']}\n"
                "Write one or two fluent sentences that state these facts."
            )
            jobs.append((row, ann, "caption", [{"role": "system", "content": SYSTEM}, user_message(prompt, images)]))
        if ann["roi_text"] and ann.get("roi_text_source") == "template":
            prompt = (
                f"Facts: {facts}\nDescription to rewrite: {ann['roi_text']}\n"
                "Write the description in this order: the whole image, each region (where, size, shape, "
                "brightness and texture), how the regions relate, then the knowledge given."
            )
            jobs.append((row, ann, "roi_text", [{"role": "system", "content": SYSTEM}, user_message(prompt, images)]))
        for i, q in enumerate(ann["vqa"]):
            if q["kind"] == "multiple-choice" and q["source"] == "template":  # a source's own question stays as published
                prompt = (
                    f'Facts: {{"modality": "{row["modality"]}", "anatomy": "{row["anatomy"]}"}}\n'
                    f"Question to rephrase: {q['question']}\nRephrase the question; do not answer it and do "
                    "not name any finding."
                )
                jobs.append((row, ann, f"question {i}", [{"role": "system", "content": SYSTEM}, user_message(prompt, images)]))
    with progress_bar("annotate llm", len(jobs), quiet) as advance:
        answers = client.complete_many([j[3] for j in jobs], advance)
    for (row, ann, what, _), answer in zip(jobs, answers):
        text = " ".join((answer or "").split())
        if what in ("caption", "roi_text"):
            rois = list(row["rois"] or [])
            named = list(row["labels"]) if what == "caption" and row["labels"] else sorted({r["label"] for r in rois})
            counts = object_counts(rois, checker.words)
            knowledge = [k for k in ann.get("knowledge") or [] if k["label"] in named]
            problems = checker.problems(text, row, named, counts, knowledge) if text else ["no answer from the LLM"]
            kept = "template (the LLM's text failed the check)" if text else "template (no LLM answer)"
            if problems:
                _refuse(ann, what, ann[what], text, problems)
                ann[f"{what}_source"] = kept
            else:
                ann[what], ann[f"{what}_source"] = text, "llm"
        else:
            q = ann["vqa"][int(what.split()[1])]
            problems = checker.problems(text, row, None) if text else ["no answer from the LLM"]
            if text and not checker.missing_labels(text, [q["answer_label"]]):
                problems.append("gives the answer away")
            if problems:
                ann["flags"] += [f"llm question {p}" for p in problems]
                ann["llm_failed"] = [
                    *(ann.get("llm_failed") or []),
                    {"field": "question", "template": q["question"], "text": text, "problems": problems},
                ]
            else:
                lines = [f"{LETTERS[k]}. {o}" for k, o in enumerate(q["options"])]
                q.update(question=text, prompt="\n".join([text, *lines, INSTRUCTION]), source="llm")
    return asdict(client.stats)


def _jpeg(row: dict, sources: dict) -> bytes:
    from ..imaging import encode, fit
    from ..view.render import record_image

    return encode(fit(record_image(row, {"sources": sources}, {}, 512), 512), "jpg", 90)
