"""The API's errors: `ApiError` (a status and one sentence), the one JSON shape every error has,
and the handlers that turn FastAPI's own errors (404, 405, validation) into that shape."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lab_code import urlfetch
from lab_code.serving.schemas import EXAMPLE


class ApiError(Exception):
    """A request the service refuses: an HTTP status and one sentence for the caller."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def error_response(status: int, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error shape of this API: {"error": "<one sentence>"}."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    request.state.error = exc.message
    return error_response(exc.status, exc.message, headers=exc.headers)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    method, path = request.method, urlfetch.shown(request.url.path)
    if exc.status_code == 404:
        message = f"Nothing at {path}: POST your JSON to / (and GET /health to check the service)."
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "POST")
        message = f"{method} is not allowed on {path}: use {allowed}"
        message += f" with a JSON body like {EXAMPLE}." if "POST" in allowed else "."
    else:
        message = f"{exc.detail}."
    request.state.error = message
    return error_response(exc.status_code, message, headers=exc.headers)


# the body fields of routes other than / (lesson 08's corrections), for validation messages
ROUTE_FIELDS = {"/corrections": '"prediction_id", "text", "image" and "consent"'}


def validation_message(request: Request, exc: RequestValidationError) -> str:
    """One sentence for FastAPI's validation errors (instead of its default list of details)."""
    first = exc.errors()[0]
    kind, loc = first.get("type", ""), [str(x) for x in first.get("loc", ())]
    field_name = urlfetch.shown(loc[1]) if len(loc) > 1 else None
    content_type = request.headers.get("content-type", "")
    if kind == "missing" and field_name is None:
        return f"The request body is empty: send JSON like {EXAMPLE}."
    if kind == "json_invalid":
        return f"The request body is not valid JSON: send JSON like {EXAMPLE}."
    if field_name is None and content_type and "json" not in content_type:
        return (f"The body is {urlfetch.shown(content_type.split(';')[0])}: send JSON with "
                "Content-Type: application/json.")
    if field_name is None:
        return f"The request body must be a JSON object like {EXAMPLE}."
    if kind == "extra_forbidden":
        allowed = ROUTE_FIELDS.get(request.url.path, '"image" or "image_url"')
        return f'Unknown field "{field_name}": send only {allowed}.'
    if kind == "missing":
        return f'Field "{field_name}" is missing: send {ROUTE_FIELDS.get(request.url.path, "it")}.'
    if kind == "string_type":
        return f'Field "{field_name}" must be a string, not {type(first.get("input")).__name__}.'
    return f'Field "{field_name}" is invalid: check its value.'


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    message = validation_message(request, exc)
    request.state.error = message
    return error_response(400, message)


def add_error_handlers(app: FastAPI) -> None:
    """Answer ApiError, FastAPI's HTTP errors and its validation errors in the one JSON shape."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
