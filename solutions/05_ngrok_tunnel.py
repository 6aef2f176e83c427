# %% [context]
import os
import secrets
import socket

import requests

from pyngrok import conf, process

from lab_code.serving import app, ports, tunnel


def own_address():
    """This machine's address on its network, or None with loopback only (sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            return s.getsockname()[0]
        except OSError:
            return None


# %% [exercise 1]
def who_can_connect(bind):
    """{address: can a client connect to a socket listening on bind?} for loopback and own_address()."""
    with socket.socket() as server:
        server.bind((bind, 0))
        server.listen()
        port = server.getsockname()[1]
        return {via: ports.reachable(via, port) for via in ("127.0.0.1", own_address()) if via}


for bind in ("127.0.0.1", "0.0.0.0"):
    print(f"listening on {bind:>9}:", who_can_connect(bind))
# 127.0.0.1 accepts only loopback connections: the machine's own network address is refused.
# 0.0.0.0 accepts both: any machine that can route to this one (and passes the firewalls) could
# connect. Docker's `-p 7860:7860` forwards to the container's own network interface, not to its
# loopback, so an app listening on 127.0.0.1 inside a container cannot be reached from outside it.
# (On a machine with loopback only, own_address() is None and only 127.0.0.1 is tried.)

# %% [exercise 2]
def failure_message(token, port):
    """The TunnelError message of open_tunnel(port) with NGROK_AUTHTOKEN=token (None: unset)."""
    saved = os.environ.get("NGROK_AUTHTOKEN")
    try:
        if token is None:
            os.environ.pop("NGROK_AUTHTOKEN", None)
        else:
            os.environ["NGROK_AUTHTOKEN"] = token
        tunnel.open_tunnel(port)
    except tunnel.TunnelError as err:
        return str(err)
    finally:
        if saved is None:
            os.environ.pop("NGROK_AUTHTOKEN", None)
        else:
            os.environ["NGROK_AUTHTOKEN"] = saved
    tunnel.close_tunnel()
    return "(no error: a tunnel opened, and is closed again)"


print("no token:         ", failure_message(None, 7860))
print("nothing listening:", failure_message("dummy", ports.free_port()))
print("agent started:", process.is_process_running(conf.get_default().ngrok_path))
# Both are checked before the agent starts: they are the learner's most likely mistakes, they are
# cheap to detect, and the agent's own error would come later (after a download, a start-up and a
# round trip to ngrok's servers) and less clearly. A tunnel to a port with no server would give
# visitors an ngrok error page instead of the app.

# %% [exercise 3]
def two_tunnels(port):
    """(first public URL, second public URL), with the agent stopped in between."""
    first = tunnel.open_tunnel(port)
    tunnel.close_tunnel(first)  # the last tunnel: the agent stops too
    second = tunnel.open_tunnel(port)
    return first, second  # the second stays open for the browser check below


def as_a_browser(url, skip_warning):
    """(status, first words of the page) of GET url with a browser's User-Agent."""
    headers = {"User-Agent": "Mozilla/5.0"}
    if skip_warning:
        headers["ngrok-skip-browser-warning"] = "1"
    answer = requests.get(url, headers=headers, timeout=30)
    return answer.status_code, " ".join(answer.text.split())[:70]


if not os.environ.get("NGROK_AUTHTOKEN"):
    print("This exercise needs NGROK_AUTHTOKEN (and internet): set it and run the cell again.")
else:
    demo = app.make_frontend(app.PredictorBackend())
    url, _ = app.launch(demo, auth=("student", secrets.token_urlsafe(12)))
    try:
        first, second = two_tunnels(int(url.rstrip("/").rsplit(":", 1)[1]))
        print(first, "\n" + second, "\nsame URL:", first == second)
        print("browser, plain:       ", as_a_browser(second, skip_warning=False))
        print("browser, with header: ", as_a_browser(second, skip_warning=True))
    except (tunnel.TunnelError, requests.RequestException) as err:
        print("No tunnel:", err)
    finally:
        tunnel.close_tunnel()
        demo.close()
# The same URL twice: every ngrok account has one assigned dev domain (*.ngrok-free.dev) that
# stays the same across agent restarts (random URLs are a paid feature). So a URL on a poster keeps
# its address, but it answers only while your agent and app run, and a browser visitor first sees
# ngrok's warning page (the plain request above), which the ngrok-skip-browser-warning header skips
# for programs. A URL that must answer all week is a deployment (lessons 04 and 06), not a tunnel.

# %% [exercise 4]
import time

import gradio
import numpy as np
from gradio.data_classes import FileData
from PIL import Image


def attack(name, fn, *args):
    """Print how `fn(*args)` ends (its result or its gr.Error sentence) and how long it took."""
    start = time.perf_counter()
    try:
        outcome = repr(fn(*args))[:60]
    except gradio.Error as err:
        outcome = f"gr.Error: {err}"
    print(f"{name:<22} {time.perf_counter() - start:5.2f} s  {outcome}")


def stripes(height, width):
    arr = np.full((height, width), 255, np.uint8)
    arr[::2] = 0
    return Image.fromarray(arr)


predict = app.make_predict(app.PredictorBackend())
attack("one line", predict, Image.open(app.example_paths()[0]))
attack("stripes 1000 x 1000", predict, stripes(1000, 1000))
attack("stripes 4000 x 4000", predict, stripes(4000, 4000))
attack("bad data URL", app.decode_upload, FileData(path="", url="data:image/png;base64,@@@"))
# Each attack ends in a fraction of a second with one sentence: the stripes are refused by the work
# limits (too many bands of ink) before the model runs, the bad data URL by its base64 check. A
# login stops none of these for someone who has the password: the limits have to live in the app.
