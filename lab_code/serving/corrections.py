"""Corrections from users: "Wrong? Type what it says". A user who says a reading is wrong sends
the right text for that prediction; with their consent, the image and the text are stored
(table `corrections` of the prediction log), and `export` turns them into a labelled set in the
real-world set's format, which `python -m lab_code.training evaluate --realworld DIR` scores.

    python -m lab_code.serving corrections export --db watch.sqlite --out corrections_set
    python -m lab_code.serving corrections list --db watch.sqlite
    python -m lab_code.serving corrections delete PREDICTION_ID --db watch.sqlite

A correction is an input like any other: its id must name a logged prediction, its image must be
that prediction's picture (same size) within the work limits, its text a few printable lines.
The image is stored re-encoded as PNG, so what the camera wrote into the file (EXIF: place,
time, device) is not kept.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lab_code import images
from lab_code.serving.errors import ApiError
from lab_code.serving.predictions import (
    DB_ENV,
    PredictionLog,
    Store,
    default_db,
    open_for_command,
)

CONSENT = ("I agree that this image and my text are stored to test and improve the model, for "
           "at most a year, and that I can ask for them to be deleted.")
MAX_TEXT_CHARS = 2_000
MAX_TEXT_LINES = images.LIMITS.max_lines
MAX_STORED_BYTES = 4 * 1024 * 1024  # one corrected image, as stored (PNG)
# Another worker writes its rows in batches within about 50 ms of answering. An unknown id costs
# this long before its 404: one thread of the pool, reading the log every 20 ms.
OTHER_WORKER_WAIT_S = 0.5
ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
FAMILY = "correction"  # the family of exported samples, as lab_code.training.evaluate groups them


class CorrectionRequest(BaseModel):
    """The right text for one prediction, its image again, and the user's consent."""

    model_config = ConfigDict(extra="forbid")
    prediction_id: str = Field(description="the prediction_id of the answer that was wrong")
    text: str = Field(description="what the image really says (lines separated by newlines)")
    image: str = Field(description="the same image, base64-encoded or as a data URL")
    consent: bool = Field(description=f"true when the user agreed: {CONSENT}")


class CorrectionResponse(BaseModel):
    prediction_id: str
    stored: bool
    corrections: int = Field(description="corrections stored in all")


def clean_text(text: str) -> str:
    """The corrected text, trimmed, or ValueError with one sentence when it cannot be a label."""
    lines = [" ".join(line.split()) for line in text.strip().splitlines()]
    cleaned = "\n".join(line for line in lines if line)
    if not cleaned:
        raise ValueError("The corrected text is empty: type what the image says.")
    if len(cleaned) > MAX_TEXT_CHARS:
        raise ValueError(f"The corrected text has {len(cleaned):,} characters, more than the "
                         f"{MAX_TEXT_CHARS:,} allowed: correct a smaller image.")
    if cleaned.count("\n") + 1 > MAX_TEXT_LINES:
        raise ValueError(f"The corrected text has more than {MAX_TEXT_LINES} lines: correct a "
                         "smaller image.")
    if any(not ch.isprintable() for ch in cleaned.replace("\n", "")):
        raise ValueError("The corrected text holds control characters: type plain text.")
    return cleaned


def stored_png(data: bytes, limits: images.WorkLimits = images.LIMITS) -> tuple[bytes, tuple]:
    """The image as it will be stored (PNG, upright, no metadata) and its size, or
    ImageInputError with one sentence."""
    img = images.open_image_bytes(data, name="The corrected image", limits=limits)
    img = img.convert("RGB") if img.mode not in ("L", "RGB") else img
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    png = buf.getvalue()
    if len(png) > MAX_STORED_BYTES:
        raise images.ImageInputError(f"The corrected image takes {len(png):,} bytes as PNG, more "
                                     f"than the {MAX_STORED_BYTES:,} kept: crop it.", status=413)
    return png, img.size


def save(log: PredictionLog, prediction_id: str, text: str, image: bytes, consent: bool,
         limits: images.WorkLimits = images.LIMITS) -> int:
    """Store one correction (replacing an earlier one for the same prediction) and return how
    many corrections the store holds; ApiError with a status and one sentence when refused."""
    if not consent:
        raise ApiError(400, "Nothing was stored: a correction is kept only with your consent "
                            "(send consent: true).")
    if not ID.match(prediction_id):
        raise ApiError(400, 'Field "prediction_id" must be the id a prediction answered with.')
    try:
        text = clean_text(text)
        png, size = stored_png(image, limits)
    except images.ImageInputError as err:
        raise ApiError(err.status, str(err)) from err
    except ValueError as err:
        raise ApiError(422, str(err)) from err
    log.flush(5.0)  # the prediction may have been answered a moment ago, by this worker
    try:  # or by another worker, whose writer may not have written it yet
        row = log.wait_for(prediction_id, timeout=OTHER_WORKER_WAIT_S)
    except LookupError:
        raise ApiError(404, f"No prediction {prediction_id} in the log: send the prediction_id "
                            "of a recent answer.") from None
    if (row.get("width"), row.get("height")) != size:
        raise ApiError(422, f"The image is {size[0]}x{size[1]} pixels but prediction "
                            f"{prediction_id} read a {row.get('width')}x{row.get('height')} one: "
                            "send the image that was read.")
    store = log.store
    store.execute("INSERT INTO corrections (prediction_id, time, model_version, text, image, "
                  "consent) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (prediction_id) DO UPDATE SET "
                  "time = excluded.time, text = excluded.text, image = excluded.image",
                  (prediction_id, time.time(), row.get("model_version"), text, png, CONSENT))
    return count(store)


def save_request(log: PredictionLog, req: CorrectionRequest,
                 limits: images.WorkLimits = images.LIMITS) -> CorrectionResponse:
    """The /corrections route's work: decode the image, then `save`."""
    try:
        data = images.decode_base64(req.image, 'Field "image"')
    except images.ImageInputError as err:
        raise ApiError(err.status, str(err)) from err
    total = save(log, req.prediction_id, req.text, data, req.consent, limits)
    return CorrectionResponse(prediction_id=req.prediction_id, stored=True, corrections=total)


def count(store: Store) -> int:
    return int(store.execute("SELECT COUNT(*) FROM corrections", fetch=True)[0][0])


def delete(store: Store, prediction_id: str) -> bool:
    """Forget one correction (a user asked): True when there was one."""
    before = count(store)
    store.execute("DELETE FROM corrections WHERE prediction_id = ?", (prediction_id,))
    return count(store) < before


def export(store: Store, out: str | os.PathLike) -> Path:
    """Write every correction as a labelled set in the real-world set's format: images under
    OUT/correction/ and OUT/labels.json with one record (file, family, text, ...) per image.
    Returns the labels file."""
    out = Path(out)
    folder = out / FAMILY
    folder.mkdir(parents=True, exist_ok=True)
    rows = store.execute("SELECT prediction_id, time, model_version, text, image FROM "
                         "corrections ORDER BY time", fetch=True)
    records: list[dict[str, Any]] = []
    for prediction_id, when, version, text, image in rows:
        name = f"{FAMILY}/{prediction_id}.png"
        (out / name).write_bytes(bytes(image))
        records.append({"file": name, "family": FAMILY, "text": text,
                        "prediction_id": prediction_id, "model_version": version,
                        "corrected": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))})
    labels = out / "labels.json"
    labels.write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n")
    return labels


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab_code.serving corrections",
        description="Users' corrections: export them as a labelled set (the real-world set's "
                    "format), list them, or delete one.")
    parser.add_argument("--db", default=os.environ.get(DB_ENV) or str(default_db()),
                        help=f"the prediction log: a SQLite file or postgresql:// URL (default: "
                             f"${DB_ENV}, else {default_db().name} in your data folder)")
    # --db after the action works too ("corrections list --db FILE"), as a user would type it
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--db", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="action", required=True)
    exp = sub.add_parser("export", parents=[after],
                         help="write OUT/labels.json and OUT/correction/*.png")
    exp.add_argument("--out", type=Path, default=Path("corrections_set"),
                     help="folder to write (default: corrections_set)")
    sub.add_parser("list", parents=[after], help="one line per correction: id, time, text")
    gone = sub.add_parser("delete", parents=[after], help="forget one correction (a user asked)")
    gone.add_argument("prediction_id")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    store = open_for_command(args.db)
    if store is None:
        return 1
    try:
        if args.action == "export":
            labels = export(store, args.out)
            n = len(json.loads(labels.read_text()))
            print(f"wrote {n} corrections to {labels}; score a model on them with "
                  f"`python -m lab_code.training evaluate --realworld-only --realworld {args.out}`")
        elif args.action == "list":
            for pid, when, text in store.execute(
                    "SELECT prediction_id, time, text FROM corrections ORDER BY time", fetch=True):
                stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime(when))
                print(f"{pid}  {stamp}  {text!r}")
        elif not delete(store, args.prediction_id):
            print(f"error: No correction for {args.prediction_id}.", file=sys.stderr)
            return 1
        else:
            print(f"deleted the correction of {args.prediction_id}")
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
