"""The one policy for fetching a URL that a caller hands us (server-side request forgery safe):
http(s) only; the host resolved and every internal address refused before anything is contacted;
the connection made to the very address that was checked (no DNS-rebinding gap); redirects
re-checked hop by hop; one total deadline and a byte cap for the whole download; an image only.

urllib3 (already under `requests`) does the HTTP and TLS on a connection pinned to the checked IP,
with the certificate still verified against the host name; this module adds the address policy,
the redirect loop and the total deadline, which no library here does as a whole.

Trusted local use (a lesson's demo server on 127.0.0.1, the tests) must opt in: set
`LAB_ALLOW_PRIVATE_URLS=1`, or pass `--allow-private-urls` to a command that fetches URLs.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

ALLOW_PRIVATE_ENV = "LAB_ALLOW_PRIVATE_URLS"  # "1" lets trusted local use fetch internal addresses
ALLOW_PRIVATE_FLAG = "--allow-private-urls"
MAX_URL_CHARS = 2048
SHOWN_CHARS = 80  # a URL in an error message or a log is cut to this many characters
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UrlError(ValueError):
    """A URL that was refused or could not be fetched: an HTTP status for a service to answer
    with (400 refused, 413 too large, 415 not an image, 502 upstream failed, 504 too slow) and
    one sentence a person can act on."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# Characters that change how a line of text reads without being seen: C0 and C1 controls, DEL,
# the Unicode line and paragraph separators, and the bidirectional controls (a right-to-left
# override makes "gnp.exe" read "exe.png"). In a message or a log they are written as \uXXXX.
_UNSEEN = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
                     "\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with every control, line-separator and bidi character written as \\uXXXX."""
    return _UNSEEN.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def shown(url: str) -> str:
    """The URL (or any text a caller sent) as it may appear in a message or a log: invisible
    characters written out (see `printable`), never more than SHOWN_CHARS characters."""
    text = printable(url[: SHOWN_CHARS * 8])
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def allow_private_from_env() -> bool:
    """True when the environment opts in to fetching internal addresses (off by default)."""
    return os.environ.get(ALLOW_PRIVATE_ENV, "").strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class UrlPolicy:
    """What one download may do. `allow_private=None` reads LAB_ALLOW_PRIVATE_URLS at fetch time."""

    allow_private: bool | None = None
    deadline_s: float = 10.0  # the whole download: resolving, connecting, redirects, every byte
    max_bytes: int = 10 * 1024 * 1024
    max_redirects: int = 3
    schemes: tuple[str, ...] = field(default=("http", "https"))

    def private_allowed(self) -> bool:
        return allow_private_from_env() if self.allow_private is None else self.allow_private


def is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for a globally routable unicast address; False for loopback, private, link-local
    (169.254.169.254, the cloud metadata address), shared, multicast, reserved, unspecified, and
    for IPv6 forms that embed such an IPv4 address (mapped, 6to4, NAT64)."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and not is_public(embedded):
            return False
        if ip.teredo is not None and not all(is_public(x) for x in ip.teredo):
            return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified
                                 or ip.is_loopback or ip.is_link_local or ip.is_private)


def _resolve(host: str, port: int, timeout: float) -> list[str]:
    """Every address `host` resolves to (numeric hosts in any form, e.g. 2130706433, included),
    within `timeout` seconds."""
    out: dict[str, list] = {}

    def lookup() -> None:
        try:
            out["ok"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as err:
            out["err"] = [err]

    worker = threading.Thread(target=lookup, daemon=True)  # getaddrinfo has no timeout of its own
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise UrlError(504, f"Looking up the host of {shown(host)} took longer than "
                            f"{timeout:.0f} s: try again later or use another URL.")
    if "err" in out:
        raise UrlError(502, f"The host {shown(host)} could not be found: check the URL.")
    return list(dict.fromkeys(info[4][0] for info in out["ok"]))


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (a pinned IP) and what to ask for."""

    scheme: str
    host: str
    ip: str
    port: int
    path: str


def check_url(url: str, policy: UrlPolicy, timeout: float) -> Target:
    """Parse and resolve `url` under `policy`, or raise UrlError(400) before contacting anything."""
    if len(url) > MAX_URL_CHARS:
        raise UrlError(400, f"The URL is {len(url):,} characters long, more than the "
                            f"{MAX_URL_CHARS:,} allowed: send a shorter URL.")
    try:
        parts = urlsplit(url.strip())
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError as err:  # a bad port, brackets that do not close
        raise UrlError(400, f"{shown(url)} is not a valid URL: check it.") from err
    if scheme not in policy.schemes:
        raise UrlError(400, f"Only http:// and https:// URLs can be fetched, not {shown(url)}.")
    if not host:
        raise UrlError(400, f"{shown(url)} has no host name: send a full http(s) URL.")
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or any(len(label) > 63 or not label for label in labels):
        raise UrlError(400, "The URL's host name is not a valid name (a part over 63 characters, "
                            "or empty): check the URL.")
    port = port or (443 if scheme == "https" else 80)
    addresses = _resolve(host, port, timeout)
    private_ok = policy.private_allowed()
    checked = []
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not private_ok and not is_public(ip):
            raise UrlError(400, f"{shown(url)} points to an internal address ({ip}), which this "
                                "service does not fetch: send a public http(s) URL.")
        checked.append(str(ip))
    if not checked:
        raise UrlError(502, f"The host {shown(host)} has no address: check the URL.")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme, host, checked[0], port, path)


def _pool(target: Target, timeout: float):
    import certifi
    import urllib3

    urllib3_timeout = urllib3.Timeout(connect=max(0.05, timeout), read=max(0.05, timeout))
    if target.scheme == "https":  # TLS to the pinned IP, the certificate checked for the host
        return urllib3.HTTPSConnectionPool(
            target.ip, target.port, timeout=urllib3_timeout, maxsize=1, retries=False,
            server_hostname=target.host, assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED", ca_certs=certifi.where())
    return urllib3.HTTPConnectionPool(target.ip, target.port, timeout=urllib3_timeout,
                                      maxsize=1, retries=False)


def _host_header(target: Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    default = 443 if target.scheme == "https" else 80
    return host if target.port == default else f"{host}:{target.port}"


def _read_body(resp, url: str, policy: UrlPolicy, deadline: float) -> bytes:
    """Read the body, never past the byte cap or the deadline (however slowly it trickles)."""
    chunks, total = [], 0
    sock = getattr(getattr(resp, "connection", None), "sock", None)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise UrlError(504, f"Downloading {shown(url)} took longer than "
                                f"{policy.deadline_s:.0f} s: use a faster server or a smaller "
                                "image.")
        if sock is not None:
            sock.settimeout(remaining)  # each wait for bytes ends at the deadline
        chunk = resp.read1(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > policy.max_bytes:
            raise UrlError(413, f"{shown(url)} is larger than {policy.max_bytes // 2**20} MB: "
                                "use a smaller image.")
        chunks.append(chunk)


def fetch(url: str, policy: UrlPolicy | None = None) -> bytes:
    """The bytes of the image at `url`, fetched under `policy`; UrlError (one sentence, an HTTP
    status) for anything refused, failed, too large, too slow or not an image."""
    import urllib3

    policy = policy or UrlPolicy()
    deadline = time.monotonic() + policy.deadline_s
    current = url
    for hop in range(policy.max_redirects + 1):
        target = check_url(current, policy, max(0.05, deadline - time.monotonic()))
        remaining = deadline - time.monotonic()
        pool = _pool(target, remaining)
        try:
            resp = pool.urlopen("GET", target.path, headers={
                "Host": _host_header(target), "Accept": "image/*",
                "User-Agent": "lab-code-recognizer"}, redirect=False, retries=False,
                preload_content=False, assert_same_host=False)
            try:
                if resp.status in (301, 302, 303, 307, 308) and resp.headers.get("location"):
                    if hop == policy.max_redirects:
                        raise UrlError(502, f"{shown(url)} redirects more than "
                                            f"{policy.max_redirects} times: send the final URL.")
                    current = urljoin(current, resp.headers["location"])
                    continue
                return _checked_body(resp, current, policy, deadline)
            finally:
                resp.release_conn()
                resp.close()
        except UrlError:
            raise
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as err:
            refused = isinstance(err, (urllib3.exceptions.NewConnectionError,
                                       ConnectionRefusedError))
            timed_out = isinstance(err, (TimeoutError, urllib3.exceptions.TimeoutError))
            if not refused and (timed_out or time.monotonic() >= deadline):
                raise UrlError(504, f"Downloading {shown(url)} took longer than "
                                    f"{policy.deadline_s:.0f} s: use a faster server or a "
                                    "smaller image.") from err
            raise UrlError(502, f"Could not fetch {shown(url)} ({type(err).__name__}): check "
                                "that the URL is public and serves an image.") from err
        finally:
            pool.close()
    raise AssertionError("unreachable")  # the loop returns or raises


def _checked_body(resp, url: str, policy: UrlPolicy, deadline: float) -> bytes:
    if resp.status != 200:
        raise UrlError(502, f"Could not fetch {shown(url)} (HTTP {resp.status}): check that the "
                            "URL is public and serves an image.")
    length = resp.headers.get("content-length", "")
    if length.isdigit() and int(length) > policy.max_bytes:  # refused before reading the body
        raise UrlError(413, f"{shown(url)} is {int(length):,} bytes, more than "
                            f"{policy.max_bytes // 2**20} MB: use a smaller image.")
    kind = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind and not (kind.startswith("image/") or kind == "application/octet-stream"):
        raise UrlError(415, f"{shown(url)} is {kind}, not an image: send the URL of a PNG or "
                            "JPEG file.")
    return _read_body(resp, url, policy, deadline)
