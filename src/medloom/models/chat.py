"""A client for OpenAI-compatible chat completion servers (vLLM, Ollama, OpenAI).

Bounded concurrency over one connection pool; retries with exponential back-off (honouring Retry-After)
on 429, 5xx, time-outs and dropped connections; every answer cached on disk under a key made from the
request, written atomically as soon as it arrives, so a run killed half-way asks again only what it had
not been answered.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from ..errors import LLMError
from ..net import deadline, deadline_pool_manager, is_loopback, retry_after

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_RESPONSE_BYTES = 16 << 20  # a chat completion is text: anything larger is refused, never held in memory
MAX_WAIT_S = 60.0  # the longest Retry-After honoured; a server asking for more fails the request at once


def check_key_transport(url: str, allow_insecure: bool = False) -> None:
    """An API key travels only over https or to this machine, unless the user allows otherwise."""
    if allow_insecure or urlparse(url).scheme == "https" or is_loopback(url):
        return
    raise LLMError(
        f"{url}: an API key is set (OPENAI_API_KEY) and this is plain http to another machine, so the key "
        "would travel unencrypted; use https, unset the key for this server, or allow it explicitly "
        "(--llm-allow-insecure-key)"
    )


def read_capped(resp, limit: int) -> bytes:
    """A response body, at most `limit` bytes: a longer one raises before it is held in memory."""
    length = resp.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > limit:
        raise LLMError(f"the response announces {length} bytes, over the limit of {limit} bytes")
    data = resp.read(limit + 1)
    if len(data) > limit:
        raise LLMError(f"the response is over the limit of {limit} bytes")
    return data


class Reply(str):
    """An assistant's text that keeps the server's `finish_reason` ("stop", "length": cut at max_tokens; None
    when the server sent none), so a reply cut short is told apart from one that says nothing usable."""

    finish_reason: str | None = None

    @classmethod
    def of(cls, text: str, finish_reason: str | None) -> Reply:
        reply = cls(text)
        reply.finish_reason = finish_reason if isinstance(finish_reason, str) else None
        return reply


@dataclass
class LLMStats:
    requests: int = 0  # HTTP requests sent, retries included
    answered: int = 0
    cached: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def chat_url(url: str) -> str:
    """Accept a base URL (http://host:8000, http://host:8000/v1) or the full endpoint."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if not urlparse(url).path.rstrip("/").endswith("/v1"):
        url += "/v1"
    return url + "/chat/completions"


def image_part(data: bytes, mime: str = "image/jpeg") -> dict:
    """An image as the data URL multimodal chat servers accept."""
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{base64.b64encode(data).decode()}"}}


def user_message(text: str, images: list[bytes]) -> dict:
    """A user turn: the text alone, or the text and each image as a data URL for a multimodal server."""
    if not images:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [{"type": "text", "text": text}, *(image_part(b) for b in images)]}


def request_key(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class LLMClient:
    def __init__(
        self,
        url: str,
        model: str,
        cache_dir: Path,
        *,
        concurrency: int = 4,
        retries: int = 5,
        timeout: float = 120.0,
        backoff: float = 1.0,
        api_key: str | None = None,
        temperature: float = 0.0,
        max_tokens: int = 512,
        max_wait: float = MAX_WAIT_S,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        allow_insecure_key: bool = False,
        answer_deadline: float | None = None,
    ):
        """`timeout`: the most seconds one try may take, from sending the request to the last byte of the
        reply (a server trickling bytes is cut off); `answer_deadline`: the most seconds one answer may take,
        every try and back-off included (None: tries are bounded one by one)."""
        import urllib3

        self.url, self.model, self.cache_dir = chat_url(url), model, Path(cache_dir)
        self.concurrency, self.retries, self.backoff = concurrency, retries, backoff
        self.timeout, self.answer_deadline = timeout, answer_deadline
        self.temperature, self.max_tokens = temperature, max_tokens
        self.max_wait, self.max_response_bytes = max_wait, max_response_bytes
        headers = {"Content-Type": "application/json"}
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        if key:
            check_key_transport(self.url, allow_insecure_key)
            headers["Authorization"] = f"Bearer {key}"
        self.http = deadline_pool_manager(
            maxsize=concurrency,
            block=True,
            retries=False,
            headers=headers,
            timeout=urllib3.Timeout(connect=min(timeout, 30.0), read=timeout),
        )
        self._errors = (urllib3.exceptions.HTTPError, OSError)
        self.stats = LLMStats()
        self._lock = threading.Lock()

    def body(self, messages: list[dict]) -> dict:
        return {"model": self.model, "messages": messages, "temperature": self.temperature, "max_tokens": self.max_tokens}

    def _cache_path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def cached(self, body: dict) -> Reply | None:
        path = self._cache_path(request_key(body))
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return Reply.of(data["answer"], data.get("finish_reason"))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _store(self, body: dict, answer: str) -> None:
        path = self._cache_path(request_key(body))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        entry = {"model": self.model, "answer": answer, "finish_reason": getattr(answer, "finish_reason", None)}
        tmp.write_text(json.dumps(entry, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)

    def _count(self, **n: int) -> None:
        with self._lock:
            for k, v in n.items():
                setattr(self.stats, k, getattr(self.stats, k) + v)

    def complete(self, messages: list[dict]) -> str:
        """The assistant's text for one request: from the cache, or asked (and then cached)."""
        return self.answer(messages)[0]

    def answer(self, messages: list[dict]) -> tuple[str, bool]:
        """(the assistant's text, a `Reply` where the server said why it stopped; whether it came from the
        cache)."""
        body = self.body(messages)
        hit = self.cached(body)
        if hit is not None:
            self._count(cached=1)
            return hit, True
        answer = self.request(body, messages)
        self._store(body, answer)
        self._count(answered=1)
        return answer, False

    def request(self, body: dict, messages: list[dict]) -> str:
        """Ask the server (retries with back-off); raises LLMError after the last failure."""
        payload = json.dumps(body).encode()
        last = ""
        end = time.monotonic() + self.answer_deadline if self.answer_deadline else float("inf")
        for attempt in range(self.retries + 1):
            wait = None
            left = min(self.timeout, end - time.monotonic())
            if left <= 0:
                break
            with deadline(left) as cut:
                try:
                    self._count(requests=1)
                    resp = self.http.request("POST", self.url, body=payload, preload_content=False)
                    try:
                        data = read_capped(resp, self.max_response_bytes)
                    finally:
                        resp.close() if cut.end() else resp.release_conn()  # a shut socket is not pooled again
                    if cut.expired:
                        raise TimeoutError
                    if resp.status == 200:
                        choice = json.loads(data)["choices"][0]
                        answer = choice["message"]["content"]
                        if not isinstance(answer, str):
                            raise LLMError(f"no text in the answer: {data[:200]!r}")
                        return Reply.of(answer, choice.get("finish_reason"))
                    last = f"HTTP {resp.status}: {data[:200].decode(errors='replace')}"
                    if resp.status not in RETRY_STATUS:
                        break
                    wait = retry_after(resp.headers.get("Retry-After"))
                    if wait is not None and wait > self.max_wait:
                        last += f" (the server asked to wait {wait:.0f} s, over the limit of {self.max_wait:.0f} s)"
                        break
                except LLMError as e:  # over the size limit: asking again would get the same
                    last = str(e)
                    break
                except (*self._errors, TimeoutError) as e:
                    last = f"no complete reply within {left:.3g} s" if cut.expired else f"{type(e).__name__}: {e}"
                except (ValueError, KeyError, IndexError, TypeError) as e:  # a reply that is not a chat completion
                    last = f"unreadable reply: {type(e).__name__}: {e}"
                    break
            if attempt < self.retries:
                pause = wait if wait is not None else self.backoff * 2**attempt * (0.5 + random.random())
                if time.monotonic() + pause >= end:
                    last += f" (no time left for another try within the {self.answer_deadline:.3g} s per answer)"
                    break
                time.sleep(pause)
        self._count(failed=1)
        with self._lock:
            self.stats.errors.append(last)
        raise LLMError(f"{self.url}: {last}")

    def complete_many(self, requests: list[list[dict]], progress: Callable[[int], None] | None = None) -> list[str | None]:
        """Answers in request order (None where a request failed), at most `concurrency` in flight; identical
        requests (two records with the same template text) are asked once."""

        def one(messages: list[dict]) -> str | None:
            try:
                return self.complete(messages)
            except LLMError:
                return None
            finally:
                if progress:
                    progress(1)

        keys = [request_key(self.body(m)) for m in requests]
        unique = {k: m for k, m in zip(keys, requests)}
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            answers = dict(zip(unique, pool.map(one, unique.values())))
        if progress and len(unique) < len(requests):
            progress(len(requests) - len(unique))
        return [answers[k] for k in keys]
