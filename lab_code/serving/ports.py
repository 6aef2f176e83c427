"""TCP ports: is one taken on this machine, which one is free, and does a server answer at
host:port. Shared by every server the course starts (the UI, the serverless service, TensorBoard),
the tunnel (is the app up?) and the environment check (is the internet there?)."""

from __future__ import annotations

import socket


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on host:port (so a server could not start there)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def in_use_message(host: str, port: int) -> str:
    """The one sentence every server of the course prints when its port is taken."""
    return (f"port {port} on {host} is already in use: stop the other server or pass another "
            "--port.")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a TCP connection to host:port opens within `timeout` seconds (a server listens
    there and nothing in between refuses)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
