"""Drive the explorer page in headless Chromium with Selenium (Debian's ``chromium`` and
``chromium-driver``, installed by ``.ci/run``): a real mouse hovers a point and drags a box
selection, a real keyboard types the label, real clicks press the buttons."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.browser import find_chromium

# Bokeh renders its widgets inside shadow roots: search them too.
_DEEP = """
function deep(root, sel, out) {
  for (const el of root.querySelectorAll('*')) {
    if (el.matches(sel)) out.push(el);
    if (el.shadowRoot) deep(el.shadowRoot, sel, out);
  }
  return out;
}
"""

_POINT = """
const doc = Bokeh.documents[0];
const plot = doc.get_model_by_name('map'), src = doc.get_model_by_name('cells');
const view = Bokeh.index.get_one(plot);
const box = view.canvas_view.el.getBoundingClientRect(), i = arguments[0];
return [view.frame.x_scale.compute(src.data.x[i]) + box.left, view.frame.y_scale.compute(src.data.y[i]) + box.top,
        src.data.Metadata_cell[i]];
"""


def require_driver():
    if os.environ.get("CELLEMBED_NO_BROWSER") == "1":
        pytest.skip("CELLEMBED_NO_BROWSER=1")
    chromium, driver = find_chromium(), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail(
            "the explorer test needs Debian's chromium and chromium-driver: run .ci/run or "
            "`apt-get install -y --no-install-recommends chromium chromium-driver` (CELLEMBED_NO_BROWSER=1 skips it)"
        )
    return chromium, driver


def _wait(condition, timeout=30.0, step=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError("the explorer page did not reach the expected state")


def drive_explorer(page: Path, screenshot: Path, downloads: Path, *, label: str = "mitotic", point: int = 0) -> dict:
    """Open ``page``, hover cell ``point``, box-select around it, label the selection, export.

    Returns the tooltip text and thumbnail width seen on hover, the number of cells selected,
    the feedback rows, the exported CSV text and the downloaded file's text."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    chromium, driver_path = require_driver()
    downloads.mkdir(parents=True, exist_ok=True)
    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1300,950"):
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        started = time.time()
        driver.get(Path(page).resolve().as_uri())
        _wait(lambda: driver.execute_script("return !!(window.Bokeh && Bokeh.documents.length && Bokeh.index)"))
        _wait(lambda: driver.execute_script(_DEEP + "return deep(document, 'canvas', []).length > 0"))
        load_s = time.time() - started
        x, y, cell = driver.execute_script(_POINT, point)

        hover = ActionBuilder(driver)
        hover.pointer_action.move_to_location(int(x), int(y))
        hover.perform()
        tip = _wait(
            lambda: driver.execute_script(
                _DEEP + "const t = deep(document, '.cell-tooltip', []).filter(e => e.offsetParent !== null);"
                "return t.length ? [t[0].innerText, t[0].querySelector('img').naturalWidth] : null;"
            ),
            timeout=10,
        )
        driver.save_screenshot(str(screenshot))

        # Box selection with the mouse: the box select tool, then a drag around the point.
        driver.execute_script(
            "const plot = Bokeh.documents[0].get_model_by_name('map');"
            "plot.toolbar.active_drag = plot.toolbar.tools.find(t => t.type == 'BoxSelectTool');"
        )
        drag = ActionBuilder(driver)
        pointer = drag.pointer_action
        pointer.move_to_location(int(x) - 30, int(y) - 30)
        pointer.pointer_down()
        pointer.move_to_location(int(x), int(y))
        pointer.move_to_location(int(x) + 30, int(y) + 30)
        pointer.pointer_up()
        drag.perform()
        selected = _wait(
            lambda: driver.execute_script(
                "return Bokeh.documents[0].get_model_by_name('cells').selected.indices.length"
            )
        )

        text = driver.execute_script(_DEEP + "return deep(document, 'input', []).filter(e => e.type == 'text')[0];")
        text.send_keys(label)
        text.send_keys("\n")
        button = driver.execute_script(
            _DEEP + "return deep(document, 'button', []).filter(e => e.innerText.includes('Label selection'))[0];"
        )
        button.click()
        rows = _wait(
            lambda: driver.execute_script("return Bokeh.documents[0].get_model_by_name('feedback').data.label.length")
        )
        export = driver.execute_script(
            _DEEP + "return deep(document, 'button', []).filter(e => e.innerText.includes('Export CSV'))[0];"
        )
        export.click()
        csv = _wait(lambda: driver.execute_script("return Bokeh.documents[0].get_model_by_name('csv_out').value"))
        downloaded = _wait(lambda: [p for p in downloads.glob("*.csv")], timeout=10)
        driver.save_screenshot(str(screenshot.with_name(screenshot.stem + "_selected.png")))
        return {
            "load_s": load_s,
            "cell": cell,
            "tooltip": tip[0],
            "thumbnail_px": tip[1],
            "selected": selected,
            "feedback_rows": rows,
            "csv": csv,
            "downloaded": downloaded[0].read_text(),
        }
    finally:
        driver.quit()
