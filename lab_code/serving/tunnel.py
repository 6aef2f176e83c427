"""A public URL for a server on this machine: open and close an ngrok tunnel with pyngrok, with one
clear sentence for each thing that can go wrong (no token, no network, a rejected token, no server).

The authtoken comes from the NGROK_AUTHTOKEN environment variable only: never type it into a
notebook or a file that could be committed.
"""

from __future__ import annotations

import logging
import os

from pyngrok import conf, ngrok
from pyngrok.exception import PyngrokError, PyngrokNgrokInstallError

from lab_code.serving.ports import reachable

TOKEN_VAR = "NGROK_AUTHTOKEN"
TOKEN_PAGE = "https://dashboard.ngrok.com/get-started/your-authtoken"
AUTH_ERRORS = ("ERR_NGROK_4018", "ERR_NGROK_105", "ERR_NGROK_107", "authentication failed")

_open: dict[str, conf.PyngrokConfig] = {}  # public URL -> the config its agent was started with


class TunnelError(RuntimeError):
    """A tunnel could not be opened; the message is one sentence that says what to do."""


def require_token() -> str:
    """The ngrok authtoken from NGROK_AUTHTOKEN, or TunnelError saying how to set it."""
    token = os.environ.get(TOKEN_VAR, "").strip()
    if not token:
        raise TunnelError(f"{TOKEN_VAR} is not set: copy your authtoken from {TOKEN_PAGE} and "
                          f"export {TOKEN_VAR}=... (on Colab, add it as a secret) before opening "
                          "a tunnel.")
    return token


def _quiet_pyngrok() -> None:
    """pyngrok logs every line of the agent; our errors already say what went wrong in one line.
    Called when a tunnel opens (not at import), and only where nobody set pyngrok's level."""
    logger = logging.getLogger("pyngrok")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.CRITICAL)


def _explain(err: PyngrokError) -> str:
    """One sentence for a pyngrok failure."""
    if isinstance(err, PyngrokNgrokInstallError):
        return ("Could not download the ngrok agent (are you offline?): connect to the internet, "
                "or install ngrok yourself and set PYNGROK_NGROK_PATH to it.")
    text = " ".join(filter(None, [str(err), getattr(err, "ngrok_error", None)]))
    if any(marker.lower() in text.lower() for marker in AUTH_ERRORS):
        return (f"ngrok rejected the authtoken in {TOKEN_VAR}: copy it again from {TOKEN_PAGE} "
                "and export it.")
    first_line = (getattr(err, "ngrok_error", None) or str(err)).strip().splitlines()[0][:200]
    return f"ngrok could not open a tunnel ({first_line}): check your network and try again."


def open_tunnel(port: int, host: str = "127.0.0.1", ngrok_path: str | None = None) -> str:
    """Open an HTTP tunnel to the server on host:port and return its public https URL.

    The server must already be running. `ngrok_path` is the agent executable (default: pyngrok's,
    downloaded on first use, or $PYNGROK_NGROK_PATH).
    """
    token = require_token()
    if host in ("0.0.0.0", "::", ""):  # listening on every interface: reach it through loopback
        host = "127.0.0.1"
    if not reachable(host, port):
        raise TunnelError(f"Nothing is listening on {host}:{port}: start the server first "
                          f"(python -m lab_code.serving app --port {port}), then open the tunnel.")
    _quiet_pyngrok()
    config = conf.PyngrokConfig(auth_token=token, ngrok_path=ngrok_path)
    try:
        tunnel = ngrok.connect(f"http://{host}:{port}", "http", pyngrok_config=config)
    except PyngrokError as err:
        _stop_agent(config)
        raise TunnelError(_explain(err)) from None
    except OSError as err:  # the agent file exists but cannot be run
        raise TunnelError(f"Could not run the ngrok agent at {config.ngrok_path} ({err.strerror}): "
                          "delete it so that pyngrok downloads it again.") from None
    _open[tunnel.public_url] = config
    return tunnel.public_url


def close_tunnel(url: str | None = None) -> None:
    """Close the tunnel at `url` (default: every tunnel opened here) and stop the agent when no
    tunnel is left. Safe to call twice, or when nothing is open."""
    urls = [url] if url else list(_open)
    for public_url in urls:
        config = _open.pop(public_url, None)
        if config is None:
            continue
        try:
            ngrok.disconnect(public_url, pyngrok_config=config)
        except PyngrokError:
            pass  # the agent is gone already; nothing left to close
        if not any(c.ngrok_path == config.ngrok_path for c in _open.values()):
            _stop_agent(config)


def _stop_agent(config: conf.PyngrokConfig) -> None:
    try:
        ngrok.kill(pyngrok_config=config)
    except (PyngrokError, OSError):
        pass
