"""Fetch files from the Hugging Face hub (or any HTTP server) into a verified local cache, with urllib only.

    hf_hub_download("amazon/bort", "config.json")  ->  "~/.cache/minibort/amazon/bort/main/config.json"

Where things go and come from:

- URL: `{endpoint}/{repo_id}/resolve/{revision}/{filename}`; the endpoint is the `HF_ENDPOINT`
  environment variable (a mirror), else https://huggingface.co. `HF_TOKEN`, if set, is sent as a
  bearer token (private or gated repositories).
- Cache: `$MINIBORT_CACHE` if set, else `$XDG_CACHE_HOME/minibort`, else `~/.cache/minibort`; a file
  lands in `<cache>/<repo_id>/<revision>/<filename>`, beside a sidecar `<filename>.meta.json`
  holding its size and sha256.
- Time-outs: `MINIBORT_HUB_TIMEOUT` seconds (default 5) to connect and for each read; a stalled
  read is retried, resuming where it stopped. `HF_HUB_OFFLINE=1` never touches the network.
- Offline: a cached file is used without any network access. Or place the files by hand: put
  them in a folder and pass the folder's path instead of the repository id (every loader accepts
  either), or put them in the cache folder above (a hand-placed file without a sidecar is used as is).

How a download stays correct: it streams into `<filename>.incomplete` (a tqdm bar counting bytes),
and only a whole file is renamed into place. An interrupted transfer resumes with an HTTP `Range`
request. The size is checked against `Content-Length` (or the hub's `X-Linked-Size`), and the sha256
against the one the hub reports for large (LFS) files in `X-Linked-Etag` / `ETag`. The sidecar keeps
the sha256 of what arrived, and a cached file is re-hashed each time it is looked up (about 0.2 s
per 300 MB), so one that no longer matches (truncated, bit-flipped) is never used: it is fetched again. Connections time out after a few seconds and transient failures are
retried a bounded number of times; a 404 or an unreachable server raises `HubError`, naming the URL
and saying how to place the files by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

DEFAULT_ENDPOINT = "https://huggingface.co"
TIMEOUT = 5.0           # seconds, for connecting and for each read (a stalled read resumes by Range)
RETRIES = 3             # attempts in a row that make no progress before giving up
CHUNK = 1 << 20         # bytes per read
# The files a Bort model folder holds, for the "place them by hand" hint.
MODEL_FILES = ("config.json", "model.safetensors or pytorch_model.bin", "vocab.json", "merges.txt")

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


class HubError(OSError):
    """A file could not be fetched (not found, unreachable, or failed its size / sha256 check)."""

    def __init__(self, message: str, url: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.url, self.status = url, status


def endpoint() -> str:
    """The hub's base URL: `$HF_ENDPOINT` or https://huggingface.co."""
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: `cache_dir`, else `$MINIBORT_CACHE`, else `$XDG_CACHE_HOME/minibort` or `~/.cache/minibort`."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("MINIBORT_CACHE"):
        return Path(os.environ["MINIBORT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "minibort"


def is_repo_id(name: str) -> bool:
    """True for `owner/name` (or `name`) made of letters, digits, `_`, `.` and `-`."""
    return bool(_REPO_ID.match(name)) and ".." not in name


def cached_path(repo_id: str, filename: str, revision: str = "main",
                cache_dir: str | os.PathLike | None = None) -> Path:
    """Where `hf_hub_download` keeps a file: `<cache>/<repo_id>/<revision>/<filename>`."""
    _check_names(repo_id, filename, revision)
    return cache_root(cache_dir) / repo_id / revision.replace("/", "--") / filename


def _check_names(repo_id: str, filename: str, revision: str) -> None:
    """Refuse names that could escape the cache folder (`..`, absolute paths)."""
    if not is_repo_id(repo_id):
        raise HubError(f"{repo_id!r} is neither a local folder nor a hub repository id like 'amazon/bort'")
    parts = filename.split("/")
    if not filename or filename.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise HubError(f"bad file name {filename!r}")
    if not revision or ".." in revision or revision.startswith("/") or "\\" in revision:
        raise HubError(f"bad revision {revision!r}")


def hf_hub_download(repo_id: str, filename: str, revision: str = "main",
                    cache_dir: str | os.PathLike | None = None, progress: bool = True) -> str:
    """Path of `filename` from hub repository `repo_id` at `revision`, downloaded into the cache if needed."""
    dest = cached_path(repo_id, filename, revision, cache_dir)
    if verify_cached(dest):
        return str(dest)
    rev = urllib.parse.quote(revision, safe="")
    url = f"{endpoint()}/{repo_id}/resolve/{rev}/{urllib.parse.quote(filename)}"
    hint = (f" To work offline, download the files by hand ({', '.join(MODEL_FILES)}) into a "
            f"folder and pass its path instead of {repo_id!r}, or put {filename} into {dest.parent}/.")
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        raise HubError(f"HF_HUB_OFFLINE is set and {filename} of {repo_id} is not in the cache "
                       f"(it would come from {url}).{hint}", url=url)
    try:
        return download_url(url, dest, progress=progress)
    except HubError as e:
        raise HubError(str(e) + hint, url=e.url, status=e.status) from None


def resolve_file(path_or_repo_id: str, filename: str, revision: str = "main") -> str:
    """Path of `filename`: inside `path_or_repo_id` if that is a local folder, else from the hub (cached).

    Raises FileNotFoundError for a file missing from a local folder, HubError (also an OSError) for
    one that cannot be fetched.
    """
    source = os.fspath(path_or_repo_id)
    if os.path.isdir(source):
        path = os.path.join(source, filename)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{filename} is not in the folder {source}")
        return path
    if not is_repo_id(source) or source.startswith(("/", ".", "~")):
        raise FileNotFoundError(f"no folder {source!r} (and it is not a hub repository id like 'amazon/bort')")
    return hf_hub_download(source, filename, revision=revision)


# --------------------------------------------------------------------------- the cache and its sidecars
def _sidecar(dest: Path) -> Path:
    return dest.with_name(dest.name + ".meta.json")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify_cached(dest: str | os.PathLike) -> bool:
    """True if `dest` exists and matches its sidecar's size and sha256 (or has no sidecar: placed by hand).

    A file that fails is deleted with its sidecar, so the next download starts clean.
    """
    dest = Path(dest)
    if not dest.is_file():
        return False
    side = _sidecar(dest)
    if not side.exists():
        return True                                   # placed by hand: trusted as is
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
        ok = dest.stat().st_size == meta["size"] and sha256_file(dest) == meta["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        for p in (dest, side):
            p.unlink(missing_ok=True)
    return ok


def write_sidecar(dest: str | os.PathLike, size: int, sha256: str, **extra: object) -> None:
    """Record a cached file's size and sha256 beside it (`<name>.meta.json`)."""
    side = _sidecar(Path(dest))
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(json.dumps({"size": size, "sha256": sha256, **extra}, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, side)


# --------------------------------------------------------------------------- HTTP
class _RecordRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects, keeping the first response's headers: the hub puts the LFS file's sha256
    (`X-Linked-Etag`) and size (`X-Linked-Size`) on its redirect to the storage server."""

    def __init__(self) -> None:
        self.first_headers: http.client.HTTPMessage | None = None

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if self.first_headers is None:
            self.first_headers = headers
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and req.has_header("Range"):
            new.add_unredirected_header("Range", req.get_header("Range"))
        return new


def _sha256_from_etag(value: str | None) -> str | None:
    """The sha256 in an ETag-like header, if it is one (64 hex digits); git blob ETags are sha1s."""
    if not value:
        return None
    v = value.strip()
    v = v.removeprefix("W/")
    v = v.strip('"').lower()
    return v if re.fullmatch(r"[0-9a-f]{64}", v) else None


def _open(url: str, start: int, timeout: float) -> tuple[http.client.HTTPResponse, _RecordRedirects]:
    handler = _RecordRedirects()
    opener = urllib.request.build_opener(handler)
    req = urllib.request.Request(url, headers={"User-Agent": "minibort"})
    if start:
        req.add_header("Range", f"bytes={start}-")
    token = os.environ.get("HF_TOKEN")
    if token and url.startswith(endpoint()):
        req.add_unredirected_header("Authorization", f"Bearer {token}")
    return opener.open(req, timeout=timeout), handler


def download_url(url: str, dest: str | os.PathLike, sha256: str | None = None, progress: bool = True,
                 timeout: float | None = None, retries: int | None = None) -> str:
    """Download `url` to `dest` (resuming a previous partial download), check it, write its sidecar.

    `sha256`, if given, is checked as well as any sha256 the server reports. Returns `str(dest)`.
    """
    dest = Path(dest)
    timeout = float(os.environ.get("MINIBORT_HUB_TIMEOUT", TIMEOUT)) if timeout is None else timeout
    retries = RETRIES if retries is None else retries
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".incomplete")
    failures, last_error = 0, ""
    while True:
        start = part.stat().st_size if part.exists() else 0
        try:
            size, server_sha = _transfer(url, part, start, timeout, progress, dest.name)
            break
        except HubError:
            raise
        except (TimeoutError, urllib.error.URLError, http.client.HTTPException, OSError) as e:
            grew = part.exists() and part.stat().st_size > start
            failures = 0 if grew else failures + 1     # count only attempts that made no progress
            last_error = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            if failures >= retries:
                raise HubError(f"cannot download {url} ({last_error}; {retries} attempts).", url=url) from None
            time.sleep(0.25 * 2 ** failures)

    got = part.stat().st_size
    if size is not None and got != size:
        part.unlink()
        raise HubError(f"{url}: received {got} bytes, expected {size}", url=url)
    digest = sha256_file(part)
    for want in (sha256, server_sha):
        if want is not None and digest != want.lower():
            part.unlink()
            raise HubError(f"{url}: sha256 {digest} does not match the expected {want}; the partial "
                           "download was deleted, try again", url=url)
    write_sidecar(dest, got, digest, url=url, sha256_checked=bool(sha256 or server_sha))
    os.replace(part, dest)
    return str(dest)


def _transfer(url: str, part: Path, start: int, timeout: float, progress: bool,
              desc: str) -> tuple[int | None, str | None]:
    """One HTTP GET appending to `part` from byte `start`. Returns (total size, server sha256), each
    None if unknown. Raises HubError for answers that retrying cannot fix (404, 403, ...)."""
    try:
        resp, redirects = _open(url, start, timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:                   # our partial file is no prefix of theirs: restart
            part.unlink()
            raise ConnectionError("range not satisfiable; restarting") from None
        if e.code in (408, 429) or e.code >= 500:
            raise ConnectionError(f"HTTP {e.code} {e.reason}") from None
        what = {404: "not found", 401: "unauthorized (set HF_TOKEN?)", 403: "forbidden"}.get(e.code, e.reason)
        raise HubError(f"{url}: HTTP {e.code} {what}.", url=url, status=e.code) from None
    with resp:
        first = redirects.first_headers or resp.headers
        server_sha = _sha256_from_etag(first.get("X-Linked-Etag")) or _sha256_from_etag(resp.headers.get("ETag"))
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if resp.status == 206:                        # the server honoured our Range: append
            m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", "").strip())
            if not m or int(m.group(1)) != start:
                part.unlink(missing_ok=True)
                raise ConnectionError("bad Content-Range in a resumed download; restarting")
            total = int(m.group(3)) if m.group(3) != "*" else None
            mode = "ab"
        else:                                         # 200: the whole file from byte 0
            start, total, mode = 0, length, "wb"
        linked = first.get("X-Linked-Size")
        if linked and linked.isdigit():
            total = int(linked)
        bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=desc, disable=not progress, leave=False)
        received = 0
        with open(part, mode) as f, bar:
            while chunk := resp.read(CHUNK):
                f.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if length is not None and received != length:
            raise http.client.IncompleteRead(b"", length - received)
    return total, server_sha
