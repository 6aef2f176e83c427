"""tools/screenshot.py, the README's picture of the running UI: its --help, a clear error without
Chromium, and a real run in headless Chromium (skipped without Chromium, except in CI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "screenshot.py"
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))


def run_tool(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_help_shows_every_flag():
    done = run_tool("--help")
    assert done.returncode == 0, done.stderr
    for flag in ("--out", "--chromium", "--example", "--width", "--timeout"):
        assert flag in done.stdout


def test_no_chromium_is_one_clear_line(tmp_path):
    done = run_tool("--chromium", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.png"))
    assert done.returncode == 1 and not (tmp_path / "x.png").exists()
    assert done.stderr.strip().startswith("error: no Chromium at ")
    assert len(done.stderr.strip().splitlines()) == 1


def test_the_readme_shows_the_committed_screenshot():
    readme = (ROOT / "README.md").read_text()
    assert "](notebooks/img/app.png)" in readme and "python tools/screenshot.py" in readme
    png = ROOT / "notebooks" / "img" / "app.png"
    assert png.stat().st_size < 150_000, "keep the screenshot small (--width, a palette)"


@pytest.mark.browser
@pytest.mark.slow
def test_a_real_screenshot_of_the_running_app(tmp_path):
    if not CHROMIUM.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the screenshot check, but there is no Chromium at {CHROMIUM}")
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium")
    out = tmp_path / "app.png"
    done = run_tool("--out", str(out), "--width", "600", timeout=300)
    assert done.returncode == 0, done.stderr
    with Image.open(out) as image:
        assert image.width == 600 and image.height > 200
        # the page after Submit: much more than a blank or an error page's handful of colours
        assert len(image.convert("RGB").getcolors(1 << 16) or []) > 8
