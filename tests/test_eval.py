"""`medloom eval vqa` and `eval compare` against a real local HTTP server that speaks the chat completions API
and answers in every form the parsing cascade knows (and with nonsense, errors and outages); the interval and
test statistics against statsmodels."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import cli, fixture_dir, rows, write_recipe

from medloom.evaluate.answers import parse_answer
from medloom.evaluate.stats import cluster_bootstrap, mcnemar_exact, wilson

LETTERS = "ABCDEFGHIJ"
# (form, the rule that must read it); {L} the chosen letter, {T} its option's text
FORMS = [
    ("{L}", "letter"),
    ("({L})", "letter"),
    ("{L}: {T}", "letter-text"),
    ("The answer is {L}.", "answer-is"),
    ("I think ({L}) fits", "option-letter"),
    ("{T}", "option-text"),
    ("It shows {T}.", "option-text"),
    ("I cannot tell from this image.", "invalid"),
    ("{L} or {M}", "invalid"),
]


def question_of(prompt: str) -> tuple[list[str], int]:
    """The options of a prompt and a deterministic pick among them."""
    options = [line[3:] for line in prompt.splitlines() if len(line) > 3 and line[1:3] == ". " and line[0] in LETTERS]
    return options, int(hashlib.sha256(prompt.encode()).hexdigest(), 16)


def reply(prompt: str) -> str:
    """What the server answers to a prompt: a form and a letter chosen by a hash of the prompt."""
    options, h = question_of(prompt)
    pick = h % len(options)
    form, _ = FORMS[(h // 7) % len(FORMS)]
    return form.format(L=LETTERS[pick], T=options[pick], M=LETTERS[(pick + 1) % len(options)])


def expected(prompt: str) -> tuple[str, str]:
    options, h = question_of(prompt)
    rule = FORMS[(h // 7) % len(FORMS)][1]
    return ("" if rule == "invalid" else LETTERS[h % len(options)]), rule


class Server:
    """POST /v1/chat/completions answering `reply(prompt)`; `down_after` answers, then HTTP 500 for everything."""

    def __init__(self, answer=reply):
        self.answer = answer
        self.log: list[str] = []
        self.down_after: int | None = None
        self.trickle: float | None = None  # seconds between the bytes of a reply: a server that sends slowly
        self.sent = 0
        self.finish = None  # prompt -> the finish_reason sent with the reply ("length": cut at max_tokens)
        self.max_tokens: list[int] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                content = body["messages"][-1]["content"]
                text = content if isinstance(content, str) else next(p["text"] for p in content if p["type"] == "text")
                with outer.lock:
                    outer.max_tokens.append(body.get("max_tokens"))
                    down = outer.down_after is not None and len(outer.log) >= outer.down_after
                    if not down:
                        outer.log.append(text)
                if down:
                    data, code = b'{"error": "overloaded"}', 500
                else:
                    choice = {"message": {"role": "assistant", "content": outer.answer(text)}}
                    if outer.finish:
                        choice["finish_reason"] = outer.finish(text)
                    data, code = json.dumps({"choices": [choice]}).encode(), 200
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if outer.trickle is None:
                    self.wfile.write(data)
                    return
                try:
                    for i in range(len(data)):
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                        with outer.lock:
                            outer.sent += 1
                        time.sleep(outer.trickle)
                except OSError:  # the client hung up
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(scope="module")
def loom(tmp_path_factory) -> Path:
    """BCCD's white-cell classes (5 classes, real microscopy images), annotated, split by record."""
    tmp = tmp_path_factory.mktemp("eval")
    recipe = write_recipe(
        tmp,
        [
            dict(
                name="cells",
                reader="imagefolder",
                path=str(fixture_dir("images", "bccd_imagefolder", "BCCD_cropped")),
                modality="microscopy",
                anatomy="blood",
                task="cell type",
            )
        ],
    )
    cli("ingest", recipe, "-q")
    cli("annotate", tmp / "loom", "-q")
    cli("split", tmp / "loom", "--by", "record", "--val", "0.2", "--test", "0.5", "--seed", "2", "--json")
    return tmp / "loom"


@pytest.mark.parametrize(
    "answer, letter, rule",
    [
        ("B", "B", "letter"),
        ("b.", "B", "letter"),
        ("(C)", "C", "letter"),
        ("**D**", "D", "letter"),
        ("B: effusion", "B", "letter-text"),
        ("C) Cyst.", "C", "letter-text"),
        ("A: cyst", "", "invalid"),
        ("The answer is (B).", "B", "answer-is"),
        ("Answer: c", "C", "answer-is"),
        ("Option D", "D", "letter"),
        ("I think (C) fits best", "C", "option-letter"),
        ("cyst", "C", "option-text"),
        ("It shows a cyst.", "C", "option-text"),
        ("pleural effusion", "A", "option-text"),
        ("It shows an effusion", "B", "option-text"),
        ("A cyst is seen", "C", "option-text"),
        ("B or C", "", "invalid"),
        ("I cannot tell", "", "invalid"),
        ("", "", "invalid"),
        ("E", "", "invalid"),
        ("(A) or (B)", "", "invalid"),
    ],
)
def test_answer_parsing_cascade(answer, letter, rule):
    assert parse_answer(answer, ["pleural effusion", "effusion", "cyst", "normal findings"]) == (letter, rule)


def test_statistics_agree_with_statsmodels():
    from statsmodels.stats.contingency_tables import mcnemar
    from statsmodels.stats.proportion import proportion_confint

    for k, n in [(0, 10), (3, 10), (10, 10), (57, 80), (1, 1), (412, 1000)]:
        assert np.allclose(wilson(k, n), proportion_confint(k, n, alpha=0.05, method="wilson"), atol=1e-12)
    for b, c in [(0, 0), (3, 9), (10, 10), (1, 12), (40, 25)]:
        assert mcnemar_exact(b, c) == pytest.approx(mcnemar([[5, b], [c, 7]], exact=True).pvalue, abs=1e-12)
    # the cluster bootstrap: one patient with many images widens the interval over an image bootstrap
    rng = np.random.default_rng(0)
    values = np.r_[np.ones(40), rng.integers(0, 2, 60)]
    clusters = ["p0"] * 40 + [f"p{i}" for i in range(1, 61)]
    by_patient = cluster_bootstrap(values, clusters, seed=1)
    by_image = cluster_bootstrap(values, [str(i) for i in range(100)], seed=1)
    assert by_patient[0] <= values.mean() <= by_patient[1]
    assert by_patient[1] - by_patient[0] > 1.5 * (by_image[1] - by_image[0])
    assert cluster_bootstrap(values, clusters, seed=1) == by_patient  # seeded


def test_eval_vqa_parses_every_answer_counts_invalid_and_resumes(loom, server, tmp_path):
    split = {r["id"]: r["split"] for r in rows(loom, f"SELECT * FROM read_parquet('{loom}/splits/split.parquet')")}
    test_ids = sorted(i for i, s in split.items() if s == "test")
    run = tmp_path / "run"
    proc = cli("eval", "vqa", loom, "--model", f"openai:{server.url}#test-model", "--out", run, "-q")
    assert "overall" in proc.stdout and "95% Wilson" in proc.stdout
    preds = pq.read_table(run / "predictions.parquet").to_pylist()
    assert sorted({p["record_id"] for p in preds}) == test_ids  # the test split only, never train or val
    assert len(preds) == len(test_ids) == len(server.log)  # one multiple-choice question per record
    for p in preds:
        assert p["raw"] == reply(p["prompt"])
        assert (p["parsed"], p["rule"]) == expected(p["prompt"])
        assert p["correct"] == (p["parsed"] == p["answer"]) and p["invalid"] == (p["rule"] == "invalid")
        assert p["model"] == f"openai:{server.url}#test-model" and p["answer"] in "ABCD"
    results = json.loads((run / "results.json").read_text())
    overall = results["overall"]
    assert overall["n"] == len(preds) and overall["correct"] == sum(p["correct"] for p in preds)
    assert overall["invalid"] == sum(p["invalid"] for p in preds) > 0
    assert overall["wilson95"] == list(wilson(overall["correct"], overall["n"]))
    assert results["complete"] and results["settings"]["split"] == "test"
    assert list(results["by_triplet"]) == ["microscopy / blood / cell type"]
    assert sum(results["rules"].values()) == len(preds)
    # again: every answer from the run's cache, the same results
    before = len(server.log)
    cli("eval", "vqa", loom, "--model", f"openai:{server.url}#test-model", "--out", run, "-q")
    assert len(server.log) == before
    assert json.loads((run / "results.json").read_text())["overall"] == overall
    # circular: every rotation asked; right only when all rotations are
    circ = tmp_path / "circular"
    cli("eval", "vqa", loom, "--model", f"openai:{server.url}#test-model", "--out", circ, "--circular", "-q")
    cpreds = pq.read_table(circ / "predictions.parquet").to_pylist()
    per_question = {}
    for p in cpreds:
        per_question.setdefault(p["record_id"], []).append(p)
    assert all(len(v) == len(v[0]["options"]) for v in per_question.values())
    cres = json.loads((circ / "results.json").read_text())["overall"]
    assert cres["correct"] == sum(all(p["correct"] for p in v) for v in per_question.values())
    # the paired comparison of the two runs
    cmp = json.loads(cli("eval", "compare", run, circ, "--json").stdout)
    assert cmp["shared"] == len(test_ids) and cmp["same_records"]
    assert cmp["b_right_a_wrong"] == 0  # circular never gains a question
    assert cmp["difference"] == pytest.approx(cres["accuracy"] - overall["accuracy"])


def test_replies_cut_at_max_tokens_are_counted_apart_from_invalid(loom, server, tmp_path):
    """A reasoning model's reply cut at --max-tokens (finish_reason length) is never parsed (its letter may be
    a thought it took back), counts wrong and is reported apart from invalid; the default leaves room to think."""
    cut_off = lambda prompt: question_of(prompt)[1] % 2 == 1  # noqa: E731
    server.answer = lambda prompt: "<think>Option A looks likely, but the margins" if cut_off(prompt) else "A"
    server.finish = lambda prompt: "length" if cut_off(prompt) else "stop"
    run = tmp_path / "run"
    cli("eval", "vqa", loom, "--model", f"openai:{server.url}#m", "--out", run, "-q")
    assert set(server.max_tokens) == {2048}  # not 64: a reasoning model must reach its letter
    preds = pq.read_table(run / "predictions.parquet").to_pylist()
    cut = [p for p in preds if p["finish_reason"] == "length"]
    assert cut and len(cut) < len(preds)
    assert all(p["rule"] == "truncated" and p["truncated"] and not p["invalid"] and not p["correct"] for p in cut)
    assert all(p["rule"] == "letter" and not p["truncated"] for p in preds if p["finish_reason"] == "stop")
    results = json.loads((run / "results.json").read_text())
    assert results["overall"]["truncated"] == len(cut) and results["overall"]["invalid"] == 0
    assert results["rules"]["truncated"] == len(cut)
    assert "max-tokens" in results["counting"]["truncated"] and "counted wrong" in results["counting"]["invalid"]
    # run again from the cache: the finish reason was cached with the reply
    before = len(server.max_tokens)
    proc = cli("eval", "vqa", loom, "--model", f"openai:{server.url}#m", "--out", run)
    assert len(server.max_tokens) == before and f"truncated: {len(cut)} replies" in proc.stdout
    assert json.loads((run / "results.json").read_text())["overall"] == results["overall"]
    # --max-tokens goes to the server
    cli("eval", "vqa", loom, "--model", f"openai:{server.url}#m", "--out", tmp_path / "short", "--max-tokens", "300", "-q")
    assert set(server.max_tokens[before:]) == {300}


def judge_reply(prompt: str) -> str:
    """The judge: the first letter of "X or Y"; a hedge for an answer that names nothing."""
    answer = prompt.split("Its answer was:\n\n", 1)[1].split("\n\n", 1)[0]
    return answer[0] if " or " in answer else "It could be B, hard to say."


def test_a_judge_maps_invalid_answers_and_every_call_is_logged(loom, server, tmp_path):
    judge = Server(judge_reply)
    try:
        run = tmp_path / "run"
        args = [
            "eval",
            "vqa",
            loom,
            "--model",
            f"openai:{server.url}#m",
            "--out",
            run,
            "--judge",
            f"openai:{judge.url}#judge",
            "-q",
        ]
        proc = cli(*args)
        assert "invalid answers mapped" in proc.stdout
        preds = pq.read_table(run / "predictions.parquet").to_pylist()
        log = [json.loads(line) for line in (run / "judge.jsonl").read_text().splitlines()]
        invalid_first = [p for p in preds if expected(p["prompt"])[1] == "invalid"]
        assert len(log) == len(judge.log) == len(invalid_first) > 0  # only the invalid ones go to the judge
        for p in invalid_first:
            entry = next(e for e in log if e["record_id"] == p["record_id"])
            assert entry["answer"] == p["raw"] and entry["prompt"] == p["prompt"]
            assert entry["judge_reply"] == (p["raw"][0] if " or " in p["raw"] else "It could be B, hard to say.")
            if " or " in p["raw"]:  # the judge names the first letter: mapped
                assert (p["parsed"], p["rule"], p["invalid"]) == (p["raw"][0], "judge", False)
                assert entry["decided"] == p["raw"][0]
            else:  # a hedge is no bare letter: still invalid
                assert (p["parsed"], p["rule"], p["invalid"]) == ("", "invalid", True) and entry["decided"] == "invalid"
        results = json.loads((run / "results.json").read_text())
        assert results["judge"]["mapped"] == sum(" or " in p["raw"] for p in invalid_first) > 0
        assert results["settings"]["judge"] == f"openai:{judge.url}#judge"
        assert results["overall"]["invalid"] == sum(p["invalid"] for p in preds)
        before = len(judge.log)
        cli(*args)  # again: the judge's answers come from its cache
        assert len(judge.log) == before
        proc = cli(
            "eval",
            "vqa",
            loom,
            "--model",
            f"openai:{server.url}#m",
            "--out",
            tmp_path / "x",
            "--judge",
            "medloom:/nowhere",
            check=False,
        )
        assert proc.returncode == 2 and "the judge is a chat model" in proc.stderr
    finally:
        judge.close()


def test_an_outage_stops_the_run_keeps_answers_and_resumes(loom, server, tmp_path):
    run = tmp_path / "run"
    server.down_after = 2
    proc = cli(
        "eval",
        "vqa",
        loom,
        "--model",
        f"openai:{server.url}#m",
        "--out",
        run,
        "--retries",
        "0",
        "--max-failures",
        "3",
        "--concurrency",
        "1",
        "-q",
        check=False,
    )
    assert proc.returncode == 1 and "run the same command again" in proc.stderr and "HTTP 500" in proc.stderr
    results = json.loads((run / "results.json").read_text())
    assert not results["complete"] and results["answered"] == 2 and results["failed"] == 3
    assert len(pq.read_table(run / "predictions.parquet")) == 2
    server.down_after = None
    cli("eval", "vqa", loom, "--model", f"openai:{server.url}#m", "--out", run, "-q")
    results = json.loads((run / "results.json").read_text())
    assert results["complete"] and results["answered"] == results["asked"]
    assert len(server.log) == results["asked"]  # the two answered before the outage were not asked again


def test_timeout_is_a_deadline_per_answer_even_when_the_server_trickles(loom, server, tmp_path):
    """A server that sends its reply a byte every 50 ms (a socket time-out restarts with every byte) is cut off
    when an answer's --timeout is up, retries included: each question is asked once, never answered."""
    server.trickle = 0.05  # a reply of ~80 bytes would take 4 s
    run = tmp_path / "run"
    proc = cli(
        "eval",
        "vqa",
        loom,
        "--model",
        f"openai:{server.url}#m",
        "--out",
        run,
        "--timeout",
        "1",
        "--retries",
        "3",
        "--max-failures",
        "2",
        "--concurrency",
        "1",
        "-q",
        check=False,
    )
    assert proc.returncode == 1 and "no complete reply within 1 s" in proc.stderr, proc.stderr
    results = json.loads((run / "results.json").read_text())
    assert results["answered"] == 0 and results["failed"] == 2
    assert results["overall"]["n"] == 0 and results["overall"]["accuracy"] is None  # null, never a 0.0 result
    assert len(server.log) == 2  # no retry: the deadline of each answer was spent on its first try
    assert server.sent < 2 * 40  # cut off early in each reply, not read to the end


def test_bad_input_is_a_clear_error(loom, server, tmp_path):
    proc = cli("eval", "vqa", loom, "--model", "gpt4", "--out", tmp_path / "a", check=False)
    assert proc.returncode == 2 and "openai:http://HOST:PORT/v1#MODEL" in proc.stderr
    proc = cli("eval", "vqa", loom, "--model", f"openai:{server.url}#m", "--out", tmp_path / "b", "--where", "false", check=False)
    assert proc.returncode == 2 and "no multiple-choice question" in proc.stderr
    other = tmp_path / "plan"
    other.mkdir()
    (other / "manifest.json").write_text("{}")
    (other / "train.txt").write_text("x/a\n")
    (other / "test.txt").write_text("elsewhere/b_png\n")
    proc = cli(
        "eval", "vqa", loom, "--model", f"openai:{server.url}#m", "--out", tmp_path / "c", "--experiment", other, check=False
    )
    assert proc.returncode == 2 and "another loom" in proc.stderr
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "mine.txt").write_text("a user's file")
    proc = cli("eval", "vqa", loom, "--model", f"openai:{server.url}#m", "--out", tmp_path / "d", check=False)
    assert proc.returncode == 2 and "did not write" in proc.stderr
    assert (tmp_path / "d" / "mine.txt").read_text() == "a user's file"
    assert server.log == []
