"""The report in a real browser: headless Chromium loads it, every image decodes, nothing is
fetched from the network, the page does not scroll sideways at a phone's width, and the results
table sorts when a header is clicked. Screenshots (desktop and 390 px) are written to tmp_path
and, when VARLOSS_SCREENSHOT_DIR is set, copied there.

Chromium is driven through the DevTools protocol over `--remote-debugging-pipe` (fd 3/4,
NUL-separated JSON), which needs no websocket library and no free port. Skipped when
/usr/bin/chromium is absent; `.ci/run` installs it.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from test_report import REMEDIES, build_study, build_train_run

from varloss.pipelines.correct import correct
from varloss.report import fmt, write_report
from varloss.runs import FIGURE_FILE, RESULTS_FILE, RunFolder

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed"),
    pytest.mark.slow,  # trains a tiny VAE and a two-run study for the pages
    pytest.mark.timeout(300),
]

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
]

# Resolves once every <img> decoded (or failed), then reports what the page looks like.
PAGE_STATE = """
(async () => {
  const images = Array.from(document.images);
  await Promise.all(images.map(img => img.decode().catch(() => null)));
  return {
    images: images.map(img => ({
      alt: img.alt, complete: img.complete, naturalWidth: img.naturalWidth,
      naturalHeight: img.naturalHeight, scheme: img.currentSrc.split(':')[0],
      inPicture: img.parentElement.tagName === 'PICTURE',
      narrowChosen: img.currentSrc !== img.src})),
    scrollWidth: document.documentElement.scrollWidth,
    bodyScrollWidth: document.body.scrollWidth,
    innerWidth: window.innerWidth,
    clientWidth: document.documentElement.clientWidth,
    scripts: Array.from(document.scripts).filter(s => s.src).length,
    links: Array.from(document.querySelectorAll('link[href]')).length,
    title: document.title,
  };
})()
"""


class Chromium:
    """A headless Chromium and a minimal DevTools-protocol client over the debugging pipe."""

    def __init__(self, user_data_dir: Path) -> None:
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()
        # Chromium reads commands on fd 3 and writes replies on fd 4.
        script = f'exec "$@" 3<&{to_browser_read} 4>&{from_browser_write}'
        self.process = subprocess.Popen(
            ["bash", "-c", script, "bash", CHROMIUM, *FLAGS, f"--user-data-dir={user_data_dir}"],
            pass_fds=(to_browser_read, from_browser_write),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._condition = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.session: str | None = None
        self.events_seen: list[dict[str, Any]] = []

    def _read(self) -> None:
        buffer = b""
        while True:
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                return
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "id" in message:
                    with self._condition:
                        self._replies[message["id"]] = message
                        self._condition.notify_all()
                else:
                    self._events.put(message)

    def send(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._next_id not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    raise TimeoutError(f"no reply to {method} from chromium")
                self._condition.wait(min(left, 0.5))
            reply = self._replies.pop(self._next_id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"chromium sent no {method}")
            try:
                event = self._events.get(timeout=left)
            except queue.Empty:
                continue
            self.events_seen.append(event)
            if event.get("method") == method:
                return event

    def open_page(self) -> None:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.events_seen = []
        self.send("Page.enable")
        self.send("Network.enable")

    def load(self, path: Path, width: int, height: int, mobile: bool) -> dict[str, Any]:
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=mobile,
        )
        self.send("Page.navigate", url=path.resolve().as_uri())
        self.wait_event("Page.loadEventFired")
        return self.evaluate(PAGE_STATE)

    def evaluate(self, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> bytes:
        data = base64.b64decode(
            self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        )
        path.write_bytes(data)
        return data

    def requested_urls(self) -> list[str]:
        while not self._events.empty():
            self.events_seen.append(self._events.get_nowait())
        return [
            event["params"]["request"]["url"]
            for event in self.events_seen
            if event.get("method") == "Network.requestWillBeSent"
        ]

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (TimeoutError, RuntimeError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    chromium = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        chromium.open_page()
        yield chromium
    finally:
        chromium.close()


def _keep(path: Path) -> None:
    target = os.environ.get("VARLOSS_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _check_page(browser: Chromium, page: Path, name: str, tmp_path: Path) -> None:
    html = page.read_text()
    n_img = html.count("<img ")
    assert n_img >= 3
    n_narrow = html.count("<source ")
    for width, height, mobile, label in ((1280, 900, False, "desktop"), (390, 844, True, "mobile")):
        state = browser.load(page, width, height, mobile)
        assert state["innerWidth"] == width, state["innerWidth"]  # the viewport meta tag works
        assert len(state["images"]) == n_img
        assert sum(image["inPicture"] for image in state["images"]) == n_narrow
        for image in state["images"]:
            assert image["complete"] and image["naturalWidth"] > 0 and image["naturalHeight"] > 0, (
                image
            )
            assert image["scheme"] == "data"
            # Figures with a stacked variant show it on the phone and only there.
            assert image["narrowChosen"] == (mobile and image["inPicture"]), image
        # No horizontal scrolling of the page itself: tables scroll inside their own box.
        # (clientWidth excludes a vertical scroll bar, so this is the visible width.)
        visible = state["clientWidth"]
        assert visible >= width - 20
        assert state["scrollWidth"] <= visible, (label, state["scrollWidth"], visible)
        assert state["bodyScrollWidth"] <= visible, (label, state["bodyScrollWidth"], visible)
        assert state["scripts"] == 0 and state["links"] == 0
        shot = tmp_path / f"report-{name}-{label}.png"
        data = browser.screenshot(shot)
        shot_width, shot_height = _png_size(data)
        assert visible <= shot_width <= width and shot_height >= height
        _keep(shot)
    urls = browser.requested_urls()
    assert urls and all(url.startswith(("file:", "data:")) for url in urls), urls


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_study(tmp_path_factory.mktemp("study") / "study")


def test_train_run_report_in_chromium(browser: Chromium, tmp_path: Path) -> None:
    run = build_train_run(tmp_path / "run")
    correct(run, REMEDIES, fid="off", progress=False)
    page = write_report(run)
    _check_page(browser, page, "train", tmp_path)


def test_study_report_in_chromium_sorts_its_table(
    browser: Chromium, study: Path, tmp_path: Path
) -> None:
    study = Path(shutil.copytree(study, tmp_path / "study"))
    page = write_report(study)
    rows = RunFolder(study).read_csv(RESULTS_FILE)
    _check_page(browser, page, "study", tmp_path)
    column = 1  # the compared table: run, MSE, ...
    read = (
        f"Array.from(document.querySelectorAll('#results tbody tr'))"
        f".map(r => parseFloat(r.cells[{column}].dataset.value))"
    )
    click = f"document.querySelectorAll('#results thead th button')[{column}].click()"
    browser.evaluate(click)
    ascending = browser.evaluate(read)
    assert ascending == sorted(float(r["mse"]) for r in rows)
    browser.evaluate(click)
    descending = browser.evaluate(read)
    assert descending == sorted((float(r["mse"]) for r in rows), reverse=True)
    state = browser.evaluate(
        f"document.querySelectorAll('#results thead th')[{column}].getAttribute('aria-sort')"
    )
    assert state == "descending"


def test_wide_study_figure_scrolls_inside_its_box_on_a_phone(
    browser: Chromium, study: Path, tmp_path: Path
) -> None:
    study = Path(shutil.copytree(study, tmp_path / "study"))
    assert _png_size((study / FIGURE_FILE).read_bytes())[0] > 760  # the study's wide figure
    page = write_report(study)
    _check_page(browser, page, "study-figure", tmp_path)  # the page itself never scrolls sideways
    box = (
        "(() => { const d = document.querySelector('.figure-scroll');"
        " return [d.scrollWidth, d.clientWidth, d.querySelector('img').offsetWidth]; })()"
    )
    browser.load(page, 390, 844, True)
    scroll_width, client_width, shown = browser.evaluate(box)
    assert shown == 760 and scroll_width >= 760 > client_width  # readable, scrolls in its box
    browser.load(page, 1280, 900, False)
    scroll_width, client_width, shown = browser.evaluate(box)
    assert scroll_width == client_width and shown <= client_width + 2  # fits on a desktop


# The results table's cells and headers: their boxes, whether their text overflows, the table's
# wrapper's scrolling, and the viewport's width.
RESULTS_BOXES = """
(() => {
  const wrap = document.querySelector('#results').closest('.table-wrap');
  const box = el => { const r = el.getBoundingClientRect();
    return {left: r.left, right: r.right, width: r.width, height: r.height,
            text: el.textContent.trim(), clipped: el.scrollWidth > el.clientWidth + 1,
            numeric: el.classList.contains('num')}; };
  return {
    viewport: document.documentElement.clientWidth,
    wrapScroll: wrap.scrollWidth, wrapClient: wrap.clientWidth,
    headers: Array.from(document.querySelectorAll('#results thead th')).map(box),
    cells: Array.from(document.querySelectorAll('#results tbody td')).map(box),
  };
})()
"""


def test_study_results_show_the_compared_numbers_on_a_desktop_and_a_phone(
    browser: Chromium, study: Path, tmp_path: Path
) -> None:
    """At 1400 px every column of the results table (MSE, both variance losses, ratio, FID) lies
    inside the viewport with no sideways scrolling of its box; at 400 px every number is shown
    in full inside the viewport (the compact layout: label line, then the numbers)."""
    study = Path(shutil.copytree(study, tmp_path / "study"))
    page = write_report(study)
    rows = RunFolder(study).read_csv(RESULTS_FILE)
    for width, mobile in ((1400, False), (400, True)):
        browser.load(page, width, 900, mobile)
        state = browser.evaluate(RESULTS_BOXES)
        assert state["wrapScroll"] <= state["wrapClient"], (width, state)
        numbers = [cell for cell in state["cells"] if cell["numeric"]]
        assert len(numbers) == 5 * len(rows)
        for element in state["headers"] + state["cells"]:
            assert element["width"] > 0 and element["height"] > 0, (width, element)
            assert 0 <= element["left"] and element["right"] <= state["viewport"], (width, element)
        for element in numbers + state["headers"]:
            assert not element["clipped"], (width, element)  # whole numbers and headers shown
        # The numbers are the results' own: MSE of each run, in order, as the page prints it.
        shown = [cell["text"] for cell in numbers[0::5]]
        assert shown == [fmt(row["mse"]) for row in rows]
        if mobile:  # compact: the run's label spans the width, the five numbers share a line
            label, *values = state["cells"][:6]
            assert label["width"] > 0.8 * state["wrapClient"]
            assert len({round(cell["left"]) for cell in values}) == 5
            assert all(cell["left"] >= label["left"] for cell in values)
        shot = tmp_path / f"report-study-results-{width}.png"
        browser.screenshot(shot)
        _keep(shot)
