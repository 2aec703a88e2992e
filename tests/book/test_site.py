"""The rendered book, checked in headless Chromium: every page loads with its title, plots and rendered math,
fetches nothing from outside the site, logs no console error, stays within 8 MB, and every control moves.

Runs when ``LMKIT_SITE_DIR`` names a built site (``make test`` builds it first and sets the variable).
The controls are driven through WebDriver (selenium and Debian's chromium-driver; ``make test`` installs both).
A screenshot of the first chapter is written next to the site, under ``_build/``.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_notebooks import ROOT, toc_files

pytestmark = pytest.mark.site
SITE = Path(os.environ["LMKIT_SITE_DIR"]).resolve() if os.environ.get("LMKIT_SITE_DIR") else None
if SITE is None:
    pytest.skip("set LMKIT_SITE_DIR to a built site (make test does)", allow_module_level=True)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Flags for a sandboxed root user on a machine with no network beyond localhost.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]


PAGE_BUDGET = 8 * 2**20  # bytes transferred by one page, with an empty cache


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest's output readable
        pass

    def do_GET(self) -> None:
        if self.path == "/favicon.ico":  # browsers ask for one; the book has none
            self.send_response(204)
            self.end_headers()
            return
        super().do_GET()


@pytest.fixture(scope="module")
def server():
    handler = functools.partial(QuietHandler, directory=str(SITE))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def chromium(*args: str, tmp_path: Path) -> str:
    assert CHROMIUM, "Debian's chromium is not installed (make test installs it)"
    cmd = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class Page(HTMLParser):
    """The parts of a rendered page that the checks need."""

    def __init__(self) -> None:
        super().__init__()
        self.title = ""
        self.h1 = []
        self.images: list[str] = []
        self.math_containers = 0
        self.scripts: list[str] = []
        self._in = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("title", "h1"):
            self._in = tag
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "mjx-container":
            self.math_containers += 1
        if tag == "script" and attrs.get("src"):
            self.scripts.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in == "title":
            self.title += data
        elif self._in == "h1":
            self.h1.append(data)


def source_title(entry: str) -> str:
    """The first level-1 heading of a page's source (Markdown or notebook)."""
    md = ROOT / f"{entry}.md"
    if md.exists():
        text = md.read_text()
    else:
        import json

        cells = json.loads((ROOT / f"{entry}.ipynb").read_text())["cells"]
        text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return re.search(r"^# (.+)$", text, re.M).group(1).strip()


def source_has_math(entry: str) -> bool:
    path = ROOT / f"{entry}.md" if (ROOT / f"{entry}.md").exists() else ROOT / f"{entry}.ipynb"
    return "$" in path.read_text()


def source_has_plots(entry: str) -> bool:
    path = ROOT / f"{entry}.ipynb"
    return path.exists() and "plt.show()" in path.read_text()


def plain(text: str) -> str:
    """Compare titles the way Sphinx renders them: no Markdown/MathJax markup, collapsed whitespace."""
    return re.sub(r"\s+", " ", re.sub(r"[`*$\\]", "", text)).strip()


@pytest.mark.parametrize("entry", toc_files())
def test_page_renders(entry, server, tmp_path):
    assert (SITE / f"{entry}.html").is_file(), f"{entry}.html was not built"
    dom = chromium("--virtual-time-budget=20000", "--dump-dom", f"{server}/{entry}.html", tmp_path=tmp_path)
    page = Page()
    page.feed(dom)
    expected = plain(source_title(entry))
    assert expected.split(":")[0] in plain(page.title), (page.title, expected)
    assert any(plain(h).startswith(expected.split(":")[0][:30]) for h in page.h1 if h.strip()) or page.h1
    # MathJax is served by the site itself, never from a CDN, and typesets every formula.
    assert not [s for s in page.scripts if "mathjax" in s.lower() and s.startswith("http")], page.scripts
    if source_has_math(entry):
        assert page.math_containers > 0, f"{entry}: no formula was typeset by MathJax"
        assert "\\(" not in re.sub(r"<script.*?</script>", "", dom, flags=re.S), f"{entry}: raw TeX left on the page"
    if source_has_plots(entry):
        plots = [src for src in page.images if src.startswith("data:image/png") or "_images/" in src]
        assert plots, f"{entry}: no plot images on the page"
        for src in plots:
            if not src.startswith("data:"):
                image = (SITE / entry).parent / src
                assert image.resolve().is_file() and image.stat().st_size > 1000, src


def test_screenshot_of_first_chapter(server, tmp_path):
    chapter = next(e for e in toc_files() if e.startswith("notebooks/"))
    shot = SITE.parent / "screenshot.png"
    shot.unlink(missing_ok=True)
    chromium(
        f"--screenshot={shot}", "--window-size=1280,2000", "--virtual-time-budget=20000",
        f"{server}/{chapter}.html", tmp_path=tmp_path,
    )
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 50_000  # a real page, not a blank one


CHROMEDRIVER = shutil.which("chromedriver")
SHOWN_STATES = """return [...arguments[0].querySelectorAll('.lmkit-state')]
    .filter(s => getComputedStyle(s).display !== 'none').map(s => s.dataset.keys.split(' '));"""
IMAGES_DECODED = """return [...arguments[0].querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 0);"""
SETTLED = """const done = arguments[arguments.length - 1];
const typeset = window.MathJax && MathJax.startup && MathJax.startup.promise;
(typeset || Promise.resolve()).then(() => done(true), () => done(true));"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM and CHROMEDRIVER, "Debian's chromium and chromium-driver are missing (make test installs them)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, "--window-size=1280,2000", f"--user-data-dir={tmp_path_factory.mktemp('webdriver')}",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]:  # any other host fails, and is logged
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})  # each page pays for its files
    yield driver
    driver.quit()


def visit(browser, url: str) -> tuple[list[dict], list[dict]]:
    """Load ``url`` and wait until Alpine has started every control and MathJax has typeset the page.

    Returns the page's network events (Chrome DevTools) and its console messages.
    """
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get_log("browser"), browser.get_log("performance")  # drop what the previous page left
    browser.get(url)
    WebDriverWait(browser, 30).until(lambda d: d.execute_script(
        "return document.readyState === 'complete' && !!window.Alpine && "
        "[...document.querySelectorAll('[data-lmkit-control]')].every(e => e._x_dataStack)"))
    browser.execute_async_script(SETTLED)
    events = [json.loads(e["message"])["message"] for e in browser.get_log("performance")]
    return events, browser.get_log("browser")


def severe(console: list[dict]) -> list[str]:
    return [m["message"] for m in console if m["level"] == "SEVERE"]


@pytest.mark.parametrize("entry", toc_files())
def test_page_is_self_contained_quiet_and_small(entry, server, browser):
    events, console = visit(browser, f"{server}/{entry}.html")
    urls = [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]
    outside = [u for u in urls if not u.startswith((f"{server}/", "data:", "blob:", "about:"))]
    assert not outside, f"{entry} asks for files outside the site: {outside}"
    assert not severe(console), f"{entry}: console errors {severe(console)}"
    size = sum(e["params"]["encodedDataLength"] for e in events if e["method"] == "Network.loadingFinished")
    sizes = SITE.parent / "page_sizes"
    sizes.mkdir(exist_ok=True)
    (sizes / f"{entry.replace('/', '__')}.json").write_text(json.dumps({"page": entry, "bytes": size}))
    assert size <= PAGE_BUDGET, f"{entry}: {size / 2**20:.1f} MB transferred, over the 8 MB budget"
    assert "[interactive: open this chapter" not in browser.page_source


def interact_calls(entry: str) -> int:
    """How many ``interact(`` calls a chapter's code cells make (each is one control block on the page)."""
    path = ROOT / f"{entry}.ipynb"
    if not path.exists():
        return 0
    cells = json.loads(path.read_text())["cells"]
    return sum(len(re.findall(r"^interact\(", "".join(c["source"]), re.M)) for c in cells if c["cell_type"] == "code")


def drive(browser, block) -> None:
    """Move every input of one control block through a sample of its values; after each move exactly one
    precomputed state is shown, the one the inputs select, with its value labels and decoded figures."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    data = json.loads(block.get_attribute("x-data"))
    labels, output_of = data["L"], data["of"]
    inputs = block.find_elements(By.CSS_SELECTOR, "[data-axis]")
    assert len(inputs) == len(labels)

    def index(el) -> int:
        if el.get_attribute("type") == "checkbox":
            return int(el.is_selected())
        return int(el.get_attribute("value") or 0) if el.get_attribute("type") != "text" else 0

    def check() -> int:
        key = "-".join(str(index(el)) for el in inputs)
        assert key in output_of, f"{block.get_attribute('data-lmkit-control')}: no state {key}"
        WebDriverWait(browser, 5).until(
            lambda d: [key in s for s in d.execute_script(SHOWN_STATES, block)] == [True],
            message=f"{block.get_attribute('data-lmkit-control')}: the inputs select state {key}, the page does not "
            "show it (alone)",
        )
        for k, el in enumerate(inputs):
            if el.get_attribute("type") == "range":
                shown = el.find_element(By.XPATH, "following-sibling::output").text
                assert shown == labels[k][index(el)], (shown, labels[k])
        assert browser.execute_script(IMAGES_DECODED, block)
        return output_of[key]

    seen = {check()}
    for k, el in enumerate(inputs):
        n = len(labels[k])
        kind = el.get_attribute("type") if el.tag_name == "input" else el.tag_name
        if kind == "range":
            for key in [Keys.END, Keys.HOME, *[Keys.RIGHT] * min(n - 1, 4)]:
                el.send_keys(key)
                seen.add(check())
        elif kind == "select":
            for j in sorted({0, n - 1, *range(0, n, max(1, n // 4))}):
                Select(el).select_by_index(j)
                seen.add(check())
        elif kind == "checkbox":
            for _ in range(2):
                el.click()
                seen.add(check())
    if len(set(output_of.values())) > 1:
        assert len(seen) > 1, f"{block.get_attribute('data-lmkit-control')}: moving the controls changed nothing"


@pytest.mark.parametrize("entry", [e for e in toc_files() if interact_calls(e)])
def test_every_control_moves(entry, server, browser):
    from selenium.webdriver.common.by import By

    _, console = visit(browser, f"{server}/{entry}.html")
    blocks = browser.find_elements(By.CSS_SELECTOR, "[data-lmkit-control]")
    calls = interact_calls(entry)
    assert len(blocks) >= calls, f"{entry}: {len(blocks)} control blocks for {calls} interact calls"
    for block in blocks:
        drive(browser, block)
    assert not severe(console + browser.get_log("browser")), f"{entry}: console errors"
