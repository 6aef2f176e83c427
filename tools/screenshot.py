"""Take the README's screenshot of the running UI: serve `python -m lab_code.serving app` on a free
port, open it in headless Chromium (Playwright driving Debian's /usr/bin/chromium), read an example
page, and save a small PNG.

    python tools/screenshot.py                      # writes notebooks/img/app.png
    python tools/screenshot.py --out app.png --chromium /usr/bin/chromium
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "notebooks" / "img" / "app.png"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--no-first-run", "--disable-component-update", "--disable-sync"]


class ScreenshotError(Exception):
    """Something the person running the tool can fix, in one sentence."""


def wait_until_up(url: str, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ScreenshotError(f"the app exited with status {server.returncode} before it "
                                  "served the page; run `python -m lab_code.serving app` to see "
                                  "why")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    raise ScreenshotError(f"the app did not answer at {url} within {timeout:.0f} s")


def shrink(png: Path, width: int, colors: int = 96) -> None:
    """Scale to `width` pixels and store with a palette: a UI needs few colours."""
    with Image.open(png) as image:
        image = image.convert("RGB")
        if image.width > width:
            image = image.resize((width, round(image.height * width / image.width)),
                                 Image.Resampling.LANCZOS)
        image.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(png, optimize=True)


def capture(url: str, out: Path, chromium: Path, example: Path, timeout_s: float) -> None:
    from playwright.sync_api import sync_playwright

    def local_only(route) -> None:  # the page's web fonts and analytics stay offline
        if urlparse(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            page.set_default_timeout(timeout_s * 1000)
            page.route("**/*", local_only)
            page.goto(url)
            page.locator("input[type=file]").first.set_input_files(str(example))
            page.get_by_role("button", name="Submit").click()
            output = page.get_by_label("Recognized text")
            page.wait_for_function("el => el.value.length > 0", arg=output.element_handle())
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()


def take(out: Path, chromium: Path, example: Path, width: int, timeout_s: float) -> Path:
    """Serve the app, screenshot it after reading `example`, stop the app; returns `out`."""
    if not chromium.is_file():
        raise ScreenshotError(f"no Chromium at {chromium}: apt-get install -y chromium, "
                              "or pass --chromium PATH")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as err:
        raise ScreenshotError("the playwright package is missing: pip install playwright") from err
    if not example.is_file():
        raise ScreenshotError(f"no example image at {example}: pass --example PATH")
    sys.path.insert(0, str(ROOT))
    from lab_code.serving.ports import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen([sys.executable, "-m", "lab_code.serving", "app", "--host",
                                   "127.0.0.1",
                                   "--port", str(port)], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            wait_until_up(url, server, timeout_s)
            capture(url, out, chromium, example, timeout_s)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    shrink(out, width)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python tools/screenshot.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="PNG to write (default: notebooks/img/app.png)")
    parser.add_argument("--chromium", type=Path,
                        default=Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")),
                        help="the Chromium executable (default: $CHROMIUM_PATH or %(default)s)")
    parser.add_argument("--example", type=Path,
                        default=ROOT / "lab_code" / "assets" / "examples" / "page_3_lines.png",
                        help="the image the screenshot shows being read")
    parser.add_argument("--width", type=int, default=900,
                        help="width of the saved PNG in pixels (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for the app and the page (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = take(args.out, args.chromium, args.example, args.width, args.timeout)
    except ScreenshotError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
