"""The URL-fetching policy on its own: which addresses are internal, what is refused before any
connection, that the connection goes to the address that was checked (no DNS-rebinding gap), the
opt-in, and that urllib3 (the library part) is asked to verify TLS for the host name. Loopback
servers of the test's own only."""

from __future__ import annotations

import http.server
import ipaddress
import socket

import pytest
from test_public_serving import LINE, canary, serve_on

from lab_code import urlfetch


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.255.255.254", "10.1.2.3", "172.16.0.1", "192.168.0.1", "169.254.169.254",
    "100.64.0.1", "0.0.0.0", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
    "::1", "::", "fe80::1", "fc00::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
    "64:ff9b::a9fe:a9fe", "2002:7f00:1::", "2001:db8::1",
])
def test_internal_addresses_are_not_public(address):
    assert not urlfetch.is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_public(address):
    assert urlfetch.is_public(ipaddress.ip_address(address))


@pytest.fixture
def resolver(monkeypatch):
    """A fake DNS: host name -> list of addresses (answers change when the test says so)."""
    table: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in table:
            family = lambda a: socket.AF_INET6 if ":" in a else socket.AF_INET  # noqa: E731
            return [(family(a), socket.SOCK_STREAM, 6, "", (a, port)) for a in table[host]]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


def test_a_name_with_any_internal_address_is_refused(resolver):
    resolver["mixed.test"] = ["8.8.8.8", "10.0.0.5"]
    with pytest.raises(urlfetch.UrlError, match="internal address") as err:
        urlfetch.check_url("http://mixed.test/x.png", urlfetch.UrlPolicy(allow_private=False), 5)
    assert err.value.status == 400


def test_the_connection_goes_to_the_checked_address_not_a_second_lookup(resolver, monkeypatch):
    """DNS rebinding: the name resolves to an allowed address (127.0.0.2, treated as public here)
    when checked, and to a canary on 127.0.0.1, same port, on every later lookup. The download
    must use the checked address, and send the name as Host."""
    def handler(seen):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the name http.server calls
                seen.append(self.headers["host"])
                self.send_response(200)
                self.send_header("content-type", "image/png")
                self.end_headers()
                self.wfile.write(LINE)

            def log_message(self, *args):
                pass
        return Handler

    allowed, canary_hits = [], []
    real = urlfetch.is_public
    monkeypatch.setattr(urlfetch, "is_public", lambda ip: str(ip) == "127.0.0.2" or real(ip))
    with serve_on("127.0.0.2", handler(allowed)) as base:
        port = int(base.rsplit(":", 1)[1])
        with serve_on("127.0.0.1", handler(canary_hits), port=port):
            answers = iter([["127.0.0.2"]])
            resolver["rebind.test"] = _Flip(answers, ["127.0.0.1"])
            policy = urlfetch.UrlPolicy(allow_private=False)
            assert urlfetch.fetch(f"http://rebind.test:{port}/a.png", policy) == LINE
    assert allowed == [f"rebind.test:{port}"] and canary_hits == []


class _Flip(list):
    """A DNS answer that is `first` once, then `later` (iterating it is what the resolver does)."""

    def __init__(self, first, later):
        super().__init__()
        self.first, self.later = first, later

    def __iter__(self):
        return iter(next(self.first, self.later))


def test_the_opt_in_comes_from_the_flag_or_the_environment(monkeypatch):
    monkeypatch.delenv(urlfetch.ALLOW_PRIVATE_ENV, raising=False)
    assert not urlfetch.UrlPolicy().private_allowed()  # off by default
    monkeypatch.setenv(urlfetch.ALLOW_PRIVATE_ENV, "1")
    assert urlfetch.UrlPolicy().private_allowed()
    assert not urlfetch.UrlPolicy(allow_private=False).private_allowed()
    with canary() as c:
        assert urlfetch.fetch(f"{c.base}/x.png") == LINE and c.hits == ["/x.png"]


def test_https_is_verified_for_the_host_name_on_the_pinned_address():
    target = urlfetch.Target("https", "example.com", "93.184.215.14", 443, "/a.png")
    pool = urlfetch._pool(target, 5.0)
    assert pool.host == "93.184.215.14"  # the checked address, not a fresh lookup
    assert pool.conn_kw["server_hostname"] == "example.com"  # SNI
    assert pool.assert_hostname == "example.com" and pool.cert_reqs == "CERT_REQUIRED"


def test_urls_are_shortened_in_messages():
    long_url = "http://example.com/" + "a" * 10_000
    assert len(urlfetch.shown(long_url)) == urlfetch.SHOWN_CHARS
    with pytest.raises(urlfetch.UrlError) as err:
        urlfetch.fetch(long_url)
    assert err.value.status == 400 and len(str(err.value)) < 200
