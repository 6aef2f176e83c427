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
from urllib.parse import urlsplit

import gradio as gr
import requests
from PIL import Image

from lab_code import images, preprocess
from lab_code.serving import decoding
from lab_code.serving.ports import in_use_message, port_in_use

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry unless asked for
log = logging.getLogger("lab_code.serving.app")  # not __main__ under python -m

TITLE = "Text recognizer"
# What one visitor may ask of a public page: the same work limits as the backend (lab_code.images,
# applied by the recognizer), plus an upload cap and a bounded queue in front of the model.
# `launch` below applies them to every page the course starts.
MAX_UPLOAD_MB = 10
CONCURRENCY = 2  # predictions running at once
QUEUE_SIZE = 16  # predictions waiting beyond those; Gradio answers "queue is full" past this
LAUNCH_LIMITS = {"max_file_size": f"{MAX_UPLOAD_MB}mb"}  # what launch() adds to Gradio's own
# Reading an upload (decoding, shrinking) and finding its lines each run in a worker process
# that is killed after this long (lab_code.serving.decoding): a crafted file cannot hold one of
# the CONCURRENCY slots for longer.
DEADLINE_S = 20.0
MAX_FILES = 1  # files in one upload request (the image input sends one)
# Gradio keeps every upload in its cache: check every minute, delete what is 10 minutes old.
DELETE_CACHE = (60, 600)
MAX_FAILED_LOGINS, LOGIN_WINDOW_S = 5, 60.0  # per client; then 429 until the window passes
SESSION_S = 12 * 3600  # a login lasts this long (cookie Max-Age, and the server forgets it)
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
                 timeout: float = 30.0, watch=None, auth: str = "auto") -> None:
        self.url, self.timeout = url, timeout
        self.watch = watch  # the local model's prediction log (lab_code.serving.watch, lesson 08)
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
        return self.read(image)[0]

    __call__ = run

    def read(self, image: Image.Image) -> tuple[str, str | None]:
        """The text, and the prediction's id in the log that recorded it (None: not logged)."""
        if self._recognizer is not None:  # line finding runs where the deadline can stop it
            limits = self._recognizer.limits

            def find_lines() -> list:
                return decoder().image_lines(image, limits, time.monotonic() + DEADLINE_S)

            if self.watch is not None:
                from lab_code.serving.feedback import read_and_log

                return read_and_log(self._recognizer, self.watch, image, find_lines)
            return page_text(self._recognizer.predict_lines(find_lines())), None
        return self._post(image)

    def _post(self, image: Image.Image) -> tuple[str, str | None]:
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
            return body["text"], body.get("prediction_id")
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


def page_text(readings: list[str]) -> str:
    from lab_code.recognizer import page_text as join  # torch loads only when needed

    return join(readings)


# --- the UI -------------------------------------------------------------------------------------


def decoder() -> decoding.DecodePool:
    """The worker processes that read uploads and find their lines (one per prediction slot)."""
    return decoding.shared_pool(CONCURRENCY)


def decode_upload(payload: Any) -> Image.Image | None:
    """An uploaded or pasted image (Gradio's FileData: a cached file or a data: URL) decoded by
    lab_code.images in a worker process (see `decoder`), which refuses crafted and oversized
    pictures before decoding their pixels and is stopped after DEADLINE_S, and shrunk to
    preprocess.MAX_SIDE; any problem becomes gr.Error with one sentence."""
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
        # EXIF rotation included
        return decoder().image(data, name, images.LIMITS, time.monotonic() + DEADLINE_S)
    except images.ImageInputError as err:
        raise gr.Error(str(err), print_exception=False) from err
    except decoding.DecodeTimeout as err:
        raise gr.Error(TOO_SLOW, print_exception=False) from err
    except (OSError, ValueError) as err:  # an unreadable upload, or base64 that is not
        raise gr.Error("The uploaded file could not be read: upload a PNG or JPEG image.",
                       print_exception=False) from err


TOO_SLOW = (f"The image took longer than {DEADLINE_S:.0f} s to read: send a smaller or simpler "
            "image.")
NO_URLS = "This app reads only uploaded or pasted images; it does not fetch URLs: upload the file."


def _no_urls(move: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wrap a component's move-to-cache method: Gradio downloads a FileData whose path is an
    http(s) URL there (no size cap, no total deadline, 20 redirects); refuse it instead."""

    def refuse_urls(url_or_file_path: Any) -> Any:
        if str(url_or_file_path).lower().startswith(("http://", "https://", "//")):
            raise gr.Error(NO_URLS, print_exception=False)
        return move(url_or_file_path)

    return refuse_urls


def image_input() -> gr.Image:
    """The image box: upload, drop or paste; the function receives a PIL image (or None)."""
    box = gr.Image(type="pil", label="Image of text", sources=["upload", "clipboard"])
    # Gradio would decode the upload itself, and an unreadable or gigantic file would end in a
    # bare "Error". Decode it our way instead (a subclass would do too, but Gradio writes a
    # .pyi stub file beside every module that subclasses one of its components).
    box.preprocess = decode_upload
    box.move_resource_to_block_cache = _no_urls(box.move_resource_to_block_cache)
    box.async_move_resource_to_block_cache = _async_no_urls(box.async_move_resource_to_block_cache)
    return box


def _async_no_urls(move):
    refuse = _no_urls(lambda path: path)

    async def refuse_urls(url_or_file_path: Any) -> Any:
        refuse(url_or_file_path)
        return await move(url_or_file_path)

    return refuse_urls


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


def make_predict(predict_fn: Predict, feedback=None) -> Callable[[Image.Image | None], str]:
    """Wrap a predict function for the UI: check the input, turn errors into messages, log; with
    `feedback` (lesson 08), remember the visitor's prediction id for a correction."""

    def predict(image: Image.Image | None, request: gr.Request | None = None) -> str:
        img = check_image(image)  # `request`: Gradio's, when Gradio calls it; None when you do
        start = time.perf_counter()
        try:
            if feedback is not None:
                text, prediction_id = predict_fn.read(img)
                if request is not None:
                    feedback.remember(request.session_hash, img, prediction_id)
            else:
                text = predict_fn(img)
        except (BackendError, images.ImageInputError) as err:
            raise gr.Error(str(err), print_exception=False) from err
        except decoding.DecodeTimeout as err:
            raise gr.Error(TOO_SLOW, print_exception=False) from err
        ms = (time.perf_counter() - start) * 1000
        log.info("predicted in %.0f ms: %dx%d image, %d characters", ms, *img.size, len(text))
        return text

    return predict


def make_frontend(predict_fn: Predict, feedback=None) -> gr.Blocks:
    """The Gradio page around `predict_fn(PIL image) -> str`, with its API endpoint `/predict`,
    CONCURRENCY predictions at once and at most QUEUE_SIZE waiting, uploads deleted after
    DELETE_CACHE; serve it with `launch`, which adds the limits (its own `demo.launch` is routed
    there too, so it never runs without them). With `feedback` (lab_code.serving.feedback,
    lesson 08; `predict_fn` then has `.read`), the page gains "Wrong? Type what it says" and the
    endpoint `/correct`."""
    demo = gr.Interface(
        fn=make_predict(predict_fn, feedback),
        inputs=image_input(),
        outputs=gr.Textbox(label="Recognized text", lines=3),
        examples=[[str(p)] for p in example_paths()],
        cache_examples=False,
        title=TITLE,
        description=DESCRIPTION,
        article=ARTICLE,
        flagging_mode="never",
        api_name="predict",
        delete_cache=DELETE_CACHE,
    )
    if feedback is not None:
        from lab_code.serving.feedback import with_corrections

        demo = with_corrections(demo, feedback)
    # its own launch gets the limits too
    demo.launch = lambda *args, **kwargs: launch_gradio(demo, *args, **kwargs)
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, *,
           auth: tuple[str, str] | None = None, share: bool = False,
           allowed_hosts: tuple[str, ...] = ()) -> tuple[str, str | None]:
    """Serve `demo` with the limits every page of the course carries; returns (local URL, public
    share URL or None) at once, and `demo.close()` stops it.

    The one way the course starts a Gradio page: the command line, the notebooks, the solutions
    and the tests all call it (tests/test_course.py fails on any other `.launch(`), so no page,
    local or public, goes out without its limits (see `launch_gradio`). `port` None: the first
    free port from 7860 up. `allowed_hosts`: host names to answer to besides IP addresses and
    localhost (`allow_host` adds one later, a tunnel's)."""
    _, local_url, share_url = launch_gradio(
        demo, server_name=host, server_port=port, share=share, auth=auth,
        prevent_thread_lock=True, quiet=True, allowed_hosts=allowed_hosts)
    return local_url, share_url


def launch_gradio(demo: gr.Blocks, *args: Any, allowed_hosts: tuple[str, ...] = (),
                  **overrides: Any):
    """Gradio's own `Blocks.launch` with the course's limits, whatever the caller passes: the upload
    cap (LAUNCH_LIMITS; a caller's own max_file_size may only be lower), a bounded queue when
    the app has none, and lab_code.serving.app_guard in front (Host allow-list, no URL
    fetching, at most MAX_FILES per upload and MAX_UPLOAD_MB in all, login throttling, session
    expiry). `allowed_hosts` are host names to answer to besides IP addresses and localhost
    (--share adds *.gradio.live; `allow_host` adds one later). Returns what Blocks.launch does."""
    from starlette.middleware import Middleware

    from lab_code.serving.app_guard import AppGuard

    upload_cap = MAX_UPLOAD_MB * 2**20
    given = overrides.get("max_file_size")
    if given is not None and gr.utils._parse_file_size(given) < upload_cap:
        upload_cap = gr.utils._parse_file_size(given)
    overrides["max_file_size"] = upload_cap
    hosts = [*allowed_hosts, *([".gradio.live"] if overrides.get("share") else [])]
    demo.allowed_hosts = hosts
    app_kwargs = dict(overrides.pop("app_kwargs", None) or {})
    app_kwargs["middleware"] = [*app_kwargs.get("middleware", []), Middleware(
        AppGuard, hosts=hosts, max_upload_bytes=upload_cap + 64 * 1024, max_files=MAX_FILES,
        max_body_bytes=upload_cap * 4 // 3 + 64 * 1024, max_failed_logins=MAX_FAILED_LOGINS,
        login_window_s=LOGIN_WINDOW_S, session_s=SESSION_S)]
    if getattr(demo, "_queue", None) is None or demo._queue.max_size is None:
        demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    return gr.Blocks.launch(demo, *args, app_kwargs=app_kwargs, **overrides)


def allow_host(demo: gr.Blocks, url_or_host: str) -> None:
    """Let a launched app answer to one more host name (a tunnel's, once it is open)."""
    host = urlsplit(url_or_host).hostname if "://" in url_or_host else url_or_host
    if host:
        demo.allowed_hosts.append(host.lower())


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
    parser.add_argument("--watch-db", default=os.environ.get("WATCH_DB") or None,
                        metavar="PATH_OR_URL",
                        help="log the local model's predictions and users' corrections here: a "
                             "SQLite file or postgresql:// URL, or off (default: $WATCH_DB, else "
                             "watch.sqlite in your data folder; with --backend-url the backend "
                             "logs them)")
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
    parser.add_argument("--allowed-hosts", nargs="+", default=[], metavar="NAME",
                        help="host names to answer to besides IP addresses and localhost (the "
                             "--share and --tunnel names are added for you; also "
                             "$LAB_ALLOWED_HOSTS); other names get 400")
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


def watching(backend_url: str | None, db: str | None):
    """Lesson 08: the local model's prediction log (a Watch) and the UI's corrections (a
    Feedback); with a backend URL, the backend logs predictions and stores corrections."""
    from lab_code.serving.feedback import Feedback
    from lab_code.serving.predictions import OFF, default_db
    from lab_code.serving.watch import Watch, WatchConfig

    if db == OFF:
        return None, None
    if backend_url is not None:
        return None, Feedback(backend_url=backend_url)
    watch = Watch(WatchConfig(prometheus=False, db=db or str(default_db()), profile="off"))
    return watch, Feedback(log=watch.log)


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
        watch, feedback = watching(args.backend_url, args.watch_db)
        backend = PredictorBackend(args.backend_url, model_path=args.model, watch=watch,
                                   auth=args.backend_auth)
    except (FileNotFoundError, ValueError, RuntimeError, OSError, SigningError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    auth = choose_auth(args)
    demo = make_frontend(backend, feedback)
    _stop_on_sigterm()
    public_url = None
    try:
        local_url, share_url = launch(demo, args.host, args.port, auth=auth, share=args.share,
                                      allowed_hosts=tuple(args.allowed_hosts))
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
            allow_host(demo, public_url)
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
