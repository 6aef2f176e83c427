"""An attacker's probes, run against the serving paths of one checkout, on 127.0.0.1
only: the backend over HTTP (and its Lambda handler), the Gradio app as the CLI launches it, and
LitServe. Each probe records its status, how long it took, and the memory of the server's whole
process tree (workers and decoders included): peak above the start, and what is left after.

    python tools/hardening_probes.py --out build/probes-after.json
    mkdir -p build/before && git archive OLD_COMMIT lab_code | tar -x -C build/before
    PYTHONPATH=build/before python tools/hardening_probes.py --out build/probes-before.json
    python tools/hardening_probes.py --table build/probes-before.json build/probes-after.json

The second form probes an older commit's lab_code; the hostile files come from
tests/hostile.py either way. Takes ~5 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import hostile  # noqa: E402
from proc_tree import children, tree_rss_mb  # noqa: E402

from lab_code.serving.ports import free_port  # noqa: E402
from lab_code.serving.processes import start_background, stop_background  # noqa: E402

T = 120  # client timeout: a probe that hangs past this is recorded as a timeout


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def line_png() -> bytes:
    from PIL import Image, ImageDraw

    img = Image.new("L", (260, 40), 255)
    ImageDraw.Draw(img).text((8, 8), "a normal request", fill=0, font_size=20)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


class Memory:
    """Samples the tree RSS of `pid` every 0.1 s while a probe runs."""

    def __init__(self, pid: int) -> None:
        self.pid, self.start = pid, tree_rss_mb(pid)
        self.peak, self._stop = self.start, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss_mb(self.pid))
            self._stop.wait(0.1)

    def __enter__(self) -> Memory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def post(url: str, payload, timeout: float = T, **kw) -> tuple[str, float]:
    start = time.perf_counter()
    try:
        if isinstance(payload, bytes):
            resp = requests.post(url, data=payload, timeout=timeout, **kw)
        else:
            resp = requests.post(url, json=payload, timeout=timeout, **kw)
        status = str(resp.status_code)
    except requests.Timeout:
        status = "timeout"
    except requests.RequestException as err:
        status = type(err).__name__
    return status, time.perf_counter() - start


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)] if values else float("nan")


class Record:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, probe: str, status: str, seconds: float, mem: Memory | None = None,
            after_mb: float | None = None, note: str = "") -> None:
        row = {"probe": probe, "status": status, "seconds": round(seconds, 2), "note": note}
        if mem is not None:
            row["peak_mb"] = round(mem.peak - mem.start)
            if after_mb is not None:
                row["after_mb"] = round(after_mb - mem.start)
        self.rows.append(row)
        print(json.dumps(row), flush=True)


def settle(pid: int, seconds: float = 3.0) -> float:
    time.sleep(seconds)
    return tree_rss_mb(pid)


# --- the backend ---------------------------------------------------------------------------------
def backend_probes(rec: Record, tmp: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    proc = start_background(["lab_code.serving", "serverless", "--port", str(port), "--workers",
                             "1"], url + "health", tmp / "backend.log")
    line = {"image": b64(line_png())}
    try:
        for _ in range(5):
            post(url, line)
        campaign_start = tree_rss_mb(proc.pid)
        quiet = [post(url, line)[1] for _ in range(30)]

        # 1. two scan bombs at once, a normal client beside them
        bomb = {"image": b64(hostile.scan_bomb(5000, 1000))}
        with Memory(proc.pid) as mem, ThreadPoolExecutor(2) as pool:
            bombs = [pool.submit(post, url, bomb) for _ in range(2)]
            normal, health = [], []
            while not all(b.done() for b in bombs) or len(normal) < 10:
                normal.append(post(url, line))
                start = time.perf_counter()
                try:
                    health.append(str(requests.get(url + "health", timeout=T).status_code))
                except requests.RequestException as err:
                    health.append(type(err).__name__)
                if len(normal) > 400:
                    break
            results = [b.result() for b in bombs]
        after = settle(proc.pid)
        rec.add("2 concurrent JPEG scan bombs (189 KB, 5000x5000, 1000 scans)",
                "/".join(s for s, _ in results), max(t for _, t in results), mem, after,
                f"normal requests meanwhile: {sorted(set(s for s, _ in normal))} p95 "
                f"{p95([t for _, t in normal]) * 1000:.0f} ms (quiet p95 "
                f"{p95(quiet) * 1000:.0f} ms); /health {sorted(set(health))}")
        # and right after them: is the service itself free again?
        rec.add("a normal request right after the bombs", *post(url, line))

        for name, raw in [("PNG of 1 x 25,000,000 pixels", hostile.thin_png()),
                          ("ICNS whose 128x128 entry holds a 13000x13000 RGBA PNG",
                           hostile.icns_bomb(13000, "RGBA"))]:
            with Memory(proc.pid) as mem:
                status, seconds = post(url, {"image": b64(raw)})
            rec.add(f"{name} ({len(raw) // 1024} KB)", status, seconds, mem, settle(proc.pid))

        ico = {"image": b64(hostile.ico_bomb(13000, "RGBA"))}
        with Memory(proc.pid) as mem, ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda _: post(url, ico), range(3)))
        rec.add("3 concurrent ICOs saying 16x16, holding a 13000x13000 RGBA PNG (690 KB)",
                "/".join(s for s, _ in results), max(t for _, t in results), mem,
                settle(proc.pid))

        keys = hostile.many_keys(400_000)
        with Memory(proc.pid) as mem, ThreadPoolExecutor(1) as pool:
            job = pool.submit(post, url, keys, headers={"content-type": "application/json"})
            time.sleep(0.3)
            start = time.perf_counter()
            requests.get(url + "health", timeout=T)
            health_s = time.perf_counter() - start
            status, seconds = job.result()
        rec.add("JSON of 400,000 unknown keys (5.3 MB)", status, seconds, mem, settle(proc.pid),
                f"/health meanwhile {health_s * 1000:.0f} ms")

        # bodies and connections
        with Memory(proc.pid) as mem:
            socks = []
            refused = 0
            for _ in range(20):
                s = socket.create_connection(("127.0.0.1", port), timeout=T)
                try:
                    s.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                              b"application/json\r\nContent-Length: 6000000\r\n\r\n"
                              + b"x" * 5_500_000)
                except OSError:  # the server answered (503) and hung up while we sent
                    refused += 1
                socks.append(s)
            held = tree_rss_mb(proc.pid) - mem.start
            open_after = _still_open(socks, 25)
        rec.add("20 bodies stalled at 5.5 of 6 MB", f"{20 - open_after} of 20 closed in 25 s",
                25, mem, settle(proc.pid, 1), f"held {held:.0f} MB while stalled; {refused} "
                                              "refused while sending")

        with Memory(proc.pid) as mem:
            socks = []
            for _ in range(200):
                s = socket.create_connection(("127.0.0.1", port), timeout=T)
                s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                socks.append(s)
            open_after = _still_open(socks, 30, trickle=b"X-a: b\r\n")
        rec.add("200 slowloris connections (a header line every 5 s)",
                f"{open_after} of 200 still open after 30 s", 30, mem, settle(proc.pid, 1))

        with Memory(proc.pid) as mem:
            start = time.perf_counter()
            s = socket.create_connection(("127.0.0.1", port), timeout=T)
            try:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 32 * 2**20
                          + b"\r\n\r\n")
            except OSError:  # it hung up while the header was still coming: see what it said
                pass
            try:
                reply = s.recv(200)
            except OSError as err:
                reply = f"{type(err).__name__} while still sending".encode()
            s.close()
        status = reply.split(b" ")[1].decode() if reply.startswith(b"HTTP") else reply.decode()
        rec.add("a 32 MB header", status, time.perf_counter() - start, mem, settle(proc.pid, 1))

        rec.add("POST without Content-Type (a page's no-cors fetch)",
                *post(url, json.dumps(line).encode()))
        start = time.perf_counter()
        resp = requests.get(url + "health", headers={"host": "rebind.example:8000"}, timeout=T)
        rec.add("Host: rebind.example (DNS rebinding)", str(resp.status_code),
                time.perf_counter() - start)

        s = socket.create_connection(("127.0.0.1", port), timeout=T)
        s.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n{\"image\": \"")
        time.sleep(0.5)
        s.close()
        time.sleep(1.0)
        logged = [json.loads(x) for x in (tmp / "backend.log").read_text().splitlines()
                  if x.startswith('{"request_id"')][-1]
        rec.add("client disconnects mid-body", f"logged as {logged['status']}", 0)

        requests.get(url + "a\u2028b\u202ec", timeout=T)
        time.sleep(0.5)
        last = (tmp / "backend.log").read_text(encoding="utf-8").splitlines()[-1]
        raw = "\u2028" in last or "\u202e" in last
        rec.add("U+2028 and U+202E in the path", "raw in the log" if raw else "escaped in the log",
                0)
        rec.add("memory over the whole campaign", "", 0, None, None,
                f"start {campaign_start:.0f} MB, end {settle(proc.pid):.0f} MB")
    finally:
        stop_background(proc)


def _still_open(socks: list[socket.socket], seconds: float, trickle: bytes = b"") -> int:
    """How many of `socks` the server has not closed after `seconds` (sending `trickle` on
    each every 5 s meanwhile)."""
    deadline = time.monotonic() + seconds
    closed: set[int] = set()
    while time.monotonic() < deadline:
        for i, s in enumerate(socks):
            if i in closed:
                continue
            try:
                if trickle:
                    s.sendall(trickle)
                s.settimeout(0.001)
                if s.recv(65536) == b"":
                    closed.add(i)
                else:
                    closed.add(i)  # it answered (408, 400): the server is done with it
            except (TimeoutError, BlockingIOError):
                pass
            except OSError:
                closed.add(i)
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
    for s in socks:
        s.close()
    return len(socks) - len(closed)


def handler_probes(rec: Record) -> None:
    from lab_code.serving import serverless
    from lab_code.serving.lambda_adapter import direct_event, make_handler

    recognizer = serverless.load_recognizer()
    handler = make_handler(serverless.create_app(recognizer))
    event = direct_event({"image": b64(line_png())})
    event["requestContext"]["requestId"] = "abc\r\nSet-Cookie: evil=1"
    answer = handler(event, None)
    rid = answer["headers"].get("x-request-id", "")
    rec.add("Lambda event with requestId 'abc\\r\\nSet-Cookie: evil=1'",
            str(answer["statusCode"]), 0,
            note="x-request-id carries CR/LF" if "\n" in rid else f"x-request-id {rid!r}")


def worker_kill_probe(rec: Record, tmp: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = tmp / "workers.log"
    proc = start_background(["lab_code.serving", "serverless", "--port", str(port), "--workers",
                             "2"], url + "health", log)
    line = {"image": b64(line_png())}
    try:
        from lab_code.serving import runner

        runner.wait_for_workers(log, 2, T)
        spares = [json.loads(x)["pid"] for x in log.read_text().splitlines()
                  if x.startswith('{"event": "spare_started"')]
        workers = [c for c in children(proc.pid) if c not in spares
                   and "resource_tracker" not in Path(f"/proc/{c}/cmdline").read_text()]
        os.kill(workers[0], signal.SIGKILL)
        killed = time.monotonic()
        while Path(f"/proc/{workers[0]}").exists() and time.monotonic() - killed < 5:
            time.sleep(0.01)  # reaped: its threads, and its listening socket, are gone
        answers = []
        ready_s = None
        while time.monotonic() - killed < 60:
            answers.append(post(url, line, timeout=10, headers={"connection": "close"})[0])
            if ready_s is None and log.read_text().count('"event": "ready"') >= 3:
                ready_s = time.monotonic() - killed
                break
            time.sleep(0.1)
        alive = proc.poll() is None
        failed = [a for a in answers if a != "200"]
        rec.add("--workers 2, one worker killed (SIGKILL)",
                "service up" if alive else f"service exited ({proc.returncode})",
                time.monotonic() - killed,
                note=f"{len(answers) - len(failed)} of {len(answers)} requests after the kill "
                     f"answered 200; replacement ready: "
                     f"{f'{ready_s:.1f} s' if ready_s else 'never (60 s)'}")
    finally:
        stop_background(proc)


# --- the Gradio app -------------------------------------------------------------------------------
def app_probes(rec: Record, tmp: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_background(["lab_code.serving", "app", "--port", str(port), "--auth",
                             "ann:correct-horse"], url + "/", tmp / "app.log",
                            env={"GRADIO_TEMP_DIR": str(tmp / "gradio")})
    try:
        files = [("files", (f"f{i}.png", b"\x89PNG\r\n\x1a\n" + os.urandom(9 * 2**20)))
                 for i in range(10)]
        session = requests.Session()
        session.post(url + "/login", data={"username": "ann", "password": "correct-horse"},
                     timeout=T)
        with Memory(proc.pid) as mem:
            start = time.perf_counter()
            resp = session.post(url + "/gradio_api/upload", files=files, timeout=T)
        stored = sum(f.stat().st_size for f in (tmp / "gradio").rglob("*") if f.is_file())
        rec.add("app (CLI): ten 9 MB files in one upload request", str(resp.status_code),
                time.perf_counter() - start, mem, settle(proc.pid, 1),
                f"{stored / 2**20:.0f} MB stored in the upload cache")
        # 100.64.0.0/10 (shared address space) holds a cloud's metadata address; Gradio's own
        # check counts it as public (nothing answers here: this machine is offline)
        start = time.perf_counter()
        resp = session.get(url + "/gradio_api/file=http://100.100.100.200/latest/meta-data/",
                           timeout=T)
        rec.add("app: /gradio_api/file=http://100.100.100.200/latest/meta-data/",
                str(resp.status_code), time.perf_counter() - start, note=resp.text[:80])
        resp = requests.post(url + "/login", data={"username": "ann",
                                                    "password": "correct-horse"}, timeout=T)
        cookies = resp.headers.get("set-cookie", "")
        rec.add("app: the session cookie", str(resp.status_code), 0,
                note=", ".join(sorted(set(re.findall(r"(?i)(samesite=\w+|max-age=\d+|expires)",
                                                     cookies)))) or "no expiry, no SameSite")
        codes = []
        start = time.perf_counter()
        for i in range(30):
            codes.append(requests.post(url + "/login", data={"username": "ann",
                                                             "password": f"guess{i}"},
                                       timeout=T).status_code)
        rate = 30 / (time.perf_counter() - start)
        rec.add("app: 30 wrong passwords", f"{codes.count(400)}x400 {codes.count(429)}x429",
                time.perf_counter() - start, note=f"{rate:.0f} guesses/s")
        bomb = hostile.scan_bomb(5000, 1000)
        example = sorted((ROOT / "lab_code" / "assets" / "examples").glob("*.png"))[0]
        _predict(session, url, example.read_bytes(), example.name)  # the decoders are up
        with Memory(proc.pid) as mem, ThreadPoolExecutor(3) as pool:
            start = time.perf_counter()
            bombs = [pool.submit(_predict, session, url, bomb, "bomb.jpg") for _ in range(2)]
            time.sleep(0.5)
            normal = _predict(session, url, example.read_bytes(), example.name)
            results = [b.result() for b in bombs]
        rec.add("app: two uploaded scan bombs, then a normal upload",
                "/".join(r[0] for r in results) + f"/{normal[0]}",
                max(r[1] for r in results), mem, settle(proc.pid, 1),
                f"the normal one took {normal[1]:.2f} s; {results[0][2][:90]}")
    finally:
        stop_background(proc)


def _predict(session, url: str, raw: bytes, name: str) -> tuple[str, float, str]:
    """Upload a file and predict it through the app's HTTP API: (outcome, seconds, last data)."""
    start = time.perf_counter()
    path = session.post(url + "/gradio_api/upload", files=[("files", (name, raw))],
                        timeout=T).json()[0]
    event = session.post(url + "/gradio_api/call/predict", json={"data": [{
        "path": path, "meta": {"_type": "gradio.FileData"}}]}, timeout=T).json()
    stream = session.get(f"{url}/gradio_api/call/predict/{event['event_id']}", timeout=T).text
    outcome = "error" if "event: error" in stream else "complete"
    return outcome, time.perf_counter() - start, stream.strip().splitlines()[-1]


def notebook_launch_probe(rec: Record, tmp: Path) -> None:
    """A launch the way notebooks 03 and 05 did it: demo.launch() without LAUNCH_LIMITS."""
    code = f"""
import os, requests
os.environ["GRADIO_TEMP_DIR"] = {str(tmp / 'nb-gradio')!r}
from lab_code.serving import app, ports
demo = app.make_frontend(lambda img: "x")
port = ports.free_port("127.0.0.1")
_, url, _ = demo.launch(server_name="127.0.0.1", server_port=port, quiet=True,
                        prevent_thread_lock=True)
try:
    r = requests.post(url.rstrip("/") + "/gradio_api/upload",
                      files=[("files", ("big.png", b"0" * (30 * 2**20)))], timeout=120)
    print("STATUS", r.status_code)
finally:
    demo.close()
"""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env={**os.environ})
    status = next((x.split()[1] for x in out.stdout.splitlines() if x.startswith("STATUS")),
                  f"exit {out.returncode}")
    stored = sum(f.stat().st_size for f in (tmp / "nb-gradio").rglob("*") if f.is_file())
    rec.add("app (notebook-style demo.launch()): a 30 MB upload", status,
            time.perf_counter() - start, note=f"{stored / 2**20:.0f} MB stored")


# --- LitServe ----------------------------------------------------------------------------------
def litserve_probe(rec: Record, tmp: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/predict"
    try:
        proc = start_background(["lab_code.serving", "batching", "--port", str(port)],
                                f"http://127.0.0.1:{port}/health", tmp / "lit.log", timeout=180)
    except RuntimeError as err:
        rec.add("LitServe", "did not start", 0, note=str(err)[:100])
        return
    line = {"image": b64(line_png())}
    try:
        post(url, line)
        with Memory(proc.pid) as mem, ThreadPoolExecutor(1) as pool:
            bomb = pool.submit(post, url, {"image": b64(hostile.scan_bomb(5000, 1000))})
            time.sleep(0.3)
            status, seconds = post(url, line)
            bomb_status, bomb_s = bomb.result()
        rec.add("LitServe: a scan bomb, then a normal request", f"{bomb_status}/{status}",
                bomb_s, mem, settle(proc.pid, 1), f"the normal request took {seconds:.2f} s")
    finally:
        stop_background(proc)


def table(before: list[dict], after: list[dict]) -> str:
    def cell(row: dict | None) -> str:
        if row is None:
            return "-"
        parts = [row["status"] or "", f"{row['seconds']:.2f} s" if row["seconds"] else ""]
        if "peak_mb" in row:
            parts.append(f"peak +{row['peak_mb']} MB")
        if "after_mb" in row:
            parts.append(f"after {row['after_mb']:+d} MB")
        if row.get("note"):
            parts.append(row["note"])
        return "; ".join(p for p in parts if p).replace("|", "/")

    by_probe = {r["probe"]: r for r in before}
    lines = ["| probe | before | after |", "|---|---|---|"]
    for row in after:
        lines.append(f"| {row['probe']} | {cell(by_probe.get(row['probe']))} | {cell(row)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    parser.add_argument("--only", nargs="+", default=["backend", "handler", "workers", "app",
                                                       "notebook", "litserve"])
    parser.add_argument("--table", nargs=2, type=Path, metavar=("BEFORE", "AFTER"),
                        help="print the markdown table of two result files and stop")
    args = parser.parse_args(argv)
    if args.table:
        print(table(*(json.loads(p.read_text())["rows"] for p in args.table)))
        return 0
    import tempfile

    rec = Record()
    with tempfile.TemporaryDirectory(prefix="probes-") as tmp:
        steps = {"backend": backend_probes, "handler": lambda r, t: handler_probes(r),
                 "workers": worker_kill_probe, "app": app_probes,
                 "notebook": notebook_launch_probe, "litserve": litserve_probe}
        for name in args.only:
            with contextlib.suppress(KeyboardInterrupt):
                steps[name](rec, Path(tmp))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"load_average": os.getloadavg(), "rows": rec.rows},
                                       indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
