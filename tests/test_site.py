"""The rendered book, checked in headless Chromium: every page loads with its title, plots and rendered math.

Runs when ``LMKIT_SITE_DIR`` names a built site (``make test`` builds it first and sets the variable).
A screenshot of the first chapter is written next to the site, under ``_build/``.
"""

from __future__ import annotations

import functools
import http.server
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


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest's output readable
        pass


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
