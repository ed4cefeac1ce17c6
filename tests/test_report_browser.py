"""End to end in a real browser: raw files -> results.json -> index.html -> headless Chromium.

Checks the page renders without a console message (no JavaScript error), that every chart was drawn
(the report's own render check marks each svg[data-plot] data-drawn="yes" once the browser has laid out a
mark of non-zero size; the DOM is read back with --dump-dom), and keeps a full-page screenshot under the
pytest tmp dir (path printed) and in the report folder. Debian's `chromium` is installed by the session
fixture when missing (as root); never skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import zlib
from collections.abc import Sequence
from html.parser import HTMLParser
from pathlib import Path

import pytest

from lab.report import run_plots, runs
from lab.report import run_report as report
from tests.conftest import debian_tool

# the first test may wait for apt-get to install Chromium
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

CHROMIUM = Path("/usr/bin/chromium")
DATA = Path(__file__).parent / "data"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--enable-logging=stderr", "--v=0")
WIDTH = 1280
MAX_HEIGHT = 16000  # the compositor's texture limit is 16384
TIMEOUT = 120
CONSOLE = re.compile(r":CONSOLE[:(\]]")
POINT = r"[\d.-]+,[\d.-]+"
PATH_DATA = re.compile(f"(M{POINT}(L{POINT})*)+")  # what svgplot draws a series with


def _run(cmd: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run in its own process group; on timeout kill the whole group (Chromium forks helpers)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture(scope="session")
def chromium() -> Path:
    return debian_tool(CHROMIUM, "chromium")


def browse(exe: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tempfile.mkdtemp(prefix="chromium-profile-")  # fresh each time: no state between runs
    try:
        done = _run([str(exe), *FLAGS, f"--user-data-dir={profile}", *args, url], TIMEOUT)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert done.returncode == 0, f"chromium exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE.search(line)]


class Dom(HTMLParser):
    """The root's attributes, and per svg[data-plot] its attributes and drawn marks."""

    def __init__(self) -> None:
        super().__init__()
        self.root: dict[str, str] = {}
        self.plots: dict[str, dict[str, str]] = {}
        self.marks: dict[str, list[dict[str, str]]] = {}
        self._plot = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "html":
            self.root = a
        elif tag == "svg" and "data-plot" in a:
            self._plot = a["data-plot"]
            self.plots[self._plot] = a
            self.marks[self._plot] = []
        elif self._plot and tag in ("path", "rect", "circle") and a.get("class") in ("series", "bar", "dot"):
            self.marks[self._plot].append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._plot = ""


def png_facts(path: Path) -> tuple[int, int, int]:
    """(width, height, distinct byte values in the decoded image data): a blank page has very few."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    idat, pos = b"", 8
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        if data[pos + 4:pos + 8] == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


def test_console_errors_are_detected(chromium: Path, tmp_path: Path) -> None:
    """The check below is not vacuous: a script error on a page does show up."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><p>x</p><script>notDefined();</script>", encoding="utf-8")
    done = browse(chromium, page.as_uri(), "--dump-dom")
    assert any("Uncaught ReferenceError" in m for m in console_messages(done.stderr)), done.stderr[-2000:]


@pytest.mark.parametrize("source", ["basic", "reports/run-a"])
def test_report_renders_every_plot_without_errors(chromium: Path, tmp_path: Path, source: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / Path(source).name
    shutil.copytree(DATA / source, run)  # basic: raw files only, so results.json is built from them
    html_path, _ = report.build(run)
    scenarios = [s for s, _ in runs.by_scenario(runs.load_results(run))]
    expected = {f"{s}/{k}" for s in scenarios for k in run_plots.PLOT_KINDS}

    done = browse(chromium, html_path.as_uri(), "--dump-dom", f"--window-size={WIDTH},900")
    assert console_messages(done.stderr) == [], "console messages (JavaScript errors?)"
    dom = Dom()
    dom.feed(done.stdout)
    assert set(dom.plots) == expected
    assert dom.root.get("data-plots") == dom.root.get("data-plots-drawn") == str(len(expected)), dom.root
    for plot_id, attrs in dom.plots.items():
        assert attrs.get("data-drawn") == "yes", f"{plot_id} was not drawn"
        assert any(m.get("d") or m.get("height") or m.get("r") for m in dom.marks[plot_id]), plot_id
        for m in dom.marks[plot_id]:
            if m.get("class") == "series":
                assert PATH_DATA.fullmatch(m["d"]), m["d"][:80]

    height = min(MAX_HEIGHT, int(dom.root.get("data-height") or 3000) + 40)
    shot = tmp_path / f"report-{run.name}.png"
    browse(chromium, html_path.as_uri(), f"--screenshot={shot}", f"--window-size={WIDTH},{height}")
    width, png_height, distinct = png_facts(shot)
    assert (width, png_height) == (WIDTH, height)
    assert distinct > 64 and shot.stat().st_size > 40_000, "the screenshot looks blank"
    shutil.copy(shot, run / "screenshot.png")
    with capsys.disabled():
        print(f"\nscreenshot: {shot} (and {run / 'screenshot.png'})")
