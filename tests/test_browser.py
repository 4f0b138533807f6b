"""tests/browser.py: headless Chromium renders pages with their JavaScript and takes screenshots.

Without a chromium on PATH these tests fail (run .ci/run, which installs it), unless
CELLEMBED_NO_BROWSER=1 says to skip them. The test on a real Snakemake report runs only when
CELLEMBED_REPORT_HTML names one (it builds nothing itself).
"""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.browser import BrowserError, render, report_sections, require_chromium, visible_text

REPO = Path(__file__).resolve().parents[1]

CATEGORIES = ["QC", "Training", "Embeddings", "Metrics"]

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>browser test</title>
<style>body { margin: 0; font: 24px sans-serif; background: #fff; }
#bar { width: 50%; height: 200px; background: #c03; }</style></head>
<body><h1>static heading</h1><div id="target"></div>
<script>
  setTimeout(function () {
    document.getElementById("target").textContent = "inserted by javascript";
    var bar = document.createElement("div");
    bar.id = "bar";
    document.body.appendChild(bar);
  }, 500);
</script></body></html>
"""


@pytest.fixture
def page(tmp_path):
    path = tmp_path / "page.html"
    path.write_text(PAGE)
    return path


def test_dump_dom_runs_javascript(page):
    require_chromium()
    dom = render(page, budget_ms=2000)
    assert "static heading" in dom
    assert '<div id="target">inserted by javascript</div>' in dom
    assert 'id="bar"' in dom


def test_screenshot_is_png_of_requested_size(page, tmp_path):
    require_chromium()
    shot = tmp_path / "shots" / "page.png"
    dom = render(page, screenshot=shot, width=640, height=480, budget_ms=2000)
    assert "inserted by javascript" in dom
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(shot) as image:
        assert image.format == "PNG" and image.size == (640, 480)
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 2, "blank screenshot"
    # The red bar that the script added is painted (left half, below the heading).
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 80) & (pixels[..., 2] < 100)
    assert red.sum() > 0.05 * red.size


def test_failure_raises_with_stderr(tmp_path):
    require_chromium()
    with pytest.raises(FileNotFoundError):
        render(tmp_path / "missing.html")
    with pytest.raises(BrowserError, match="did not finish"):
        # A page that never stops computing cannot finish in 1 s of wall time.
        busy = tmp_path / "busy.html"
        busy.write_text("<script>for(;;){}</script>")
        render(busy, timeout=1, budget_ms=60_000)


# The navigation that the Snakemake 9 report's React app renders (trimmed: classes, icons).
MENU = """<html><head><title>Snakemake Report</title></head><body>
<div id="loading-screen" style="display: none;"><p>Loading Snakemake Report...</p></div>
<script>var categories = {"Hidden": {}};</script>
<div id="app"><nav><ul>
  <li class="uppercase font-bold p-1">General</li>
  <li><a href="#" class="block p-1"><svg><path d="M1"></path></svg><span>Workflow</span></a></li>
  <li><a href="#"><svg></svg><span>Statistics</span></a></li>
  <li class="uppercase font-bold p-1">Results</li>
  <li><a href="#"><svg></svg><span>Embeddings</span></a></li>
  <li><a href="#"><svg></svg><span>Metrics &amp; more</span></a></li>
  <li><a href="#"><img src="data:,"><span>QC</span></a></li>
</ul></nav><div class="document"><p><strong>cellembed</strong> turned
  the fields</p></div></div></body></html>"""


def test_report_sections_of_markup():
    assert report_sections(MENU) == ["Embeddings", "Metrics & more", "QC"]
    assert report_sections("<html><body><p>nothing here</p></body></html>") == []
    # Categories only in script data (the raw report before its JavaScript ran) do not count.
    assert report_sections('<script>var x = "<li class=uppercase>Results</li><li><a>QC</a></li>";</script>') == []
    text = visible_text(MENU)
    assert "cellembed turned the fields" in text and "Workflow Statistics Results" in text
    assert "Loading" not in text and "Hidden" not in text and "Snakemake Report" not in text


def _description_start():
    """The first words of report/workflow.rst as the rendered report shows them."""
    first = (REPO / "report" / "workflow.rst").read_text().split("\n\n")[0]
    return " ".join(first.replace("**", "").split())[:60]


@pytest.mark.skipif(not os.environ.get("CELLEMBED_REPORT_HTML"), reason="CELLEMBED_REPORT_HTML names no report")
def test_real_report_renders_sections(tmp_path):
    require_chromium()
    report = Path(os.environ["CELLEMBED_REPORT_HTML"])
    raw = report.read_text(errors="replace")
    # Before rendering: one self-contained file whose body is a loading screen.
    assert report_sections(raw) == [] and _description_start() not in visible_text(raw)

    shot = tmp_path / "report.png"
    dom = render(report, screenshot=shot)
    assert sorted(report_sections(dom)) == sorted(CATEGORIES)
    text = visible_text(dom)
    assert _description_start() in text
    assert "{{" not in text and "Loading Snakemake Report" not in text
    assert 'class="marks"' in dom  # the rule graph: a Vega canvas
    with Image.open(shot) as image:
        assert image.size == (1400, 1000)
        assert len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)) > 16
