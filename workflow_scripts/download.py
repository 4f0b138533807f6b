"""Resumable, verified HTTP(S) downloads of a manifest of files, and safe zip extraction.

What this module guarantees
---------------------------
* **Nothing appears under a final name unless it is complete and verified.** Data is streamed
  into ``<name>.part`` beside the final name, flushed and fsynced, checked against the expected
  size / SHA-256 / MD5 (whichever are given; otherwise against the length the server announced)
  and only then renamed over the final name with :func:`os.replace`. The final file gets the
  usual permissions ``0666 & ~umask``, as :func:`workflow_scripts.io.atomic_path` gives.
* **Re-running is cheap and safe.** A final file that exists and matches its size and checksums
  is skipped without any request (with no size or checksum given, existence counts as
  complete). A final file that fails verification is downloaded again and replaced. An
  interrupted transfer keeps its ``.part`` file and resumes from it with an HTTP ``Range``
  request; a server that ignores ``Range`` is handled by starting over.
* **Transient trouble is retried, permanent trouble is not.** Connection errors, timeouts, a
  connection dropped mid-file (the bytes received are kept and the retry resumes), HTTP 5xx,
  408 and 429 are retried with exponential backoff and jitter; other HTTP errors (404, 403, ...)
  fail at once. A size or checksum mismatch after a complete transfer discards the data and
  tries once more from scratch, then fails with the expected and actual values.
* **Per-file failures never raise.** :func:`download_all` returns a :class:`DownloadReport`
  listing what was downloaded, skipped and failed, each failure with a reason naming its URL;
  :meth:`DownloadReport.raise_for_failures` turns failures into one :class:`DownloadError`.
  Invalid input (a non-http(s) URL, an unsafe or duplicate path) raises :class:`ValueError`
  before any network activity.
* **Paths stay inside the destination folder.** Absolute paths, ``..`` segments (backslashes
  count as separators) and symlinks already present that lead outside are rejected, for
  manifest entries and for zip members alike (:func:`safe_join`, :func:`safe_extract_zip`).
* Bytes are stored exactly as the server sends them: a ``Content-Encoding`` is not decoded, so
  checksums refer to the file as published.

Not guaranteed: two *processes* downloading into the same folder at once are not coordinated
(their ``.part`` files would collide; verification then fails rather than publishing garbage).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import http.client
import logging
import os
import random
import re
import shutil
import stat
import tempfile
import threading
import zipfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import requests
import urllib3
from tqdm import tqdm

from workflow_scripts.io import file_mode

log = logging.getLogger("cellembed.download")

CHUNK_SIZE = 1 << 20
"""Bytes read from the network (and hashed) per step."""
MAX_BACKOFF = 30.0
"""Upper bound in seconds on one wait between retries."""
PART_SUFFIX = ".part"
"""Suffix of the temporary file a download is streamed into (kept between runs to resume)."""
MANIFEST_COLUMNS = ("url", "path", "sha256", "md5", "size")
REQUIRED_COLUMNS = ("url", "path")
_DIGEST_LENGTHS = {"sha256": 64, "md5": 32}
_HEX = re.compile(r"[0-9a-fA-F]+")
_DRIVE = re.compile(r"[A-Za-z]:")
_RETRY_STATUSES = frozenset({408, 429})




@dataclass(frozen=True)
class DownloadEntry:
    """One file to fetch and how to verify it.

    Attributes
    ----------
    url : str
        An http(s) URL.
    path : str
        Where the file goes, relative to the destination folder (posix ``/``).
    sha256, md5 : str, optional
        The expected digests (hex).
    size : int, optional
        The expected size in bytes.
    """

    url: str
    path: str
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None


class DownloadError(RuntimeError):
    """Some downloads failed; the message lists every failed URL and why."""


@dataclass
class DownloadReport:
    """Outcome of :func:`download_all`, entries in the order they were given."""

    done: list[DownloadEntry] = field(default_factory=list)
    """Downloaded (and verified) by this call."""
    skipped: list[DownloadEntry] = field(default_factory=list)
    """Already complete and verified; no request was made."""
    failed: list[tuple[DownloadEntry, str]] = field(default_factory=list)
    """(entry, human-readable reason naming the URL)."""

    def summary(self) -> str:
        """Describe the outcome: counts on the first line, then ``url -> path: reason`` per failure.

        Returns
        -------
        str
            The summary.

        Examples
        --------
        >>> failed = DownloadEntry("https://example.org/a.tif", "a.tif")
        >>> print(DownloadReport(failed=[(failed, "HTTP 404")]).summary())
        0 downloaded, 0 already complete, 1 failed
          https://example.org/a.tif -> a.tif: HTTP 404
        """
        lines = [f"{len(self.done)} downloaded, {len(self.skipped)} already complete, {len(self.failed)} failed"]
        lines += [f"  {entry.url} -> {entry.path}: {reason}" for entry, reason in self.failed]
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        """Raise :class:`DownloadError` with :meth:`summary` as message if anything failed.

        Raises
        ------
        DownloadError
            If :attr:`failed` is not empty.
        """
        if self.failed:
            raise DownloadError(self.summary())


# --------------------------------------------------------------------------- paths


def _normalise_relative(relative: str) -> str:
    r"""Return ``relative`` as a clean posix path (``a/b``), or raise ValueError saying what is wrong.

    Backslashes count as separators; empty and ``.`` segments are dropped; absolute paths
    (``/x``, ``\x``, ``C:...``) and any ``..`` segment are rejected.
    """
    text = str(relative)
    if not text.strip():
        raise ValueError("is empty")
    if "\x00" in text:
        raise ValueError("contains a NUL character")
    posix = text.replace("\\", "/")
    if posix.startswith("/") or _DRIVE.match(posix):
        raise ValueError("is an absolute path")
    parts = [part for part in posix.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError("escapes the destination folder (a '..' segment)")
    if not parts:
        raise ValueError("names no file")
    return "/".join(parts)


def _normalise_entry_path(relative: str) -> str:
    """Like :func:`_normalise_relative`, and the path must name a file, not a folder."""
    norm = _normalise_relative(relative)
    if str(relative).replace("\\", "/").endswith("/"):
        raise ValueError("names a folder (trailing '/'), not a file")
    return norm


def safe_join(root: str | os.PathLike, relative: str | os.PathLike) -> Path:
    r"""Return ``root / relative``, resolved, after checking it stays inside ``root``.

    Parameters
    ----------
    root : path-like
        The folder the path must stay in.
    relative : path-like
        A path relative to ``root``; backslashes count as separators.

    Returns
    -------
    pathlib.Path
        The resolved path.

    Raises
    ------
    ValueError
        Naming the path, if it is absolute (``/x``, ``\x``, ``C:x``) or if the resolved
        path lies outside the resolved ``root`` -- through ``..`` segments or through
        symlinks already present under ``root``.

    Examples
    --------
    >>> safe_join("/data", "a/b.tif").as_posix().endswith("/data/a/b.tif")
    True
    >>> safe_join("/data", "../etc/passwd")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: path "../etc/passwd" escapes ...
    """
    text = os.fspath(relative)
    posix = text.replace("\\", "/")
    if posix.startswith("/") or _DRIVE.match(posix):
        raise ValueError(f'path "{text}" is absolute; expected a path relative to {root}')
    try:
        base = Path(root).resolve()
        target = (base / posix).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: symlink loop
        raise ValueError(f'path "{text}" under {root} cannot be resolved: {exc}') from exc
    if not target.is_relative_to(base):
        raise ValueError(f'path "{text}" escapes {base} (it resolves to {target})')
    return target


class _PathRegistry:
    """Detect paths that would collide on disk.

    Duplicates, a file that is also a folder of another entry, and a path equal to another
    entry's ``.part`` temporary name.
    """

    def __init__(self) -> None:
        self.files: dict[str, str] = {}
        self.dirs: dict[str, str] = {}

    def add(self, norm: str, label: str) -> str | None:
        """Register ``norm`` (described as ``label`` in messages); return a problem or None."""
        if norm in self.files:
            return f"duplicates {self.files[norm]}"
        if norm in self.dirs:
            return f"is also a folder holding {self.dirs[norm]}"
        parts = norm.split("/")
        for i in range(1, len(parts)):
            ancestor = "/".join(parts[:i])
            if ancestor in self.files:
                return f"lies inside {self.files[ancestor]}, which is a file"
        if norm + PART_SUFFIX in self.files:
            return f"has a temporary name that is the path of {self.files[norm + PART_SUFFIX]}"
        if norm.endswith(PART_SUFFIX) and norm[: -len(PART_SUFFIX)] in self.files:
            return f"is the temporary name of {self.files[norm[: -len(PART_SUFFIX)]]}"
        self.files[norm] = label
        for i in range(1, len(parts)):
            self.dirs.setdefault("/".join(parts[:i]), label)
        return None


def _check_url(url: str) -> str | None:
    """None if ``url`` is an absolute http(s) URL with a host, else what is wrong with it."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme.lower() not in ("http", "https"):
        scheme = f"a {parts.scheme}: URL" if parts.scheme else "a URL without a scheme"
        return f"is {scheme}"
    if not parts.netloc:
        return "has no host"
    return None


# --------------------------------------------------------------------------- manifest


def read_manifest(path: str | os.PathLike) -> list[DownloadEntry]:
    """Read a CSV manifest of files to download.

    The manifest has a header row and columns ``url``, ``path`` and optionally
    ``sha256``, ``md5``, ``size`` (any order; empty cells of optional columns mean unknown).
    Rows are numbered as in a spreadsheet: the header is row 1. Blank rows are ignored.

    Parameters
    ----------
    path : path-like
        The manifest file (UTF-8, a byte-order mark is accepted).

    Returns
    -------
    list of DownloadEntry
        One per non-blank row, in file order. Paths are normalised (posix ``/``, no ``.``
        segments); digests lower-case.

    Raises
    ------
    ValueError
        Naming the manifest file, the row, the column, the value and what was expected: a
        URL that is not http(s), an empty, absolute or escaping path, a malformed hex
        digest, a size that is not a non-negative integer, colliding paths, missing or
        unknown columns.
    """
    where = str(path)
    with open(path, newline="", encoding="utf-8-sig") as fh:
        records = list(csv.reader(fh))
    header = _manifest_header(records, where)
    entries: list[DownloadEntry] = []
    registry = _PathRegistry()
    for row, record in enumerate(records[1:], start=2):
        if not any(cell.strip() for cell in record):
            continue
        if len(record) > len(header):
            extra = ",".join(record[len(header) :])
            raise ValueError(
                f'{where}, row {row}: {len(record)} fields but the header has {len(header)} (extra value "{extra}")'
            )
        values = {name: (record[i].strip() if i < len(record) else "") for i, name in enumerate(header)}
        entries.append(_manifest_entry(values, row, where, registry))
    return entries


_EXPECTED_COLUMNS = "columns url, path and optionally sha256, md5, size"


def _manifest_header(records: list[list[str]], where: str) -> list[str]:
    """Return the lower-cased column names of the header row; raise if unknown, repeated or missing."""
    if not records or not any(cell.strip() for cell in records[0]):
        raise ValueError(f"{where}, row 1: no header row; expected a header with {_EXPECTED_COLUMNS}")
    header = [cell.strip().lower() for cell in records[0]]
    header_text = ",".join(records[0])
    for i, name in enumerate(header):
        if name not in MANIFEST_COLUMNS:
            raise ValueError(
                f'{where}, row 1 (header "{header_text}"), column {i + 1}: unknown column "{records[0][i]}"; '
                f"expected {_EXPECTED_COLUMNS}"
            )
        if name in header[:i]:
            raise ValueError(f'{where}, row 1 (header "{header_text}"): column "{name}" appears twice')
    for name in REQUIRED_COLUMNS:
        if name not in header:
            raise ValueError(
                f'{where}, row 1 (header "{header_text}"): missing required column "{name}"; expected {_EXPECTED_COLUMNS}'
            )
    return header


def _cell_error(where: str, row: int, column: str, value: str, problem: str, expected: str) -> NoReturn:
    raise ValueError(f'{where}, row {row}, column "{column}": value "{value}" {problem}; expected {expected}')


def _manifest_entry(values: dict[str, str], row: int, where: str, registry: _PathRegistry) -> DownloadEntry:
    """Return the entry of one manifest row (``values``: column -> stripped cell); raise if invalid."""
    url = values["url"]
    if not url:
        _cell_error(where, row, "url", url, "is empty", "an http:// or https:// URL")
    problem = _check_url(url)
    if problem:
        _cell_error(where, row, "url", url, problem, "an http:// or https:// URL")

    raw_path = values["path"]
    try:
        norm = _normalise_entry_path(raw_path)
    except ValueError as exc:
        _cell_error(where, row, "path", raw_path, str(exc), "a relative file path inside the destination folder")
    clash = registry.add(norm, f'row {row} ("{raw_path}")')
    if clash:
        _cell_error(where, row, "path", raw_path, clash, "each file path once")

    digests: dict[str, str | None] = {}
    for algorithm, length in _DIGEST_LENGTHS.items():
        value = values.get(algorithm, "")
        if value and (len(value) != length or not _HEX.fullmatch(value)):
            _cell_error(where, row, algorithm, value, f"is not a {algorithm} digest", f"{length} hexadecimal digits")
        digests[algorithm] = value.lower() or None

    size_text = values.get("size", "")
    size = None
    if size_text:
        if not size_text.isascii() or not size_text.isdigit():
            _cell_error(where, row, "size", size_text, "is not a byte count", "a non-negative integer number of bytes")
        size = int(size_text)
    return DownloadEntry(url=url, path=norm, sha256=digests["sha256"], md5=digests["md5"], size=size)


# --------------------------------------------------------------------------- downloading


class _Transient(Exception):
    """Worth retrying: network trouble, 5xx, 408, 429, a short transfer."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


class _Fatal(Exception):
    """Give up on this file; the message is the reason reported."""


class _Mismatch(Exception):
    """The data is complete but has the wrong size or checksum."""


class _Part:
    """The ``.part`` file of one download and the running hashes of its bytes."""

    def __init__(self, path: Path, entry: DownloadEntry):
        self.path = path
        self.algorithms = [name for name in _DIGEST_LENGTHS if getattr(entry, name)]
        self.size = 0
        self.hashers = self._fresh()

    def _fresh(self) -> dict:
        return {name: hashlib.new(name) for name in self.algorithms}

    def sync(self) -> None:
        """Make ``size`` and the hashes describe the bytes on disk (re-reading them if needed)."""
        try:
            on_disk = self.path.stat().st_size
        except FileNotFoundError:
            on_disk = 0
        if on_disk == self.size:
            return
        self.size, self.hashers = 0, self._fresh()
        with open(self.path, "rb") as fh:
            while chunk := fh.read(CHUNK_SIZE):
                self._update(chunk)

    def reset(self) -> None:
        """Forget the hashed bytes (the file is about to be truncated)."""
        self.size, self.hashers = 0, self._fresh()

    def delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.reset()

    def _update(self, chunk: bytes) -> None:
        for hasher in self.hashers.values():
            hasher.update(chunk)
        self.size += len(chunk)

    def write(self, fh, chunk: bytes) -> None:
        fh.write(chunk)
        self._update(chunk)

    def digests(self) -> dict[str, str]:
        return {name: hasher.hexdigest() for name, hasher in self.hashers.items()}


def _mismatch(entry: DownloadEntry, size: int, digests: dict[str, str]) -> str | None:
    """Say what is wrong with data of ``size`` bytes and ``digests`` for ``entry``, or None."""
    if entry.size is not None and size != entry.size:
        return f"size mismatch for {entry.url}: expected {entry.size} bytes, got {size}"
    for name in _DIGEST_LENGTHS:
        expected = getattr(entry, name)
        if expected and digests[name] != expected.lower():
            return f"{name} mismatch for {entry.url}: expected {expected.lower()}, got {digests[name]}"
    return None


def _verify_file(path: Path, entry: DownloadEntry) -> str | None:
    """None if the existing file ``path`` matches ``entry``'s size and checksums, else why not."""
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        return f"has {size} bytes, expected {entry.size}"
    part = _Part(path, entry)
    if not part.algorithms:
        return None
    part.sync()
    problem = _mismatch(entry, part.size, part.digests())
    return None if problem is None else problem.replace(f" for {entry.url}", "")


def _content_range(header: str | None) -> tuple[int | None, int | None, int | None]:
    """(first, last, total) from ``bytes first-last/total`` or ``bytes */total``; None where absent."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*", header or "")
    if not match:
        return None, None, None
    first, last, total = match.groups()

    def as_int(text):
        return int(text) if text and text != "*" else None

    return as_int(first), as_int(last), as_int(total)


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.strip().isdigit() else None


def _fsync_dir(folder: Path) -> None:
    """Persist a rename (best effort; not every platform can open a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_NETWORK_ERRORS = (
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
)


class _Downloader:
    """State shared by the worker threads of one :func:`download_all` call."""

    def __init__(self, entries, paths, dest, *, retries, backoff, timeout, progress, session):
        self.entries = entries
        self.paths = paths
        self.dest = dest
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.shared_session = session
        self.local = threading.local()
        self.own_sessions: list[requests.Session] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        sizes = [entry.size for entry in entries]
        self.byte_mode = bool(entries) and all(size is not None for size in sizes)
        self.sizes = sizes
        self.credited = [0] * len(entries)
        if self.byte_mode:
            self.bar = tqdm(
                total=sum(sizes), unit="B", unit_scale=True, unit_divisor=1024, desc="download", disable=not progress
            )
        else:
            self.bar = tqdm(total=len(entries), unit="file", desc="download", disable=not progress)

    # -- plumbing

    def session(self) -> requests.Session:
        if self.shared_session is not None:
            return self.shared_session
        session = getattr(self.local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = f"cellembed-download python-requests/{requests.__version__}"
            self.local.session = session
            with self.lock:
                self.own_sessions.append(session)
        return session

    def close(self) -> None:
        self.bar.close()
        for session in self.own_sessions:
            session.close()

    def advance(self, index: int, position: int) -> None:
        """Progress: file ``index`` now has ``position`` bytes (never counted twice)."""
        if not self.byte_mode:
            return
        with self.lock:
            new = min(position, self.sizes[index])
            if new > self.credited[index]:
                self.bar.update(new - self.credited[index])
                self.credited[index] = new

    def finish(self, index: int) -> None:
        with self.lock:
            if self.byte_mode:
                self.bar.update(self.sizes[index] - self.credited[index])
                self.credited[index] = self.sizes[index]
            else:
                self.bar.update(1)

    def delay(self, failures: int, retry_after: float | None) -> float:
        wait = min(MAX_BACKOFF, self.backoff * 2 ** max(failures - 1, 0)) * random.uniform(1.0, 1.25)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return min(wait, MAX_BACKOFF)

    # -- one file

    def run_one(self, index: int) -> tuple[str, str | None]:
        """Fetch entry ``index``; returns ("done" | "skipped" | "failed", reason)."""
        entry, rel = self.entries[index], self.paths[index]
        try:
            status = self.fetch(index, entry, rel)
            reason = None
        except _Fatal as exc:
            status, reason = "failed", str(exc)
        except ValueError as exc:  # safe_join: a symlink under dest leads outside
            status, reason = "failed", f"unsafe destination for {entry.url}: {exc}"
        except Exception as exc:  # never raise per-file failures
            status, reason = "failed", f"unexpected error for {entry.url}: {type(exc).__name__}: {exc}"
        self.finish(index)
        if status == "done":
            log.info("downloaded %s -> %s", entry.url, rel)
        elif status == "skipped":
            log.info("already complete: %s", rel)
        else:
            log.warning("failed %s -> %s: %s", entry.url, rel, reason)
        return status, reason

    def fetch(self, index: int, entry: DownloadEntry, rel: str) -> str:
        url = entry.url
        final = safe_join(self.dest, rel)
        part = _Part(safe_join(self.dest, rel + PART_SUFFIX), entry)
        if final.exists() or final.is_symlink():
            if not final.is_file():
                raise _Fatal(f"cannot download {url}: {final} exists and is not a regular file")
            problem = _verify_file(final, entry)
            if problem is None:
                return "skipped"
            log.info("%s exists but %s; downloading it again", rel, problem)
        final.parent.mkdir(parents=True, exist_ok=True)

        failures = 0  # transient failures that made no progress
        from_scratch = False  # the one retry after a size/checksum mismatch was used
        best = -1
        while True:
            if self.stop.is_set():
                raise _Fatal(f"interrupted while downloading {url}")
            part.sync()
            best = max(best, part.size)
            self.advance(index, part.size)
            try:
                self.attempt(index, entry, part)
            except _Transient as exc:
                if part.size <= best:
                    failures += 1
                if failures > self.retries:
                    raise _Fatal(f"{exc} (gave up after {failures} failed attempts)") from None
                wait = self.delay(failures, exc.retry_after)
                log.info("retrying %s in %.2f s: %s", url, wait, exc)
                if self.stop.wait(wait):
                    raise _Fatal(f"interrupted while downloading {url}") from None
                continue
            except _Mismatch as exc:
                problem = str(exc)
            else:
                problem = _mismatch(entry, part.size, part.digests())
                if problem is None:
                    os.chmod(part.path, file_mode())
                    os.replace(part.path, final)
                    _fsync_dir(final.parent)
                    return "done"
            part.delete()
            if from_scratch:
                raise _Fatal(problem)
            from_scratch = True
            log.warning("%s; discarding the data and downloading again from scratch", problem)

    def attempt(self, index: int, entry: DownloadEntry, part: _Part) -> None:
        """Make one request for ``entry`` and append what it sends to ``part``.

        Returns when the part holds everything the server has; raises _Transient (retry),
        _Mismatch (complete but wrong size) or _Fatal (give up).
        """
        url = entry.url
        start = part.size
        response = self.request(url, start)
        with response:
            opened = _open_mode(response, entry, part, start)
            if opened is None:
                return  # the part was already complete
            mode, total = opened
            if entry.size is not None and total is not None and total != entry.size:
                raise _Mismatch(f"size mismatch for {url}: expected {entry.size} bytes, the server has {total}")
            self.receive(response, part, mode, index, url)
        if total is not None and part.size < total:
            raise _Transient(f"transfer of {url} ended early: {part.size} of {total} bytes")

    def request(self, url: str, start: int) -> requests.Response:
        """GET ``url`` from byte ``start`` on (streamed, not decoded); classify failures."""
        headers = {"Accept-Encoding": "identity"}
        if start > 0:
            headers["Range"] = f"bytes={start}-"
        try:
            return self.session().get(url, headers=headers, stream=True, timeout=self.timeout)
        except requests.exceptions.SSLError as exc:
            raise _Fatal(f"TLS error for {url}: {exc}") from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Transient(f"cannot connect to {url}: {exc}") from None
        except requests.RequestException as exc:
            raise _Fatal(f"request for {url} failed: {type(exc).__name__}: {exc}") from None

    def receive(self, response: requests.Response, part: _Part, mode: str, index: int, url: str) -> None:
        """Stream the body into the part file (opened with ``mode``), fsynced at the end."""
        try:
            with open(part.path, mode) as fh:
                for chunk in response.raw.stream(CHUNK_SIZE, decode_content=False):
                    if self.stop.is_set():
                        raise _Fatal(f"interrupted while downloading {url}")
                    part.write(fh, chunk)
                    self.advance(index, part.size)
                fh.flush()
                os.fsync(fh.fileno())
        except _NETWORK_ERRORS as exc:
            raise _Transient(f"transfer of {url} interrupted after {part.size} bytes: {exc}") from None
        except OSError as exc:
            raise _Fatal(f"cannot write {part.path} for {url}: {exc}") from None


def _open_mode(response: requests.Response, entry: DownloadEntry, part: _Part, start: int):
    """How to store the body of ``response``: ``(file mode, total size or None)``.

    ``None`` when a resumed part turns out to be complete already. Raises _Transient or
    _Fatal for error statuses, and _Transient (after discarding the part) when a resume
    cannot continue where the part ends.
    """
    url = entry.url
    status = response.status_code
    if status == 416 and start > 0:
        _, _, total = _content_range(response.headers.get("Content-Range"))
        expected = entry.size if entry.size is not None else total
        if expected is not None and start == expected:
            return None
        part.delete()
        raise _Transient(f"HTTP 416 for {url} when resuming at byte {start} (server size {total}); starting over")
    if status in _RETRY_STATUSES or 500 <= status < 600:
        raise _Transient(f"HTTP {status} {response.reason} for {url}", _retry_after(response))
    if status not in (200, 206):
        raise _Fatal(f"HTTP {status} {response.reason} for {url}")
    if status == 206:
        header = response.headers.get("Content-Range")
        first, _, total = _content_range(header)
        if first != start:
            part.delete()
            raise _Transient(f"{url} answered Range bytes={start}- with Content-Range {header!r}; starting over")
        return "ab", total
    if start > 0:
        log.debug("%s ignored the Range request; starting over", url)
    length = response.headers.get("Content-Length", "")
    part.reset()
    return "wb", int(length) if length.strip().isdigit() else None


def download_all(
    entries: Iterable[DownloadEntry],
    dest: str | os.PathLike,
    *,
    workers: int = 4,
    retries: int = 5,
    backoff: float = 0.5,
    timeout: float = 60.0,
    progress: bool = True,
    session: requests.Session | None = None,
) -> DownloadReport:
    """Download ``entries`` into ``dest`` (see the module docstring for the guarantees).

    Parameters
    ----------
    entries : iterable of DownloadEntry
        The files to fetch.
    dest : path-like
        Destination folder (created if needed); entry paths are relative to it.
    workers : int, optional
        Downloads that run at once (a polite limit per call), >= 1.
    retries : int, optional
        Retries of a transient failure, >= 0, waiting ``backoff * 2**k`` seconds (plus up
        to 25 % jitter, at most :data:`MAX_BACKOFF`, longer if the server sends
        ``Retry-After``); an attempt that added bytes to a resumable ``.part`` file does
        not use up a retry.
    backoff : float, optional
        The first wait in seconds.
    timeout : float, optional
        Connect and read timeout in seconds.
    progress : bool, optional
        Show a tqdm bar over bytes when every size is known, over files otherwise.
    session : requests.Session, optional
        Used by all workers if given (for example for authentication); otherwise each
        worker thread has its own :class:`requests.Session`.

    Returns
    -------
    DownloadReport
        What was downloaded, skipped and failed (with reasons), in entry order.

    Raises
    ------
    ValueError
        Before any request, for a URL that is not http(s), an unsafe path or colliding
        paths, or a bad ``workers`` / ``retries``; every other problem is reported per file
        in the returned report.
    """
    entries = list(entries)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if retries < 0:
        raise ValueError(f"retries must be non-negative, got {retries}")
    paths = _checked_paths(entries)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if not entries:
        return DownloadReport()
    downloader = _Downloader(
        entries,
        paths,
        dest,
        retries=retries,
        backoff=backoff,
        timeout=timeout,
        progress=progress,
        session=session,
    )
    outcomes = _run_workers(downloader, len(entries), workers)
    report = DownloadReport()
    for entry, (status, reason) in zip(entries, outcomes):
        if status == "done":
            report.done.append(entry)
        elif status == "skipped":
            report.skipped.append(entry)
        else:
            report.failed.append((entry, reason))
    if report.failed:
        log.warning("%s", report.summary())
    return report


def _checked_paths(entries: list[DownloadEntry]) -> list[str]:
    """Return the normalised path of every entry; raise for a bad URL or an unsafe or colliding path."""
    registry = _PathRegistry()
    paths = []
    for i, entry in enumerate(entries):
        problem = _check_url(entry.url)
        if problem:
            raise ValueError(f'entry {i + 1}: URL "{entry.url}" {problem}; expected an http:// or https:// URL')
        try:
            norm = _normalise_entry_path(entry.path)
        except ValueError as exc:
            raise ValueError(f'entry {i + 1} ({entry.url}): path "{entry.path}" {exc}') from None
        clash = registry.add(norm, f'entry {i + 1} ("{entry.path}")')
        if clash:
            raise ValueError(f'entry {i + 1} ({entry.url}): path "{entry.path}" {clash}')
        paths.append(norm)
    return paths


def _run_workers(downloader: _Downloader, n: int, workers: int) -> list[tuple[str, str | None]]:
    """Fetch entries ``0..n-1`` on ``workers`` threads; the outcome of each, in order."""
    pool = ThreadPoolExecutor(max_workers=min(workers, n), thread_name_prefix="download")
    try:
        return list(pool.map(downloader.run_one, range(n)))
    except BaseException:  # KeyboardInterrupt: stop the workers at their next chunk; .part files stay
        downloader.stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
        downloader.close()


# --------------------------------------------------------------------------- zip


def safe_extract_zip(archive: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Extract the zip ``archive`` into ``dest`` safely and return its files' paths.

    Every member is checked before anything is written. Each file is written to a
    temporary name in its folder, fsynced and renamed into place (the zip CRC is checked on
    the way, so a corrupt member leaves nothing behind). A file already present with the
    member's size is left alone, so a re-run is cheap. Folders are created as needed; files
    get ``0666 & ~umask`` (``0777`` for members marked executable).

    Parameters
    ----------
    archive : path-like
        The zip file.
    dest : path-like
        Destination folder (created if needed).

    Returns
    -------
    list of pathlib.Path
        The resolved paths of all regular-file members in archive order, whether
        extracted now or already present.

    Raises
    ------
    ValueError
        Naming the archive and the member, if a member's name is absolute, has a ``..``
        segment (backslashes count as separators), is a symbolic link, or would land
        outside ``dest`` through a symlink already there; then nothing is extracted.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    with zipfile.ZipFile(archive) as zf:
        plan = []
        for info in zf.infolist():
            name = info.filename

            def reject(why: str, name: str = name) -> NoReturn:
                raise ValueError(f'{archive}: member "{name}" {why}; refusing to extract into {root}')

            if stat.S_ISLNK(info.external_attr >> 16):
                reject("is a symbolic link")
            try:
                norm = _normalise_relative(name)
                target = safe_join(root, norm)
            except ValueError as exc:
                reject(str(exc))
            plan.append((info, target))

        files: list[Path] = []
        extracted = 0
        for info, target in plan:
            if info.is_dir() or info.filename.endswith("\\"):
                target.mkdir(parents=True, exist_ok=True)
                continue
            files.append(target)
            if target.is_file() and target.stat().st_size == info.file_size:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            _extract_member(zf, info, target)
            extracted += 1
    log.info("%s: %d files extracted, %d already present", archive, extracted, len(files) - extracted)
    return files


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    """Write one member to a temporary file beside ``target`` and rename it into place."""
    executable = (info.external_attr >> 16) & 0o111
    mode = file_mode(executable=bool(executable))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, zf.open(info) as src:
            shutil.copyfileobj(src, out, CHUNK_SIZE)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
