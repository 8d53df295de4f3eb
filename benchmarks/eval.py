"""Evaluation throughput: `medloom eval vqa` against a local chat server that answers after a fixed delay.

The server's capacity at concurrency C is C / delay questions per second. In one run, on the same annotated
loom (the generated JPEG 1024x768 set, four classes, one multiple-choice question per image):

  sequential  a plain loop: prompt, the image as a 512 px JPEG data URL, one POST, wait, parse, next
  medloom     `medloom eval vqa --concurrency 8` (images rendered in the asking threads, answers cached)

It prints questions per second for both, medloom's share of the server's capacity (the target is at least
0.9x) and its ratio to the loop, for a 100 ms and a 500 ms server. Each question's image is decoded and
re-encoded at 512 px (about 27 ms of CPU per 1024x768 JPEG on this 2-core machine), so with a 100 ms server
the two cores, not the asking, bound the rate.

Usage: python benchmarks/eval.py [--n 400]
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from images import image_set, ingest_folder, parse_args, where
from PIL import Image

CONCURRENCY = 8
DELAYS = (0.1, 0.5)  # seconds the server takes per answer (a VLM on a GPU takes 0.3-2 s per question)


def _serve(delay: float, port) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def setup(self):
            super().setup()
            # as uvicorn (vLLM) and other servers do: without it, the reply's body waits for the client's
            # delayed ACK of its headers (40 ms on Linux)
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(delay)
            data = json.dumps({"choices": [{"message": {"role": "assistant", "content": "A"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    port.value = httpd.server_address[1]
    httpd.serve_forever()


def serve(delay: float):
    """The server in its own process, as a real one would be (not sharing medloom's interpreter)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    port = ctx.Value("i", 0)
    proc = ctx.Process(target=_serve, args=(delay, port), daemon=True)
    proc.start()
    while not port.value:
        time.sleep(0.01)
    return proc, f"http://127.0.0.1:{port.value}/v1"


def build_loom(folder: Path, tmp: Path) -> Path:
    from medloom.annotate import AnnotateSettings, annotate

    loom = ingest_folder(folder, tmp, split="test")
    annotate(loom, AnnotateSettings(rois=False), workers=2, quiet=True)
    return loom


def sequential(loom: Path, url: str, limit: float) -> tuple[int, float]:
    """Questions answered by a plain loop within `limit` seconds, and the seconds taken."""
    from medloom import catalog

    con = catalog.connect(loom)
    rows = con.sql("SELECT r.uri, a.vqa FROM records r JOIN annotations a USING (id) ORDER BY id").fetchall()
    root = Path(catalog.read_manifest(loom)["sources"]["bench"]["root"])
    started, n = time.perf_counter(), 0
    for uri, vqa in rows:
        q = next(x for x in vqa if x["kind"] == "multiple-choice")
        image = Image.open(root / uri).convert("RGB")
        image.thumbnail((512, 512))
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=90)
        content = [
            {"type": "text", "text": q["prompt"]},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()}},
        ]
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": content}]}).encode()
        request = urllib.request.Request(f"{url}/chat/completions", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request) as resp:
            json.loads(resp.read())["choices"][0]["message"]["content"].strip()
        n += 1
        if time.perf_counter() - started > limit:
            break
    return n, time.perf_counter() - started


def main() -> int:
    args = parse_args(__doc__, 400)
    print(where(args))
    from medloom.evaluate import VQASettings, evaluate_vqa

    folder, _ = image_set(args.data, "JPEG 1024x768", args.n, args.stage)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        loom = build_loom(folder, tmp)
        print(
            f"{'delay':>7} {'capacity/s':>10} {'loop/s':>7} {'medloom/s':>9} {'x capacity':>10} {'x loop':>7} "
            f"{'whole command/s':>15}"
        )
        for delay in DELAYS:
            server, url = serve(delay)
            n, seconds = sequential(loom, url, limit=15.0)
            seq = n / seconds
            started = time.perf_counter()
            results = evaluate_vqa(
                loom, tmp / f"run-{delay}", VQASettings(model=f"openai:{url}#m", concurrency=CONCURRENCY), quiet=True
            )
            whole = results["answered"] / (time.perf_counter() - started)
            asking = results["answered"] / results["asking_seconds"]
            server.terminate()
            capacity = CONCURRENCY / delay
            print(
                f"{delay * 1000:>5.0f}ms {capacity:>10.0f} {seq:>7.1f} {asking:>9.1f} {asking / capacity:>9.2f}x "
                f"{asking / seq:>6.1f}x {whole:>15.1f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
