"""The LLM back-end against a real local HTTP server speaking the OpenAI chat completions API: bounded
concurrency, retries on 429/5xx and time-outs, the on-disk cache, resuming after a kill, images as data
URLs, and LLM text that fails its check being replaced by the template text."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import sys
import threading
import time

import pytest
from conftest import cli, kill_when, make_image, rows, run_ingest, write_recipe
from PIL import Image

from medloom.annotate import AnnotateSettings, annotate
from medloom.models.chat import LLMClient, chat_url


class ChatServer:
    """POST /v1/chat/completions. Caption requests are answered "Rewritten: <caption>" except for records
    labelled covid-19, which get a text about the wrong modality and anatomy; questions are answered
    "Please answer: <question>". `plan[text]` lists failures to give first ("429", "500", "slow", "400")."""

    def __init__(self, delay: float = 0.0):
        self.delay, self.plan, self.log, self.bodies = delay, {}, [], []
        self.describe = lambda description, prompt: f"Rewritten: {description}"  # ROI descriptions
        self.caption = lambda caption, prompt: "A CT scan of the brain." if "covid-19" in prompt else f"Rewritten: {caption}"
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def reply(self, code: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    self.handle_chat(body)
                finally:
                    with outer.lock:
                        outer.in_flight -= 1

            def handle_chat(self, body):
                if self.path != "/v1/chat/completions":
                    return self.reply(404, {"error": "not found"})
                user = body["messages"][-1]["content"]
                text = user if isinstance(user, str) else next(p["text"] for p in user if p["type"] == "text")
                key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
                with outer.lock:
                    outer.log.append(key)
                    outer.bodies.append(body)
                    todo = outer.plan.get(text.splitlines()[-1], [])
                    action = todo.pop(0) if todo else "ok"
                time.sleep(outer.delay)
                if action in ("429", "500", "400"):
                    return self.reply(int(action), {"error": action}, {"Retry-After": "0"} if action == "429" else {})
                if action == "wait":  # an HTTP date an hour from now
                    return self.reply(
                        503,
                        {"error": "busy"},
                        {"Retry-After": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 3600))},
                    )
                if action == "huge":
                    return self.reply(200, {"choices": [{"message": {"content": "x" * (2 << 20)}}]})
                if action == "slow":
                    time.sleep(1.5)
                if "Description to rewrite: " in text:
                    answer = outer.describe(text.split("Description to rewrite: ", 1)[1].splitlines()[0], text)
                elif "Caption to rewrite: " in text:
                    answer = outer.caption(text.split("Caption to rewrite: ", 1)[1].splitlines()[0], text)
                if "Question to rephrase: " in text:
                    question = text.split("Question to rephrase: ", 1)[1].splitlines()[0]
                    answer = f"Please answer: {question}"
                return self.reply(
                    200,
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "model": body["model"],
                        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}],
                    },
                )

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def server():
    s = ChatServer(delay=0.05)
    yield s
    s.close()


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": f"Question to rephrase: {text}\nRephrase it."}]


def test_chat_url():
    assert chat_url("http://h:8000") == "http://h:8000/v1/chat/completions"
    assert chat_url("http://h:8000/v1/") == "http://h:8000/v1/chat/completions"
    assert chat_url("http://h/v1/chat/completions") == "http://h/v1/chat/completions"


def test_concurrency_retries_timeouts_and_cache(server, tmp_path):
    client = LLMClient(server.url, "m", tmp_path / "cache", concurrency=3, retries=3, backoff=0.01, timeout=1.0)
    msgs = [ask(f"q{i}") for i in range(12)]
    # failures are keyed by the last line, which is the same for all: give the first three requests trouble
    server.plan["Rephrase it."] = ["429", "500", "slow"]
    answers = client.complete_many(msgs)
    assert answers == [f"Please answer: q{i}" for i in range(12)]
    assert 2 <= server.max_in_flight <= 3
    assert client.stats.answered == 12 and client.stats.failed == 0
    assert client.stats.requests == 15  # 12 answers + a 429, a 500 and a time-out retried
    before = len(server.log)
    again = LLMClient(server.url, "m", tmp_path / "cache", concurrency=3)
    assert again.complete_many(msgs) == answers and len(server.log) == before and again.stats.cached == 12
    server.plan["Rephrase it."] = ["400"]
    refused = LLMClient(server.url, "m", tmp_path / "other", retries=3, backoff=0.01)
    assert refused.complete_many([ask("x")]) == [None] and refused.stats.requests == 1  # a 400 is not retried
    assert "HTTP 400" in refused.stats.errors[0]


def test_replies_and_waits_are_bounded(server, tmp_path):
    client = LLMClient(server.url, "m", tmp_path / "cache", retries=3, backoff=0.01, max_wait=30, max_response_bytes=1 << 20)
    server.plan["Rephrase it."] = ["wait", "huge"]
    assert client.complete_many([ask("a")]) == [None]
    assert client.stats.requests == 1 and "over the limit of 30 s" in client.stats.errors[0]  # not retried
    assert client.complete_many([ask("b")]) == [None]
    assert client.stats.requests == 2 and "over the limit of 1048576 bytes" in client.stats.errors[1]
    assert client.complete_many([ask("c")]) == ["Please answer: c"]


@pytest.fixture
def loom(tmp_path):
    for i in range(9):
        make_image(tmp_path / "cxr" / ("normal", "pneumonia", "covid-19")[i % 3] / f"c{i}.png", size=(40, 30), seed=i)
    recipe = write_recipe(
        tmp_path, [dict(name="cxr", reader="imagefolder", path="cxr", modality="X-ray", anatomy="chest", task="disease")]
    )
    loom_dir, _ = run_ingest(recipe)
    return loom_dir


def test_llm_rewrites_are_checked_and_bad_ones_replaced(server, loom):
    settings = AnnotateSettings(rois=False, llm_url=server.url, llm_model="test-model", llm_images=True, llm_concurrency=2)
    report = annotate(loom, settings, workers=1, quiet=True)
    got = {r["id"]: r for r in rows(loom, "SELECT a.*, r.labels FROM annotations a JOIN records r USING (id)")}
    for r in got.values():
        if r["labels"] == ["covid-19"]:
            assert r["caption"] == r["template_caption"] and r["caption_source"].startswith("template")
            assert "llm caption does not name 'covid-19'" in r["flags"]
            assert any(f.startswith("llm caption names modality 'CT'") for f in r["flags"])
        else:
            assert r["caption"] == f"Rewritten: {r['template_caption']}" and r["caption_source"] == "llm"
        mc = next(q for q in r["vqa"] if q["kind"] == "multiple-choice")
        assert mc["source"] == "llm" and mc["question"].startswith("Please answer: ")
        assert mc["prompt"].startswith(mc["question"] + "\nA. ")
    assert report.flags["llm caption does"] == 3 and report.llm["answered"] == 18
    # images went as base64 JPEG data URLs
    part = next(p for p in server.bodies[0]["messages"][-1]["content"] if p["type"] == "image_url")
    head, data = part["image_url"]["url"].split(",", 1)
    assert head == "data:image/jpeg;base64"
    assert Image.open(io.BytesIO(base64.b64decode(data))).size == (40, 30)
    # same request again: everything from the cache
    before = len(server.log)
    again = annotate(loom, settings, workers=1, quiet=True)
    assert len(server.log) == before and again.llm["cached"] == 18
    assert rows(loom, "SELECT count(*) AS n FROM annotations WHERE caption_source = 'llm'")[0]["n"] == 6


def test_a_killed_run_resumes_without_asking_again(loom):
    slow = ChatServer(delay=0.3)
    try:
        cache = loom / "cache" / "llm"
        cmd = [
            sys.executable,
            "-m",
            "medloom.cli",
            "annotate",
            str(loom),
            "--captions",
            "--vqa",
            "-q",
            "--llm",
            slow.url,
            "--model",
            "m",
            "--llm-concurrency",
            "2",
            "-w",
            "1",
        ]
        kill_when(cmd, lambda: cache.is_dir() and len(list(cache.rglob("*.json"))) >= 4, timeout=120)
        answered = {p.stem for p in cache.rglob("*.json")}
        assert 4 <= len(answered) < 18
        asked_before = len(slow.log)
        proc = cli(*cmd[3:], "--json")  # the resume: in this process
        report = json.loads(proc.stdout)
        again = slow.log[asked_before:]
        assert not set(again) & answered  # nothing answered before the kill was asked again
        # identical requests (two records with the same template text) are asked once
        llm = report["llm"]
        assert llm["cached"] == len(answered) and llm["failed"] == 0
        assert len({p.stem for p in cache.rglob("*.json")}) == len(answered) + llm["answered"]
        assert len(again) == len(set(again))  # and within a run nothing is asked twice
        assert not list(cache.rglob("*.tmp"))
    finally:
        slow.close()


def test_llm_needs_a_model(loom):
    proc = cli("annotate", loom, "--llm", "http://x/v1", check=False)
    assert proc.returncode == 2 and "--model" in proc.stderr


def test_templates_file_and_unknown_family(loom, tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("radiology: ['x {finding}']\n")
    proc = cli("annotate", loom, "--templates", bad, check=False)
    assert proc.returncode == 2 and "unknown task families ['radiology']" in proc.stderr
