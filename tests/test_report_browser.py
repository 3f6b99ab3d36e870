"""The HTML comparison report renders in a real browser: ``foundry eval compare --out DIR`` on a synthetic
results tree (2 models x 2 tasks x 10 episodes), then ``DIR/report.html`` in headless Chromium: the DOM
holds the tables, every <img> points at a PNG that exists, the screenshot is a non-blank PNG and the
browser logged no console message (the report has no scripts, so any console line is a defect).

Skips when no Chromium binary is found (CI installs Debian's ``chromium`` in ``.ci/run``).

    uv run pytest tests/test_report_browser.py -q
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (apt-get install chromium)"
)

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-logging=stderr",
    "--v=0",
]
#: Lines Chromium writes to stderr for page console messages and uncaught exceptions.
CONSOLE = re.compile(r":CONSOLE[(:]|Uncaught")


def chromium(page: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium once on a local page with a throwaway profile."""
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE.search(line)]


def make_results_tree(root: Path) -> None:
    """2 models x 2 tasks x 10 episodes, one model clearly better."""
    from foundry_eval.results import results_path, write_results

    for model, p_success in (("good_policy", 0.9), ("weak_policy", 0.2)):
        for task in ("PushToTarget", "PickPlace"):
            episodes = [
                {
                    "skill_type": task,
                    "scenario_index": i,
                    "is_success": i < round(10 * p_success),
                    "total_time": 4.0 + 0.1 * i,
                }
                for i in range(10)
            ]
            write_results(results_path(root, model, task, "2026-01-01T00-00-00"), episodes, 10)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from click.testing import CliRunner

    from foundry_core.cli.main import build_cli

    tmp = tmp_path_factory.mktemp("report")
    make_results_tree(tmp / "results")
    res = CliRunner().invoke(
        build_cli(), ["eval", "compare", str(tmp / "results"), "--out", str(tmp / "out")]
    )
    assert res.exit_code == 0, res.output
    html = tmp / "out" / "report.html"
    assert html.is_file()
    return html


def test_report_dom_renders_tables_and_images(report: Path, tmp_path: Path) -> None:
    proc = chromium(report, tmp_path, "--dump-dom")
    dom = proc.stdout
    assert "<table>" in dom and "Policy comparison" in dom
    assert dom.count("<tr>") >= 1 + 4  # header + 2 models x 2 tasks in the per-task table
    for name in ("good_policy", "weak_policy", "PushToTarget", "PickPlace"):
        assert name in dom
    images = re.findall(r"<img src=\"([^\"]+)\"", dom)
    assert images, "the report shows no violin plots"
    for rel in images:
        png = report.parent / rel
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", rel
    assert console_errors(proc.stderr) == []


def test_report_screenshot_is_not_blank(report: Path, tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "report.png"
    proc = chromium(report, tmp_path, f"--screenshot={shot}", "--window-size=1200,1400", "--hide-scrollbars")
    assert shot.is_file() and shot.stat().st_size > 10_000
    with Image.open(shot) as img:
        assert img.size == (1200, 1400)
        gray = img.convert("L")
        lo, hi = gray.getextrema()
        dark = sum(gray.histogram()[:128])
    assert hi - lo > 100 and dark > 1000  # text and plots drawn, not an empty white page
    assert console_errors(proc.stderr) == []


def test_console_error_detection_works(tmp_path: Path) -> None:
    page = tmp_path / "bad.html"
    page.write_text("<html><body><p>x</p><script>throw new Error('boom from page')</script></body></html>")
    proc = chromium(page, tmp_path, "--dump-dom")
    assert any("boom from page" in line for line in console_errors(proc.stderr))
