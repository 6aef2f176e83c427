"""A local stand-in for a Function URL with auth type AWS_IAM: the serverless backend behind a
gate that checks every request's SigV4 signature as AWS does (lab_code.serving.signing) and
answers 403 to unsigned, wrong-key, expired or altered requests before the app sees them.

    python -m lab_code.serving function_url --port 8001      # prints a key pair to sign with

It lets the frontend's signing be tested without an AWS account; the keys are made up here and
work nowhere else. The app behind the gate is the same `create_app` as on Lambda.
"""

from __future__ import annotations

import argparse
import json
import secrets
import string
import sys
from collections.abc import Mapping
from pathlib import Path

from fastapi.responses import JSONResponse

from lab_code.serving.errors import error_response
from lab_code.serving.limits import MAX_BODY_BYTES
from lab_code.serving.logs import log_request
from lab_code.serving.ports import in_use_message, port_in_use
from lab_code.serving.signing import SignatureRejected, SigV4Checker

DEFAULT_REGION = "us-east-1"


def new_key_pair() -> tuple[str, str]:
    """A made-up access key id and secret key shaped like AWS's (20 and 40 characters)."""
    alphabet = string.ascii_uppercase + string.digits
    key = "AKIA" + "".join(secrets.choice(alphabet) for _ in range(16))
    return key, secrets.token_urlsafe(30)[:40]


class SigV4Gate:
    """ASGI middleware: reads the body (at most MAX_BODY_BYTES), checks the signature over the
    URL the client addressed, and passes only signed requests on; the rest get AWS's 403 with
    the reason added as the course's one-sentence error."""

    def __init__(self, app, checker: SigV4Checker) -> None:
        self.app, self.checker = app, checker

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                await error_response(413, "The request is over 6 MB: send a smaller image.")(
                    scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        query = scope.get("query_string", b"").decode("latin-1")
        url = f"{scope.get('scheme', 'http')}://{host}{scope['path']}" + (f"?{query}" if query
                                                                          else "")
        try:
            self.checker.check(scope["method"], url, headers, body)
        except SignatureRejected as err:
            log_request(event="forbidden", path=scope["path"], reason=str(err))
            forbidden = {"Message": "Forbidden", "error": str(err)}  # AWS's body, and why
            await JSONResponse(forbidden, status_code=403)(scope, receive, send)
            return
        sent = False

        async def replay():  # the app reads the body this gate has read already
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def create_gated_app(keys: Mapping[str, str], region: str = DEFAULT_REGION, **app_kwargs):
    """The serverless backend's app (lab_code.serving.serverless.create_app(**app_kwargs))
    behind a SigV4Gate that accepts `keys` (access key id -> secret) for `region`."""
    from lab_code.serving.serverless import create_app

    app = create_app(**app_kwargs)
    app.add_middleware(SigV4Gate, checker=SigV4Checker(keys, region))
    return app


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab_code.serving function_url",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="TCP port (default: 8001)")
    parser.add_argument("--region", default=DEFAULT_REGION,
                        help="the region signatures must name (default: %(default)s)")
    parser.add_argument("--keys", type=Path, default=None, metavar="FILE",
                        help='a JSON file {"ACCESS_KEY_ID": "SECRET_KEY", ...} of keys to accept '
                             "(default: one new pair, printed at start)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if port_in_use(args.host, args.port):
        print(f"error: {in_use_message(args.host, args.port)}", file=sys.stderr)
        return 1
    if args.keys is not None:
        try:
            keys = json.loads(args.keys.read_text())
            if not isinstance(keys, dict) or not keys:
                raise ValueError("not an object of keys")
        except (OSError, ValueError) as err:
            print(f"error: {args.keys} is not a JSON object of access key id -> secret key "
                  f"({err}).", file=sys.stderr)
            return 1
    else:
        key, secret = new_key_pair()
        keys = {key: secret}
        print("Made-up keys that this stand-in accepts (and nothing else does):\n"
              f"  export AWS_ACCESS_KEY_ID={key} AWS_SECRET_ACCESS_KEY={secret} "
              f"AWS_REGION={args.region}", flush=True)
    import uvicorn

    from lab_code.threads import limit_children, serving_threads

    limit_children(serving_threads())
    app = create_gated_app(keys, args.region)
    print(f"A Function URL stand-in (AWS_IAM) on http://{args.host}:{args.port}/: signed POSTs "
          "only; Ctrl+C stops it.", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
