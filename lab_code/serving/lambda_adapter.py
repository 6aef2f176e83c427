"""The app behind AWS Lambda: Mangum turns a Function URL event (or a direct invocation's JSON)
into an ASGI request for the FastAPI app, and its answer into a Function URL response."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI

from lab_code.serving.logs import log_request
from lab_code.serving.schemas import EXAMPLE


def direct_event(payload: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Wrap the JSON of a direct invocation (`aws lambda invoke`) as a Function URL POST to /."""
    rid = getattr(context, "aws_request_id", None) or uuid.uuid4().hex[:16]
    now = time.time()
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": "/", "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": {
            "accountId": "direct-invoke", "apiId": "direct-invoke", "requestId": rid,
            "routeKey": "$default", "stage": "$default", "timeEpoch": int(now * 1000),
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "http": {"method": "POST", "path": "/", "protocol": "HTTP/1.1",
                     "sourceIp": "127.0.0.1", "userAgent": "direct-invoke"},
        },
        "body": json.dumps(payload), "isBase64Encoded": False,
    }


def lambda_error(status: int, message: str) -> dict[str, Any]:
    """A Function URL response with a JSON error body, for events the app never sees."""
    log_request(status=status, error=message)
    return {"statusCode": status, "headers": {"content-type": "application/json"},
            "body": json.dumps({"error": message}), "isBase64Encoded": False}


def make_handler(app: FastAPI):
    """An AWS Lambda handler(event, context) for `app`. It takes a Function URL event (payload
    2.0) or, for a direct invocation, the request JSON itself; returns a Function URL response
    either way: {"statusCode", "headers", "body": "<JSON string>", "isBase64Encoded"}."""
    from mangum import Mangum

    mangum = Mangum(app, lifespan="off")  # the recognizer is loaded already: nothing to start
    loops = threading.local()  # one asyncio loop per thread that calls the handler, reused

    def run_mangum(event: dict[str, Any], context: Any) -> dict[str, Any]:
        """Mangum runs the app on the thread's current asyncio loop. Give it one of its own
        (after an asyncio.run() there is none), and inside a running loop (a Jupyter cell), a
        worker thread."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the usual case: Lambda, scripts, tests
            loop = getattr(loops, "loop", None)
            if loop is None or loop.is_closed():
                loop = loops.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            return mangum(event, context)

        def in_new_loop() -> dict[str, Any]:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                return mangum(event, context)
            finally:
                asyncio.set_event_loop(None)
                loop.close()

        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(in_new_loop).result()

    def handler(event: Any, context: Any = None) -> dict[str, Any]:
        if not isinstance(event, dict):
            return lambda_error(400, f"The event must be a JSON object like {EXAMPLE}.")
        if "requestContext" not in event:  # direct invocation: the event is the request body
            event = direct_event(event, context)
        elif event.get("isBase64Encoded"):
            try:
                base64.b64decode(event.get("body") or "", validate=True)
            except (binascii.Error, ValueError, TypeError):
                return lambda_error(400, "The event says isBase64Encoded but its body is not "
                                         "base64.")
        try:
            return run_mangum(event, context)
        except Exception as err:  # a malformed event must not crash the function
            return lambda_error(400, f"The event is not a Function URL request "
                                     f"({type(err).__name__}): send a Function URL event or a "
                                     f"JSON object like {EXAMPLE}.")

    return handler
