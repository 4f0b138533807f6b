"""A small local HTTP server for tests, with scripted faults and a request log.

Usage::

    from tests.http_server import serve

    with serve({"data/a.bin": payload}, faults={"data/a.bin": ["503", "drop"]}) as server:
        url = server.url_for("data/a.bin")        # == server.url + "/data/a.bin"
        ...                                       # fetch it
        assert server.requests == [("data/a.bin", None), ("data/a.bin", None), ("data/a.bin", "bytes=123-")]

``serve`` yields a :class:`Server` object (not a str): ``.url`` is the base URL
``http://127.0.0.1:PORT``; ``.requests`` is the list of GET requests received so far, in
arrival order, as ``(path, Range header or None)``; ``.head_requests`` the same for HEAD;
``.max_in_flight`` the largest number of requests being answered at the same moment;
``.files`` is the very dict passed in, so a test can change what is served between requests.

The server speaks HTTP/1.1 with keep-alive, sends ``Content-Length`` and ``Accept-Ranges:
bytes``, answers a single range ``bytes=a-``, ``bytes=a-b`` or ``bytes=-n`` with 206 and
``Content-Range``, an unsatisfiable one with 416 (``Content-Range: bytes */size``), ignores a
malformed or multi-range header (200, as HTTP allows), and answers unknown paths with 404.

``faults[path]`` is a queue of behaviours, one consumed per request to that path (GET or
HEAD); once it is empty the path is served normally:

* ``"drop"``: headers with the full Content-Length (of the range, if one was asked for), about
  half of that body, then the connection is closed;
* ``"norange"``: ignore any Range header and answer 200 with the whole body;
* ``"slow"`` or ``"slow:SECONDS"``: wait 2 s (or SECONDS) before answering normally;
* a three-digit status such as ``"500"``, ``"503"``, ``"429"`` or ``"404"``: answer it, with a
  short text body.

Paths are the URL path without the leading ``/``, percent-decoded, without the query string.
"""

from __future__ import annotations

import contextlib
import http
import threading
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

SLOW_SECONDS = 2.0
_WRITE_CHUNK = 64 * 1024


def _check_fault(fault: str) -> None:
    if fault in ("drop", "norange", "slow"):
        return
    if fault.startswith("slow:"):
        float(fault[5:])
        return
    if len(fault) == 3 and fault.isdigit():
        return
    raise ValueError(f"unknown fault {fault!r}; expected drop, norange, slow, slow:SECONDS or a 3-digit status")


class Server:
    """Handle on a running test server (see the module docstring)."""

    def __init__(self, url: str, files: dict[str, bytes], faults: dict[str, list[str]]):
        self.url = url
        self.files = files
        self.requests: list[tuple[str, str | None]] = []
        self.head_requests: list[tuple[str, str | None]] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._faults = {path: deque(queue) for path, queue in faults.items()}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def url_for(self, path: str) -> str:
        """The full URL of ``path`` (given without a leading ``/``)."""
        return f"{self.url}/{path}"

    def requests_for(self, path: str) -> list[str | None]:
        """The Range headers (None where absent) of the GET requests for ``path``, in order."""
        return [rng for p, rng in self.requests if p == path]

    def faults_left(self, path: str) -> list[str]:
        """The faults not consumed yet for ``path``."""
        with self._lock:
            return list(self._faults.get(path, ()))

    def __str__(self) -> str:
        return self.url

    # -- used by the handler

    def _begin(self, method: str, path: str, range_header: str | None) -> str | None:
        with self._lock:
            (self.requests if method == "GET" else self.head_requests).append((path, range_header))
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            queue = self._faults.get(path)
            return queue.popleft() if queue else None

    def _end(self) -> None:
        with self._lock:
            self._in_flight -= 1


def _parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """(first, last) for a satisfiable single range, "unsatisfiable", or None (ignore it)."""
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_text, dash, last_text = spec.strip().partition("-")
    if not dash:
        return None
    first_text, last_text = first_text.strip(), last_text.strip()
    if not first_text:  # suffix range: the last n bytes
        if not last_text.isdigit():
            return None
        n = int(last_text)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(size - n, 0), size - 1
    if not first_text.isdigit() or (last_text and not last_text.isdigit()):
        return None
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if last < first:
        return None
    if first >= size:
        return "unsatisfiable"
    return first, min(last, size - 1)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections end eventually
    server: _HTTPServer

    def log_message(self, format, *args):  # quiet: tests would drown in access logs
        pass

    def do_GET(self):
        self._respond(body=True)

    def do_HEAD(self):
        self._respond(body=False)

    def _respond(self, body: bool) -> None:
        state = self.server.state
        path = unquote(urlsplit(self.path).path).lstrip("/")
        range_header = self.headers.get("Range")
        fault = state._begin(self.command, path, range_header)
        try:
            self._serve(state, path, range_header, fault, body)
        finally:
            state._end()

    def _serve(self, state: Server, path: str, range_header: str | None, fault: str | None, body: bool) -> None:
        if fault is not None and fault.startswith("slow"):
            if state._stop.wait(float(fault[5:]) if ":" in fault else SLOW_SECONDS):
                return
            fault = None
        if fault is not None and fault.isdigit():
            self._send_status(int(fault), body)
            return
        data = state.files.get(path)
        if data is None:
            self._send_status(404, body)
            return
        wanted = None if fault == "norange" else _parse_range(range_header, len(data))
        if wanted == "unsatisfiable":
            self._send_status(416, body, {"Content-Range": f"bytes */{len(data)}"})
            return
        if wanted is None:
            first, last = 0, len(data) - 1
            self.send_response(200)
        else:
            first, last = wanted
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
        payload = data[first : last + 1]
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if not body:
            return
        if fault == "drop":
            payload = payload[: len(payload) // 2]
            self.close_connection = True
        for offset in range(0, len(payload), _WRITE_CHUNK):
            self.wfile.write(payload[offset : offset + _WRITE_CHUNK])
        self.wfile.flush()

    def _send_status(self, code: int, body: bool, headers: dict[str, str] | None = None) -> None:
        try:
            phrase = http.HTTPStatus(code).phrase
        except ValueError:
            phrase = "Status"
        text = f"{code} {phrase}\n".encode()
        self.send_response(code, phrase)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        if body:
            self.wfile.write(text)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    state: Server

    def handle_error(self, request, client_address):
        """Clients that hang up early (timeouts in tests) are expected: stay quiet."""


@contextlib.contextmanager
def serve(files: dict[str, bytes], *, faults: dict[str, list[str]] | None = None) -> Iterator[Server]:
    """Serve ``files`` (URL path without leading ``/`` -> bytes) on 127.0.0.1 at a free port
    from a background thread; yield a :class:`Server` (``.url``, ``.requests``, ...).

    ``faults`` maps a path to a list of behaviours consumed one per request (see the module
    docstring). The server is shut down when the ``with`` block ends; requests still waiting
    in a ``slow`` fault are then abandoned without an answer.
    """
    faults = faults or {}
    for queue in faults.values():
        for fault in queue:
            _check_fault(fault)
    httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
    server = Server(f"http://127.0.0.1:{httpd.server_address[1]}", files, faults)
    httpd.state = server
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server._stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
