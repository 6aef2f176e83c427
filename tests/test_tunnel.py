"""The ngrok tunnel, offline: a stand-in ngrok agent (a small Python script written by the test)
speaks what pyngrok expects (logfmt start-up lines, the agent API at /api/endpoints) and forwards a
local "public" port to the app, so the whole path runs without the internet: the CLI prints a
public URL, refuses callers without the login, serves those with it, and shuts down cleanly.
Each failure (no token, no download, token rejected, no server) is one clear sentence."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.error import URLError

import pytest
import requests
from stand_ins import serve_http

from lab_code.serving import ports, tunnel

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "lab_code" / "assets" / "examples" / "line_sans.png"  # 527x57 pixels

STAND_IN_NGROK = textwrap.dedent('''\
    #!{python}
    """A stand-in for the ngrok agent: what pyngrok reads, and a local forwarder as the "edge"."""
    import http.client, json, os, sys, threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    STATE = {state!r}
    args = sys.argv[1:]
    token = args[args.index("--authtoken") + 1] if "--authtoken" in args else ""
    with open(os.path.join(STATE, "agent.json"), "w") as f:
        json.dump({{"pid": os.getpid(), "args": args}}, f)

    def log(**fields):
        print(" ".join(f'{{k}}="{{v}}"' for k, v in fields.items()), flush=True)

    HOP = {{"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}}

    class Edge(BaseHTTPRequestHandler):
        """Forwards every request, headers (Authorization, cookies) and body, to the upstream."""
        upstream = None

        def forward(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {{k: v for k, v in self.headers.items() if k.lower() not in HOP}}
            headers["X-Forwarded-For"] = self.client_address[0]
            conn = http.client.HTTPConnection(*self.upstream, timeout=60)
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in HOP:
                    self.send_header(k, v)
            self.end_headers()  # HTTP/1.0: the body ends when the connection closes
            while chunk := resp.read1(65536):
                self.wfile.write(chunk)
                self.wfile.flush()
            conn.close()

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = forward

        def log_message(self, *a):
            pass

    endpoints, edges = {{}}, {{}}

    class AgentApi(BaseHTTPRequestHandler):
        def reply(self, status, data=None):
            body = json.dumps(data).encode() if data is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path.rstrip("/") == "/api/endpoints":
                return self.reply(200, {{"endpoints": list(endpoints.values())}})
            self.reply(404, {{"error": "not found"}})

        def do_POST(self):
            options = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            host, port = options["upstream"]["url"].split("://")[-1].rsplit(":", 1)
            edge = ThreadingHTTPServer(("127.0.0.1", 0), type("E", (Edge,), {{}}))
            edge.RequestHandlerClass.upstream = (host, int(port))
            threading.Thread(target=edge.serve_forever, daemon=True).start()
            name = options["name"]
            endpoints[name] = {{"name": name, "uri": f"/api/endpoints/{{name}}", "proto": "http",
                               "url": f"http://127.0.0.1:{{edge.server_address[1]}}",
                               "upstream": options["upstream"]}}
            edges[name] = edge
            with open(os.path.join(STATE, "connected.json"), "w") as f:
                json.dump(options, f)
            self.reply(201, endpoints[name])

        def do_DELETE(self):
            name = self.path.rsplit("/", 1)[-1]
            endpoints.pop(name, None)
            edge = edges.pop(name, None)
            if edge:
                edge.shutdown()
                edge.server_close()
            open(os.path.join(STATE, "disconnected"), "w").close()
            self.reply(204)

        def log_message(self, *a):
            pass

    if args[:1] != ["start"]:
        sys.exit("this stand-in only knows `ngrok start`")
    api = ThreadingHTTPServer(("127.0.0.1", 0), AgentApi)
    addr = f"127.0.0.1:{{api.server_address[1]}}"
    log(lvl="info", msg="starting web service", obj="web", addr=addr)
    if token.startswith("rejected"):
        code = "ERR_NGROK_4018" if token.endswith("4018") else "ERR_NGROK_107"
        log(lvl="eror", msg="session closing", obj="tunnels.session",
            err=f"authentication failed: The authtoken you specified is not valid. {{code}}")
        sys.exit(1)
    log(lvl="info", msg="client session established", obj="tunnels.session")
    log(lvl="info", msg="tunnel session started", obj="tunnels.session")
    api.serve_forever()
''')


@pytest.fixture
def stand_in(tmp_path) -> Path:
    """The stand-in agent; it records its pid and arguments in tmp_path/state."""
    state = tmp_path / "state"
    state.mkdir()
    path = tmp_path / "bin" / "ngrok"
    path.parent.mkdir()
    path.write_text(STAND_IN_NGROK.format(python=sys.executable, state=str(state)))
    path.chmod(0o755)
    return path


def _state(stand_in: Path, name: str) -> Path:
    return stand_in.parent.parent / "state" / name


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def local_server() -> Iterator[int]:
    """A tiny HTTP server to tunnel to (no Gradio needed for the library tests)."""

    class Hello(BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"hello, {self.headers.get('Authorization', 'anonymous')}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    with serve_http(Hello) as base:
        yield int(base.rsplit(":", 1)[1])


@pytest.fixture
def token(monkeypatch) -> str:
    monkeypatch.setenv("NGROK_AUTHTOKEN", "dummy-token")
    return "dummy-token"


# --- the library --------------------------------------------------------------------------------


def test_open_and_close_a_tunnel(stand_in, local_server, token):
    url = tunnel.open_tunnel(local_server, ngrok_path=str(stand_in))
    try:
        agent = json.loads(_state(stand_in, "agent.json").read_text())
        assert agent["args"][:2] == ["start", "--none"] and token in agent["args"]
        assert requests.get(url, timeout=10).text == "hello, anonymous"
        # headers pass through untouched, Basic auth included
        assert requests.get(url, auth=("ann", "pw"), timeout=10).text == "hello, Basic YW5uOnB3"
    finally:
        tunnel.close_tunnel(url)
    assert _state(stand_in, "disconnected").exists()
    assert _gone(agent["pid"]), "the agent must stop when its last tunnel closes"
    tunnel.close_tunnel(url)  # twice is fine


def test_no_token_is_one_sentence(monkeypatch, local_server):
    monkeypatch.delenv("NGROK_AUTHTOKEN", raising=False)
    with pytest.raises(tunnel.TunnelError, match="^NGROK_AUTHTOKEN is not set: .*tunnel.$"):
        tunnel.open_tunnel(local_server)


def test_nothing_listening(stand_in, token, free_port):
    with pytest.raises(tunnel.TunnelError, match=f"Nothing is listening on 127.0.0.1:{free_port}"):
        tunnel.open_tunnel(free_port, ngrok_path=str(stand_in))
    assert not _state(stand_in, "agent.json").exists(), "checked before starting the agent"


@pytest.mark.parametrize("rejected", ["rejected-107", "rejected-4018"])
def test_rejected_token(stand_in, local_server, monkeypatch, rejected):
    monkeypatch.setenv("NGROK_AUTHTOKEN", rejected)
    with pytest.raises(tunnel.TunnelError) as info:
        tunnel.open_tunnel(local_server, ngrok_path=str(stand_in))
    assert str(info.value).startswith("ngrok rejected the authtoken in NGROK_AUTHTOKEN")
    assert _gone(json.loads(_state(stand_in, "agent.json").read_text())["pid"])


def test_offline_agent_download(tmp_path, local_server, token, monkeypatch):
    """No agent at ngrok_path: pyngrok downloads it. Offline, the download raises URLError; it is
    mocked here so that the test never reaches the internet, even on a machine that could."""
    from pyngrok import installer

    attempts = []

    def offline(url, *args, **kwargs):
        attempts.append(url)
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(installer, "_download_file", offline)
    missing = tmp_path / "no-agent-here" / "ngrok"
    with pytest.raises(tunnel.TunnelError, match="^Could not download the ngrok agent"):
        tunnel.open_tunnel(local_server, ngrok_path=str(missing))
    assert attempts and attempts[0].startswith("https://"), "pyngrok tried to download the agent"
    assert not missing.exists()


def test_agent_that_cannot_run(tmp_path, local_server, token):
    broken = tmp_path / "ngrok"
    broken.write_text("not a program")  # and not executable
    with pytest.raises(tunnel.TunnelError, match="^Could not run the ngrok agent at"):
        tunnel.open_tunnel(local_server, ngrok_path=str(broken))


# --- the command line: python -m lab_code.serving app --tunnel
# --------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NGROK_AUTHTOKEN"}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


@pytest.mark.slow
def test_cli_without_token_names_the_variable(free_port):
    cmd = [sys.executable, "-m", "lab_code.serving", "app", "--tunnel", "--port", str(free_port)]
    # the timeout only keeps a hang from blocking the suite; it says nothing about speed
    out = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "NGROK_AUTHTOKEN" in lines[0] and "Traceback" not in out.stderr
    assert "Running on" not in out.stdout, "it must stop before starting the server"


def _read_until(proc: subprocess.Popen, pattern: str, seen: list[str], timeout: float) -> re.Match:
    """Read the process's stdout line by line until a line matches (or fail with what it said)."""
    found: list[re.Match] = []

    def reader():
        for line in proc.stdout:
            seen.append(line)
            if m := re.search(pattern, line):
                found.append(m)
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(timeout)
    if not found:
        pytest.fail(f"no line matching {pattern!r} within {timeout:.0f} s; output:\n"
                    + "".join(seen))
    return found[0]


@pytest.fixture
def backend_url() -> Iterator[str]:
    """A stand-in for the serverless backend that says how big the image it got was: the app
    serves through it (--backend-url), so the test needs no model and shows the whole chain."""
    import base64
    import io

    from PIL import Image

    class Backend(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            img = Image.open(io.BytesIO(base64.b64decode(body["image"])))
            answer = json.dumps({"text": f"a {img.width}x{img.height} image"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *a):
            pass

    with serve_http(Backend) as base:
        yield f"{base}/"


@pytest.mark.slow
def test_cli_tunnel_requires_login_and_serves(stand_in, backend_url, free_port):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AuthenticationError

    cmd = [sys.executable, "-m", "lab_code.serving", "app", "--tunnel", "--port", str(free_port),
           "--backend-url", backend_url]
    env = _env(NGROK_AUTHTOKEN="dummy", PYNGROK_NGROK_PATH=str(stand_in))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    try:
        user, password = _read_until(proc, r"Login: (\S+) / (\S+)", seen, timeout=45).groups()
        public = _read_until(proc, r"Public URL: (http\S+)", seen, timeout=45).group(1)
        assert str(free_port) not in public, "the public URL is the tunnel's, not the app's"
        # without the login: refused, by HTTP and by gradio_client
        assert requests.get(f"{public}/gradio_api/info", timeout=10).status_code == 401
        with pytest.raises(AuthenticationError):
            Client(public, verbose=False)
        # with it: served through the tunnel, the app and the backend
        client = Client(public, auth=(user, password), verbose=False)
        assert client.predict(handle_file(str(EXAMPLE)), api_name="/predict") == "a 527x57 image"
        agent = json.loads(_state(stand_in, "agent.json").read_text())
        assert "dummy" in agent["args"]
    finally:
        proc.send_signal(signal.SIGTERM)  # what `docker stop` or `kill` sends
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    rest = proc.stdout.read()
    assert proc.returncode == 0, "".join(seen) + rest
    assert "Traceback" not in rest
    assert _state(stand_in, "disconnected").exists(), "the tunnel was closed"
    assert _gone(agent["pid"]), "no ngrok process left behind"
    assert not ports.port_in_use("127.0.0.1", free_port), "the app's port is free again"
