"""minibort.hub against hostile servers (issue 14): each test runs a small HTTP server on 127.0.0.1 that
misbehaves in one way, and checks that the download ends, within seconds, in a clear HubError or in
the right file, never in a hang, a splice of two versions, or a full disk.

Time limits are made small through the environment (MINIBORT_HUB_DEADLINE, MINIBORT_HUB_MIN_RATE) or
the module's RATE_WINDOW, so that each case takes a second or two.
"""

from __future__ import annotations

import email.utils
import fcntl
import hashlib
import http.server
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minibort import hub
from minibort.hub import HubError, cached_path, download_url, hf_hub_download

DATA = bytes(range(256)) * 256                        # 64 KiB: version A of the served file
NEW = bytes(reversed(DATA))                           # version B: the same size, other bytes
HALF = len(DATA) // 2
OLD_DATE = email.utils.formatdate(time.time() - 86400, usegmt=True)   # a day ago: a strong validator


class Handler(http.server.BaseHTTPRequestHandler):
    """Records each request, then lets the test's `respond(handler, n)` answer it (n counts from 1)."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests.append(dict(self.headers))
        try:
            self.server.respond(self, len(self.server.requests))
        except OSError:                                # the client hung up: fine
            pass


class Hostile(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, respond: Callable[[Handler, int], None]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.respond, self.requests, self.stop = respond, [], threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def serve(tmp_path, monkeypatch):
    """`serve(respond)` starts a server (the hub endpoint unless `endpoint=False`); all stop at the end."""
    servers = []
    monkeypatch.setenv("MINIBORT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MINIBORT_HUB_TIMEOUT", "2")
    monkeypatch.setenv("MINIBORT_HUB_DEADLINE", "30")  # a safety net: each test expects a quicker end
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for name in ("HF_HUB_OFFLINE", "HF_TOKEN", "MINIBORT_HUB_MIN_RATE"):
        monkeypatch.delenv(name, raising=False)

    def start(respond: Callable[[Handler, int], None], endpoint: bool = True) -> Hostile:
        srv = Hostile(respond)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(srv)
        if endpoint:
            monkeypatch.setenv("HF_ENDPOINT", srv.url)
        return srv

    yield start
    for srv in servers:
        srv.stop.set()
        srv.shutdown()
        srv.server_close()


def send(h: Handler, status: int, headers: dict[str, str], body: bytes = b"") -> None:
    h.send_response(status)
    for k, v in headers.items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(body)


def honest(h: Handler, data: bytes, validator: dict[str, str], upto: int | None = None) -> None:
    """What a correct server does: Range honoured when If-Range matches, else the whole file; the body
    is cut after `upto` bytes (a dropped connection) if given."""
    start, rng = 0, h.headers.get("Range", "")
    if rng and h.headers.get("If-Range") in validator.values():
        start = int(rng[len("bytes="):-1])
    head = {"Content-Length": str(len(data) - start), **validator}
    if start:
        head["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
    send(h, 206 if start else 200, head, data[start:][:upto])


def fetch(name: str = "f.bin") -> tuple[bytes, float]:
    """Download `name` of test/repo; returns its bytes and the seconds it took."""
    t = time.time()
    path = hf_hub_download("test/repo", name, progress=False)
    return Path(path).read_bytes(), time.time() - t


def fails(match: str) -> tuple[HubError, float]:
    t = time.time()
    with pytest.raises(HubError, match=match) as e:
        fetch()
    print(f"{time.time() - t:.2f} s: {e.value}")
    return e.value, time.time() - t


# --------------------------------------------------------------------------- resumes that make no progress
BAD_RESUMES = {
    "416": lambda h: h.send_error(416),
    "wrong start": lambda h: send(h, 206, {"ETag": '"a"', "Content-Range": f"bytes 0-{len(DATA) - 1}/{len(DATA)}",
                                           "Content-Length": str(len(DATA))}, DATA),
    "wrong total": lambda h: send(h, 206, {"ETag": '"a"', "Content-Range": f"bytes {HALF}-{len(DATA)}/{len(DATA) + 1}",
                                           "Content-Length": str(len(DATA) - HALF + 1)}, DATA[HALF:] + b"x"),
    "no validator": lambda h: send(h, 206, {"Content-Range": f"bytes {HALF}-{len(DATA) - 1}/{len(DATA)}",
                                            "Content-Length": str(len(DATA) - HALF)}, DATA[HALF:]),
}


@pytest.mark.parametrize("answer", BAD_RESUMES)
def test_drop_then_bad_resumes_end_in_bounded_attempts(serve, answer):
    def respond(h, n):
        if h.headers.get("Range"):
            return BAD_RESUMES[answer](h)
        honest(h, DATA, {"ETag": '"a"'}, upto=HALF)   # every whole-file answer drops half-way
    srv = serve(respond)
    _, took = fails("attempts in a row without progress")
    assert took < 10 and len(srv.requests) <= 2 * hub.RETRIES
    assert not cached_path("test/repo", "f.bin").exists()


# --------------------------------------------------------------------------- slow servers
def drip(h: Handler, interval: float = 0.1) -> None:
    send(h, 200, {"Content-Length": str(len(DATA))})
    while not h.server.stop.wait(interval):
        h.wfile.write(b"x")
        h.wfile.flush()


def slow_headers(h: Handler) -> None:
    h.wfile.write(b"HTTP/1.0 200 OK\r\n")
    while not h.server.stop.wait(0.1):
        h.wfile.write(b"X-Slow: 1\r\n")
        h.wfile.flush()


def little_per_connection(h: Handler, n: int) -> None:
    honest(h, DATA * 16, {"ETag": '"a"'}, upto=100)   # 100 bytes, then the connection drops


def test_byte_drip_hits_the_deadline(serve, monkeypatch):
    serve(lambda h, n: drip(h))
    monkeypatch.setenv("MINIBORT_HUB_DEADLINE", "1.5")
    _, took = fails(r"no complete file after 1\.5 s \(MINIBORT_HUB_DEADLINE\)")
    assert took < 5


def test_headers_one_line_at_a_time_hit_the_deadline(serve, monkeypatch):
    serve(lambda h, n: slow_headers(h))
    monkeypatch.setenv("MINIBORT_HUB_DEADLINE", "1.5")
    _, took = fails("MINIBORT_HUB_DEADLINE")
    assert took < 5


@pytest.mark.parametrize("respond", [lambda h, n: drip(h), lambda h, n: slow_headers(h), little_per_connection],
                         ids=["drip", "slow headers", "little per connection"])
def test_too_slow_for_the_minimum_rate(serve, monkeypatch, respond):
    srv = serve(respond)
    monkeypatch.setattr(hub, "RATE_WINDOW", 1.0)
    monkeypatch.setenv("MINIBORT_HUB_MIN_RATE", "50000")
    _, took = fails("below MINIBORT_HUB_MIN_RATE=50000 bytes/s")
    assert took < 5
    print(f"{len(srv.requests)} requests")


# --------------------------------------------------------------------------- no splice of two versions
def changes_after_first(validators: tuple[dict[str, str], dict[str, str]], if_range_honoured: bool = True):
    """Version A (dropped half-way) for the first request, version B for every later one."""
    def respond(h, n):
        if n == 1:
            return honest(h, DATA, validators[0], upto=HALF)
        if h.headers.get("Range") and not if_range_honoured:   # a broken server: 206 of the new version
            return send(h, 206, {**validators[1], "Content-Range": f"bytes {HALF}-{len(NEW) - 1}/{len(NEW)}",
                                 "Content-Length": str(len(NEW) - HALF)}, NEW[HALF:])
        return honest(h, NEW, validators[1])
    return respond


def test_changed_file_is_fetched_whole_via_if_range(serve):
    srv = serve(changes_after_first(({"ETag": '"a"'}, {"ETag": '"b"'})))
    assert fetch()[0] == NEW
    assert srv.requests[1]["Range"] == f"bytes={HALF}-" and srv.requests[1]["If-Range"] == '"a"'


def test_server_ignoring_if_range_is_not_spliced(serve):
    srv = serve(changes_after_first(({"ETag": '"a"'}, {"ETag": '"b"'}), if_range_honoured=False))
    assert fetch()[0] == NEW
    assert "Range" not in srv.requests[-1]                     # started over


def test_no_validator_means_no_resume(serve):
    srv = serve(changes_after_first(({}, {})))
    assert fetch()[0] == NEW
    assert not any("Range" in r for r in srv.requests)


@pytest.mark.parametrize("old_enough", [True, False])
def test_last_modified_as_validator_only_when_strong(serve, old_enough):
    """A Last-Modified of a day ago identifies a version; one of this second may name two versions
    (both below carry it), so it is no validator and the client does not resume."""
    now = email.utils.formatdate(time.time(), usegmt=True)
    dates = (OLD_DATE, email.utils.formatdate(time.time() - 3600, usegmt=True)) if old_enough else (now, now)
    srv = serve(changes_after_first(tuple({"Last-Modified": d} for d in dates)))
    assert fetch()[0] == NEW
    assert srv.requests[1].get("If-Range") == (OLD_DATE if old_enough else None)


def test_partial_file_without_a_record_is_not_appended_to(serve):
    srv = serve(lambda h, n: honest(h, DATA, {"ETag": '"a"'}))
    part = cached_path("test/repo", "f.bin").with_name("f.bin.incomplete")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"left over from some other file")
    assert fetch()[0] == DATA
    assert "Range" not in srv.requests[0]


# --------------------------------------------------------------------------- sizes
def test_reading_stops_at_the_linked_size(serve):
    size = 1000
    def respond(h, n):
        if not h.path.startswith("/cdn/"):                   # the hub's redirect, with size and sha256
            return send(h, 302, {"Location": "/cdn" + h.path, "X-Linked-Size": str(size), "Content-Length": "0",
                                 "X-Linked-Etag": f'"{hashlib.sha256(DATA[:size]).hexdigest()}"'})
        send(h, 200, {})                                     # no Content-Length, then an endless stream
        while not h.server.stop.is_set():
            h.wfile.write(DATA)
    serve(respond)
    data, took = fetch()
    assert data == DATA[:size] and took < 5


def test_endless_stream_of_unknown_size_is_refused(serve, monkeypatch):
    def respond(h, n):
        send(h, 200, {})
        while not h.server.stop.is_set():
            h.wfile.write(DATA)
    serve(respond)
    monkeypatch.setattr(hub, "MAX_UNKNOWN_SIZE", 4 * len(DATA))
    fails("sends more than")
    assert not cached_path("test/repo", "f.bin").with_name("f.bin.incomplete").exists()


def test_size_beyond_the_free_disk_is_refused_before_writing(serve):
    serve(lambda h, n: send(h, 200, {"Content-Length": str(10 ** 18)}, DATA))
    fails("more than the free space")
    assert not cached_path("test/repo", "f.bin").with_name("f.bin.incomplete").exists()


@pytest.mark.parametrize("value", ["\N{SUPERSCRIPT TWO}", "1_000", "-5", "0x10", "1e3"])
def test_content_length_must_be_ascii_digits(serve, value):
    serve(lambda h, n: send(h, 200, {"Content-Length": value}, DATA))
    fails("Content-Length")


# --------------------------------------------------------------------------- redirects and the token
@pytest.mark.parametrize("target", ["ftp://127.0.0.1:21/f.bin", "file:///etc/passwd", "data:,hello"])
def test_redirects_only_to_http(serve, target):
    serve(lambda h, n: send(h, 302, {"Location": target, "Content-Length": "0"}))
    fails("does not follow")


def test_redirect_loop_ends(serve):
    srv = serve(lambda h, n: send(h, 302, {"Location": f"{h.path.split('?')[0]}?{n}", "Content-Length": "0"}))
    fails("HTTP 30")
    assert len(srv.requests) <= 12


def test_partial_content_for_a_whole_file_request_is_refused(serve):
    serve(lambda h, n: send(h, 206, {"Content-Range": f"bytes 0-9/{len(DATA)}", "Content-Length": "10"}, DATA[:10]))
    fails("unexpected answer HTTP 206")


@pytest.mark.parametrize("old, new, ok", [("https://a/x", "http://a/y", False), ("https://a/x", "https://b/y", True),
                                          ("http://a/x", "https://b/y", True), ("http://a/x", "gopher://a/", False)])
def test_no_https_to_http_downgrade(old, new, ok):
    if ok:
        hub._check_redirect(old, new)
    else:
        with pytest.raises(HubError, match="never from https to http"):
            hub._check_redirect(old, new)


@pytest.mark.parametrize("a, b, same", [("http://h", "http://h:80", True), ("http://H/x", "http://h/y", True),
                                        ("http://h:80", "http://h:8000", False), ("http://h", "https://h", False),
                                        ("https://h", "https://h:443", True), ("http://h:8", "http://h.evil:8", False)])
def test_same_origin(a, b, same):
    assert (hub._origin(a) == hub._origin(b)) == same


def test_token_goes_to_the_endpoint_only(serve, monkeypatch, tmp_path):
    other = serve(lambda h, n: send(h, 200, {"Content-Length": "4"}, b"data"), endpoint=False)
    endpoint = serve(lambda h, n: send(h, 302, {"Location": f"{other.url}/f", "Content-Length": "0"}))
    monkeypatch.setenv("HF_TOKEN", "secret")
    assert fetch()[0] == b"data"
    assert endpoint.requests[0]["Authorization"] == "Bearer secret"
    assert "Authorization" not in other.requests[0]           # the redirect target never sees it
    monkeypatch.setenv("HF_ENDPOINT", other.url[:-1])        # http://127.0.0.1:4567 vs the server's :45678
    download_url(f"{other.url}/f", tmp_path / "f", progress=False)
    assert "Authorization" not in other.requests[1]


# --------------------------------------------------------------------------- names and settings
@pytest.mark.parametrize("repo, filename, revision", [
    ("amazon/bort\n", "config.json", "main"), ("amazon/bört", "config.json", "main"),
    ("amazon/bort\x00", "config.json", "main"), ("amazon/bort", "config\x00.json", "main"),
    ("amazon/bort", "config.json", "ma\x00in"), (None, "config.json", "main"), ("amazon/bort", None, "main"),
    ("amazon/bort", "config.json", None), ("amazon/bort", "config.json", "\ud800"), ("a--b/c", "x", "main"),
    ("amazon/bort", "config.json", "."), ("amazon/bort", "config.json", "refs--pr--1"),
    ("amazon/bort", "config.json", "a/-b"), ("amazon/bort", "config.json", "a-/b"),
    ("amazon/bort", "config.json.meta.json", "main"), ("amazon/bort", "x.incomplete", "main"),
    ("amazon/bort", "a.incomplete/x", "main"), ("amazon/bort", "./config.json", "main"),
])
def test_bad_names_get_one_clear_error(repo, filename, revision, tmp_path):
    with pytest.raises(HubError, match=r"^(bad revision|bad file name|.* is neither a local folder)"):
        hf_hub_download(repo, filename, revision, cache_dir=tmp_path)


# Names built from pieces that are valid, almost valid, or clash-prone ("--" against "/", suffixes of
# minibort's own files), so that most drawn names pass the checks and meet each other often.
PIECE = st.sampled_from(["a", "b", "B0", "a.b", "a-b", "_", "a--b", "-a", "a-", ".", "..", "x.meta.json",
                         "x.incomplete", "x"])
NAME = st.lists(PIECE, min_size=1, max_size=3).map("/".join)


def suspects(repo: str, name: str, rev: str):
    """Names that could meet (repo, name, rev) in the cache: the same path cut into repo, revision and
    file at other slashes (the revision's "/" also written "--"), and the file with minibort's suffixes."""
    for path in {f"{repo}/{rev}/{name}", f"{repo}/{rev.replace('--', '/')}/{name}"}:
        parts = path.split("/")
        for i in range(1, len(parts)):
            for j in range(i + 1, len(parts)):
                for joint in ("/", "--"):
                    yield "/".join(parts[:i]), "/".join(parts[j:]), joint.join(parts[i:j])
    for suffix in (".meta.json", ".incomplete", ".incomplete.meta.json"):
        yield repo, name + suffix, rev


def cache_files(repo: str, name: str, rev: str) -> set[Path] | None:
    """The cached file of a name, its sidecar, partial file and partial record; None for a refused name."""
    try:
        dest = cached_path(repo, name, rev, "/c")
    except HubError:
        return None
    return {dest, *(dest.with_name(dest.name + s) for s in (".meta.json", ".incomplete", ".incomplete.meta.json"))}


@settings(max_examples=300, deadline=None)
@given(NAME, NAME, NAME, st.tuples(NAME, NAME, NAME))
def test_distinct_names_never_share_a_cache_file(repo, name, rev, other):
    """Two different (repo, file, revision) accepted by the checks never meet on a file or a sidecar."""
    mine = cache_files(repo, name, rev)
    if mine is None:
        return
    for two in (other, *suspects(repo, name, rev)):
        theirs = cache_files(*two)
        if theirs is not None and two != (repo, name, rev):
            assert not mine & theirs, ((repo, name, rev), two)


def test_one_part_and_two_part_repo_ids_do_not_meet():
    assert cached_path("bort", "x/y", "main", "/c") != cached_path("bort/main", "y", "x", "/c")
    assert cached_path("a/b", "f", "refs/pr/1", "/c") == Path("/c/a/b/refs--pr--1/f")


@pytest.mark.parametrize("name, value", [("HF_ENDPOINT", "not a url"), ("HF_ENDPOINT", "ftp://mirror"),
                                         ("HF_ENDPOINT", "http://h:port"), ("HF_ENDPOINT", "http://"),
                                         ("MINIBORT_HUB_TIMEOUT", "abc"), ("MINIBORT_HUB_DEADLINE", "-1"),
                                         ("MINIBORT_HUB_MIN_RATE", "nan")])
def test_bad_settings_are_named(serve, monkeypatch, name, value):
    serve(lambda h, n: honest(h, DATA, {}))
    monkeypatch.setenv(name, value)
    fails(name)


def test_second_download_of_one_file_is_refused_while_the_first_runs(serve):
    serve(lambda h, n: honest(h, DATA, {"ETag": '"a"'}))
    part = cached_path("test/repo", "f.bin").with_name("f.bin.incomplete")
    part.parent.mkdir(parents=True)
    with open(part, "ab") as f:                               # as another process downloading it would
        fcntl.flock(f, fcntl.LOCK_EX)
        fails("another process is downloading f.bin")
    assert fetch()[0] == DATA
