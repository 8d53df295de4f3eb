"""A loom against a benchmark's loom: which of its records hold a benchmark item's image or question.

`medloom leakage LOOM --against BENCH` reports them and `medloom export --exclude BENCH` leaves them out of an
export: a model trained on a benchmark's test images (a byte copy, or the same image re-encoded or resized in
another dataset) or on its questions is not judged fairly on it. A record of LOOM is contaminated by a record of
BENCH's evaluation splits (test and val unless other splits are named) when:

- `exact-image`: they have the same decoded pixels (`pixel_hash`);
- `near-image`: their perceptual hashes are within `near` bits (6 of 64 by default, the threshold of `dedup` and
  `leakage`, which finds re-encoded and resized copies; found as `dedup` finds them, `neighbours.near_pairs`);
- `question-exact`: a question of the record (its source questions, and the questions `medloom annotate`
  generated) equals one of the benchmark record's after normalisation (`question_words`);
- `question-overlap`: at least `overlap` (0.8) of the benchmark question's word 3-grams are in the record's
  question (a copy with a word changed, or with text added around it).

A question of fewer than `MIN_WORDS` words, or a question text that more than `TEMPLATE_RECORDS` records of
either loom carry ("Which organ is abnormal?", "What modality is used to take this image?": a template asked of
every image, not a copy) is not compared; the report counts both. Image matches are direct (no chain of near
copies). Each contaminated record is listed with, per reason, its closest benchmark record and how many matched.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import catalog
from ..locks import hold
from ..records import source_questions
from ..vocab.splits import record_split
from .dedup import DEFAULT_NEAR
from .neighbours import hamming, near_pairs

REASONS = ("exact-image", "near-image", "question-exact", "question-overlap")
EVALUATION_SPLITS = ("test", "val")
DEFAULT_OVERLAP = 0.8  # share of the benchmark question's word 3-grams found in the record's question
NGRAM = 3
MIN_WORDS = 6  # shorter questions ("Is this a CT?") are asked of countless images; they prove nothing
CONTAMINATION = "contamination.json"
TEMPLATE_RECORDS = 3  # a question text on more records than this, in either loom, is a template
_WORD = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W\u3400-\u9fff\uf900-\ufaff]+")


def question_words(text: str) -> tuple[str, ...]:
    """A question as compared: Unicode-normalised (NFKC), case folded, punctuation dropped, words split on
    anything else, each CJK character a word."""
    return tuple(_WORD.findall(unicodedata.normalize("NFKC", str(text or "")).casefold()))


def ngrams(words: tuple[str, ...], n: int = NGRAM) -> set[tuple[str, ...]]:
    return {words[i : i + n] for i in range(len(words) - n + 1)}


@dataclass
class Side:
    """What is compared of one loom's records: ids, sources, splits, hashes, and the questions of each record."""

    ids: list[str]
    sources: list[str]
    splits: list[str]
    pixel_hash: list[str | None]
    phash: list[int | None]
    questions: list[list[str]]


def read_side(loom: Path, splits: tuple[str, ...] | None = None) -> Side:
    """The records of `loom` (only those on `splits`, by their source's split, when given), each with its source
    questions and its generated questions."""
    con = catalog.connect(loom)
    rows = con.execute(
        "SELECT id, source, source_split, pixel_hash, phash, "
        "CASE WHEN contains(coalesce(meta, ''), 'source_questions') THEN meta END FROM records ORDER BY id"
    ).fetchall()
    generated: dict[str, list[str]] = defaultdict(list)
    if "annotations" in {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}:
        sql = "SELECT id, list_transform(vqa, lambda q: q.question) FROM annotations"
        for rid, texts in con.execute(sql).fetchall():
            generated[rid] += [t for t in texts or [] if t]
    side = Side([], [], [], [], [], [])
    for rid, source, split, pixel, phash, meta in rows:
        split = record_split(split)
        if splits is not None and split not in splits:
            continue
        side.ids.append(rid)
        side.sources.append(source)
        side.splits.append(split)
        side.pixel_hash.append(pixel or None)
        side.phash.append(None if phash is None else int(phash))
        side.questions.append([q["question"] for q in source_questions(meta) if q.get("question")] + generated[rid])
    return side


@dataclass
class ContaminationReport:
    loom: str
    against: list[str]
    against_splits: list[str]
    records: int = 0  # records of the loom compared
    against_records: int = 0  # benchmark records compared (on `against_splits`)
    contaminated: int = 0  # records of the loom with at least one reason
    by_reason: dict[str, int] = field(default_factory=dict)  # records per reason
    by_against: dict[str, int] = field(default_factory=dict)  # records per benchmark loom
    questions: int = 0  # question texts of the loom compared
    against_questions: int = 0
    short_questions: int = 0  # benchmark question texts under MIN_WORDS words, not compared
    template_questions: int = 0  # benchmark question texts on more than TEMPLATE_RECORDS records, not compared
    near: int | None = DEFAULT_NEAR
    overlap: float | None = DEFAULT_OVERLAP
    records_found: list[dict] = field(default_factory=list)  # each contaminated record, with its matches

    def as_dict(self) -> dict:
        return asdict(self)

    def ids(self) -> list[str]:
        return [r["id"] for r in self.records_found]

    def summary(self) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in self.by_reason.items() if v) or "nothing found"
        return (
            f"contamination: {self.contaminated} of {self.records} records of {self.loom} hold an image or question "
            f"of {self.against_records} {'/'.join(self.against_splits)} records of {', '.join(self.against)} "
            f"({reasons}); {self.short_questions} short and {self.template_questions} template benchmark "
            "questions not compared"
        )

    def rows(self) -> list[tuple[str, str, str, str, str]]:
        """(record, split, reason, benchmark record, detail) per reason of each contaminated record."""
        out = []
        for r in self.records_found:
            for m in r["matches"]:
                if m["reason"] in ("exact-image", "near-image"):
                    detail = f"phash distance {m['distance']}"
                else:
                    detail = f"overlap {m['overlap']:.2f}: {m['question']!r}"
                if m["count"] > 1:
                    detail += f" ({m['count']} benchmark records)"
                out.append((r["id"], r["split"], m["reason"], f"{m['against']}:{m['against_id']}", detail))
        return out


def contamination(
    loom: Path,
    against: list[Path],
    *,
    near: int | None = DEFAULT_NEAR,
    overlap: float | None = DEFAULT_OVERLAP,
    splits: tuple[str, ...] = EVALUATION_SPLITS,
    questions: bool = True,
    wait: bool = False,
) -> ContaminationReport:
    """Every record of `loom` that holds an image or a question of a record of the `against` looms' `splits`
    (see the module's text); both looms are read under their shared locks."""
    loom = Path(loom)
    report = ContaminationReport(
        loom=str(loom), against=[str(a) for a in against], against_splits=list(splits), near=near, overlap=overlap
    )
    for other in [loom, *against]:
        if not (catalog.catalog_dir(other) / catalog.MANIFEST).is_file():  # never create a loom by reading one
            raise FileNotFoundError(f"{other}: no catalog here (run `medloom ingest RECIPE` first)")
    for other in against:
        if Path(other).resolve() == loom.resolve():
            raise ValueError(f"{other}: the loom itself; compare it with another loom (a benchmark's)")
    with hold(loom, shared=True, wait=wait):
        mine = read_side(loom)
    report.records = len(mine.ids)
    report.questions = sum(len(q) for q in mine.questions)
    found: dict[int, dict[str, dict]] = defaultdict(dict)  # record -> reason -> best match
    for other in against:
        with hold(other, shared=True, wait=wait):
            theirs = read_side(Path(other), tuple(splits))
        report.against_records += len(theirs.ids)
        report.against_questions += sum(len(q) for q in theirs.questions)
        matches = image_matches(mine, theirs, near)
        if questions:
            matches += question_matches(mine, theirs, overlap, report)
        for i, j, reason, score, extra in matches:
            best = found[i].get(reason)
            better = best is None or (score < best["distance"] if "distance" in best else score > best["overlap"])
            if best is not None:
                best["count"] += 1
            if better:
                entry = {"reason": reason, "against": str(other), "against_id": theirs.ids[j]}
                entry.update({"against_source": theirs.sources[j], "against_split": theirs.splits[j], **extra})
                entry["count"] = best["count"] if best else 1
                found[i][reason] = entry
    by_against: dict[str, set[int]] = defaultdict(set)
    for i in sorted(found, key=lambda k: mine.ids[k]):
        reasons = [found[i][r] for r in REASONS if r in found[i]]
        if "exact-image" in found[i]:  # the same pixels: a near match says no more
            reasons = [m for m in reasons if m["reason"] != "near-image"]
        report.records_found.append(
            {
                "id": mine.ids[i],
                "source": mine.sources[i],
                "split": mine.splits[i],
                "reasons": [m["reason"] for m in reasons],
                "matches": reasons,
            }
        )
        for m in reasons:
            by_against[m["against"]].add(i)
    report.contaminated = len(report.records_found)
    report.by_reason = {r: sum(r in f["reasons"] for f in report.records_found) for r in REASONS}
    report.by_against = {str(a): len(by_against[str(a)]) for a in against}
    return report


def image_matches(mine: Side, theirs: Side, near: int | None) -> list[tuple[int, int, str, int, dict]]:
    """(record of mine, record of theirs, reason, phash distance, details) for same pixels and close hashes."""
    out = []
    by_pixels: dict[str, list[int]] = defaultdict(list)
    for j, p in enumerate(theirs.pixel_hash):
        if p:
            by_pixels[p].append(j)
    exact = set()
    for i, p in enumerate(mine.pixel_hash):
        for j in by_pixels.get(p, []) if p else []:
            exact.add((i, j))
            out.append((i, j, "exact-image", 0, {"distance": 0}))
    if near is None:
        return out
    mine_at: dict[int, list[int]] = defaultdict(list)
    theirs_at: dict[int, list[int]] = defaultdict(list)
    for i, h in enumerate(mine.phash):
        if h is not None:
            mine_at[h].append(i)
    for j, h in enumerate(theirs.phash):
        if h is not None:
            theirs_at[h].append(j)
    values = np.array(sorted(set(mine_at) | set(theirs_at)), np.uint64)
    pairs = [(int(v), int(v)) for v in values] + [(int(values[a]), int(values[b])) for a, b in near_pairs(values, near)]
    for u, v in pairs:
        for x, y in ((u, v), (v, u)) if u != v else ((u, v),):
            if x not in mine_at or y not in theirs_at:
                continue
            distance = int(hamming(np.uint64(x), np.uint64(y)))
            for i in mine_at[x]:
                for j in theirs_at[y]:
                    if (i, j) not in exact:
                        out.append((i, j, "near-image", distance, {"distance": distance}))
    return out


def question_matches(
    mine: Side, theirs: Side, overlap: float | None, report: ContaminationReport
) -> list[tuple[int, int, str, float, dict]]:
    """(record of mine, record of theirs, reason, overlap, details) for questions copied exactly or nearly.

    The n-gram comparison is a set-similarity join with a prefix filter: a benchmark question of k 3-grams is
    indexed by its k - ceil(overlap k) + 1 rarest ones, of which a question sharing at least overlap k must hold
    one, so every pair over the threshold is found without comparing all pairs."""
    counts_mine = Counter(w for qs in mine.questions for w in {question_words(q) for q in qs})
    texts: dict[tuple[str, ...], tuple[str, list[int]]] = {}
    for j, qs in enumerate(theirs.questions):
        for q in qs:
            words = question_words(q)
            texts.setdefault(words, (q, []))[1].append(j)
    compared: dict[tuple[str, ...], tuple[str, list[int]]] = {}
    for words, (text, records) in texts.items():
        if len(words) < MIN_WORDS:
            report.short_questions += 1
        elif len(set(records)) > TEMPLATE_RECORDS or counts_mine[words] > TEMPLATE_RECORDS:
            report.template_questions += 1
        else:
            compared[words] = (text, sorted(set(records)))
    grams = {words: ngrams(words) for words in compared}
    index: dict[tuple[str, ...], list[tuple[str, ...]]] = defaultdict(list)
    if overlap is not None:
        frequency = Counter(g for gs in grams.values() for g in gs)
        for words, gs in grams.items():
            k = len(gs)
            prefix = k - math.ceil(overlap * k - 1e-9) + 1
            for g in sorted(gs, key=lambda g: (frequency[g], g))[:prefix]:
                index[g].append(words)
    out = []
    for i, qs in enumerate(mine.questions):
        for q in qs:
            words = question_words(q)
            if words in compared:
                text, records = compared[words]
                out += [(i, j, "question-exact", 1.0, {"overlap": 1.0, "question": q, "against_question": text}) for j in records]
                continue
            if overlap is None or len(words) < NGRAM:
                continue
            have = ngrams(words)
            for candidate in {c for g in have for c in index.get(g, ())}:
                share = len(have & grams[candidate]) / len(grams[candidate])
                if share >= overlap:
                    text, records = compared[candidate]
                    details = {"overlap": round(share, 4), "question": q, "against_question": text}
                    out += [(i, j, "question-overlap", share, details) for j in records]
    return out


def write_report(loom: Path, report: ContaminationReport, *, wait: bool = False) -> Path:
    """The report as `LOOM/curation/contamination.json` (written under the loom's lock, as `leakage.json` is)."""
    from .. import layout
    from ..outputs import write_file

    with hold(loom, wait=wait):
        return write_file(
            layout.curation_dir(loom) / CONTAMINATION, json.dumps(report.as_dict(), indent=1, ensure_ascii=False).encode()
        )
