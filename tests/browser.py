"""Headless Chromium as a subprocess: render an HTML file (the Snakemake report) in a real browser.

No Selenium or WebDriver: ``chromium --headless --dump-dom`` prints the DOM after the page's
JavaScript has run (``--virtual-time-budget`` lets timers and loads finish in fast-forwarded
virtual time), and ``--screenshot`` writes a PNG of the viewport. Each call gets a fresh temporary
profile (``--user-data-dir``), so calls are independent and can run in parallel.

Debian's package (``apt-get install --no-install-recommends chromium fonts-dejavu-core``) is what
``.ci/run`` installs.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")

INSTALL_HINT = (
    "headless Chromium is needed to render the HTML report: run .ci/run, or install it with "
    "`apt-get update && apt-get install -y --no-install-recommends chromium fonts-dejavu-core` "
    "(set CELLEMBED_NO_BROWSER=1 to skip the browser tests instead)"
)

# Lines chromium prints on stderr on every headless run in a container (no D-Bus, no GPU, the
# Debian wrapper's /dev/shm check): left out of error messages so the real cause stands out.
_NOISE = re.compile(r"dbus|DBus|Fontconfig|gpu_init|viz_main|unexpected operator|bytes written to file")


class BrowserError(RuntimeError):
    """Chromium failed, timed out, or produced no output."""


def find_chromium() -> str | None:
    """Absolute path of the first of chromium, chromium-browser, google-chrome on PATH, else None."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def require_chromium() -> str:
    """For tests: the chromium to use. Fails the calling test (call it from the test body, not a
    fixture, so that pytest reports FAILED rather than ERROR) with how to install it when there
    is none, unless CELLEMBED_NO_BROWSER=1, which skips the test instead."""
    import pytest

    if os.environ.get("CELLEMBED_NO_BROWSER") == "1":
        pytest.skip("CELLEMBED_NO_BROWSER=1: browser tests skipped")
    exe = find_chromium()
    if exe is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    return exe


def _url(target: str | os.PathLike) -> str:
    text = os.fspath(target)
    if re.match(r"^(file|https?|data|about):", text):
        return text
    path = Path(text).resolve()
    if not path.is_file():
        raise FileNotFoundError(path)
    return path.as_uri()


def _stderr_tail(stderr: str, lines: int = 40) -> str:
    kept = [line for line in stderr.splitlines() if line.strip() and not _NOISE.search(line)]
    return "\n".join(kept[-lines:]) or stderr[-2000:] or "(no stderr)"


def _run(cmd: list[str], timeout: float) -> tuple[str, str]:
    """Run chromium in its own process group, so that a timeout also ends its renderer and GPU
    processes rather than leaving them behind."""
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        raise BrowserError(
            f"chromium did not finish within {timeout} s: {' '.join(cmd)}\n{_stderr_tail(err)}"
        ) from None
    if proc.returncode != 0:
        raise BrowserError(f"chromium exited with status {proc.returncode}: {' '.join(cmd)}\n{_stderr_tail(err)}")
    return out, err


def _command(exe: str, profile: str, width: int, height: int, budget_ms: int) -> list[str]:
    return [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",  # small /dev/shm in containers crashes the renderer
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--mute-audio",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        f"--virtual-time-budget={budget_ms}",
    ]


def render(
    html_path: str | os.PathLike,
    *,
    screenshot: Path | None = None,
    width: int = 1400,
    height: int = 1000,
    budget_ms: int = 8000,
    timeout: float = 120,
) -> str:
    """The DOM of ``html_path`` (a file, or a file:/http: URL) after its JavaScript has run for
    ``budget_ms`` of virtual time, as serialized HTML. With ``screenshot``, also write a
    ``width`` x ``height`` PNG of the viewport there. Raises BrowserError (with chromium's stderr)
    on failure and when no chromium is installed."""
    if budget_ms < 1:
        raise ValueError("budget_ms must be at least 1 (chromium never finishes with 0)")
    exe = find_chromium()
    if exe is None:
        raise BrowserError(INSTALL_HINT)
    url = _url(html_path)
    with tempfile.TemporaryDirectory(prefix="cellembed-chromium-") as tmp:
        base = _command(exe, str(Path(tmp) / "profile"), width, height, budget_ms)
        if screenshot is None:
            dom, err = _run([*base, "--dump-dom", url], timeout)
        else:
            screenshot = Path(screenshot).resolve()
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.unlink(missing_ok=True)
            # Current headless Chromium does both in one run; older builds honour only one of
            # the two flags, so fall back to a second run for whichever is missing.
            dom, err = _run([*base, f"--screenshot={screenshot}", "--dump-dom", url], timeout)
            if not screenshot.is_file() or screenshot.stat().st_size == 0:
                base = _command(exe, str(Path(tmp) / "profile-shot"), width, height, budget_ms)
                _, err = _run([*base, f"--screenshot={screenshot}", url], timeout)
                if not screenshot.is_file() or screenshot.stat().st_size == 0:
                    raise BrowserError(f"chromium wrote no screenshot to {screenshot}\n{_stderr_tail(err)}")
            if "<html" not in dom.lower():
                base = _command(exe, str(Path(tmp) / "profile-dom"), width, height, budget_ms)
                dom, err = _run([*base, "--dump-dom", url], timeout)
    if "<html" not in dom.lower():
        raise BrowserError(f"chromium printed no DOM for {url}\n{_stderr_tail(err)}")
    return dom


# ---------------------------------------------------------------------------------------------
# The Snakemake 9 report
# ---------------------------------------------------------------------------------------------


# `snakemake --report report.html` (Snakemake 9) writes one self-contained file (~10 MB for the
# tiny run): React, Vega and the results (base64) inline, no network access. Until its scripts
# run, <body> holds only a "Loading Snakemake Report..." screen and an empty <div id="app">; the
# category names and the workflow description appear in the raw file only inside <script> data
# (`var categories = {...}`, `var workflow_desc = "..."`), so checks must look at rendered
# elements outside <script>. Rendered, #app holds a <nav> menu:
#
#   <ul><li class="uppercase font-bold p-1">General</li>
#       <li><a href="#" ...><svg .../><span>Workflow</span></a></li> ... Statistics, About
#       <li class="uppercase font-bold p-1">Results</li>
#       <li><a href="#" ...><svg .../><span>Embeddings</span></a></li> ... one per category
#   </ul>
#
# (categories sorted by name) and, beside it, the workflow description (report/workflow.rst as
# HTML, Jinja filled in) in <div class="document">, then the rule graph (a Vega <canvas>).

_SCRIPT_OR_STYLE = re.compile(r"<(script|style|template)\b[^>]*>.*?</\1\s*>", re.S | re.I)


class _Menu(HTMLParser):
    """Collects the texts of the navigation list: headings (<li> with class "uppercase") and
    entries (the text of an <a> inside an <li>)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.items: list[tuple[str, str]] = []  # (kind, text): kind "heading" or "entry"
        self._li: list[str | None] = []  # per open <li>: "heading", "entry" or None
        self._text: list[str] = []
        self._in_a = 0

    def handle_starttag(self, tag, attrs):
        if tag == "li":
            classes = (dict(attrs).get("class") or "").split()
            self._li.append("heading" if "uppercase" in classes else None)
            self._text = []
        elif tag == "a" and self._li:
            self._in_a += 1
            if self._li[-1] is None:
                self._li[-1] = "entry"

    def handle_endtag(self, tag):
        if tag == "a" and self._in_a:
            self._in_a -= 1
        elif tag == "li" and self._li:
            kind = self._li.pop()
            text = " ".join("".join(self._text).split())
            if kind and text:
                self.items.append((kind, text))
            self._text = []

    def handle_data(self, data):
        if self._li and (self._li[-1] == "heading" or self._in_a):
            self._text.append(data)


def _without_scripts(dom: str) -> str:
    return _SCRIPT_OR_STYLE.sub("", dom)


_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Text(HTMLParser):
    """Text outside <head> and outside elements hidden by an inline `display: none` or the
    `hidden` attribute (stylesheet rules are not applied)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._stack: list[tuple[str, bool]] = []  # (tag, hidden)

    def handle_starttag(self, tag, attrs):
        if tag in _VOID:
            return
        attrs = dict(attrs)
        style = (attrs.get("style") or "").replace(" ", "").lower()
        hidden = (self._stack and self._stack[-1][1]) or tag == "head" or "display:none" in style or "hidden" in attrs
        self._stack.append((tag, bool(hidden)))

    def handle_endtag(self, tag):
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == tag:
                del self._stack[i:]
                break

    def handle_data(self, data):
        if not (self._stack and self._stack[-1][1]):
            self.parts.append(data)


def visible_text(dom: str) -> str:
    """The text a reader sees on a rendered page, whitespace collapsed: outside <script>, <style>,
    <head> and inline-hidden elements (e.g. the report's "Loading..." screen once its scripts
    have run). The workflow description shows up here only after rendering: the raw report
    holds it only as script data."""
    parser = _Text()
    parser.feed(_without_scripts(dom))
    parser.close()
    return " ".join(" ".join(parser.parts).split())


def report_sections(dom: str) -> list[str]:
    """Result categories that the rendered Snakemake report lists in its navigation, in the order
    shown (Snakemake sorts them by name): the entries under the "Results" heading. [] when the
    report's JavaScript has not run (raw file, or a render that failed) or it has no results."""
    parser = _Menu()
    parser.feed(_without_scripts(dom))
    parser.close()
    sections: list[str] = []
    in_results = False
    for kind, text in parser.items:
        if kind == "heading":
            if in_results:
                break
            in_results = text.casefold() == "results"
        elif in_results:
            sections.append(text)
    return sections
