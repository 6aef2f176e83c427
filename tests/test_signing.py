"""The frontend signs its requests for an AWS_IAM Function URL (SigV4, botocore's signer), and a
local stand-in checks them as AWS does: a signed request reads the image; unsigned, wrong-key,
unknown-key, expired, other-region and altered requests get 403 with the reason; without
credentials the frontend says what to set, in one sentence."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from PIL import Image

from lab_code.recognizer import TextRecognizer
from lab_code.serving import app as app_module
from lab_code.serving import signing
from lab_code.serving.ports import free_port
from lab_code.serving.processes import start_background, stop_background

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "lab_code" / "assets" / "examples" / "line_sans.png"
# (a key id made of two strings, so the scan for committed keys does not take it for one)
KEY, SECRET = "AKIA" + "STANDIN000000001", "stand-in-secret-key-of-forty-characters0"
REGION = "us-east-1"


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> str:
    """`python -m lab_code.serving function_url` on a free port, accepting KEY/SECRET."""
    tmp = tmp_path_factory.mktemp("function-url")
    keys = tmp / "keys.json"
    keys.write_text(json.dumps({KEY: SECRET}))
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    proc = start_background(["lab_code.serving", "function_url", "--port", str(port), "--keys",
                             str(keys), "--region", REGION], url + "health", tmp / "log")
    yield url
    stop_background(proc)


@pytest.fixture()
def credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_REGION", REGION)


def body() -> bytes:
    return json.dumps({"image": base64.b64encode(EXAMPLE.read_bytes()).decode()}).encode()


def signed(url: str, data: bytes) -> dict[str, str]:
    return signing.Signer(url).headers("POST", url, data, {"Content-Type": "application/json"})


# --- through the stand-in, over HTTP ------------------------------------------------------------
def test_a_signed_request_is_answered(stand_in, credentials):
    data = body()
    resp = requests.post(stand_in, data=data, headers=signed(stand_in, data), timeout=60)
    assert resp.status_code == 200, resp.text
    assert resp.json()["text"] == TextRecognizer().predict(Image.open(EXAMPLE))


def test_the_frontend_signs_and_reads_through_the_stand_in(stand_in, credentials):
    backend = app_module.PredictorBackend(stand_in, auth="aws_iam")
    assert "signed=True" in repr(backend)
    assert backend(Image.open(EXAMPLE)) == TextRecognizer().predict(Image.open(EXAMPLE))


def test_an_unsigned_frontend_hears_why(stand_in):
    backend = app_module.PredictorBackend(stand_in, auth="none")
    with pytest.raises(app_module.BackendError, match="not signed"):
        backend(Image.open(EXAMPLE))


def forbidden(stand_in: str, data: bytes, headers: dict[str, str]) -> str:
    resp = requests.post(stand_in, data=data, headers=headers, timeout=60)
    assert resp.status_code == 403, resp.text
    answer = resp.json()
    assert answer["Message"] == "Forbidden"
    return answer["error"]


def test_unsigned_wrong_key_unknown_key_and_altered_requests_get_403(stand_in, credentials,
                                                                     monkeypatch):
    data = body()
    assert "not signed" in forbidden(stand_in, data, {"Content-Type": "application/json"})
    good = signed(stand_in, data)
    tampered = data.replace(b'"image"', b'"image" ', 1)
    assert "does not match its x-amz-content-sha256" in forbidden(stand_in, tampered, good)
    rehashed = {**good, "X-Amz-Content-SHA256": hashlib.sha256(tampered).hexdigest()}
    assert "request changed after it was signed" in forbidden(stand_in, tampered, rehashed)
    no_hash = {k: v for k, v in good.items() if k.lower() != "x-amz-content-sha256"}
    assert "x-amz-content-sha256 is missing" in forbidden(stand_in, data, no_hash)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "a-wrong-secret-key-of-forty-characters00")
    assert "secret key is wrong" in forbidden(stand_in, data, signed(stand_in, data))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA" + "UNKNOWN000000000")
    assert "not known" in forbidden(stand_in, data, signed(stand_in, data))


def test_an_expired_or_other_region_signature_gets_403(stand_in, credentials, monkeypatch):
    import botocore.auth

    data = body()
    past = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=6)
    with monkeypatch.context() as m:
        m.setattr(botocore.auth, "get_current_datetime", lambda: past)
        old = signed(stand_in, data)
    assert "away from now" in forbidden(stand_in, data, old)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert "not lambda in us-east-1" in forbidden(stand_in, data, signed(stand_in, data))


# --- the signer and the checker, in process ------------------------------------------------------
def test_signature_covers_host_date_and_body_hash(credentials):
    url = "https://abc123def.lambda-url.eu-central-1.on.aws/"
    headers = signed(url, b"{}")
    auth = signing.parse_authorization(headers["Authorization"])
    assert auth.region == "eu-central-1" and auth.service == "lambda"  # from the URL's host
    assert {"host", "x-amz-date", "x-amz-content-sha256"} <= set(auth.signed_headers)
    assert headers["X-Amz-Content-SHA256"] == hashlib.sha256(b"{}").hexdigest()
    checker = signing.SigV4Checker({KEY: SECRET}, "eu-central-1")
    headers["host"] = "abc123def.lambda-url.eu-central-1.on.aws"
    assert checker.check("POST", url, headers, b"{}") == KEY


def test_temporary_credentials_send_their_token(credentials, monkeypatch):
    monkeypatch.setenv("AWS_SESSION_TOKEN", "a-session-token")
    url = "http://127.0.0.1:9/"
    headers = signed(url, b"{}")
    assert headers["X-Amz-Security-Token"] == "a-session-token"
    checker = signing.SigV4Checker({KEY: SECRET}, REGION)
    assert checker.check("POST", url, {**headers, "host": "127.0.0.1:9"}, b"{}") == KEY


def test_without_credentials_one_sentence_says_what_to_set(monkeypatch):
    monkeypatch.setenv("AWS_REGION", REGION)
    url = "https://abc123def.lambda-url.us-east-1.on.aws/"
    with pytest.raises(signing.SigningError) as caught:
        app_module.PredictorBackend(url)  # auto: a Function URL is signed
    assert str(caught.value) == signing.NO_CREDENTIALS
    monkeypatch.delenv("AWS_REGION")
    with pytest.raises(signing.SigningError, match="set AWS_REGION"):
        signing.Signer("http://127.0.0.1:8001/")
    assert repr(app_module.PredictorBackend("http://127.0.0.1:8001/")) == \
        "PredictorBackend(url='http://127.0.0.1:8001/')"  # auto: not a Function URL, not signed


def test_the_app_command_without_credentials_exits_with_one_line(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("AWS_")}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    proc = subprocess.run(
        [sys.executable, "-m", "lab_code.serving", "app", "--backend-url",
         "https://abc123def.lambda-url.us-east-1.on.aws/", "--port", str(free_port())],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: {signing.NO_CREDENTIALS}", proc.stderr


def test_a_real_aws_403_is_explained(credentials):
    """AWS answers {"Message": "Forbidden"} when the key may not call the URL."""
    from http.server import BaseHTTPRequestHandler

    from stand_ins import serve_http

    class Forbidden(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["content-length"]))
            payload = b'{"Message":"Forbidden"}'
            self.send_response(403)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    with serve_http(Forbidden) as url:
        backend = app_module.PredictorBackend(url + "/", auth="aws_iam")
        with pytest.raises(app_module.BackendError, match="lambda:InvokeFunctionUrl and "
                                                          "lambda:InvokeFunction"):
            backend(Image.open(EXAMPLE))
