"""minibort.hub against a real HTTP server on 127.0.0.1 started by the tests.

The server serves ../shared/hub-mirror (amazon/bort's config and tokenizer files, laid out as the hub
serves them) when it is present, and files the tests write. It speaks HTTP Range, and can send the
hub's sha256 headers, redirect like the hub does for large files, drop the connection mid-transfer
and answer 404.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from minibort import BortForMaskedLM, hub
from minibort.hub import (
    HubError,
    cache_root,
    cached_path,
    hf_hub_download,
    hub_weights_file,
    repo_cache_dir,
    verify_cached,
)

MIRROR = Path(__file__).resolve().parents[1].parent / "shared" / "hub-mirror"
REPO = "amazon/bort"


class Handler(http.server.BaseHTTPRequestHandler):
    """GET/HEAD for files under the server's roots, with Range, sha256 headers, redirects and drops."""

    def log_message(self, *args) -> None:       # keep test output quiet
        pass

    def do_GET(self) -> None:
        srv = self.server
        srv.requests.append((self.path, dict(self.headers)))
        path = self.path
        if path.startswith("/cdn/"):               # the redirect target: the real bytes
            path = path[len("/cdn"):]
        elif srv.redirect and "/resolve/" in path:  # the hub redirects LFS files, with their sha256
            file = srv.find(path)
            if file is None:
                return self.send_error(404)
            self.send_response(302)
            self.send_header("Location", "/cdn" + path)
            self.send_header("X-Linked-Etag", f'"{srv.sha_override or _sha(file)}"')
            self.send_header("X-Linked-Size", str(file.stat().st_size))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        file = srv.find(path)
        if file is None:
            return self.send_error(404)
        data = file.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        if rng and srv.honor_range and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[len("bytes="):-1])
            if start >= len(data):
                return self.send_error(416)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Last-Modified", self.date_time_string(file.stat().st_mtime))   # as plain mirrors do
        if srv.send_sha and not srv.redirect:
            self.send_header("ETag", f'"{srv.sha_override or _sha(file)}"')
        self.end_headers()
        body = data[start:]
        if srv.drops > 0 and len(body) > srv.drop_after:
            srv.drops -= 1
            self.wfile.write(body[:srv.drop_after])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)   # the client sees fewer bytes than promised
            return None
        self.wfile.write(body)
        return None


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, roots: list[Path]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.roots, self.requests = roots, []
        self.send_sha, self.sha_override, self.redirect = False, None, False
        self.drops, self.drop_after, self.honor_range = 0, 0, True

    def find(self, url_path: str) -> Path | None:
        rel = url_path.lstrip("/")
        if ".." in rel.split("/"):
            return None
        for root in self.roots:
            if (root / rel).is_file():
                return root / rel
        return None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def served(tmp_path) -> Path:
    """Files the tests add to what the server serves (the mirror's, or stand-ins where it is absent)."""
    d = tmp_path / "served"
    main = d / REPO / "resolve" / "main"
    main.mkdir(parents=True)
    if not (MIRROR / REPO / "resolve" / "main" / "vocab.json").is_file():
        (main / "config.json").write_text('{"model_type": "bert"}\n')
        (main / "vocab.json").write_text('{"<s>": 0}\n' * 50_000)
    rng = np.random.default_rng(0)
    (main / "blob.bin").write_bytes(rng.integers(0, 256, 3 * 2 ** 20 + 123, dtype=np.uint8).tobytes())
    for path in main.iterdir():                   # files last changed long ago, as on a mirror: their
        os.utime(path, (time.time() - 86400,) * 2)  # Last-Modified is a strong validator for If-Range
    return d


@pytest.fixture
def server(served, tmp_path, monkeypatch):
    srv = Server([MIRROR, served])
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", srv.url)
    monkeypatch.setenv("MINIBORT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MINIBORT_HUB_TIMEOUT", "3")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for name in ("HF_TOKEN", "HF_HUB_OFFLINE", "MINIBORT_HUB_DEADLINE", "MINIBORT_HUB_MIN_RATE"):
        monkeypatch.delenv(name, raising=False)
    yield srv
    srv.shutdown()
    srv.server_close()


def source(srv: Server, name: str) -> Path:
    return srv.find(f"/{REPO}/resolve/main/{name}")


def test_download_with_progress_then_cache_without_network(server, capfd):
    path = hf_hub_download(REPO, "vocab.json")
    assert Path(path).read_bytes() == source(server, "vocab.json").read_bytes()
    assert Path(path).parent == cache_root() / REPO / "main"
    assert "vocab.json" in capfd.readouterr().err                  # tqdm's bar names the file
    assert Path(path + ".meta.json").is_file()
    server.shutdown()
    server.server_close()                                         # no network from here on
    t = time.time()
    assert hf_hub_download(REPO, "vocab.json") == path
    assert time.time() - t < 2


def test_server_sha256_is_checked(server):
    server.send_sha = True
    path = hf_hub_download(REPO, "blob.bin")
    assert '"sha256_checked": true' in Path(path + ".meta.json").read_text()
    server.sha_override = "0" * 64                                  # the server now claims another hash
    with pytest.raises(HubError, match="sha256"):
        hf_hub_download(REPO, "config.json")
    assert not cached_path(REPO, "config.json").exists()


def test_hub_style_redirect_with_linked_sha256(server):
    server.redirect = True
    path = hf_hub_download(REPO, "blob.bin")
    assert Path(path).read_bytes() == source(server, "blob.bin").read_bytes()
    assert any(p.startswith("/cdn/") for p, _ in server.requests)
    server.sha_override = "f" * 64
    with pytest.raises(HubError, match="sha256"):
        hf_hub_download(REPO, "config.json")


def test_interrupted_transfer_is_resumed_with_range(server):
    server.drops, server.drop_after = 2, 2 ** 20 + 7
    server.send_sha = True
    path = hf_hub_download(REPO, "blob.bin")
    assert Path(path).read_bytes() == source(server, "blob.bin").read_bytes()
    ranges = [h.get("Range") for _, h in server.requests if h.get("Range")]
    print("requests:", [(p, h.get("Range")) for p, h in server.requests])
    assert ranges[:2] == [f"bytes={2 ** 20 + 7}-", f"bytes={2 * (2 ** 20 + 7)}-"]
    assert not Path(path + ".incomplete").exists()


def test_server_ignoring_range_restarts_from_zero(server):
    server.drops, server.drop_after, server.honor_range = 1, 2 ** 20, False
    path = hf_hub_download(REPO, "blob.bin")
    assert Path(path).read_bytes() == source(server, "blob.bin").read_bytes()
    assert len(server.requests) == 2 and server.requests[1][1].get("Range") == f"bytes={2 ** 20}-"


def test_offline_mode_uses_cache_only(server, monkeypatch):
    path = hf_hub_download(REPO, "config.json")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = len(server.requests)
    assert hf_hub_download(REPO, "config.json") == path
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        hf_hub_download(REPO, "vocab.json")
    assert len(server.requests) == n


def test_corrupted_cache_is_detected_and_fetched_again(server):
    path = Path(hf_hub_download(REPO, "blob.bin"))
    raw = bytearray(path.read_bytes())
    raw[1000] ^= 0xFF                                              # a bit-flipped cached file
    path.write_bytes(bytes(raw))
    assert not verify_cached(path)                                 # ... is refused (and removed)
    n = len(server.requests)
    assert hf_hub_download(REPO, "blob.bin") == str(path)
    assert len(server.requests) == n + 1
    assert path.read_bytes() == source(server, "blob.bin").read_bytes()
    path.write_bytes(path.read_bytes()[:-10])                      # a truncated one too
    hf_hub_download(REPO, "blob.bin")
    assert path.read_bytes() == source(server, "blob.bin").read_bytes()


def test_404_names_url_and_manual_placement(server):
    t = time.time()
    with pytest.raises(HubError) as e:
        hf_hub_download(REPO, "no_such_file.bin")
    assert time.time() - t < 3
    msg = str(e.value)
    print(msg)
    assert e.value.status == 404
    assert f"{server.url}/{REPO}/resolve/main/no_such_file.bin" in msg
    assert "by hand" in msg and str(cache_root() / REPO / "main") in msg


def test_unreachable_endpoint_fails_fast(tmp_path, monkeypatch):
    with socket.socket() as s:                                     # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MINIBORT_CACHE", str(tmp_path))
    t = time.time()
    with pytest.raises(HubError) as e:
        hf_hub_download(REPO, "config.json")
    elapsed = time.time() - t
    print(f"{elapsed:.2f} s: {e.value}")
    assert elapsed < 5
    assert f"http://127.0.0.1:{port}/{REPO}/resolve/main/config.json" in str(e.value)
    assert "by hand" in str(e.value)


def test_cache_location_from_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("MINIBORT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "minibort"
    monkeypatch.setenv("MINIBORT_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    assert cached_path("a/b", "x/y.json", "refs/pr/1", tmp_path) == tmp_path / "a/b/refs--pr--1/x/y.json"


@pytest.mark.parametrize("repo, name", [("../etc", "passwd"), ("a/b", "../../x"), ("a/b", "/abs"), ("a/b/c", "x")])
def test_names_cannot_escape_the_cache(tmp_path, repo, name):
    with pytest.raises(HubError):
        hf_hub_download(repo, name, cache_dir=tmp_path)


def test_from_pretrained_through_the_hub(server, served, tmp_path):
    from test_checkpoint import tiny_state

    from minibort.formats.torch_zip import save_torch_zip
    cfg, state = tiny_state()
    st_dir = served / "test" / "tiny" / "resolve" / "main"
    BortForMaskedLM(cfg, state).save_pretrained(st_dir)
    bin_dir = served / "test" / "tiny-bin" / "resolve" / "main"
    bin_dir.mkdir(parents=True)
    shutil.copy(st_dir / "config.json", bin_dir)
    save_torch_zip(state, bin_dir / "pytorch_model.bin")
    ids = np.array([[0, 5, 9, 2]])
    want = BortForMaskedLM(cfg, state)(ids)
    for repo in ("test/tiny", "test/tiny-bin"):                   # the second falls back to the .bin
        got = BortForMaskedLM.from_pretrained(repo)(ids)
        np.testing.assert_array_equal(got, want)
    assert os.path.isfile(cached_path("test/tiny-bin", "pytorch_model.bin"))


# --------------------------------------------------------------------------- offline means offline (issue 9)
def place(folder: Path, names: tuple[str, ...]) -> None:
    """Files put into the cache by hand (no sidecar: trusted as they are)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"weights of " + name.encode())


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "unreachable"])
def test_weights_offline_come_from_the_cache(tmp_path, monkeypatch, how):
    monkeypatch.setenv("MINIBORT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    if how == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with socket.socket() as s:                                     # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{s.getsockname()[1]}")
    folder = repo_cache_dir(REPO)
    assert folder == cache_root() / REPO / "main"
    with pytest.raises(HubError) as e:                             # nothing cached: what to place where
        hub_weights_file(REPO)
    print(e.value)
    assert f"{folder}/" in str(e.value) and "model.safetensors or pytorch_model.bin" in str(e.value)
    place(folder, ("pytorch_model.bin",))                          # only a .bin was ever cached
    assert hub_weights_file(REPO) == str(folder / "pytorch_model.bin")
    place(folder, ("model.safetensors",))
    assert hub_weights_file(REPO) == str(folder / "model.safetensors")


def test_offline_download_names_the_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIBORT_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="HF_HUB_OFFLINE") as e:
        hf_hub_download(REPO, "config.json")
    assert f"put config.json into {tmp_path / REPO / 'main'}/" in str(e.value)
    place(tmp_path / REPO / "main", ("config.json",))
    assert hf_hub_download(REPO, "config.json") == str(tmp_path / REPO / "main" / "config.json")


def test_weights_online_safetensors_else_bin(server, served):
    for repo, names in (("test/st", ("model.safetensors", "pytorch_model.bin")), ("test/bin", ("pytorch_model.bin",))):
        place(served / repo / "resolve" / "main", names)
        path = hub_weights_file(repo)
        assert Path(path).name == names[0] and Path(path).read_bytes() == b"weights of " + names[0].encode()
    with pytest.raises(HubError, match="has neither model.safetensors nor pytorch_model.bin") as e:
        hub_weights_file("test/none")
    assert e.value.status == 404 and str(repo_cache_dir("test/none")) in str(e.value)


# --------------------------------------------------------------------------- logs and file modes (issue 9)
def test_progress_in_a_log_is_lines(server, capfd, monkeypatch):
    monkeypatch.setattr(hub, "LOG_INTERVAL", 0.0)                 # a line for every chunk here
    hf_hub_download(REPO, "blob.bin")
    lines = [line for line in capfd.readouterr().err.splitlines() if line.startswith("blob.bin")]
    print("\n".join(lines))
    assert len(lines) >= 3 and "\r" not in "".join(lines)         # one line per report, none overwritten
    assert "0%" in lines[0] and "100%" in lines[-1]


def test_cached_files_follow_the_umask(server):
    old = os.umask(0o027)
    try:
        path = Path(hf_hub_download(REPO, "config.json"))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640
    assert Path(str(path) + ".meta.json").stat().st_mode & 0o777 == 0o640
