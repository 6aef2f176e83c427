"""The Gradio frontend as a Hugging Face Space: write the folder a Space runs (app.py,
requirements.txt, a README whose YAML header is the Space's settings, and the part of lab_code
the frontend imports), and upload it with huggingface_hub when a token is given. The backend's
URL and the AWS keys that sign for it become Space secrets, never files.

    python -m lab_code.serving spaces --out build/space
    HF_TOKEN=hf_... python -m lab_code.serving spaces --out build/space --upload you/text-recognizer

Hugging Face changed its free tier in July 2026: a free account can no longer create a Gradio
Space on the free CPU (the API answers 402 Payment Required). What works (checked 2026-12-03):
a PRO account (cpu-basic, or cpu-upgrade at an hourly price), a free account over 30 days old on
ZeroGPU (two Spaces; the app must run a function decorated with @spaces.GPU), or the same folder
on any host that runs Python or containers.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import sys
import textwrap
from importlib import metadata, resources
from pathlib import Path

import lab_code

FRONTEND = "lab_code.serving.app"  # the module the Space runs; its imports decide what is copied
# What the Space installs besides Gradio (the Space's sdk_version installs Gradio itself), pinned to
# the versions this checkout runs (and tests) with.
REQUIREMENTS = ("numpy", "pillow", "requests", "botocore")
HARDWARE = ("cpu-basic", "cpu-upgrade", "zero-a10g")
PYTHON_VERSION = "3.12"
SECRETS = ("BACKEND_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
VARIABLES = ("AWS_REGION", "BACKEND_AUTH")  # not secret: visible to anyone who opens the Space
PAYMENT_REQUIRED = (
    "Hugging Face answered 402 Payment Required: since July 2026 a Gradio Space on CPU needs a "
    "PRO account (or a Team or Enterprise organization); subscribe, use ZeroGPU if your account "
    "and app qualify, or run the same folder on any container host (lesson 09).")

APP = '''\
"""The text recognizer's web page on a Hugging Face Space (written by `python -m lab_code.serving
spaces`). Each image goes to the backend that the BACKEND_URL secret names; requests to an AWS
Function URL are signed with the AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY secrets."""

import os

from lab_code.serving.app import BackendError, PredictorBackend, launch_gradio, make_frontend
from lab_code.serving.signing import SigningError


def no_backend(reason):
    """A predict function that tells the visitor why nothing can be read yet."""

    def predict(image):
        raise BackendError(reason)

    return predict


def backend():
    url = os.environ.get("BACKEND_URL")
    if not url:
        return no_backend("This Space has no backend yet: its owner must add the BACKEND_URL "
                          "secret in the Space's settings.")
    try:
        return PredictorBackend(url, auth=os.environ.get("BACKEND_AUTH") or "auto")
    except SigningError as err:
        print(f"error: {err}", flush=True)
        return no_backend(str(err))


demo = make_frontend(backend())

if __name__ == "__main__":
    # the course's limits and guard on Gradio's own launch; the Space answers as OWNER-NAME.hf.space
    launch_gradio(demo, allowed_hosts=(".hf.space",))
'''


class SpaceError(RuntimeError):
    """The Space cannot be written or uploaded: one sentence that says what to do."""


def frontend_modules() -> list[str]:
    """The lab_code modules the frontend imports at start-up (read from the source, not by
    importing it): the app module and, transitively, every lab_code module imported at the top
    level of those modules (imports inside functions, like the local model's, are left out)."""
    root = Path(lab_code.__file__).parent
    todo, seen = [FRONTEND, "lab_code.serving.signing", "lab_code.serving.app_guard"], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = root.joinpath(*name.split(".")[1:]).with_suffix(".py")
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            found = []
            if isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.startswith("lab_code"):
                found = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                found = [a.name for a in node.names if a.name.startswith("lab_code")]
            for candidate in found:
                file = root.joinpath(*candidate.split(".")[1:]).with_suffix(".py")
                if file.is_file():
                    todo.append(candidate)
    packages = {".".join(n.split(".")[:i]) for n in seen for i in range(1, n.count(".") + 1)}
    return sorted(seen | packages)


def requirements() -> list[str]:
    """requirements.txt's lines: each library the frontend imports, at this checkout's version."""
    lines = []
    for dist in REQUIREMENTS:
        try:
            lines.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError as err:
            raise SpaceError(f"{dist} is not installed here, so its version cannot be pinned: pip "
                             f"install {dist} (or lab-code[release]), then try again.") from err
    return lines


def readme(title: str, hardware: str) -> str:
    """README.md: the YAML header Hugging Face reads the Space's settings from, then a note."""
    return textwrap.dedent(f"""\
        ---
        title: {title}
        emoji: 🔤
        colorFrom: blue
        colorTo: gray
        sdk: gradio
        sdk_version: {metadata.version("gradio")}
        python_version: "{PYTHON_VERSION}"
        app_file: app.py
        suggested_hardware: {hardware}
        short_description: Reads printed text; the model runs behind an AWS Function URL
        pinned: false
        ---

        # {title}

        The web page of a small text recognizer. It holds no model: each image goes to the
        backend named by the `BACKEND_URL` secret (an AWS Lambda Function URL, signed with the
        `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` secrets). Written by
        `python -m lab_code.serving spaces` from the course "Deploying a PyTorch model".
        """)


def write_space(out: str | os.PathLike, title: str = "Text recognizer",
                hardware: str = "cpu-basic") -> Path:
    """Write the Space's folder at `out` (replacing what a previous run wrote there) and return
    it. Nothing in it is secret: the backend and its keys are set as Space secrets."""
    if hardware not in HARDWARE:
        raise SpaceError(f"Hardware must be one of {', '.join(HARDWARE)}, not {hardware!r}.")
    out = Path(out)
    if out.exists() and not (out / "app.py").is_file():
        raise SpaceError(f"{out} exists and is not a Space folder written here: choose another "
                         "--out.")
    shutil.rmtree(out, ignore_errors=True)
    root = Path(lab_code.__file__).parent
    for name in frontend_modules():
        rel = Path(*name.split(".")[1:])
        source = root / rel / "__init__.py" if (root / rel).is_dir() else \
            root / rel.with_suffix(".py")
        target = out / "lab_code" / source.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    examples = Path(str(resources.files("lab_code").joinpath("assets", "examples")))
    shutil.copytree(examples, out / "lab_code" / "assets" / "examples")
    (out / "app.py").write_text(APP, encoding="utf-8")
    (out / "requirements.txt").write_text("\n".join(requirements()) + "\n", encoding="utf-8")
    (out / "README.md").write_text(readme(title, hardware), encoding="utf-8")
    return out


def settings_from_environment(backend_url: str | None = None) -> tuple[dict, dict]:
    """The Space's secrets and variables, from the arguments and this shell's environment
    (BACKEND_URL, AWS_ACCESS_KEY_ID, ...): only the ones that are set."""
    env = dict(os.environ)
    if backend_url:
        env["BACKEND_URL"] = backend_url
    secrets = {k: env[k] for k in SECRETS if env.get(k)}
    variables = {k: env[k] for k in VARIABLES if env.get(k)}
    return secrets, variables


def upload(folder: str | os.PathLike, repo_id: str, token: str | None = None,
           secrets: dict[str, str] | None = None, variables: dict[str, str] | None = None,
           hardware: str = "cpu-basic", private: bool = False) -> str:
    """Create (or update) the Space `repo_id`, set its secrets and variables, upload the folder;
    returns the Space's URL. SpaceError with one sentence when it cannot."""
    token = token or os.environ.get("HF_TOKEN")
    if not token:
        raise SpaceError("No Hugging Face token: create one with write access at "
                         "https://huggingface.co/settings/tokens, set HF_TOKEN to it (never in a "
                         "file of the repository), and try again.")
    if "/" not in repo_id:
        raise SpaceError(f"Name the Space as OWNER/NAME (your user or organization, then the "
                         f"Space's name), not {repo_id!r}.")
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError
    except ImportError as err:
        raise SpaceError("Uploading needs huggingface_hub: pip install huggingface_hub, then "
                         "try again.") from err
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="space", space_sdk="gradio",
                              space_hardware=hardware, private=private, exist_ok=True)
        for key, value in (secrets or {}).items():
            api.add_space_secret(repo_id, key, value)
        for key, value in (variables or {}).items():
            api.add_space_variable(repo_id, key, value)
        api.upload_folder(repo_id=repo_id, repo_type="space", folder_path=str(folder),
                          commit_message="Upload the text recognizer's frontend")
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status == 402:
            raise SpaceError(PAYMENT_REQUIRED) from err
        if status in (401, 403):
            raise SpaceError(f"Hugging Face refused the token (HTTP {status}): use a token with "
                             f"write access to {repo_id.split('/')[0]}.") from err
        raise SpaceError(f"Hugging Face answered HTTP {status} ({str(err).splitlines()[0]}): "
                         "try again later, or create the Space in the browser.") from err
    except OSError as err:  # no network, DNS, refused connection
        raise SpaceError(f"Cannot reach Hugging Face ({type(err).__name__}): check your network "
                         "and try again.") from err
    return str(url)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab_code.serving spaces",
                                     description=__doc__.split("\n\n")[0],
                                     epilog="Secrets come from this shell's environment: "
                                            + ", ".join(SECRETS) + "; variables: "
                                            + ", ".join(VARIABLES) + ".")
    parser.add_argument("--out", type=Path, default=Path("build/space"),
                        help="the folder to write (default: %(default)s)")
    parser.add_argument("--title", default="Text recognizer", help="the Space's title")
    parser.add_argument("--hardware", choices=HARDWARE, default="cpu-basic",
                        help="the hardware to ask for (default: %(default)s; needs PRO since "
                             "July 2026)")
    parser.add_argument("--upload", metavar="OWNER/NAME", default=None,
                        help="create or update this Space and upload the folder (needs HF_TOKEN)")
    parser.add_argument("--backend-url", default=None,
                        help="the backend to set as the BACKEND_URL secret (default: "
                             "$BACKEND_URL)")
    parser.add_argument("--private", action="store_true", help="make the Space private")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        folder = write_space(args.out, args.title, args.hardware)
        print(f"wrote the Space's folder to {folder}: app.py, requirements.txt, README.md and "
              f"{len(frontend_modules())} modules of lab_code")
        if args.upload:
            secrets, variables = settings_from_environment(args.backend_url)
            url = upload(folder, args.upload, secrets=secrets, variables=variables,
                         hardware=args.hardware, private=args.private)
            print(f"uploaded to {url} with secrets {', '.join(secrets) or 'none'}")
    except SpaceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
