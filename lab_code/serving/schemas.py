"""The API's request and response shapes: FastAPI checks each request against them and
documents them at /docs, errors included."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

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
