"""The loom in a browser (`serve`) and in one HTML file (`report`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .app import app
from .common import (
    Address,
    Executor,
    Loom,
    Quiet,
    err,
    executor_spec,
    fail,
    out,
    resolve_loom,
)


@app.command()
def report(
    loom: Loom, out_file: Annotated[Path, typer.Option("--out", help="The HTML file to write.")] = Path("report.html")
) -> None:
    """Write the loom's overview (counts per MAT triplet, source, split, licence, label, quarantine reason, with
    charts) as one HTML file that opens offline."""
    from ..web.report import write_report

    try:
        path = write_report(resolve_loom(loom), out_file)
    except (FileNotFoundError, FileExistsError, IsADirectoryError) as e:
        fail(str(e))
    out.print(f"report: {path}", highlight=False)


@app.command()
def serve(
    loom: Loom,
    host: Annotated[str, typer.Option(help="Address to listen on; anything but loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).", min=0, max=65535)] = 8765,
    read_only: Annotated[bool, typer.Option("--read-only", help="Refuse every write (labels, choices, reviews).")] = False,
    token: Annotated[
        str | None, typer.Option(help="Access token, needed when --host is not loopback (use `auto` for a random one).")
    ] = None,
    taxonomy: Annotated[Path | None, typer.Option(help="Concept taxonomy YAML for cluster labels (default: medloom's).")] = None,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            help="Another host name requests may use (a DNS name or proxy in front of this "
            "server); repeat for several. Others are refused (DNS rebinding).",
        ),
    ] = None,
    filter_timeout: Annotated[
        float, typer.Option(help="Seconds a grid WHERE filter may run before it is stopped.", min=0.1)
    ] = 10.0,
    filter_memory: Annotated[int, typer.Option(help="MiB a grid WHERE filter may use before it is stopped.", min=16)] = 1024,
    workers: Annotated[int, typer.Option(help="Processes making the thumbnails (0: one per core).", min=0)] = 0,
    executor: Executor = None,
    address: Address = None,
    quiet: Quiet = False,
) -> None:
    """Look at the loom in a browser: overview, grid with facets, records with their ROIs, clusters to label,
    duplicates to resolve, generated texts to audit. Thumbnails missing from the cache are made first."""
    import secrets
    import socket

    from ..web.guard import is_loopback

    loom = resolve_loom(loom)
    if not is_loopback(host) and not token:
        fail(f"--host {host} is reachable from other machines: pass --token SECRET (or --token auto)")
    if token == "auto":
        token = secrets.token_urlsafe(24)
    try:
        import uvicorn

        from ..web.app import make_app
    except ImportError as e:
        fail(f"the web app needs its extra: pip install 'medloom[web]' ({e.name} is missing)")
    from .. import catalog
    from ..view.render import render_sources
    from ..web.thumbs import build_thumbnails

    try:
        con = catalog.connect(loom)
    except FileNotFoundError as e:
        fail(str(e))
    made = build_thumbnails(
        loom, con, render_sources(catalog.read_manifest(loom)), workers=executor_spec(executor, address, workers), quiet=quiet
    )
    if made["failed"]:
        err.print(f"thumbnails: {made['failed']} record(s) could not be rendered (shown as broken images)", highlight=False)
    application = make_app(
        loom,
        read_only=read_only,
        token=token,
        host=host,
        taxonomy=taxonomy,
        allow_hosts=list(allow_host or []),
        filter_seconds=filter_timeout,
        filter_memory_mb=filter_memory,
    )
    shown = f"[{host}]" if ":" in host else host
    # bound and listening here, so a port in use is one clear line and the URL printed already answers
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        fail(f"cannot listen on {shown}:{port}: {e.strerror or e}; choose another --port (0: any free one)")
    url = f"http://{shown}:{sock.getsockname()[1]}/" + (f"?token={token}" if token else "")
    out.print(f"medloom serve: {url}  ({made['records']} records; Ctrl-C stops)", highlight=False)
    sys.stdout.flush()
    state = application.state.medloom

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            # SIGTERM or Ctrl-C: stop the filters in flight too, or uvicorn waits for their requests to end
            state.close()
            super().handle_exit(sig, frame)

    try:
        Server(uvicorn.Config(application, log_level="warning", access_log=False, timeout_graceful_shutdown=5)).run(
            sockets=[sock]
        )
    finally:
        state.close()
