"""The Gradio app accepts only what was uploaded, and only within its limits, however it is
launched: crafted files refused from their bytes (and stopped at a deadline if not), no URL
fetched by the image input or /gradio_api/file=, one file and 10 MB per upload request, uploads
deleted, a Host allow-list, login throttling and sessions that expire. Each probe runs against
the app as `app.make_frontend` builds it and `demo.launch` (or `app.launch`) serves it."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import hostile
import pytest
import requests
from stand_ins import serve_http, wait_for

from lab_code import images
from lab_code.serving import app, ports

T = 60


@contextlib.contextmanager
def launched(demo=None, **kwargs) -> Iterator[str]:
    """A demo launched the way a notebook cell does it (demo.launch, nothing else), closed after."""
    demo = demo or app.make_frontend(lambda img: f"{img.width}x{img.height}")
    port = ports.free_port("127.0.0.1")
    try:
        _, url, _ = demo.launch(server_name="127.0.0.1", server_port=port, quiet=True,
                                prevent_thread_lock=True, **kwargs)
        yield url.rstrip("/")
    finally:
        demo.close()


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    with launched() as url:
        yield url


def call(url: str, payload, session=requests) -> tuple[str, object]:
    """Gradio's two-step HTTP API; (event, data) of the last event."""
    resp = session.post(f"{url}/gradio_api/call/predict", json={"data": [payload]}, timeout=T)
    resp.raise_for_status()
    stream = session.get(f"{url}/gradio_api/call/predict/{resp.json()['event_id']}",
                         timeout=T).text
    name, data = stream.strip().split("\n\n")[-1].splitlines()[:2]
    return name.removeprefix("event: "), json.loads(data.removeprefix("data: "))


def data_url(raw: bytes) -> dict:
    return {"url": "data:image/png;base64," + base64.b64encode(raw).decode()}


def upload(url: str, *files: tuple[str, bytes], session=requests) -> requests.Response:
    return session.post(f"{url}/gradio_api/upload",
                        files=[("files", (name, raw)) for name, raw in files], timeout=T)


# --- crafted files --------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "raw", "phrase"), [
    ("scan bomb", hostile.scan_bomb(5000, 1000), "scans"),
    ("1 x 25,000,000", hostile.thin_png(), "pixels on a side"),
    ("ICO 16x16 holding 13000x13000", hostile.ico_bomb(), "PNG and JPEG only"),
])
def test_crafted_uploads_are_refused_from_their_bytes(served, name, raw, phrase):
    """Before: two scan-bomb uploads held both prediction slots with no deadline, 16 users
    queued behind them; the ICO decoded 169 M pixels (2.5 GB at the peak)."""
    [path] = upload(served, (f"x.{name[:3]}", raw)).json()
    start = time.perf_counter()
    event, data = call(served, {"path": path, "meta": {"_type": "gradio.FileData"}})
    assert event == "error" and phrase in data["error"], data
    assert time.perf_counter() - start < 10


def test_with_the_scan_check_broken_the_deadline_stops_the_upload(served, monkeypatch):
    monkeypatch.setattr(images, "LIMITS", replace(images.LIMITS, max_jpeg_scans=10**6))
    monkeypatch.setattr(app, "DEADLINE_S", 2.0)
    start = time.perf_counter()
    event, data = call(served, data_url(hostile.scan_bomb(5000, 1000)))
    assert event == "error" and "longer than" in data["error"], data
    assert time.perf_counter() - start < 10
    line = next(p for p in app.example_paths() if p.name == "line_sans.png")
    start = time.perf_counter()
    assert call(served, data_url(line.read_bytes()))[0] == "complete"
    assert time.perf_counter() - start < 10, "the slot is free again"


# --- URLs: nothing is fetched -----------------------------------------------------------------
@pytest.fixture
def canary(monkeypatch):
    """A server on this machine that records what it is asked, with Gradio told to treat this
    machine as public (as the attacker's review did), so that only our guard stands between."""
    import safehttpx

    monkeypatch.setattr(safehttpx, "is_public_ip", lambda ip: True)
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(200)
            self.send_header("content-type", "image/png")
            self.end_headers()
            self.wfile.write(Path(app.example_paths()[0]).read_bytes())

        def log_message(self, *args):
            pass

    with serve_http(Handler) as base:
        yield base, hits


def test_the_image_input_does_not_fetch_a_url(served, canary):
    base, hits = canary
    event, data = call(served, {"path": f"{base}/a.png", "meta": {"_type": "gradio.FileData"}})
    assert event == "error" and "does not fetch URLs" in data["error"]
    assert hits == []


@pytest.mark.parametrize("route", ["/gradio_api/file={}", "/gradio_api/file/{}",
                                   "/gradio_api/proxy={}"])
def test_gradio_file_routes_do_not_fetch_a_url(served, canary, route):
    base, hits = canary
    resp = requests.get(served + route.format(f"{base}/a.png"), timeout=T)
    assert resp.status_code == 403 and "does not fetch URLs" in resp.json()["error"]
    assert hits == []


# --- uploads: one file, 10 MB in all, on every launch path, then deleted ------------------------
def test_one_upload_request_holds_one_file(served):
    """Before: the cap was per file, so ten 9 MB files went through in one request."""
    resp = upload(served, ("a.png", b"\x89PNG" * 10), ("b.png", b"\x89PNG" * 10))
    assert resp.status_code == 400 and "at most 1 file" in resp.json()["error"]
    big = b"\0" * (6 * 2**20)
    resp = upload(served, ("a.png", big), ("b.png", big))
    assert resp.status_code == 413 and "all files together" in resp.json()["error"]
    assert upload(served, ("a.png", b"\x89PNG" * 10)).status_code == 200


def test_a_launch_without_the_limits_still_has_them():
    """Before: notebooks 03 and 05 called demo.launch() without LAUNCH_LIMITS, and a 30 MB
    upload was stored. A caller's larger max_file_size does not lift the cap either."""
    for kwargs in ({}, {"max_file_size": "100mb"}):
        with launched(**kwargs) as url:
            resp = upload(url, ("big.png", b"\0" * (30 * 2**20)))
            assert resp.status_code == 413, (kwargs, resp.text[:100])


def test_uploads_are_deleted_after_a_while():
    assert app.make_frontend(lambda img: "").delete_cache == app.DELETE_CACHE
    demo = app.make_frontend(lambda img: "")
    demo.delete_cache = (1, 1)  # every second, what is a second old
    with launched(demo) as url:
        [path] = upload(url, ("a.png", b"\x89PNG" * 10)).json()
        assert Path(path).exists()
        wait_for(lambda: not Path(path).exists(), 15, "the upload was never deleted")


# --- browsers: the Host allow-list ------------------------------------------------------------
def test_a_host_name_the_app_was_not_told_about_is_refused(served):
    resp = requests.get(served + "/", headers={"host": "rebind.example:7860"}, timeout=T)
    assert resp.status_code == 400 and "--allowed-hosts rebind.example" in resp.json()["error"]
    for host in ("localhost:7860", "127.0.0.1", "[::1]:7860"):
        assert requests.get(served + "/", headers={"host": host}, timeout=T).status_code == 200


def test_a_tunnel_host_is_allowed_once_the_tunnel_is_open():
    demo = app.make_frontend(lambda img: "")
    with launched(demo, allowed_hosts=("ui.internal",)) as url:
        assert requests.get(url + "/", headers={"host": "ui.internal"},
                            timeout=T).status_code == 200
        ngrok = {"host": "abc123.ngrok-free.app"}
        assert requests.get(url + "/", headers=ngrok, timeout=T).status_code == 400
        app.allow_host(demo, "https://abc123.ngrok-free.app")
        assert requests.get(url + "/", headers=ngrok, timeout=T).status_code == 200


# --- logins -----------------------------------------------------------------------------------
def login(url: str, password: str, session=requests, **headers) -> requests.Response:
    return session.post(f"{url}/login", data={"username": "ann", "password": password},
                        headers=headers, timeout=T)


def test_failed_logins_are_throttled_per_client():
    """Before: about 360 guesses a second, for ever."""
    with launched(auth=("ann", "correct-horse")) as url:
        codes = [login(url, f"guess-{i}").status_code for i in range(app.MAX_FAILED_LOGINS + 2)]
        assert codes == [400] * app.MAX_FAILED_LOGINS + [429, 429]
        blocked = login(url, "correct-horse")
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) <= 61
        assert "Too many failed logins" in blocked.json()["error"]
        # another client behind the same proxy (the ngrok agent is this machine) still gets in
        other = login(url, "correct-horse", **{"x-forwarded-for": "203.0.113.7"})
        assert other.status_code == 200


def test_the_session_cookie_is_lax_and_expires(monkeypatch):
    """Before: no expiry and SameSite=None; now Lax, a Max-Age, and the server forgets it."""
    monkeypatch.setattr(app, "SESSION_S", 2)
    with launched(auth=("ann", "correct-horse")) as url:
        session = requests.Session()
        resp = login(url, "correct-horse", session)
        cookies = resp.headers["set-cookie"].lower()
        assert resp.status_code == 200 and "samesite=none" not in cookies
        assert cookies.count("samesite=lax") == 2 and cookies.count("max-age=2") == 2
        assert session.get(f"{url}/gradio_api/login_check", timeout=T).status_code == 200
        wait_for(lambda: session.get(f"{url}/gradio_api/login_check",
                                     timeout=T).status_code == 401, 15, "the session to expire",
                 every=0.5)
