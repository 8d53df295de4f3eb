"""`medloom serve`: the loom in a browser (Starlette, served by uvicorn; `pip install 'medloom[web]'`).

What keeps it safe to run on a researcher's only copy of a dataset:
- it binds to loopback unless told otherwise, and then only with a token (`--token`), sent once as `?token=`
  (answered by a redirect to the same page without it, so it leaves the address bar) and
  kept in a cookie named after the server's port, whose value is derived from the token (browsers send a
  host's cookies to all its ports: another server there neither locks this one out nor learns the token),
  or as `Authorization: Bearer`;
- a request naming a host the server was not bound to is refused (DNS rebinding): loopback names on
  loopback, the address given to `--host`, any IP address and the machine's names on 0.0.0.0, and the names
  given to `--allow-host`; compared without case;
- files are served by record id only: the id is looked up in the catalog, and the file is the one the
  catalog names under its source's root; no path from a request is ever opened;
- every write needs the page's CSRF token, and a browser's `Origin` / `Sec-Fetch-Site` must name this
  server; writes are refused under `--read-only` and take the loom's lock;
- the grid's WHERE box runs in a sandbox process with a time and a memory budget (sandbox.py);
- every text from data goes through Jinja's autoescaping, and the page scripts set text, never HTML;
- a bad request is a 4xx answer with a message, an unexpected error a 500 without a traceback.
"""

from __future__ import annotations

import secrets
import threading
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape

from .. import layout
from ..imaging import DecodeError
from ..locks import LockHeld
from ..outputs import ForeignFileError
from .guard import Guard, Hosts
from .index import LoomIndex, meta_facts
from .overview import overview
from .params import PROPOSAL_COLORS, label_colors, proposal_color, required, whole
from .pixels import PixelRoutes
from .query import FACET_TITLES, FACETS, PAGE, BadRequest, NotFound, Query, page_number
from .thumbs import THUMBS

MAX_FORM = 64 * 1024
STATIC = {"app.js": "application/javascript", "app.css": "text/css"}


def templates() -> Environment:
    env = Environment(
        loader=PackageLoader("medloom.web", "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(urlencode=urlencode, facet_titles=FACET_TITLES)
    return env


def static_text(name: str) -> str:
    return resources.files("medloom.web").joinpath(f"static/{name}").read_text(encoding="utf-8")


class LoomApp(PixelRoutes):
    """The app's state: the loom's index, its settings, the CSRF token; handlers are its methods."""

    def __init__(
        self,
        loom: Path,
        *,
        read_only: bool = False,
        token: str | None = None,
        host: str = "127.0.0.1",
        taxonomy: Path | None = None,
        allow_hosts: tuple[str, ...] | list[str] = (),
        filter_seconds: float = 10.0,
        filter_memory_mb: int = 1024,
    ):
        self.loom = Path(loom)
        self.index = LoomIndex(self.loom, filter_seconds=filter_seconds, filter_memory_mb=filter_memory_mb)
        self.read_only = read_only
        self.token = token
        self.host = host
        self.hosts = Hosts(host, allow_hosts)
        self.taxonomy = taxonomy
        self.csrf = secrets.token_urlsafe(32)
        self.env = templates()
        self.thumbs = self.loom / THUMBS
        self._thumb_lock = threading.Lock()
        self._thumb_stamp: int | None = None
        self._thumb_keys: dict = {}
        self._burned: dict[tuple, str] = {}

    # -- plumbing -------------------------------------------------------------------------------------------

    def page(self, name: str, **context) -> str:
        return self.env.get_template(name).render(csrf=self.csrf, read_only=self.read_only, static=False, **context)

    def close(self) -> None:
        """Stop what runs beside the app (the filters' processes); a filter in flight ends at once."""
        self.index.close()

    def asgi(self):
        from starlette.applications import Starlette
        from starlette.middleware import Middleware
        from starlette.routing import Route

        get, post = ["GET"], ["POST"]
        routes = [
            Route("/", self.home, methods=get),
            Route("/grid", self.grid, methods=get),
            Route("/record", self.record, methods=get),
            Route("/thumb", self.thumb, methods=get),
            Route("/image", self.image, methods=get),
            Route("/mask", self.mask, methods=get),
            Route("/similar", self.similar, methods=get),
            Route("/clusters", self.clusters, methods=get),
            Route("/cluster", self.cluster, methods=get),
            Route("/cluster/label", self.cluster_label, methods=post),
            Route("/concepts/apply", self.concepts_preview, methods=get),
            Route("/concepts/apply", self.concepts_apply, methods=post),
            Route("/duplicates", self.duplicates, methods=get),
            Route("/duplicates/keep", self.duplicates_keep, methods=post),
            Route("/audit", self.audit, methods=get),
            Route("/audit/review", self.audit_review, methods=post),
            Route("/audit/undo", self.audit_undo, methods=post),
            Route("/quarantine", self.quarantine, methods=get),
            Route("/static/{name}", self.static, methods=get),
        ]
        app = Starlette(
            routes=routes,
            middleware=[Middleware(Guard, app_state=self)],
            exception_handlers={
                BadRequest: self.error,
                NotFound: self.error,
                LockHeld: self.error,
                ForeignFileError: self.error,
                DecodeError: self.error,
                404: self.error,
                405: self.error,
                Exception: self.error,
            },
        )
        app.state.medloom = self
        return app

    async def error(self, request, exc):
        from starlette.exceptions import HTTPException
        from starlette.responses import HTMLResponse

        if isinstance(exc, HTTPException):
            status, message = exc.status_code, exc.detail or "not found"
        elif isinstance(exc, BadRequest):
            status, message = 403 if isinstance(exc, Forbidden) else 400, str(exc)
        elif isinstance(exc, NotFound):
            status, message = 404, str(exc)
        elif isinstance(exc, LockHeld):
            status, message = 409, f"{exc} (the change was not saved; try again when it has finished)"
        elif isinstance(exc, ForeignFileError):
            status, message = 409, f"{exc} (nothing was saved)"
        elif isinstance(exc, DecodeError):
            status, message = 422, f"the image could not be read: {exc}"
        else:
            status, message = 500, f"internal error ({type(exc).__name__}); the app keeps serving"
        html = self.env.get_template("error.html").render(
            status=status, message=message, static=False, csrf=self.csrf, read_only=self.read_only
        )
        return HTMLResponse(html, status_code=status)

    async def form(self, request) -> dict[str, list[str]]:
        """A POSTed form, after the checks every write passes: not read-only, the CSRF token, a bounded body."""
        if self.read_only:
            raise Forbidden("this app is read-only (--read-only): nothing is written")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM:
                raise BadRequest(f"the form is larger than {MAX_FORM // 1024} KiB")
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise BadRequest("the form is not UTF-8") from None
        sent = (fields.get("csrf") or [request.headers.get("x-csrf-token", "")])[0]
        if not secrets.compare_digest(sent.encode(), self.csrf.encode()):
            raise Forbidden("missing or wrong CSRF token: reload the page and try again")
        # a browser says where a write comes from: a page of another site or port never writes here
        site = request.headers.get("sec-fetch-site")
        if site is not None and site != "same-origin":
            raise Forbidden(f"a write from another site is refused (Sec-Fetch-Site: {site}); use this app's own pages")
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc.lower() != (request.headers.get("host") or "").lower():
            raise Forbidden(f"a write from another origin ({origin}) is refused; use this app's own pages")
        return fields

    # -- pages ----------------------------------------------------------------------------------------------

    def home(self, request):
        from starlette.responses import HTMLResponse

        return HTMLResponse(self.page("overview.html", o=overview(self.index)))

    def grid(self, request):
        from starlette.responses import HTMLResponse

        query = Query.from_params(request.query_params)
        total, rows = self.index.page(query)
        facets = self.index.facets(query)
        base = [(k, v) for k, vs in query.facets.items() for v in vs] + ([("where", query.where)] if query.where else [])

        def toggle(name: str, value: str) -> str:
            pairs = [(k, v) for k, v in base if not (k == name and v == value)]
            if len(pairs) == len(base):
                pairs.append((name, value))
            return "/grid?" + urlencode(pairs)

        pages = max(1, -(-total // PAGE))
        nav = {
            "prev": "/grid?" + urlencode(base + [("page", query.page - 1)]) if query.page > 0 else "",
            "next": "/grid?" + urlencode(base + [("page", query.page + 1)]) if query.page + 1 < pages else "",
        }
        return HTMLResponse(
            self.page(
                "grid.html",
                rows=rows,
                total=total,
                facets=facets,
                query=query,
                toggle=toggle,
                facet_names=FACETS,
                page=query.page,
                pages=pages,
                nav=nav,
                columns=self.index.columns(),
            )
        )

    def record(self, request):
        from starlette.responses import HTMLResponse

        from ..sources import RENDERED_READERS

        record_id = required(request.query_params, "id")
        row = self.index.record(record_id)
        sources = self.index.sources()
        reader = sources.get(row["source"], {}).get("reader", "")
        render = row.get("render") or {}
        window = (
            (render.get("window_center"), render.get("window_width"))
            if reader in RENDERED_READERS and render.get("window_center") is not None
            else None
        )
        rois = [dict(r, index=i) for i, r in enumerate(row.get("rois") or [])]
        colors = label_colors([r["label"] for r in rois])
        proposals = [dict(p, index=i, color=proposal_color(p["accepted"])) for i, p in enumerate(self.index.proposals(record_id))]
        has_embeddings = layout.embeddings_dir(self.loom).is_dir()
        from .burned import burned_in

        key = (record_id, row.get("file_hash"))
        burned = self._burned.get(key)
        if burned is None:  # the file is decoded for it: once per record and file content
            burned = burned_in(self.index.render_row(record_id), sources[row["source"]]) if row["source"] in sources else ""
            if len(self._burned) > 4096:
                self._burned.clear()
            self._burned[key] = burned
        return HTMLResponse(
            self.page(
                "record.html",
                r=row,
                rois=rois,
                colors=colors,
                proposals=proposals,
                proposal_colors=PROPOSAL_COLORS,
                window=window,
                reader=reader,
                meta=meta_facts(row),
                ann=row["_annotation"],
                has_embeddings=has_embeddings,
                burned=burned,
            )
        )

    def similar(self, request):
        from starlette.responses import HTMLResponse

        record_id = required(request.query_params, "id")
        self.index.record(record_id)  # 404 for an unknown id
        found = self.index.neighbours(record_id)
        return HTMLResponse(self.page("similar.html", record_id=record_id, found=found))

    def clusters(self, request):
        from starlette.responses import HTMLResponse

        from .decisions import agreement

        report, votes, warnings = agreement(self.loom, self.taxonomy)
        rows = self.index.clusters()
        previews = self.index.cluster_previews(6)
        return HTMLResponse(
            self.page(
                "clusters.html",
                clusters=rows,
                previews=previews,
                report=report,
                votes=votes,
                warnings=warnings,
                loom=str(self.loom),
            )
        )

    def cluster(self, request):
        from starlette.responses import HTMLResponse

        from ..curate.concepts import load_taxonomy
        from .decisions import agreement

        c = str(whole(required(request.query_params, "c"), "cluster"))
        members = self.index.cluster_members(c)
        report, votes, warnings = agreement(self.loom, self.taxonomy)
        return HTMLResponse(
            self.page(
                "cluster.html",
                c=c,
                members=members,
                taxonomy=load_taxonomy(self.taxonomy),
                votes=votes.get(int(c), []),
                decision=report["decisions"].get(c),
                share=report["agreement"].get(c),
                warnings=warnings,
            )
        )

    async def cluster_label(self, request):
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import RedirectResponse

        from .decisions import label_cluster

        fields = await self.form(request)
        c = whole(first(fields, "cluster"), "cluster")
        self.index.cluster_members(str(c), 1)  # 404 for a cluster that does not exist
        await run_in_threadpool(
            label_cluster,
            self.loom,
            first(fields, "annotator"),
            c,
            first(fields, "panel", ""),
            first(fields, "global"),
            fields.get("local", []),
            self.taxonomy,
        )
        return RedirectResponse(f"/cluster?c={c}&saved=1", status_code=303)

    def concepts_preview(self, request):
        """What an apply would change, cluster by cluster, before anything is written."""
        from starlette.responses import HTMLResponse

        from .decisions import Labels

        labels = Labels(self.loom, self.taxonomy)
        report, _ = labels.report()
        now = self.index.cluster_concepts()
        changes = []
        for c, n, _ in self.index.clusters():
            d = report["decisions"].get(c)
            after = (d["global"], tuple(d["local"]), d["panel"]) if d else ("unlabelled", (), "")
            before = now.get(c)
            if before != after:
                changes.append({"cluster": c, "records": n, "before": before, "after": after})
        kept = sorted(name for name, _ in labels.applied or [])
        return HTMLResponse(
            self.page(
                "concepts.html",
                labels=labels,
                warnings=labels.warnings,
                report=report,
                changes=changes,
                kept=kept,
                applied_before=bool(now),
                votes_kept=labels.applied is not None,
                files=[p.relative_to(self.loom) for p in labels.files],
                plan=labels.plan(),
            )
        )

    async def concepts_apply(self, request):
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import RedirectResponse

        from ..curate.concepts import ConceptError
        from .decisions import apply_concepts

        fields = await self.form(request)
        plan = first(fields, "plan", "")
        if not plan:
            raise BadRequest("look at what the apply changes first: open /concepts/apply and confirm there")
        try:
            await run_in_threadpool(apply_concepts, self.loom, plan, self.taxonomy)
        except ConceptError as e:
            raise BadRequest(str(e)) from None
        return RedirectResponse("/clusters?applied=1", status_code=303)

    def duplicates(self, request):
        from starlette.responses import HTMLResponse

        page = page_number(request.query_params.get("page"))
        total, groups = self.index.duplicate_groups(page)
        return HTMLResponse(self.page("duplicates.html", groups=groups, total=total, page=page))

    async def duplicates_keep(self, request):
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import RedirectResponse

        from .decisions import keep_duplicate

        fields = await self.form(request)
        group = whole(first(fields, "group"), "group")
        await run_in_threadpool(keep_duplicate, self.loom, group, first(fields, "keep"), first(fields, "curator"))
        page = page_number(first(fields, "page", "0"))
        return RedirectResponse(f"/duplicates?page={page}#group-{group}", status_code=303)

    def audit(self, request):
        from starlette.responses import HTMLResponse

        from ..annotate.reviews import read_reviews
        from .audit import PER_PAGE, STATES, pending, verdicts

        state = request.query_params.get("state") or "flagged"
        page = page_number(request.query_params.get("page"))
        total, rows = self.index.audit(state, page, PER_PAGE)
        pages = max(1, -(-total // PER_PAGE))
        if not rows and page >= pages and total:  # past the end (the queue shrank): its last page
            page = pages - 1
            total, rows = self.index.audit(state, page, PER_PAGE)
        entries = (
            {(r["id"], r["field"], r["previous"], r["by"], r["at"]): r for r in read_reviews(self.loom) if not r.get("undone")}
            if any(a.get("reviews") for a in rows)
            else {}
        )
        items = [(a, pending(a, state) if state != "reviewed" else [], verdicts(a, entries)) for a in rows]
        return HTMLResponse(self.page("audit.html", items=items, state=state, states=STATES, page=page, pages=pages, total=total))

    def _back_to_audit(self, fields: dict, record_id: str):
        from starlette.responses import RedirectResponse

        state = first(fields, "state", "flagged") or "flagged"
        page = page_number(first(fields, "page", "0"))
        return RedirectResponse("/audit?" + urlencode({"state": state, "page": page}) + f"#a-{record_id}", status_code=303)

    async def audit_review(self, request):
        from starlette.concurrency import run_in_threadpool

        from .decisions import review_text

        fields = await self.form(request)
        await run_in_threadpool(
            review_text,
            self.loom,
            first(fields, "id"),
            first(fields, "field"),
            first(fields, "decision"),
            first(fields, "reviewer"),
            first(fields, "text", ""),
            first(fields, "seen", ""),
        )
        return self._back_to_audit(fields, first(fields, "id"))

    async def audit_undo(self, request):
        from starlette.concurrency import run_in_threadpool

        from .decisions import undo_text

        fields = await self.form(request)
        await run_in_threadpool(
            undo_text,
            self.loom,
            first(fields, "id"),
            first(fields, "field"),
            first(fields, "previous", ""),
            first(fields, "by"),
            first(fields, "at"),
            first(fields, "reviewer"),
        )
        return self._back_to_audit(fields, first(fields, "id"))

    def quarantine(self, request):
        from starlette.responses import HTMLResponse

        reason = request.query_params.get("reason") or None
        by_reason, rows = self.index.quarantine(reason)
        return HTMLResponse(self.page("quarantine.html", by_reason=by_reason, rows=rows, reason=reason))

    def static(self, request):
        from starlette.responses import Response

        name = request.path_params["name"]
        if name not in STATIC:
            raise NotFound(f"no static file {name!r}")
        return Response(static_text(name), media_type=STATIC[name], headers={"Cache-Control": "max-age=300"})


class Forbidden(BadRequest):
    """A write refused (read-only app, CSRF token): a 403 answer."""


def first(fields: dict[str, list[str]], key: str, default: str | None = None) -> str:
    values = fields.get(key)
    if not values:
        if default is None:
            raise BadRequest(f"`{key}` is missing from the form")
        return default
    return values[0]


def make_app(loom: Path, **kwargs):
    """The ASGI app for a loom (what uvicorn serves, and what tests drive)."""
    return LoomApp(loom, **kwargs).asgi()
