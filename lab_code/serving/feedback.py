"""The web UI's side of lesson 08: each reading it makes is logged like the API's (with the model
here: a row in the prediction log; with a remote backend: the backend logs it and answers with its
id), and "Wrong? Type what it says" stores the visitor's correction of their last reading, with
their consent, tied to that reading's prediction id.
"""


import hashlib
import io
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from PIL import Image

from lab_code.serving import corrections
from lab_code.serving.errors import ApiError
from lab_code.serving.inputs import image_stats
from lab_code.serving.predictions import new_id
from lab_code.timings import stage

SESSIONS = 1_000  # visitors whose last reading is remembered (the oldest are forgotten)


def fingerprint(img: Image.Image) -> str:
    """A short hash of a picture's pixels: is this still the image that was read?"""
    return hashlib.sha256(img.tobytes() + repr(img.size).encode()).hexdigest()[:16]


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def read_and_log(recognizer, watch, img: Image.Image,
                 find_lines: Callable[[], list] | None = None) -> tuple[str, str]:
    """Read `img` with the local recognizer and log the prediction (source "ui"); returns the
    text and the prediction id. `find_lines()` splits it into lines (the app does that in a
    decoding worker, where a deadline can stop it); default: the recognizer, in this thread."""
    from lab_code.recognizer import page_text

    timings: dict[str, float] = {}
    with stage(timings, "lines"):
        lines = find_lines() if find_lines is not None else recognizer.image_lines(img)
    with stage(timings, "model"):
        scored = recognizer.predict_lines_scored(lines)
    text = page_text([t for t, _ in scored])
    prediction_id = new_id()
    stats = {**image_stats(img), "bytes": None}
    watch.prediction({}, prediction_id=prediction_id, source="ui", timings=timings, stats=stats,
                     scored=scored, chars=len(text))
    return text, prediction_id


class Feedback:
    """Remembers each visitor's last reading (by Gradio session) and stores their correction:
    in the local prediction log (`log`), or at the remote backend's /corrections (`backend_url`),
    where the reading was logged."""

    def __init__(self, log=None, backend_url: str | None = None, timeout: float = 30.0) -> None:
        if (log is None) == (backend_url is None):
            raise ValueError("Give either a prediction log or a backend URL.")
        self.log, self.backend_url, self.timeout = log, backend_url, timeout
        self._last: OrderedDict[str, tuple[str | None, str]] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, session: str, img: Image.Image, prediction_id: str | None) -> None:
        with self._lock:
            self._last[session] = (prediction_id, fingerprint(img))
            self._last.move_to_end(session)
            while len(self._last) > SESSIONS:
                self._last.popitem(last=False)

    def correct(self, session: str, img: Image.Image | None, text: str, consent: bool,
                encode=png_bytes) -> str:
        """Store the correction; one sentence saying what happened (ValueError: what to do)."""
        with self._lock:
            last = self._last.get(session)
        if img is None or last is None:
            raise ValueError("Read an image first (press Submit), then correct its reading.")
        prediction_id, seen = last
        if prediction_id is None:
            raise ValueError("The backend keeps no prediction log, so it cannot store "
                             "corrections: start it with --watch-db.")
        if fingerprint(img) != seen:
            raise ValueError("This is not the image that was read: press Submit on it first, "
                             "then correct its reading.")
        if not consent:
            raise ValueError("Nothing was stored: tick the box to agree, or keep your "
                             "correction to yourself.")
        data = encode(img)
        if self.log is not None:
            try:
                total = corrections.save(self.log, prediction_id, text, data, consent)
            except ApiError as err:
                raise ValueError(err.message) from err
        else:
            total = self._post(prediction_id, text, data)
        return f"Thank you: your correction is stored ({total} so far)."

    def _post(self, prediction_id: str, text: str, data: bytes) -> int:
        import base64

        import requests

        url = urllib.parse.urljoin(self.backend_url, "corrections")
        body: dict[str, Any] = {"prediction_id": prediction_id, "text": text, "consent": True,
                                "image": base64.b64encode(data).decode("ascii")}
        try:
            resp = requests.post(url, json=body, timeout=self.timeout)
            answer = resp.json()
        except (requests.RequestException, ValueError) as err:
            raise ValueError(f"The backend at {self.backend_url} could not store the correction "
                             f"({type(err).__name__}): try again later.") from err
        if resp.status_code != 200:
            raise ValueError(str(answer.get("error") if isinstance(answer, dict) else answer))
        return int(answer.get("corrections", 0))


def with_corrections(interface, feedback: Feedback):
    """The Gradio page `interface`, with "Wrong? Type what it says" below it: a text box, the
    consent sentence to tick, and a button whose endpoint is `/correct`."""
    import gradio as gr

    image_box = interface.input_components[0]

    def correct(image, text: str, consent: bool, request: gr.Request) -> str:
        try:
            return feedback.correct(request.session_hash, image, text or "", bool(consent))
        except ValueError as err:
            raise gr.Error(str(err), print_exception=False) from err

    with gr.Blocks(title=interface.title) as page:
        interface.render()
        with gr.Accordion("Wrong? Type what it says", open=False):
            text = gr.Textbox(label="What the image really says", lines=2,
                              max_length=corrections.MAX_TEXT_CHARS)
            consent = gr.Checkbox(label=corrections.CONSENT, value=False)
            send = gr.Button("Send correction")
            status = gr.Markdown()
        send.click(correct, inputs=[image_box, text, consent], outputs=status,
                   api_name="correct")
    return page
