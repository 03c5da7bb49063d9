"""A watchdog for one download: it cuts the connection when an overall deadline passes, or when fewer
than `min_rate` bytes/s arrived over the last `window` seconds. A socket time-out alone cannot see a
server that sends one byte (or one header line) just before each time-out; `minibort.hub` uses this
so that a dripping, throttled or stalled server ends in a clear error instead of a hang.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import socket
import threading
import time
import urllib.request


class Guard:
    """Watches one download from a background thread, and cuts its connection when the overall
    deadline passes or fewer than `min_rate` bytes/s arrived over the last `window` seconds; a socket
    time-out alone cannot see a server that sends a byte (or a header line) just before each time-out."""

    def __init__(self, deadline: float, min_rate: float, window: float) -> None:
        self.deadline, self.min_rate, self.window = deadline, min_rate, window
        self.received = 0                             # bytes so far, counted by the reading loop
        self.reason: str | None = None                # why the download was cut, once it was
        self._sockets: list[socket.socket] = []
        self._lock, self._done = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> None:
        self._thread.start()

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def watch(self, sock: socket.socket) -> None:
        """Called by each new connection: cut it at once if the download is already over time."""
        with self._lock:
            self._sockets.append(sock)
            if self.reason:
                _shut(sock)

    def _run(self) -> None:
        start = mark = time.monotonic()
        mark_bytes = 0
        while not self._done.wait(min(0.2, self.window / 5)):
            now = time.monotonic()
            if self.deadline and now - start >= self.deadline:
                reason = f"no complete file after {self.deadline:g} s (MINIBORT_HUB_DEADLINE)"
            elif self.min_rate and now - mark >= self.window:
                got = self.received - mark_bytes
                if got >= self.min_rate * self.window:
                    mark, mark_bytes = now, self.received
                    continue
                reason = (f"only {got} bytes arrived in {self.window:g} s, below MINIBORT_HUB_MIN_RATE="
                          f"{self.min_rate:g} bytes/s (a stalled or throttled server)")
            else:
                continue
            with self._lock:
                self.reason = reason
                for sock in self._sockets:
                    _shut(sock)
            return


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)               # a blocked read returns at once


class _Guarded:
    """A connection that hands its socket to its download's `_Guard` as soon as it is connected."""

    def __init__(self, *args, guard: Guard, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard

    def connect(self) -> None:
        super().connect()
        self.guard.watch(self.sock)


class _GuardedHTTP(_Guarded, http.client.HTTPConnection):
    pass


class _GuardedHTTPS(_Guarded, http.client.HTTPSConnection):
    pass


class GuardedHandler(urllib.request.HTTPHandler, urllib.request.HTTPSHandler):
    """Opens http and https connections whose sockets `guard` watches."""

    def __init__(self, guard: Guard) -> None:
        super().__init__()
        self.guard = guard

    def http_open(self, req):
        return self.do_open(functools.partial(_GuardedHTTP, guard=self.guard), req)

    def https_open(self, req):
        return self.do_open(functools.partial(_GuardedHTTPS, guard=self.guard), req, context=self._context)
