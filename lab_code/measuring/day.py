"""A day in production, replayed on loopback in about a minute: screenshots in the morning, phone
photos in dim light and dark-mode crops after noon, a burst of clients that trips the service's
back-pressure (503), and a few users who correct a wrong reading.

    python -m lab_code.measuring day --url http://127.0.0.1:8000/             # the shifted day
    python -m lab_code.measuring day --url http://127.0.0.1:8000/ --quiet     # screenshots all day

The images come from the real-world set: the morning's are the screenshot-like images that the
reference profile left out (odd positions), the afternoon's are its phone photos, the same
screenshots photographed in dim light (darker, blurred, noisy, JPEG) and cropped dark-mode
versions of them. Every phase is bounded in time and in requests, and the script sends only to
the URL it is given.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from lab_code.measuring.reference import BASELINE_FAMILIES, realworld_records

MAX_REQUESTS_PER_PHASE = 2_000
TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Phase:
    """`clients` send `kind` images one after another, each at most `rate` per second, for
    `seconds` (a burst: every client at once, as fast as the service answers)."""

    name: str
    kind: str  # "screenshots" or "afternoon"
    seconds: float
    clients: int = 2
    rate: float = 6.0  # requests per second per client (0: no pause)


DAY = (Phase("morning", "screenshots", 6, clients=3),
       Phase("afternoon", "afternoon", 16, clients=3),
       Phase("burst", "screenshots", 4, clients=48, rate=0),
       # long enough that the last DRIFT_WINDOW predictions are mostly the evening's photos, not
       # the burst's screenshots (more of those get through when the service is faster)
       Phase("evening", "afternoon", 6, clients=3))
QUIET_DAY = (Phase("morning", "screenshots", 6, clients=3),
             Phase("afternoon", "screenshots", 16, clients=3),
             Phase("evening", "screenshots", 7, clients=3))
SPEEDUP = 120  # one second of the replay stands for two minutes of a real day
DRIFT_WINDOW = 120  # predictions the service's drift figures are made of, for the replay


def service_args(port: int, db: str | Path) -> list[str]:
    """`python -m` arguments of the service a day is replayed against: two workers, the log in
    `db`, back-pressure at 8 requests per worker (so that the burst trips it), and drift figures
    over the last DRIFT_WINDOW predictions."""
    return ["lab_code.serving", "serverless", "--port", str(port), "--workers", "2",
            "--max-waiting", "8", "--watch-db", str(db), "--drift-window", str(DRIFT_WINDOW)]


# --- the pictures --------------------------------------------------------------------------------
def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def dim_photo(img: Image.Image, rng: np.random.Generator) -> bytes:
    """A screenshot photographed off a screen in dim light: softer (half resolution, blur),
    darker and flatter, noisy, and saved as a low-quality JPEG."""
    grey = img.convert("L")
    w, h = grey.size
    grey = grey.resize((max(8, int(w * 0.6)), max(8, int(h * 0.6))), Image.BILINEAR)
    grey = grey.resize((w, h), Image.BILINEAR).filter(ImageFilter.GaussianBlur(0.8))
    arr = np.asarray(grey, np.float32) * 0.45 + 20 + rng.normal(0, 9, (h, w))
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=30)
    return buf.getvalue()


def dark_crop(img: Image.Image) -> bytes:
    """The same line in dark mode (colours inverted), cropped tight around the text."""
    dark = ImageOps.invert(img.convert("RGB"))
    grey = np.asarray(dark.convert("L"), np.float32)
    ys, xs = np.nonzero(np.abs(grey - np.median(grey)) > 40)
    if len(xs):
        dark = dark.crop((max(0, xs.min() - 1), max(0, ys.min() - 1),
                          min(dark.width, xs.max() + 2), min(dark.height, ys.max() + 2)))
    return png(dark)


@dataclass(frozen=True)
class Picture:
    data: bytes
    text: str  # what it says (a user who corrects the model types this)
    kind: str


def pictures(seed: int = 26) -> dict[str, list[Picture]]:
    """The day's pictures by kind: "screenshots" (held out of the reference profile) and
    "afternoon" (phone photos, dim-light photos, dark-mode crops, interleaved)."""
    rng = np.random.default_rng(seed)
    records = realworld_records()
    held_out = [r for r in records if r["family"] in BASELINE_FAMILIES and r["position"] % 2]
    singles = [r for r in held_out if "\n" not in r["text"]]
    phone = [r for r in records if r["family"] == "phone"]
    shots = [Picture(r["path"].read_bytes(), r["text"], "screenshot") for r in held_out]
    dim = [Picture(dim_photo(Image.open(r["path"]), rng), r["text"], "dim photo")
           for r in singles[::2]]
    dark = [Picture(dark_crop(Image.open(r["path"])), r["text"], "dark crop")
            for r in singles[1::2]]
    photos = [Picture(r["path"].read_bytes(), r["text"], "phone photo") for r in phone]
    half = len(dim) // 2  # two dim photos for each phone photo and each dark crop
    afternoon = [p for four in zip(dim[:half], photos, dim[half:], dark, strict=False)
                 for p in four]
    return {"screenshots": shots, "afternoon": afternoon}


def body(picture: Picture) -> bytes:
    return json.dumps({"image": base64.b64encode(picture.data).decode("ascii")}).encode()


# --- the replay ----------------------------------------------------------------------------------
@dataclass
class Sent:
    phase: str
    kind: str
    at: float  # seconds since the day began
    status: int  # 0: no answer
    ms: float
    prediction_id: str | None = None
    text: str | None = None
    truth: str = ""


@dataclass
class DayResult:
    url: str
    started: float  # wall-clock time the day began (for Prometheus queries)
    phases: list[dict[str, Any]] = field(default_factory=list)  # name, start, end (seconds)
    sent: list[Sent] = field(default_factory=list)
    corrections: list[dict[str, Any]] = field(default_factory=list)

    def statuses(self) -> dict[str, dict[str, int]]:
        """Answers by phase and status."""
        out: dict[str, Counter] = {}
        for s in self.sent:
            out.setdefault(s.phase, Counter())[str(s.status)] += 1
        return {phase: dict(sorted(c.items())) for phase, c in out.items()}

    def summary(self) -> str:
        rows = [f"{p['name']:10} {p['end'] - p['start']:5.1f} s  {self.statuses().get(p['name'])}"
                for p in self.phases]
        return "\n".join(rows + [f"corrections sent: {len(self.corrections)}"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _client(session, url: str, phase: Phase, pics: Sequence[Picture], offset: int,
            stop_at: float, day_start: float, out: list[Sent], lock: threading.Lock,
            budget: Callable[[], bool]) -> None:
    n = 0
    while time.monotonic() < stop_at and budget():
        pic = pics[(offset + n * 7919) % len(pics)]
        n += 1
        began = time.monotonic()
        status, pid, text = 0, None, None
        try:
            resp = session.post(url, data=body(pic), timeout=TIMEOUT_S,
                                headers={"content-type": "application/json"})
            status = resp.status_code
            if status == 200:
                answer = resp.json()
                pid, text = answer.get("prediction_id"), answer.get("text")
        except Exception:  # a refused connection counts as no answer (status 0)
            pass
        done = time.monotonic()
        with lock:
            out.append(Sent(phase.name, pic.kind, round(began - day_start, 3), status,
                            round((done - began) * 1000, 1), pid, text, pic.text))
        if phase.rate > 0:
            time.sleep(max(0.0, 1 / phase.rate - (done - began)))


def replay(url: str, day: Sequence[Phase] = DAY, corrections: int = 4,
           seed: int = 26) -> DayResult:
    """Send the day to the service at `url` and return what was sent and answered. After the
    last phase, `corrections` users correct wrong readings of the afternoon."""
    import requests

    pics = pictures(seed)
    result = DayResult(url=url, started=time.time())
    day_start, lock = time.monotonic(), threading.Lock()
    for phase in day:
        begin = time.monotonic()
        stop_at = begin + phase.seconds
        count = {"n": 0}

        def budget(count: dict = count) -> bool:
            with lock:
                count["n"] += 1
                return count["n"] <= MAX_REQUESTS_PER_PHASE

        sessions = [requests.Session() for _ in range(phase.clients)]
        with ThreadPoolExecutor(phase.clients) as pool:
            for i, session in enumerate(sessions):
                pool.submit(_client, session, url, phase, pics[phase.kind], i * 13, stop_at,
                            day_start, result.sent, lock, budget)
        for session in sessions:
            session.close()
        result.phases.append({"name": phase.name, "start": round(begin - day_start, 3),
                              "end": round(time.monotonic() - day_start, 3)})
    result.corrections = correct(url, result, pics, corrections)
    return result


def correct(url: str, result: DayResult, pics: dict[str, list[Picture]],
            how_many: int) -> list[dict[str, Any]]:
    """A few users type what a wrongly read picture says, with their consent."""
    import requests

    by_truth = {(p.kind, p.text): p for kind in pics.values() for p in kind}
    wrong = [s for s in result.sent if s.status == 200 and s.prediction_id and s.text is not None
             and s.text != s.truth and (s.kind, s.truth) in by_truth]
    sent = []
    for s in wrong[:how_many]:
        payload = {"prediction_id": s.prediction_id, "text": s.truth, "consent": True,
                   "image": base64.b64encode(by_truth[s.kind, s.truth].data).decode("ascii")}
        try:
            resp = requests.post(url.rstrip("/") + "/corrections", json=payload,
                                 timeout=TIMEOUT_S)
            status = resp.status_code
        except requests.RequestException:
            status = 0
        sent.append({"prediction_id": s.prediction_id, "read": s.text, "truth": s.truth,
                     "status": status})
    return sent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab_code.measuring day",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000/",
                        help="the service to send the day to (default: http://127.0.0.1:8000/)")
    parser.add_argument("--quiet", action="store_true",
                        help="a quiet day: screenshots all day, no burst")
    parser.add_argument("--corrections", type=int, default=4, metavar="N",
                        help="users who correct a wrong reading at the end (default: 4)")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="also write every request sent and its answer here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = replay(args.url, QUIET_DAY if args.quiet else DAY, args.corrections)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not any(s.status for s in result.sent):
        print(f"error: Nothing answered at {args.url}: start the service first (python -m "
              "lab_code.serving serverless).", file=sys.stderr)
        return 1
    print(result.summary())
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result.to_dict(), fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
