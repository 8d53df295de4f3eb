"""`medloom eval vqa`: every multiple-choice question of a selection asked of a model, each answer parsed by
the documented cascade (`answers.py`), and accuracy reported with intervals per MAT triplet, per source and
overall.

What is evaluated is the test side only, unless `--split` names another: the loom's split (`medloom split`,
else the sources' own), or an experiment's `test.txt` (never its training list). Records that `dedup` or
`leakage --mark` marked out are left out, as in exports. The questions are the annotation's (`medloom
annotate`), or made on the fly with the annotate step's rules and `--seed` when the loom has none.

A CLIP-style model (`medloom:PATH`, `hf-clip:PATH`) answers by image-text similarity instead (`models.py`): nothing is asked
of a server, the image features come from `medloom embed`'s cache where they exist, and each prediction keeps
the options' scores.

`--circular` asks each question once per rotation of its options (A B C D, B C D A, ...); a question counts
as right only when every rotation is answered right, which removes the gain of a model that prefers a letter.

The run folder holds `predictions.parquet` (one row per question and rotation), `results.json` (settings,
counts, accuracy with 95% Wilson and patient-bootstrap intervals, per triplet and source, invalid rate, rules,
mean per-class recall) and `cache/` (every answer, so a killed or stopped run asks nothing twice when run
again). A server that keeps failing stops the run after `max_failures` failed questions in a row; what was
answered is kept.

`--judge SPEC` (an OpenAI-compatible server, or a local `hf:` model) reads each invalid answer with its
question and replies with the option's letter or "none"; a bare letter (the strict `letter` rule) maps the
answer (rule `judge`), anything else leaves it invalid. Every call is logged in `judge.jsonl` (question,
answer, the judge's reply, what it decided) and cached, so a run started again asks the judge nothing twice.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from .. import catalog
from ..errors import EvalError, PlanError
from ..locks import hold
from ..models.specs import ChatSpec, ClipSpec, ModelSpecError, parse_spec
from ..outputs import OutputFolder
from ..version import __version__
from .answers import LETTERS, parse_answer
from .metrics import summarise

INSTRUCTION = "Answer with the option's letter from the given choices directly."
JUDGE_PROMPT = (
    "A model was asked this multiple-choice question:\n\n{prompt}\n\nIts answer was:\n\n{answer}\n\n"
    'Which option does the answer choose? Reply with that option\'s letter only, or with "none" when '
    "it does not choose exactly one option."
)
BENCHMARK_FIELDS = [
    ("answer_type", pa.string()),
    ("question_type", pa.string()),
    ("language", pa.string()),
    ("exact_match", pa.bool_()),
    ("token_recall", pa.float32()),
]
COUNTING = {
    "invalid": "a reply that no parsing rule maps to exactly one option (rule invalid; after the judge where "
    "--judge is given); counted wrong, in n",
    "truncated": "a reply the server cut at --max-tokens (finish_reason length); not parsed, counted wrong, in n, "
    "and counted apart from invalid",
    "failed": "a question with no reply (server errors, unreadable images); not scored, not in n",
}
PREDICTION_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("question", pa.int32()),
        ("rotation", pa.int32()),
        ("source", pa.string()),
        ("modality", pa.string()),
        ("anatomy", pa.string()),
        ("task", pa.string()),
        ("patient", pa.string()),
        ("prompt", pa.string()),
        ("options", pa.list_(pa.string())),
        ("answer", pa.string()),
        ("answer_label", pa.string()),
        ("raw", pa.string()),
        ("parsed", pa.string()),
        ("rule", pa.string()),
        ("scores", pa.list_(pa.float32())),
        ("correct", pa.bool_()),
        ("invalid", pa.bool_()),
        ("truncated", pa.bool_()),
        ("finish_reason", pa.string()),
        ("latency_s", pa.float64()),
        ("cached", pa.bool_()),
        ("model", pa.string()),
    ]
)


@dataclass
class RunSelection:
    """What a run evaluates: a split (test by default), or an experiment's test records, narrowed by a subset
    and a SQL condition; and the model that answers."""

    model: str = ""
    split: str = "test"
    subset: str | None = None
    experiment: str | None = None
    where: str | None = None


@dataclass
class VQASettings(RunSelection):
    circular: bool = False
    images: bool = True
    seed: int = 0
    concurrency: int = 8
    retries: int = 3
    timeout: float = 120.0
    max_wait: float = 60.0
    max_failures: int = 20
    allow_insecure_key: bool = False
    judge: str | None = None  # a chat model mapping invalid answers to an option (`judge_invalid`)
    # the benchmark's own questions (records.SOURCE_QUESTIONS, `benchmark.py`), the generated multiple-choice
    # ones, or auto: the source questions where the selection has any (the two are never mixed)
    questions: str = "auto"
    max_tokens: int = 2048  # room for a reasoning model's thinking before its letter
    # how options are written: medloom's `A. option` lines, or Med-MAT's `Question-choice` (`A: option`), the
    # format `cg run --trainer hf-lora` trains on
    prompt_format: str = "medloom"


def rotations(options: list[str], circular: bool) -> list[int]:
    return list(range(len(options))) if circular else [0]


def prompt(question: str, options: list[str]) -> str:
    return "\n".join([question, *(f"{LETTERS[i]}. {o}" for i, o in enumerate(options)), INSTRUCTION])


PROMPT_FORMATS = ("medloom", "medmat")


def prompt_function(name: str):
    """The multiple-choice prompt of a format: medloom's (`prompt`) or Med-MAT's `Question-choice`."""
    if name == "medmat":
        from ..export.medmat import prompt as medmat_prompt

        return medmat_prompt
    if name != "medloom":
        raise EvalError(f"--prompt-format {name!r}: {' or '.join(PROMPT_FORMATS)}")
    return prompt


def _questions(row: dict, seed: int, kb) -> list[dict]:
    """The record's multiple-choice questions: the annotation's, else made now with the annotate rules."""
    if row.get("ann_vqa") is not None:
        return [q for q in row["ann_vqa"] if q["kind"] == "multiple-choice"]
    from ..annotate.captions import task_family
    from ..annotate.questions import multiple_choice
    from ..annotate.step import record_rng

    family = task_family(row)
    q = multiple_choice(row, family, record_rng(seed, row["id"]), kb) if family else None
    return [q] if q else []


def select(loom: Path, s: RunSelection) -> tuple:
    """(connection with the `selection` view, its fingerprint, what was selected in words). The training side
    of a split or plan is never selected unless named."""
    from ..view.selection import Selection, select_records, selection_sql

    con = catalog.connect(loom)
    if s.experiment:
        from ..view.selection import read_experiment

        try:
            planned = read_experiment(Path(s.experiment))
        except (PlanError, OSError) as e:
            raise EvalError(str(e)) from None
        test = [i for i, side in planned.items() if side == "test"]
        known = {r[0] for r in con.execute("SELECT id FROM records").fetchall()}
        missing = [i for i in test if i not in known]
        if missing:
            raise EvalError(
                f"{s.experiment}: {len(missing)} of its {len(test)} test records are not in {loom} (for "
                f"example {missing[0]!r}); was the experiment planned on another loom?"
            )
    joins, split, marks, fingerprint = selection_sql(loom, Selection(subset=s.subset, experiment=s.experiment))
    select_records(con, s.where, joins, split, marks, ["test"] if s.experiment else [s.split])
    what = (
        (f"experiment {s.experiment} (its test records)" if s.experiment else f"split {s.split}")
        + (f", subset {s.subset}" if s.subset else "")
        + (f", where {s.where}" if s.where else "")
    )
    return con, fingerprint, what


def build_items(rows: list[dict], s: VQASettings) -> list[dict]:
    from ..annotate.knowledge import load_knowledge
    from ..annotate.questions import widen
    from ..view.selection import experiment_options

    kb = load_knowledge(None)
    extra, fewest = experiment_options(Path(s.experiment)) if s.experiment else ([], 0)
    ask = prompt_function(s.prompt_format)
    items = []
    for row in rows:
        for qi, q in enumerate(_questions(row, s.seed, kb)):
            if extra and len(q["options"]) < fewest:  # a `cg plan` target with two labels: more wrong options
                q = widen(q, row, extra, fewest, random.Random(f"{s.seed}:{row['id']}:{qi}:widen"), kb)
            options, truth = list(q["options"]), LETTERS.index(q["answer_letter"])
            for r in rotations(options, s.circular):
                shown = options[r:] + options[:r]
                items.append(
                    {
                        "row": row,
                        "record_id": row["id"],
                        "question": qi,
                        "rotation": r,
                        "source": row["source"],
                        "modality": row["modality"] or "",
                        "anatomy": row["anatomy"] or "",
                        "task": row["task"] or "",
                        "patient": row["patient_id"] or "",
                        "prompt": ask(q["question"], shown),
                        "options": shown,
                        "answer": LETTERS[(truth - r) % len(options)],
                        "answer_label": q.get("answer_label") or q["answer"],
                    }
                )
    return items


# how a question's image is rendered (the export's render stage): what a model is shown, and what training shows it
RENDER = {"image_format": "jpg", "keep_bytes": False, "max_side": 512, "quality": 90, "keep_metadata": False}


class ImageFeed:
    """Each record's image (JPEG, 512 px), rendered ahead in worker processes by the export's render stage, in
    the order the questions come; at most `lookahead` records wait rendered, and a record's image is
    dropped after its last question (`done`). Processes, not threads: the asking threads then never wait
    for the interpreter lock held by a decode."""

    def __init__(self, table: pa.Table, sources: dict, workers: int | None, lookahead: int):
        from concurrent.futures import Future

        self.futures = {rid: Future() for rid in table.column("id").to_pylist()}
        self.slots = threading.Semaphore(lookahead)
        self.stopped = False
        self._thread = threading.Thread(target=self._run, args=(table, sources, workers), daemon=True)
        self._thread.start()

    def _run(self, table: pa.Table, sources: dict, workers: int | None) -> None:
        from ..engine import make_executor, stage_module
        from ..imaging import DecodeError

        settings = {"sources": sources, **RENDER}
        try:
            with make_executor(workers, preload=[stage_module("view.render")]) as executor:
                for _, results in executor.map("view.render", table.to_batches(32), settings, ordered=True):
                    for result in results:
                        self.slots.acquire()
                        if self.stopped:
                            return
                        future = self.futures[result["row"]["id"]]
                        if "reason" in result:
                            future.set_exception(DecodeError(result["reason"], result["message"]))
                        else:
                            future.set_result(result["image"])
        except BaseException as e:  # the workers died: every question still waiting gets the error
            for future in list(self.futures.values()):
                if not future.done():
                    future.set_exception(e)

    def get(self, record_id: str) -> bytes:
        return self.futures[record_id].result()

    def done(self, record_id: str) -> None:
        self.futures.pop(record_id, None)
        self.slots.release()

    def stop(self) -> None:
        self.stopped = True
        self.slots.release()
        self._thread.join()


def ask(items: list[dict], client, feed: ImageFeed | None, s: VQASettings, advance) -> tuple[int, str]:
    """Fill each item's raw answer, latency and cache flag, `concurrency` questions in flight; stop after
    `max_failures` failed requests in a row. Returns (failed items, the last error)."""
    from ..imaging import DecodeError
    from ..models.chat import LLMError, user_message

    last_use = {item["record_id"]: n for n, item in enumerate(items)}

    def one(n: int, item: dict) -> None:
        started = time.perf_counter()
        try:
            messages = [user_message(item["prompt"], [feed.get(item["record_id"])] if feed else [])]
            started = time.perf_counter()  # the latency is the model's, not the image rendering's
            raw, item["cached"] = client.answer(messages)
            item["raw"], item["finish_reason"] = str(raw), getattr(raw, "finish_reason", None)
        except DecodeError as e:
            item["error"], item["unreadable"] = f"image: {e}", True
        except (LLMError, OSError, ValueError) as e:
            item["error"] = str(e)
        finally:
            if feed and last_use[item["record_id"]] == n:
                feed.done(item["record_id"])
        item["latency_s"] = 0.0 if item.get("cached") else time.perf_counter() - started
        advance(1)

    failed, streak, last = 0, 0, ""
    pending: dict = {}
    queue = iter(enumerate(items))
    with ThreadPoolExecutor(max_workers=s.concurrency) as pool:
        while True:  # `concurrency` questions in flight; no new one after max_failures failures in a row
            while len(pending) < s.concurrency and streak < s.max_failures:
                n, item = next(queue, (None, None))
                if item is None:
                    break
                pending[pool.submit(one, n, item)] = n
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                item = items[pending.pop(future)]
                if "error" in item:
                    failed, last = failed + 1, item["error"]
                    streak = streak if item.get("unreadable") else streak + 1  # the server's failures only
                else:
                    streak = 0
    return failed, last


def evaluate_vqa(loom: Path, out: Path, s: VQASettings, *, quiet: bool = False, workers: int | None = None) -> dict:
    spec = parse_spec(s.model)
    if s.judge and isinstance(parse_spec(s.judge), ClipSpec):
        raise ModelSpecError(f"--judge {s.judge!r}: the judge is a chat model, openai:http://HOST:PORT/v1#MODEL or hf:PATH")
    model = None
    if isinstance(spec, ClipSpec):
        from ..models.clip import load_clip

        model = load_clip(spec.text)
    loom, out = Path(loom), Path(out)
    folder = open_run(loom, out)
    with hold(loom, shared=True), hold(out, what="evaluation run"):
        return _evaluate(loom, folder, s, spec, model, quiet, workers)


def run_settings(loom: Path, s: RunSelection, what: str, fingerprint: str, ids: list[str]) -> dict:
    """What a run evaluated, exactly: loom, selection, settings, and a hash of the record ids."""
    ids = sorted(set(ids))
    return {
        "medloom": __version__,
        "loom": str(Path(loom).resolve()),
        "selection": what,
        **asdict(s),
        "records": len(ids),
        "records_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
        "marks": fingerprint,
    }


def open_run(loom: Path, out: Path) -> OutputFolder:
    """A run folder: new, or one medloom wrote (a run started again resumes there); never a user's folder."""
    if not (catalog.catalog_dir(loom) / catalog.MANIFEST).is_file():
        raise FileNotFoundError(f"{loom}: no catalog here (run `medloom ingest RECIPE` first)")
    if out.exists() and not out.is_dir():
        raise EvalError(f"--out {out} is a file, not a folder; choose a folder for the run")
    folder = OutputFolder(out)
    folder.require_only_own("evaluation run")
    folder.ensure()
    return folder


def _evaluate(loom: Path, folder: OutputFolder, s: VQASettings, spec, model, quiet: bool, workers: int | None) -> dict:
    started = time.perf_counter()
    con, fingerprint, what = select(loom, s)
    selected = con.sql("SELECT * FROM selection ORDER BY id").to_arrow_table()
    rows = selected.to_pylist()
    benchmark = use_source_questions(rows, s.questions)
    if benchmark:
        from .benchmark import build_source_items

        items = build_source_items(rows, s.circular, prompt_function(s.prompt_format))
        if model is not None and any(not i["options"] for i in items):
            raise EvalError(f"{s.model}: a CLIP-style model answers only questions with options; these have free answers")
    else:
        items = build_items(rows, s)
    if not items and benchmark:
        raise EvalError(f"{loom}: no source question in {what} ({len(rows)} records)")
    if not items:
        raise EvalError(
            f"{loom}: no multiple-choice question in {what} ({len(rows)} records): the records need labels "
            "from a label space of at least two classes (`medloom annotate` makes the questions)"
        )
    asked = {i["record_id"] for i in items}
    table = selected.filter(pa.array([rid in asked for rid in selected.column("id").to_pylist()]))
    asking = time.perf_counter()
    if model is not None:
        from .similarity import answer_by_similarity, refuse_trained

        refuse_trained(loom, con, spec.text, what)
        answer_by_similarity(loom, table, items, model, workers, quiet)
        errors = [i["error"] for i in items if "error" in i]
        failed, last_error, stats = len(errors), (errors[-1] if errors else ""), None
    else:
        if not isinstance(spec, ChatSpec):  # a local model medloom fine-tuned lists what it was trained on
            from .similarity import refuse_trained

            refuse_trained(loom, con, s.model, what)
        failed, last_error, stats = _ask_server(loom, folder, table, items, s, spec, quiet, workers)
    asking = time.perf_counter() - asking
    answered = [i for i in items if "raw" in i]
    for item in answered:
        if item.get("finish_reason") == "length":  # cut at --max-tokens: its last word is unknown, never parsed
            item["parsed"], item["rule"] = "", "truncated"
        elif "rule" not in item and item["options"]:
            item["parsed"], item["rule"] = parse_answer(item["raw"], item["options"])
    invalid = [i for i in answered if i.get("rule") == "invalid" and i["options"]]
    judged = judge_invalid(folder, invalid, s, quiet) if s.judge else None
    for item in answered:
        if benchmark:
            from .benchmark import score_item

            score_item(item)
        else:
            item["correct"], item["invalid"] = item["parsed"] == item["answer"], item["rule"] == "invalid"
        item["truncated"] = item.get("rule") == "truncated"
        item["model"] = spec.text
    schema = pa.schema([*PREDICTION_SCHEMA, *BENCHMARK_FIELDS]) if benchmark else PREDICTION_SCHEMA
    table = pa.Table.from_pylist([{k: i.get(k) for k in schema.names} for i in answered], schema)
    folder.write_table("predictions.parquet", table)
    settings = {
        **run_settings(loom, s, what, fingerprint, [i["record_id"] for i in items]),
        "model": spec.text,
        "questions": len({(i["record_id"], i["question"]) for i in items}),
        "question_kind": "source" if benchmark else "generated",
    }
    results = {
        "settings": settings,
        "complete": len(answered) == len(items),
        "asked": len(items),
        "answered": len(answered),
        "failed": failed,
        "last_error": last_error,
        "seconds": round(time.perf_counter() - started, 3),
        "asking_seconds": round(asking, 3),
        "llm": stats,
        "judge": judged,
        "counting": COUNTING,
        **summarise(table.to_pylist(), circular=s.circular, seed=s.seed),
    }
    if benchmark:
        from .benchmark import summarise_benchmark

        results["benchmark"] = summarise_benchmark(table.to_pylist(), seed=s.seed)
    folder.write_bytes("results.json", json.dumps(results, indent=1, ensure_ascii=False).encode())
    return results


def use_source_questions(rows: list[dict], questions: str) -> bool:
    """Whether the run asks the benchmark's own questions: `source`, `generated`, or auto (where any record has
    them)."""
    from ..records import source_questions

    if questions not in ("auto", "source", "generated"):
        raise EvalError(f"--questions {questions!r}: auto, source or generated")
    return questions == "source" or (questions == "auto" and any(source_questions(r.get("meta")) for r in rows))


def judge_invalid(folder: OutputFolder, items: list[dict], s: VQASettings, quiet: bool) -> dict:
    """Map invalid answers through the judge where it names exactly one letter; log every call."""
    from ..engine.progress import progress_bar
    from ..models.chat import LLMError
    from ..models.specs import chat_client

    spec = parse_spec(s.judge)
    client = chat_client(
        spec,
        folder.claim_dir("judge-cache"),
        concurrency=s.concurrency,
        retries=s.retries,
        timeout=s.timeout,
        max_wait=s.max_wait,
        allow_insecure_key=s.allow_insecure_key,
        max_tokens=s.max_tokens,
    )

    def one(item: dict) -> dict:
        entry = {
            "record_id": item["record_id"],
            "question": item["question"],
            "rotation": item["rotation"],
            "prompt": item["prompt"],
            "answer": item["raw"],
        }
        try:
            reply, entry["cached"] = client.answer(
                [{"role": "user", "content": JUDGE_PROMPT.format(prompt=item["prompt"], answer=item["raw"])}]
            )
        except (LLMError, OSError, ValueError) as e:
            return {**entry, "error": str(e), "decided": "invalid"}
        letter, rule = parse_answer(reply, item["options"])
        if rule == "letter":
            item["parsed"], item["rule"] = letter, "judge"
        return {**entry, "judge_reply": reply, "decided": letter if rule == "letter" else "invalid"}

    with ThreadPoolExecutor(max_workers=s.concurrency) as pool, progress_bar("judge", len(items), quiet) as advance:
        log = []
        for entry in pool.map(one, items):
            log.append(entry)
            advance(1)
    folder.write_bytes("judge.jsonl", "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in log).encode())
    return {
        "model": spec.text,
        "asked": len(items),
        "mapped": sum(e["decided"] != "invalid" for e in log),
        "errors": sum("error" in e for e in log),
    }


def _ask_server(
    loom: Path, folder: OutputFolder, table: pa.Table, items: list[dict], s: VQASettings, spec, quiet: bool, workers: int | None
) -> tuple[int, str, dict]:
    """Ask a chat server every item, the images rendered ahead; (failed, last error, the client's counts)."""
    from ..engine.progress import progress_bar
    from ..models.specs import chat_client
    from ..view.render import render_sources

    client = chat_client(
        spec,
        folder.claim_dir("cache"),
        concurrency=s.concurrency,
        retries=s.retries,
        timeout=s.timeout,
        max_wait=s.max_wait,
        allow_insecure_key=s.allow_insecure_key,
        max_tokens=s.max_tokens,
    )
    feed = None
    if s.images:
        feed = ImageFeed(table, render_sources(catalog.read_manifest(loom)), workers, lookahead=4 * s.concurrency)
    try:
        with progress_bar("eval vqa", len(items), quiet) as advance:
            failed, last_error = ask(items, client, feed, s, advance)
    finally:
        if feed:
            feed.stop()
    return failed, last_error, asdict(client.stats)
