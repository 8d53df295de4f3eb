"""The grid's WHERE box runs here, never in the server: in child processes of their own, each on a copy of the
records table, with a time budget (DuckDB's interrupt, then a kill) and a memory budget (RLIMIT_DATA, since
DuckDB's `memory_limit` does not cover the lists and strings an expression builds: `list_sum(range(250000000))`
took a server to 14.7 GB). A filter over either budget is stopped with a message; a slow one holds one child,
not the server, so other pages keep answering; stopping the server kills the children at once.

A child answers one filter at a time with the positions (DuckDB rowids) of the matching records; the server
counts, pages and facets those positions in its own copy, built from the same Arrow table in the same order.
"""

from __future__ import annotations

import io
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time

import numpy as np

HEAD = struct.Struct("!Q")
GRACE = 3.0  # seconds past the budget before a child that does not answer is killed


class FilterError(ValueError):
    """A filter stopped by its budget, or refused by DuckDB (the message says which)."""


def _send(stream, message) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(HEAD.pack(len(data)) + data)
    stream.flush()


def _recv(stream):
    head = stream.read(HEAD.size)
    if len(head) < HEAD.size:
        return None
    (size,) = HEAD.unpack(head)
    return pickle.loads(stream.read(size))


def _data_bytes() -> int:
    """The process's data segment now (what RLIMIT_DATA counts), 0 where /proc does not say."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class _Child:
    """One child process and the table version it holds."""

    def __init__(self):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "medloom.web.sandbox"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self.version = None
        self.base_rss = 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


class Sandbox:
    """A few children (`size`) that run filters; `select` waits for a free one."""

    def __init__(self, seconds: float = 10.0, memory_mb: int = 1024, size: int = 2):
        self.seconds, self.memory_mb, self.size = float(seconds), int(memory_mb), int(size)
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()
        self._cond = threading.Condition()
        self._closed = False
        self.runs = 0  # filters run so far (a page's counts, rows and facets share one run)

    def close(self) -> None:
        """Kill every child, busy ones too: a filter in flight ends with 'the server is stopping'."""
        with self._cond:
            self._closed = True
            children = self._idle + list(self._busy)
            self._idle = []
            self._cond.notify_all()
        for child in children:
            child.kill()

    def _acquire(self) -> _Child:
        deadline = time.monotonic() + self.seconds + GRACE
        with self._cond:
            while True:
                if self._closed:
                    raise FilterError("the server is stopping; the filter was not run")
                while self._idle:
                    child = self._idle.pop()
                    if child.alive():
                        self._busy.add(child)
                        return child
                if len(self._busy) < self.size:
                    child = _Child()
                    self._busy.add(child)
                    return child
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FilterError(f"{self.size} other filters are running; try again in a few seconds")
                self._cond.wait(left)

    def _release(self, child: _Child, keep: bool) -> None:
        with self._cond:
            self._busy.discard(child)
            if keep and child.alive() and not self._closed:
                self._idle.append(child)
            self._cond.notify()
        if not keep:
            child.kill()

    def select(self, where: str, version, table) -> np.ndarray:
        """The positions of the records matching `where`; `table()` gives the Arrow table of `version`."""
        child = self._acquire()
        keep = False
        try:
            if child.version != version:
                import pyarrow as pa

                sink = io.BytesIO()
                data = table()
                with pa.ipc.new_stream(sink, data.schema) as writer:
                    writer.write_table(data)
                _send(child.proc.stdin, ("table", sink.getvalue()))
                reply = self._wait(child, time.monotonic() + 60 + data.nbytes / 50e6, loading=True)
                child.version, child.base_rss = version, _rss_bytes(child.proc.pid)
            self.runs += 1
            _send(child.proc.stdin, ("select", where, self.seconds, self.memory_mb))
            reply = self._wait(child, time.monotonic() + self.seconds + GRACE)
            keep = True
        except (BrokenPipeError, OSError):
            raise FilterError("the filter's process ended unexpectedly; try again") from None
        finally:
            self._release(child, keep)
        if reply[0] == "ok":
            return np.frombuffer(reply[1], dtype=np.int64)
        raise FilterError(reply[1])

    def _wait(self, child: _Child, deadline: float, loading: bool = False):
        """The child's answer; killed past the deadline, or when it grows past the budget (a backstop to
        its own limits)."""
        fd = child.proc.stdout.fileno()
        limit = child.base_rss + self.memory_mb * (1 << 20) * 3 // 2 + (256 << 20)
        while True:
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                reply = _recv(child.proc.stdout)
                if reply is None:
                    raise FilterError(
                        "the server is stopping; the filter was stopped"
                        if self._closed
                        else "the filter's process ended unexpectedly; try again"
                    )
                return reply
            if self._closed:
                raise FilterError("the server is stopping; the filter was stopped")
            if time.monotonic() > deadline:
                child.kill()
                raise FilterError(
                    f"the filter ran longer than {self.seconds:g} s and was stopped: narrow it "
                    "(or start `medloom serve` with a larger --filter-timeout)"
                )
            if not loading and _rss_bytes(child.proc.pid) > limit:
                child.kill()
                raise FilterError(memory_message(self.memory_mb))


def memory_message(memory_mb: int) -> str:
    return (
        f"the filter needed more than {memory_mb} MiB and was stopped: narrow it (or start `medloom serve` "
        "with a larger --filter-memory)"
    )


# -- the child ------------------------------------------------------------------------------------------------


def _load(data: bytes):
    import duckdb
    import pyarrow as pa

    table = pa.ipc.open_stream(data).read_all()
    con = duckdb.connect()
    con.register("_t", table)
    con.execute("CREATE TABLE items AS SELECT * FROM _t")  # insertion order kept: rowid = position
    con.unregister("_t")
    con.execute("SET temp_directory = ''")  # nothing spills to disk
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def _select(con, where: str, seconds: float, memory_mb: int):
    import duckdb

    try:
        import resource
    except ImportError:  # not on this system: the server's watch on the child's size remains
        resource = None
    cur = con.cursor()
    timer = threading.Timer(seconds, cur.interrupt)
    limits = None
    if resource is not None and _data_bytes():
        limits = resource.getrlimit(resource.RLIMIT_DATA)
        want = _data_bytes() + (memory_mb << 20)
        if limits[1] == resource.RLIM_INFINITY or want < limits[1]:
            resource.setrlimit(resource.RLIMIT_DATA, (want, limits[1]))
    timer.start()
    try:
        rows = cur.execute(f"SELECT rowid FROM items WHERE ({where}) ORDER BY rowid").fetchnumpy()["rowid"]
        return "ok", np.asarray(rows, dtype=np.int64).tobytes()
    except duckdb.InterruptException:
        return "error", (
            f"the filter ran longer than {seconds:g} s and was stopped: narrow it (or start "
            "`medloom serve` with a larger --filter-timeout)"
        )
    except (duckdb.OutOfMemoryException, MemoryError):
        return "error", memory_message(memory_mb)
    except duckdb.Error as e:
        return "error", f"the filter is not valid on the records: {str(e).splitlines()[0]}"
    finally:
        timer.cancel()
        if limits is not None:
            resource.setrlimit(resource.RLIMIT_DATA, limits)
        cur.close()


def main() -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # the pipe carries answers only
    con = None
    while True:
        message = _recv(stdin)
        if message is None:  # the server closed the pipe, or ended
            return
        if message[0] == "table":
            con = _load(message[1])
            _send(stdout, ("ok",))
        elif message[0] == "select":
            _send(stdout, _select(con, *message[1:]) if con is not None else ("error", "no table loaded"))


if __name__ == "__main__":
    main()
