"""What every request of `medloom serve` passes before the app sees it: the Host it names (DNS rebinding), the
access token (sent once as `?token=`, then a cookie named after the port holding a value derived from it), and
the security headers of every answer."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import socket
from urllib.parse import urlencode

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def is_loopback(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The host of a Host header, without its port (`[::1]:8765` -> `[::1]`)."""
    return header.split("]")[0] + "]" if header.startswith("[") else header.rsplit(":", 1)[0]


def normal_host(name: str) -> str:
    """A host name as compared: lower case, no trailing dot, an IPv6 address without its brackets."""
    name = name.strip().lower().rstrip(".")
    return name[1:-1] if name.startswith("[") and name.endswith("]") else name


WILDCARDS = {"0.0.0.0", "::", ""}


class Hosts:
    """The host names a request may name: loopback ones on loopback, the bound address, any IP address and
    the machine's own names on a wildcard address (an address cannot be a rebinding attacker's name), and
    the names the user allowed (`--allow-host`)."""

    def __init__(self, bound: str, allowed: tuple[str, ...] | list[str] = ()):
        self.bound = normal_host(bound)
        self.names = {normal_host(a) for a in allowed if a.strip()}
        if self.bound in WILDCARDS:
            self.names |= {"localhost", normal_host(socket.gethostname()), normal_host(socket.getfqdn())}
        else:
            self.names.add(self.bound)

    def allows(self, host: str) -> bool:
        name = normal_host(host)
        if name in self.names:
            return True
        if self.bound in WILDCARDS:
            try:
                ipaddress.ip_address(name)
                return True
            except ValueError:
                return False
        return is_loopback(self.bound) and is_loopback(name)

    def describe(self) -> str:
        what = "loopback names" if is_loopback(self.bound) else "its IP addresses" if self.bound in WILDCARDS else ""
        return ", ".join([w for w in [what] if w] + sorted(n for n in self.names if n))


def cookie_name(scope) -> str:
    """The token cookie's name, one per server port: a browser sends a host's cookies to all its ports."""
    server = scope.get("server") or ("", 0)
    return f"medloom_token_{server[1] if server and server[1] else 0}"


def cookie_value(token: str, name: str) -> str:
    """What the cookie holds: derived from the token (a server on another port that receives it learns
    nothing it could use elsewhere)."""
    return hmac.new(token.encode(), f"medloom {name}".encode(), hashlib.sha256).hexdigest()


class Guard:
    """Every request passes here first: the host name, the access token."""

    def __init__(self, app, app_state):
        self.app = app
        self.state = app_state

    async def __call__(self, scope, receive, send):
        from starlette.concurrency import run_in_threadpool
        from starlette.requests import Request
        from starlette.responses import PlainTextResponse, Response

        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        host = host_name(request.headers.get("host") or "")
        state = self.state
        if not state.hosts.allows(host):
            return await PlainTextResponse(
                f"host {host!r} refused: this app answers to {state.hosts.describe()}; "
                f"start `medloom serve` with --allow-host {normal_host(host) or 'NAME'} "
                "to allow that name",
                status_code=421,
            )(scope, receive, send)
        set_cookie = ""
        redirect = ""
        if state.token:
            name = cookie_name(scope)
            value = cookie_value(state.token, name)
            cookie = request.cookies.get(name) or ""
            query = request.query_params.get("token")
            bearer = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            ok = secrets.compare_digest(cookie.encode(), value.encode()) if cookie else False
            for sent in (query, bearer):
                ok = ok or bool(sent) and secrets.compare_digest(sent.encode(), state.token.encode())
            if not ok:
                return await PlainTextResponse(
                    "a token is needed: open the URL `medloom serve` printed (it ends in ?token=...)", status_code=401
                )(scope, receive, send)
            if query is not None:
                set_cookie = f"{name}={value}; HttpOnly; SameSite=Strict; Path=/"
                if request.method in ("GET", "HEAD"):  # the same page without the token in the address bar
                    rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
                    redirect = "/" + request.url.path.lstrip("/") + ("?" + urlencode(rest) if rest else "")
        # a few stat calls; the index is rebuilt (in a worker thread) only when a manifest or curation file changed
        await run_in_threadpool(state.index.refresh)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    # not no-referrer: under it a browser's form posts say `Origin: null`
                    (b"referrer-policy", b"same-origin"),
                    (
                        b"content-security-policy",
                        b"default-src 'self'; img-src 'self' data:; "
                        b"style-src 'self' 'unsafe-inline'; script-src 'self'; "
                        b"form-action 'self'; frame-ancestors 'none'",
                    ),
                ]
                if set_cookie:
                    headers.append((b"set-cookie", set_cookie.encode()))
                message = dict(message, headers=headers)
            await send(message)

        if redirect:
            return await Response(status_code=303, headers={"location": redirect, "cache-control": "no-store"})(
                scope, receive, send_with_headers
            )
        return await self.app(scope, receive, send_with_headers)
