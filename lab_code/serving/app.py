"""The web UI: a Gradio page (and HTTP API) that reads the text in an uploaded or pasted image,
with the model in this process or behind a remote backend URL.

    python -m lab_code.serving app                        # http://127.0.0.1:7860
    python -m lab_code.serving app --backend-url http://127.0.0.1:8000/   # the serverless backend
    python -m lab_code.serving app --tunnel               # a public ngrok URL, login required
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import gradio as gr
import requests
from PIL import Image

from lab_code import images, preprocess
from lab_code.serving.ports import in_use_message, port_in_use

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry unless asked for
log = logging.getLogger("lab_code.serving.app")  # not __main__ under python -m

TITLE = "Text recognizer"
# What one visitor may ask of a public page: the same work limits as the backend (lab_code.images,
# applied by the recognizer), plus an upload cap and a bounded queue in front of the model.
MAX_UPLOAD_MB = 10
CONCURRENCY = 2  # predictions running at once
QUEUE_SIZE = 16  # predictions waiting beyond those; Gradio answers "queue is full" past this
LAUNCH_LIMITS = {"max_file_size": f"{MAX_UPLOAD_MB}mb"}  # passed to every demo.launch()
DESCRIPTION = (
    "Upload, paste or drop a picture of printed text (one line or a few lines), then press "
    "**Submit** to read it. Or click one of the examples below."
)
ARTICLE = f"""
### About
A small convolutional + recurrent network, trained on synthetic text lines and compiled to
TorchScript, reads each line of the picture; a page is split into lines first. It was trained on
printed English text in about 300 fonts, with the blur, compression and colours of screenshots
and photos: screenshots and clean pages read well, while handwriting and small text in phone
photos still come out garbled. Pictures larger than {preprocess.MAX_SIDE} pixels on a side are
scaled down first; uploads over {MAX_UPLOAD_MB} MB, or pictures of more than
{images.LIMITS.max_lines} lines, are refused.

This page is also an API: see "Use via API" at the bottom, or call it with `gradio_client`.
"""
NO_IMAGE = "No image yet: upload, paste or drop a picture of text, then press Submit."
DEFAULT_USER = "user"

Predict = Callable[[Image.Image], str]


class BackendError(RuntimeError):
    """The remote backend could not answer; the message is one sentence a person can act on."""


# --- the model, here or far away ----------------------------------------------------------------


def encode_png(img: Image.Image) -> str:
    """Base64 text of a PNG of the image, in the grey the model reads (a smaller upload)."""
    buf = io.BytesIO()
    preprocess.to_gray(img).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


AUTH_CHOICES = ("auto", "aws_iam", "none")  # how the frontend authenticates to its backend


def signs(url: str, auth: str = "auto") -> bool:
    """Whether requests to `url` are signed with SigV4: aws_iam yes, none no, auto for an AWS
    Function URL (lab_code.serving.signing)."""
    if auth not in AUTH_CHOICES:
        raise ValueError(f"backend auth must be one of {', '.join(AUTH_CHOICES)}, not {auth!r}.")
    if auth == "auto":
        from lab_code.serving.signing import is_function_url

        return is_function_url(url)
    return auth == "aws_iam"


class PredictorBackend:
    """Reads text with the local TextRecognizer, or, given a URL, with a remote backend that
    answers `POST url {"image": "<base64 PNG>"}` with `{"text": ...}` (or `{"error": ...}`).
    Requests to an AWS_IAM Function URL are signed (`auth`: auto signs for a Function URL)."""

    def __init__(self, url: str | None = None, model_path: str | os.PathLike | None = None,
                 timeout: float = 30.0, auth: str = "auto") -> None:
        self.url, self.timeout = url, timeout
        self._recognizer = None
        self._signer = None
        if url is not None and signs(url, auth):
            from lab_code.serving.signing import Signer  # botocore loads only when needed

            self._signer = Signer(url)  # SigningError with one sentence when it cannot sign
        if url is None:
            from lab_code.recognizer import TextRecognizer  # torch loads only when needed
            from lab_code.threads import serving_threads

            # one torch thread per prediction, set on each of Gradio's worker threads that runs
            # one (lab_code.threads: a thread count set on the main thread would not hold there)
            self._recognizer = TextRecognizer(model_path, threads=serving_threads())

    def __repr__(self) -> str:
        signed = ", signed=True" if self._signer is not None else ""
        return f"PredictorBackend(url={self.url!r}{signed})"

    def run(self, image: Image.Image) -> str:
        if self._recognizer is not None:
            return self._recognizer.predict(image)
        return self._post(image)

    __call__ = run

    def _post(self, image: Image.Image) -> str:
        body = json.dumps({"image": encode_png(image)}).encode()
        headers = {"Content-Type": "application/json"}
        if self._signer is not None:  # signed at send time: AWS refuses signatures 5 min old
            headers = self._signer.headers("POST", self.url, body, headers)
        try:
            resp = requests.post(self.url, data=body, headers=headers, timeout=self.timeout)
        except requests.Timeout as err:
            raise BackendError(
                f"The backend at {self.url} did not answer within {self.timeout:.0f} s: "
                "check that it is running and try again."
            ) from err
        except requests.RequestException as err:
            raise BackendError(f"Cannot reach the backend at {self.url} ({type(err).__name__}): "
                               "check that it is running and that the URL is right.") from err
        try:
            body: Any = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise BackendError(f"The backend at {self.url} answered HTTP {resp.status_code} "
                               "without JSON: is this the right URL?")
        if resp.status_code == 200 and isinstance(body.get("text"), str):
            return body["text"]
        if resp.status_code == 403 and self._signer is not None and "error" not in body:
            raise BackendError(f"The backend at {self.url} refused the signed request (HTTP 403): "
                               "check the AWS keys and region, and that they may call "
                               "lambda:InvokeFunctionUrl and lambda:InvokeFunction on it.")
        if resp.status_code == 403 and self._signer is None and "error" not in body:
            raise BackendError(f"The backend at {self.url} refused the request (HTTP 403): an "
                               "AWS_IAM Function URL needs signed requests (--backend-auth "
                               "aws_iam).")
        if "error" in body:  # the backend's own one-sentence message
            raise BackendError(str(body["error"]))
        raise BackendError(f"The backend at {self.url} failed with HTTP {resp.status_code}: "
                           "check its logs.")


# --- the UI -------------------------------------------------------------------------------------


def decode_upload(payload: Any) -> Image.Image | None:
    """An uploaded or pasted image (Gradio's FileData: a cached file or a data: URL) decoded by
    lab_code.images, which refuses oversized pictures before decoding their pixels; any problem
    becomes gr.Error with one sentence."""
    if payload is None:
        return None
    try:
        if payload.path:
            path = Path(payload.path)
            if path.stat().st_size > MAX_UPLOAD_MB * 2**20:
                raise images.ImageInputError(f"The uploaded file is larger than {MAX_UPLOAD_MB} "
                                             "MB: upload a smaller image.")
            data, name = path.read_bytes(), "The uploaded file"
        elif payload.url and payload.url.startswith("data:"):
            if len(payload.url) > MAX_UPLOAD_MB * 2**20 * 4 // 3 + 100:
                raise images.ImageInputError(f"The pasted image is larger than {MAX_UPLOAD_MB} "
                                             "MB: paste a smaller image.")
            data, name = images.decode_base64(payload.url, "the pasted image"), "The pasted image"
        else:
            return None
        return images.open_image_bytes(data, name=name)  # EXIF rotation included
    except images.ImageInputError as err:
        raise gr.Error(str(err), print_exception=False) from err
    except (OSError, ValueError) as err:  # an unreadable upload, or base64 that is not
        raise gr.Error("The uploaded file could not be read: upload a PNG or JPEG image.",
                       print_exception=False) from err


def image_input() -> gr.Image:
    """The image box: upload, drop or paste; the function receives a PIL image (or None)."""
    box = gr.Image(type="pil", label="Image of text", sources=["upload", "clipboard"])
    # Gradio would decode the upload itself, and an unreadable or gigantic file would end in a
    # bare "Error". Decode it our way instead (a subclass would do too, but Gradio writes a
    # .pyi stub file beside every module that subclasses one of its components).
    box.preprocess = decode_upload
    return box


def example_paths() -> list[Path]:
    """The example pictures bundled with the package (package data, no training code needed)."""
    folder = resources.files("lab_code").joinpath("assets", "examples")
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".png"))


def check_image(image: Image.Image | None) -> Image.Image:
    """The image the model will read, or gr.Error with one sentence when it cannot be used."""
    if image is None:
        raise gr.Error(NO_IMAGE, print_exception=False)
    try:
        return preprocess.shrink(images.load_image(image))
    except images.ImageInputError as err:
        raise gr.Error(str(err), print_exception=False) from err


def make_predict(predict_fn: Predict) -> Callable[[Image.Image | None], str]:
    """Wrap a predict function for the UI: check the input, turn errors into messages, log."""

    def predict(image: Image.Image | None) -> str:
        img = check_image(image)
        start = time.perf_counter()
        try:
            text = predict_fn(img)
        except (BackendError, images.ImageInputError) as err:
            raise gr.Error(str(err), print_exception=False) from err
        ms = (time.perf_counter() - start) * 1000
        log.info("predicted in %.0f ms: %dx%d image, %d characters", ms, *img.size, len(text))
        return text

    return predict


def make_frontend(predict_fn: Predict) -> gr.Interface:
    """The Gradio page around `predict_fn(PIL image) -> str`, with its API endpoint `/predict`,
    CONCURRENCY predictions at once and at most QUEUE_SIZE waiting."""
    demo = gr.Interface(
        fn=make_predict(predict_fn),
        inputs=image_input(),
        outputs=gr.Textbox(label="Recognized text", lines=3),
        examples=[[str(p)] for p in example_paths()],
        cache_examples=False,
        title=TITLE,
        description=DESCRIPTION,
        article=ARTICLE,
        flagging_mode="never",
        api_name="predict",
    )
    return demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)


# --- the command line ---------------------------------------------------------------------------


def parse_auth(text: str) -> tuple[str, str]:
    """'user:password' -> ('user', 'password')."""
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("use the form USER:PASSWORD, e.g. --auth ann:s3cret")
    return user, password


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab_code.serving app",
        description="Serve the text recognizer as a web page and HTTP API (Gradio).",
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; 0.0.0.0 lets other machines connect "
                             "(default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument("--backend-url", default=os.environ.get("BACKEND_URL"),
                        help="send images to this backend URL instead of running the model here "
                             "(default: $BACKEND_URL, else the bundled model)")
    parser.add_argument("--backend-auth", choices=AUTH_CHOICES,
                        default=os.environ.get("BACKEND_AUTH") or "auto",
                        help="sign requests to the backend with AWS SigV4 (aws_iam), or not "
                             "(none); auto signs for an AWS Function URL, with the standard AWS "
                             "credentials (default: $BACKEND_AUTH, else auto)")
    parser.add_argument("--model", type=Path, default=None,
                        help="TorchScript model file for the local model (default: bundled)")
    public = parser.add_argument_group("a public URL (a login is required unless --no-auth)")
    public.add_argument("--share", action="store_true",
                        help="ask Gradio for a temporary public *.gradio.live link")
    public.add_argument("--tunnel", action="store_true",
                        help="open a public ngrok tunnel (needs NGROK_AUTHTOKEN and pyngrok)")
    login = public.add_mutually_exclusive_group()
    login.add_argument("--auth", type=parse_auth, metavar="USER:PASSWORD",
                       help="require this login (default with a public URL: a generated password)")
    login.add_argument("--no-auth", action="store_true",
                       help="serve a public URL without a login (anyone with the link can use it)")
    return parser


def choose_auth(args: argparse.Namespace) -> tuple[str, str] | None:
    """The login to require: --auth, none with --no-auth or a local-only server, else generated."""
    if args.auth:
        return args.auth
    if args.no_auth or not (args.tunnel or args.share):
        return None
    password = secrets.token_urlsafe(12)
    print(f"Login: {DEFAULT_USER} / {password}  (generated for this run; "
          "choose your own with --auth USER:PASSWORD)", flush=True)
    return DEFAULT_USER, password


def _stop_on_sigterm() -> None:
    """Treat SIGTERM (docker stop, kill) like Ctrl+C, so servers and tunnels close cleanly."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own startup requests
    if args.tunnel:
        try:
            from lab_code.serving import tunnel  # pyngrok is needed only here
        except ImportError:
            print("error: --tunnel needs pyngrok: pip install pyngrok, then try again.",
                  file=sys.stderr)
            return 1
        try:
            tunnel.require_token()
        except tunnel.TunnelError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    if port_in_use(args.host, args.port):
        print(f"error: {in_use_message(args.host, args.port)}", file=sys.stderr)
        return 1
    from lab_code.serving.signing import SigningError

    try:
        backend = PredictorBackend(args.backend_url, model_path=args.model,
                                   auth=args.backend_auth)
    except (FileNotFoundError, ValueError, SigningError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    auth = choose_auth(args)
    demo = make_frontend(backend)
    _stop_on_sigterm()
    public_url = None
    try:
        _, local_url, share_url = demo.launch(
            server_name=args.host, server_port=args.port, share=args.share, auth=auth,
            prevent_thread_lock=True, quiet=True, **LAUNCH_LIMITS,
        )
        where = f"model {backend.url}" if backend.url else "the local model"
        print(f"Running on {local_url} with {where} (Ctrl+C to stop)", flush=True)
        if share_url:
            print(f"Public URL: {share_url}", flush=True)
        if args.tunnel:
            try:
                public_url = tunnel.open_tunnel(args.port, host=args.host)
            except tunnel.TunnelError as err:
                print(f"error: {err}", file=sys.stderr)
                return 1
            print(f"Public URL: {public_url}", flush=True)
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("Stopping.", flush=True)
    except OSError as err:  # the port was taken between the check and the launch
        print(f"error: could not serve on {args.host}:{args.port} ({err}): choose another port "
              "with --port.", file=sys.stderr)
        return 1
    finally:
        if args.tunnel:
            tunnel.close_tunnel(public_url)
        demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
