"""Small facts about network peers and replies that every client of medloom shares."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse


def is_loopback(url: str) -> bool:
    import ipaddress

    host = (urlparse(url).hostname or "").strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# ---- a deadline for a whole request -----------------------------------------------------------------------
# A socket's timeout restarts with every byte, so a server that trickles one byte a second holds a reader for
# ever. `deadline(seconds)` shuts the socket of the request this thread has in flight when the time is up; the
# pools of `deadline_pool_manager` register each request's connection for it.

_ACTIVE: dict[int, list] = {}  # thread -> [the connection in flight, or None]
_ACTIVE_LOCK = threading.Lock()


def _register(conn) -> None:
    with _ACTIVE_LOCK:
        slot = _ACTIVE.get(threading.get_ident())
        if slot is not None:
            slot[0] = conn


def deadline_pool_manager(**kw):
    """A urllib3 PoolManager whose requests a `deadline` can cut short."""
    import urllib3
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class Connection(HTTPConnection):
        def request(self, *a, **k):
            _register(self)
            return super().request(*a, **k)

    class SecureConnection(HTTPSConnection):
        def request(self, *a, **k):
            _register(self)
            return super().request(*a, **k)

    class Pool(HTTPConnectionPool):
        ConnectionCls = Connection

    class SecurePool(HTTPSConnectionPool):
        ConnectionCls = SecureConnection

    manager = urllib3.PoolManager(**kw)
    manager.pool_classes_by_scheme = {"http": Pool, "https": SecurePool}
    return manager


class Cut:
    """The state of one `deadline`: `expired` once the socket was shut; `end()` disarms it (call it before the
    connection goes back to its pool, so the timer can never shut a connection serving another request)."""

    def __init__(self, seconds: float):
        self.ident, self.slot, self.expired = threading.get_ident(), [None], False
        with _ACTIVE_LOCK:
            _ACTIVE[self.ident] = self.slot
        self.timer = threading.Timer(max(seconds, 0.0), self._expire)
        self.timer.daemon = True
        self.timer.start()

    def _expire(self) -> None:
        import socket

        with _ACTIVE_LOCK:
            if _ACTIVE.get(self.ident) is not self.slot:  # ended already
                return
            self.expired = True
            sock = getattr(self.slot[0], "sock", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def end(self) -> bool:
        """Disarm; whether the time ran out first."""
        with _ACTIVE_LOCK:
            if _ACTIVE.get(self.ident) is self.slot:
                del _ACTIVE[self.ident]
        self.timer.cancel()
        return self.expired


@contextmanager
def deadline(seconds: float) -> Iterator[Cut]:
    """Within the block, this thread's request through a `deadline_pool_manager` ends after `seconds` at most:
    its socket is shut and `cut.expired` is set (reads then fail or come back short)."""
    cut = Cut(seconds)
    try:
        yield cut
    finally:
        cut.end()
