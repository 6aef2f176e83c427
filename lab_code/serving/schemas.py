"""The API's request and response shapes: FastAPI checks each request against them and
documents them at /docs, errors included."""

from __future__ import annotations

import json
import re
from json.decoder import scanstring

from pydantic import BaseModel, ConfigDict, Field

from lab_code.urlfetch import shown

EXAMPLE = '{"image": "<base64 PNG>"}'


class PredictRequest(BaseModel):
    """Exactly one of the two fields."""

    model_config = ConfigDict(extra="forbid")
    image: str | None = Field(None, description="a PNG or JPEG, base64-encoded or as a data URL")
    image_url: str | None = Field(None, description="an http(s) URL of a PNG or JPEG (public "
                                                    "addresses only)")


class PredictResponse(BaseModel):
    text: str = Field(description="the recognized text; one line per text line in the image")
    model_version: str = Field(description="first 12 hex digits of the model file's SHA-256")
    latency_ms: float = Field(description="time spent decoding and recognizing, in milliseconds")
    lines: int = Field(description="how many text lines were found")
    prediction_id: str | None = Field(None, description="this prediction's id in the prediction "
                                                        "log: send it with a correction")


class ErrorResponse(BaseModel):
    error: str = Field(description="one sentence: what went wrong and what to do")


ERRORS = {status: {"model": ErrorResponse}  # every error status the API answers, for /docs
          for status in (400, 404, 405, 413, 415, 422, 500, 502, 503, 504)}


# --- the shape of a body, before validation -------------------------------------------------------
_SPACE = re.compile(r"[ \t\n\r]*")
_VALUE = json.scanner.make_scanner(json.JSONDecoder())  # the C scanner: one JSON value at a time


def _string_end(text: str, at: int) -> int:
    """Where the JSON string that starts before `at` ends (past its closing quote), without
    building it: a 6 MB base64 image is one str.find, not a 6 MB copy."""
    while True:
        end = text.find('"', at)
        if end < 0:
            raise ValueError("unterminated string")
        back = end
        while back > at and text[back - 1] == "\\":
            back -= 1
        if (end - back) % 2 == 0:  # an even run of backslashes: the quote is not escaped
            return end + 1
        at = end + 1


def shape_error(body: bytes, fields: tuple[str, ...]) -> str | None:
    """One sentence when a JSON object body has a key outside `fields` or a key twice, found by
    reading the keys one at a time and stopping at the first wrong one: an object of 400,000
    unknown keys is refused after its first, in microseconds, before Pydantic would build
    400,000 errors (seconds, hundreds of MB). None when the keys are right, and for what is not
    an object or not JSON: validation then says what is wrong, with one error."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    at = _SPACE.match(text).end()
    if text[at : at + 1] != "{":
        return None
    seen: set[str] = set()
    at = _SPACE.match(text, at + 1).end()
    if text[at : at + 1] == "}":
        return None
    try:
        while text[at : at + 1] == '"':
            key, at = scanstring(text, at + 1)
            if key not in fields:
                allowed = " or ".join(f'"{f}"' for f in fields)
                return f'Unknown field "{shown(key)}": send only {allowed}.'
            if key in seen:
                return f'Field "{key}" is there twice: send it once.'
            seen.add(key)
            at = _SPACE.match(text, at).end()
            if text[at : at + 1] != ":":
                return None
            at = _SPACE.match(text, at + 1).end()
            at = _string_end(text, at + 1) if text[at : at + 1] == '"' else _VALUE(text, at)[1]
            at = _SPACE.match(text, at).end()
            if text[at : at + 1] != ",":
                return None
            at = _SPACE.match(text, at + 1).end()
    except (ValueError, StopIteration):  # not JSON after all: validation says so
        return None
    except RecursionError:
        return f"The request body is nested too deeply: send JSON like {EXAMPLE}."
    return None
