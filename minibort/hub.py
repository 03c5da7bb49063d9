"""Fetch files from the Hugging Face hub (or any HTTP server) into a verified local cache, with urllib only.

    hf_hub_download("amazon/bort", "config.json")  ->  "~/.cache/minibort/amazon/bort/main/config.json"
    hub_weights_file("amazon/bort")                ->  ".../amazon/bort/main/pytorch_model.bin"

Where things go and come from:

- URL: `{endpoint}/{repo_id}/resolve/{revision}/{filename}`; the endpoint is the `HF_ENDPOINT`
  environment variable (a mirror), else https://huggingface.co. `HF_TOKEN`, if set, is sent as a
  bearer token (private or gated repositories), and only to the endpoint itself: same scheme, host
  and port, never to a server it redirects to.
- Cache: `$MINIBORT_CACHE` if set, else `$XDG_CACHE_HOME/minibort`, else `~/.cache/minibort`; a file
  lands in `<cache>/<owner>/<name>/<revision>/<filename>` (`repo_cache_dir`), beside a sidecar
  `<filename>.meta.json` holding its size and sha256. A revision's "/" becomes "--" (`refs/pr/1` ->
  `refs--pr--1`); a repository id without an owner lives under `<cache>/_/<name>/`. Names are checked
  so that two different (repository, revision, file) never share a cache path or a sidecar.
- Offline: `HF_HUB_OFFLINE=1` never touches the network; a cached file is used without any network
  access. Or place the files by hand: put them in a folder and pass the folder's path instead of the
  repository id (every loader accepts either), or put them into the cache folder above (a hand-placed
  file without a sidecar is used as is).

Time limits, each an environment variable holding a number (0 switches the last two off):
- `MINIBORT_HUB_TIMEOUT` seconds (default 5) to connect and for each read;
- `MINIBORT_HUB_MIN_RATE` bytes/s (default 1024) over each `RATE_WINDOW` (30 s): a server that drips
  bytes, sends its headers line by line or a little per connection cannot hold minibort forever;
- `MINIBORT_HUB_DEADLINE` seconds (default 0: none) for one whole file, retries included.

How a download stays correct, even against a hostile server:
- It streams into `<filename>.incomplete` (one process at a time: a lock; progress on a tqdm bar, or
  in a log a line every `LOG_INTERVAL` seconds), and only a whole file is renamed into place. The size is checked, and the sha256 too when the hub reports one (`X-Linked-Etag`
  / `ETag` of LFS files). A cached file is re-hashed against its sidecar each time it is looked up
  (about 0.2 s per 300 MB), so a truncated or bit-flipped one is fetched again, never used.
- An interrupted transfer resumes with `Range` and `If-Range` (the first response's strong ETag, else
  its Last-Modified if a minute older than its Date), so the server sends the rest only if the file
  did not change. A resumed answer
  with another or no validator, a wrong `Content-Range`, or a 416 starts the file over, and a file
  whose server gave no validator is never resumed: two versions are never spliced.
- Attempts in a row that add nothing beyond the most bytes ever held are bounded (`RETRIES`); a 404
  ends at once.
- Reading stops at the known size (`Content-Length`, `Content-Range`, the hub's `X-Linked-Size`; ASCII
  digits only); a size beyond the free disk space is refused before writing, and a file of unknown size
  may not exceed `MAX_UNKNOWN_SIZE`.
- Redirects go to http or https only, never from https down to http.
Every failure is a `HubError` (an `OSError`) that names the URL and says how to place the files by hand.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import http.client
import json
import math
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from ._files import write_text_atomic
from ._watchdog import Guard, GuardedHandler

try:                                    # a lock so that two processes never append to one partial file
    import fcntl
except ImportError:                     # Windows: no lock
    fcntl = None

DEFAULT_ENDPOINT = "https://huggingface.co"
TIMEOUT = 5.0           # seconds, for connecting and for each read (a stalled read resumes by Range)
MIN_RATE = 1024.0       # bytes/s a download must keep up over RATE_WINDOW seconds
RATE_WINDOW = 30.0      # seconds
RETRIES = 3             # attempts in a row that make no lasting progress before giving up
CHUNK = 1 << 20         # bytes per read
MAX_UNKNOWN_SIZE = 1 << 30   # a file whose size no header gives may not exceed 1 GiB (Bort's largest: 255 MB)
LOG_INTERVAL = 15.0     # seconds between progress lines when stderr is a log, not a terminal
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")   # in order of preference
# The files a Bort model folder holds, for the "place them by hand" hint.
MODEL_FILES = ("config.json", "model.safetensors or pytorch_model.bin", "vocab.json", "merges.txt")

# Hub names, ASCII only. A repository name: letters, digits, "_", "." and "-", starting with a letter
# or digit, ending with a letter, digit or "_" (the hub's rule), at most 96 characters.
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?")
# A revision: branch, tag or commit, "/"-separated parts that neither start nor end with "-".
_REVISION_PART = re.compile(r"[A-Za-z0-9_.](?:[A-Za-z0-9_.-]*[A-Za-z0-9_.])?")
_FILE_PART = re.compile(r"[A-Za-z0-9_.+=@,-]+")
_OWN_SUFFIXES = (".meta.json", ".incomplete")   # names minibort gives its own files in the cache
_DIGITS = re.compile(r"[0-9]{1,20}")             # a size: ASCII digits only (int() takes "٣" and "1_000")


class HubError(OSError):
    """A file could not be fetched (not found, unreachable, too slow, or failed its size / sha256 check)."""

    def __init__(self, message: str, url: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.url, self.status = url, status


# --------------------------------------------------------------------------- settings
def endpoint() -> str:
    """The hub's base URL: `$HF_ENDPOINT` or https://huggingface.co, checked to be an http(s) URL."""
    value = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or DEFAULT_ENDPOINT
    try:
        parts = urllib.parse.urlsplit(value)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:                                # e.g. a port that is not a number
        ok = False
    if not ok or not value.isascii() or not value.isprintable() or " " in value:
        raise HubError(f"HF_ENDPOINT={value!r} is not an http(s) URL such as {DEFAULT_ENDPOINT}; "
                       "correct it or unset it.")
    return value


def _env_number(name: str, default: float) -> float:
    """A number from the environment variable `name` (unset or empty: `default`); >= 0, finite."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise HubError(f"{name}={text!r} is not a number >= 0; set it to a number (e.g. {default:g}) or unset it.")
    return value


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: `cache_dir`, else `$MINIBORT_CACHE`, else `$XDG_CACHE_HOME/minibort` or `~/.cache/minibort`."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("MINIBORT_CACHE"):
        return Path(os.environ["MINIBORT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "minibort"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------- names and cache paths
def is_repo_id(name: str) -> bool:
    """True for `owner/name` (or `name`): letters, digits, `_`, `.`, `-`, no `--` or `..` (the hub's rules)."""
    parts = name.split("/") if isinstance(name, str) else []
    return (0 < len(parts) <= 2 and all(_NAME.fullmatch(p) for p in parts)
            and "--" not in name and ".." not in name)


def _check_names(repo_id: str, filename: str, revision: str) -> None:
    """Refuse names that could escape the cache folder or share a path with another name's files."""
    if not (isinstance(repo_id, str) and is_repo_id(repo_id)):
        raise HubError(f"{repo_id!r} is neither a local folder nor a hub repository id like 'amazon/bort' "
                       "(letters, digits, '_', '.', '-'; at most one '/').")
    if not (isinstance(revision, str) and 0 < len(revision) <= 255 and ".." not in revision
            and "--" not in revision            # "/" becomes "--" in the cache: "--" itself would clash
            and all(_REVISION_PART.fullmatch(p) and p != "." for p in revision.split("/"))):
        raise HubError(f"bad revision {revision!r}: use a branch, tag or commit made of letters, digits, "
                       "'_', '.', '-' and '/' (no '..', no '--', no part starting or ending with '-').")
    if not (isinstance(filename, str) and 0 < len(filename) <= 255
            and all(_FILE_PART.fullmatch(p) and p not in (".", "..") and not p.endswith(_OWN_SUFFIXES)
                    for p in filename.split("/"))):
        raise HubError(f"bad file name {filename!r}: use letters, digits and '_.+=@,-' in '/'-separated "
                       f"parts (no '.' or '..' part, no name ending in {' or '.join(_OWN_SUFFIXES)}).")


def repo_cache_dir(repo_id: str, revision: str = "main", cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding the cached files of `repo_id` at `revision`: `<cache>/<owner>/<name>/<revision>`."""
    _check_names(repo_id, "x", revision)
    repo = repo_id if "/" in repo_id else f"_/{repo_id}"    # "_" is no owner's name: no clash with owner "x"
    return cache_root(cache_dir) / repo / revision.replace("/", "--")


def cached_path(repo_id: str, filename: str, revision: str = "main",
                cache_dir: str | os.PathLike | None = None) -> Path:
    """Where `hf_hub_download` keeps a file: `repo_cache_dir(repo_id, revision) / filename`."""
    _check_names(repo_id, filename, revision)
    return repo_cache_dir(repo_id, revision, cache_dir) / filename


# --------------------------------------------------------------------------- the public fetchers
def _fetch(repo_id: str, filename: str, revision: str, cache_dir: str | os.PathLike | None,
           progress: bool) -> str:
    """`hf_hub_download` without the closing hint of its errors."""
    dest = cached_path(repo_id, filename, revision, cache_dir)
    if verify_cached(dest):
        return str(dest)
    rev = urllib.parse.quote(revision, safe="")
    url = f"{endpoint()}/{repo_id}/resolve/{rev}/{urllib.parse.quote(filename)}"
    if _offline():
        raise HubError(f"HF_HUB_OFFLINE is set and {filename} of {repo_id} is not in the cache folder "
                       f"{dest.parent} (it would come from {url}).", url=url)
    try:
        return download_url(url, dest, progress=progress)
    except HubError:
        raise
    except OSError as e:                              # e.g. the cache folder cannot be written
        raise HubError(f"cannot store {url} as {dest}: {e}.", url=url) from None


def hf_hub_download(repo_id: str, filename: str, revision: str = "main",
                    cache_dir: str | os.PathLike | None = None, progress: bool = True) -> str:
    """Path of `filename` from hub repository `repo_id` at `revision`, downloaded into the cache if needed.

    A verified cached file is returned without network access; with `HF_HUB_OFFLINE=1` a file that is
    not cached raises `HubError` naming the cache folder to put it in.
    """
    folder = cached_path(repo_id, filename, revision, cache_dir).parent     # (bad names are refused here)
    try:
        return _fetch(repo_id, filename, revision, cache_dir, progress)
    except HubError as e:
        hint = (f" To work offline, download the files by hand ({', '.join(MODEL_FILES)}) into a folder and "
                f"pass its path instead of {repo_id!r}, or put {filename} into {folder}/.")
        raise HubError(str(e) + hint, url=e.url, status=e.status) from None


def hub_weights_file(repo_id: str, revision: str = "main", cache_dir: str | os.PathLike | None = None) -> str:
    """Path of `repo_id`'s weights: model.safetensors, else pytorch_model.bin.

    Cached weights are used first, without network access (safetensors before .bin). Otherwise they are
    downloaded: model.safetensors, or pytorch_model.bin where the hub answers 404 for it. Offline
    (`HF_HUB_OFFLINE=1`) or with the hub unreachable and nothing cached, the `HubError` names the cache
    folder and the files to place there.
    """
    folder = repo_cache_dir(repo_id, revision, cache_dir)
    for name in WEIGHT_FILES:
        if verify_cached(folder / name):
            return str(folder / name)
    hint = (f" Place {' or '.join(WEIGHT_FILES)} (with config.json, vocab.json and merges.txt) into "
            f"{folder}/, or pass a folder holding them instead of {repo_id!r}.")
    if _offline():
        raise HubError(f"HF_HUB_OFFLINE is set and the cache holds no weights of {repo_id}@{revision}.{hint}")
    try:
        try:
            return _fetch(repo_id, WEIGHT_FILES[0], revision, cache_dir, progress=True)
        except HubError as e:
            if e.status != 404:
                raise
        return _fetch(repo_id, WEIGHT_FILES[1], revision, cache_dir, progress=True)
    except HubError as e:
        what = (f"{repo_id}@{revision} has neither {' nor '.join(WEIGHT_FILES)}" if e.status == 404 else
                f"cannot fetch the weights of {repo_id}@{revision}, and the cache holds none")
        raise HubError(f"{what}: {e}{hint}", url=e.url, status=e.status) from None


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _read_json(path: Path) -> dict | None:
    """A small JSON object minibort wrote, or None if it is missing or unreadable."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


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
    meta = _read_json(side) or {}
    ok = dest.stat().st_size == meta.get("size") and sha256_file(dest) == meta.get("sha256")
    if not ok:
        for p in (dest, side):
            p.unlink(missing_ok=True)
    return ok


def write_sidecar(dest: str | os.PathLike, size: int, sha256: str, **extra: object) -> None:
    """Record a cached file's size and sha256 beside it (`<name>.meta.json`)."""
    write_text_atomic(_sidecar(Path(dest)), json.dumps({"size": size, "sha256": sha256, **extra}, indent=1) + "\n")


# --------------------------------------------------------------------------- HTTP: who may see what
def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in: what "the same server" means."""
    try:
        p = urllib.parse.urlsplit(url)
        return p.scheme.lower(), (p.hostname or "").lower(), p.port or {"http": 80, "https": 443}.get(p.scheme)
    except ValueError:
        return "", "", None


def _check_redirect(old_url: str, new_url: str) -> None:
    """Follow a redirect only to http(s), and never from https down to http."""
    old, new = urllib.parse.urlsplit(old_url).scheme.lower(), urllib.parse.urlsplit(new_url).scheme.lower()
    if new not in ("http", "https") or (old == "https" and new == "http"):
        raise HubError(f"{old_url} redirects to {new_url}, which minibort does not follow (http and https "
                       "only, never from https to http).", url=old_url)


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follow safe redirects, keeping the first response's headers: the hub puts the LFS file's sha256
    (`X-Linked-Etag`) and size (`X-Linked-Size`) on its redirect to the storage server."""

    def __init__(self) -> None:
        self.first_headers: http.client.HTTPMessage | None = None

    def http_error_302(self, req, fp, code, msg, headers):
        location = headers.get("Location")
        if location:
            try:
                _check_redirect(req.full_url, urllib.parse.urljoin(req.full_url, location))
            except HubError:
                fp.close()
                raise
        if self.first_headers is None:
            self.first_headers = headers
        return super().http_error_302(req, fp, code, msg, headers)   # keeps Range and If-Range

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _open(url: str, headers: dict[str, str], timeout: float,
          guard: Guard) -> tuple[http.client.HTTPResponse, _Redirects]:
    redirects = _Redirects()
    opener = urllib.request.build_opener(redirects, GuardedHandler(guard))
    req = urllib.request.Request(url, headers={"User-Agent": "minibort", **headers})
    token = os.environ.get("HF_TOKEN")
    if token and _origin(url) == _origin(endpoint()):  # the endpoint itself, never a look-alike
        req.add_unredirected_header("Authorization", f"Bearer {token}")
    return opener.open(req, timeout=timeout), redirects


# --------------------------------------------------------------------------- HTTP: the download
@contextlib.contextmanager
def _locked(part: Path) -> Iterator[None]:
    """Hold an exclusive lock on the partial file, or refuse: another process is downloading it."""
    with open(part, "ab") as f:
        if fcntl is not None:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise HubError(f"another process is downloading {part.name[:-len('.incomplete')]} into "
                               f"{part.parent}; wait for it to finish (or remove {part} if none is).") from None
        yield


def download_url(url: str, dest: str | os.PathLike, sha256: str | None = None, progress: bool = True,
                 timeout: float | None = None, retries: int | None = None) -> str:
    """Download `url` to `dest` (resuming a previous partial download), check it, write its sidecar.

    `sha256`, if given, is checked as well as any sha256 the server reports. Returns `str(dest)`.
    Time limits come from `MINIBORT_HUB_TIMEOUT`, `MINIBORT_HUB_MIN_RATE` and `MINIBORT_HUB_DEADLINE`.
    """
    dest = Path(dest)
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
        raise HubError(f"{url} is not an http(s) URL.", url=url)
    if timeout is None:
        timeout = _env_number("MINIBORT_HUB_TIMEOUT", TIMEOUT) or TIMEOUT
    guard = Guard(_env_number("MINIBORT_HUB_DEADLINE", 0.0), _env_number("MINIBORT_HUB_MIN_RATE", MIN_RATE),
                   RATE_WINDOW)
    retries = RETRIES if retries is None else retries
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".incomplete")
    with _locked(part), guard:
        try:
            size, server_sha = _attempts(url, part, timeout, retries, progress, dest.name, guard)
        except BaseException:
            if part.exists() and part.stat().st_size == 0:
                _discard(part)                        # nothing arrived: leave no empty partial file behind
            raise

    got = part.stat().st_size
    if size is not None and got != size:
        _discard(part)
        raise HubError(f"{url}: received {got} bytes, expected {size}.", url=url)
    digest = sha256_file(part)
    for want in (sha256, server_sha):
        if want is not None and digest != want.lower():
            _discard(part)
            raise HubError(f"{url}: sha256 {digest} does not match the expected {want}; the partial "
                           "download was deleted, try again.", url=url)
    write_sidecar(dest, got, digest, url=url, sha256_checked=bool(sha256 or server_sha))
    os.replace(part, dest)                            # the whole file appears at once (rename is atomic)
    _sidecar(part).unlink(missing_ok=True)
    return str(dest)


def _discard(part: Path) -> None:
    """Delete a partial download and its record: the next attempt starts from byte 0."""
    part.unlink(missing_ok=True)
    _sidecar(part).unlink(missing_ok=True)


def _attempts(url: str, part: Path, timeout: float, retries: int, progress: bool, desc: str,
              guard: Guard) -> tuple[int | None, str | None]:
    """`_transfer` until the file is whole, `retries` attempts in a row without lasting progress, or
    the guard cuts the download. Returns `_transfer`'s (total size, server sha256)."""
    most = part.stat().st_size                        # the most bytes ever held: "lasting progress" beats it
    failures = 0
    while True:
        error: Exception | None = None
        try:
            result = _transfer(url, part, timeout, progress, desc, guard)
        except HubError:
            raise
        except (OSError, http.client.HTTPException) as e:   # time-outs, resets, short reads, restarts
            error = e
        if guard.reason:                              # (a cut also looks like the end of a file of unknown size)
            raise HubError(f"cannot download {url}: {guard.reason}.", url=url) from None
        if error is None:
            return result
        held = part.stat().st_size if part.exists() else 0
        failures = 0 if held > most else failures + 1
        most = max(most, held)
        if failures >= retries:
            reason = getattr(error, "reason", None) or error
            raise HubError(f"cannot download {url} ({type(error).__name__}: {reason}; {retries} attempts "
                           "in a row without progress).", url=url) from None
        time.sleep(0.25 * 2 ** failures)


def _validator(headers: http.client.HTTPMessage) -> list[str] | None:
    """What identifies this version of the file, for `If-Range`: a strong ETag (not W/"..."), else a
    Last-Modified at least 60 s before the response's Date (RFC 9110 8.8.2.2: a file changed twice
    within one second would otherwise keep its Last-Modified)."""
    etag = headers.get("ETag", "").strip()
    if etag and _printable(etag) and not etag.startswith("W/"):
        return ["ETag", etag]
    modified, date = headers.get("Last-Modified", "").strip(), headers.get("Date", "")
    try:
        old_enough = (email.utils.parsedate_to_datetime(date)
                      - email.utils.parsedate_to_datetime(modified)).total_seconds() >= 60
    except (TypeError, ValueError):                   # a date missing or malformed
        old_enough = False
    return ["Last-Modified", modified] if old_enough and _printable(modified) else None


def _printable(value: str) -> bool:
    return value.isascii() and value.isprintable()


def _size(headers: http.client.HTTPMessage, name: str, url: str) -> int | None:
    """An integer header (`Content-Length`, `X-Linked-Size`) of ASCII digits, or None if absent."""
    value = headers.get(name)
    if value is None:
        return None
    if not _DIGITS.fullmatch(value.strip()):
        raise HubError(f"{url}: the server sent {name}: {value!r}, which is no size.", url=url)
    return int(value)


def _sha256_from_etag(value: str | None) -> str | None:
    """The sha256 in an ETag-like header, if it is one (64 hex digits); git blob ETags are sha1s."""
    v = (value or "").strip().removeprefix("W/").strip('"').lower()
    return v if re.fullmatch(r"[0-9a-f]{64}", v) else None


def _progress_bar(total: int | None, initial: int, desc: str, enabled: bool) -> tqdm:
    """A tqdm bar on stderr. In a log (not a terminal), a line every LOG_INTERVAL seconds and one at the end."""
    tty = getattr(sys.stderr, "isatty", lambda: False)()
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                disable=not enabled, file=sys.stderr if tty else _LogLines(sys.stderr), leave=not tty,
                mininterval=0.1 if tty else LOG_INTERVAL, miniters=None if tty else 1)


class _LogLines:
    """A stream for tqdm when stderr is a log: tqdm redraws its bar in place (each draw starts with "\\r"),
    which a log file shows as one endless line; here each draw becomes a line of its own."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def _transfer(url: str, part: Path, timeout: float, progress: bool, desc: str,
              guard: Guard) -> tuple[int | None, str | None]:
    """One HTTP GET into `part`: the rest of the file if a recorded partial download can be resumed,
    else the whole file. Returns (total size, server sha256), each None if unknown. Raises HubError for
    answers that retrying cannot fix (404, 403, ...), and ConnectionError to start over."""
    record = _read_json(_sidecar(part))               # what the first response said: url, validator, total
    start = part.stat().st_size if part.exists() else 0
    validator = record.get("validator") if record and record.get("url") == url else None
    if start and not (isinstance(validator, list) and len(validator) == 2 and all(isinstance(v, str) for v in validator)):
        _discard(part)                                # no way to know the bytes held are this file's
        start = 0
    headers = {"Range": f"bytes={start}-", "If-Range": validator[1]} if start else {}
    try:
        resp, redirects = _open(url, headers, timeout, guard)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and start:                   # our partial file is no prefix of theirs: restart
            _discard(part)
            raise ConnectionError("range not satisfiable; starting over") from None
        if e.code in (408, 429) or e.code >= 500:
            raise ConnectionError(f"HTTP {e.code} {e.reason}") from None
        what = {404: "not found", 401: "unauthorized (set HF_TOKEN?)", 403: "forbidden"}.get(e.code, e.reason)
        if 300 <= e.code < 400:                       # urllib gives up after 10 redirects, or on a loop
            what = "too many redirects, or a redirect loop"
        raise HubError(f"{url}: HTTP {e.code} {what}.", url=url, status=e.code) from None
    with resp:
        first = redirects.first_headers or resp.headers
        server_sha = _sha256_from_etag(first.get("X-Linked-Etag")) or _sha256_from_etag(resp.headers.get("ETag"))
        length = _size(resp.headers, "Content-Length", url)
        linked = _size(first, "X-Linked-Size", url)
        if resp.status == 206 and start:              # the server honoured Range and If-Range: append
            m = re.fullmatch(r"bytes ([0-9]{1,20})-([0-9]{1,20})/([0-9]{1,20})",
                             resp.headers.get("Content-Range", "").strip())
            total = int(m.group(3)) if m else None
            if (not m or int(m.group(1)) != start or int(m.group(2)) != total - 1 or total != record.get("total")
                    or _validator(resp.headers) != validator or (length is not None and length != total - start)):
                _discard(part)                        # another range, size or version: never splice it
                raise ConnectionError("a resumed answer does not continue the same file; starting over")
            mode = "ab"
        elif resp.status == 200:                      # the whole file from byte 0
            start, total, mode = 0, length, "wb"
            if linked is not None and length is not None and linked != length:
                raise HubError(f"{url}: the server gives two sizes ({linked} and {length} bytes).", url=url)
            total = linked if total is None else total
            write_text_atomic(_sidecar(part), json.dumps({"url": url, "validator": _validator(resp.headers),
                                                          "total": total}) + "\n")
        else:
            raise HubError(f"{url}: unexpected answer HTTP {resp.status} {resp.reason}.", url=url, status=resp.status)
        if total is not None and total - start > shutil.disk_usage(part.parent).free:
            raise HubError(f"{url} is {total} bytes, more than the free space in {part.parent}.", url=url)
        limit = MAX_UNKNOWN_SIZE if total is None else total
        pos = start
        with open(part, mode) as f, _progress_bar(total, start, desc, progress) as bar:
            while pos < limit and (chunk := resp.read1(min(CHUNK, limit - pos))):   # never past the size
                f.write(chunk)
                pos += len(chunk)
                guard.received += len(chunk)
                bar.update(len(chunk))
        if total is None and pos >= limit and resp.read1(1):
            _discard(part)
            raise HubError(f"{url} sends more than {MAX_UNKNOWN_SIZE} bytes without saying its size.", url=url)
        if total is not None and pos != total:
            raise http.client.IncompleteRead(b"", total - pos)
    return total, server_sha
