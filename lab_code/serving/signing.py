"""AWS Signature Version 4 for a Function URL whose auth type is AWS_IAM: `Signer` signs each
request with botocore's signer and the standard AWS credentials (environment variables, a
profile, a role), and `SigV4Checker` checks a signature the way AWS does, for the local stand-in
(lab_code.serving.function_url) that the course tests against.

A signature covers the method, the path, the query, the signed headers (the host and the time
at least) and the SHA-256 of the body, with a key derived from the secret key, the day, the
region and the service (`lambda`). AWS refuses a request whose time is more than 5 minutes off,
whose key it does not know, or whose signature it computes differently; the caller also needs
lambda:InvokeFunctionUrl and lambda:InvokeFunction on the function (since October 2025).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

SERVICE = "lambda"
ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW_S = 300  # AWS refuses a signed request whose time is more than 5 minutes off
FUNCTION_URL_HOST = re.compile(r"^[a-z0-9]+\.lambda-url\.([a-z0-9-]+)\.on\.aws$")
AMZ_DATE = "%Y%m%dT%H%M%SZ"
NO_CREDENTIALS = ("No AWS credentials found to sign the request with: set AWS_ACCESS_KEY_ID and "
                  "AWS_SECRET_ACCESS_KEY (as Space secrets on Hugging Face), or AWS_PROFILE, "
                  "and try again.")


class SigningError(RuntimeError):
    """The request cannot be signed (no credentials, no region, no botocore): one sentence."""


def is_function_url(url: str) -> bool:
    """Whether `url` is an AWS Lambda Function URL (https://<id>.lambda-url.<region>.on.aws/)."""
    return bool(FUNCTION_URL_HOST.match(urlsplit(url).hostname or ""))


def region_for(url: str) -> str:
    """The region to sign for: a Function URL's own, else $AWS_REGION or $AWS_DEFAULT_REGION."""
    match = FUNCTION_URL_HOST.match(urlsplit(url).hostname or "")
    region = match.group(1) if match else (os.environ.get("AWS_REGION")
                                           or os.environ.get("AWS_DEFAULT_REGION"))
    if not region:
        raise SigningError(f"Cannot tell which AWS region {urlsplit(url).hostname} is in: set "
                           "AWS_REGION (for example us-east-1) and try again.")
    return region


class Signer:
    """Signs requests to one URL's region with SigV4 for the `lambda` service. Credentials come
    from botocore's usual chain ($AWS_ACCESS_KEY_ID / $AWS_SECRET_ACCESS_KEY / $AWS_SESSION_TOKEN,
    $AWS_PROFILE and ~/.aws, a container or instance role), looked up when the signer is made and
    refreshed by botocore when they are temporary."""

    def __init__(self, url: str, profile: str | None = None) -> None:
        try:
            import botocore.session
            from botocore.auth import SigV4Auth
            from botocore.awsrequest import AWSRequest
        except ImportError as err:
            raise SigningError("Signing requests needs botocore: pip install botocore, then try "
                               "again.") from err
        self.region = region_for(url)
        self._auth_class, self._request_class = SigV4Auth, AWSRequest
        self._credentials = botocore.session.Session(profile=profile).get_credentials()
        if self._credentials is None:
            raise SigningError(NO_CREDENTIALS)

    @property
    def access_key(self) -> str:
        return self._credentials.get_frozen_credentials().access_key

    def headers(self, method: str, url: str, body: bytes = b"",
                headers: Mapping[str, str] | None = None) -> dict[str, str]:
        """The headers to send with exactly `body` to `url`: the given ones plus X-Amz-Date,
        X-Amz-Content-SHA256 (which CloudFront in front of a Function URL requires), the
        security token of temporary credentials, and Authorization."""
        extra = {**(headers or {}), "X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()}
        request = self._request_class(method=method, url=url, data=body, headers=extra)
        frozen = self._credentials.get_frozen_credentials()
        self._auth_class(frozen, SERVICE, self.region).add_auth(request)
        return dict(request.headers.items())


# --- AWS's side, for the local stand-in ---------------------------------------------------------

class SignatureRejected(Exception):
    """A request AWS would refuse with 403: the reason in one sentence."""


@dataclass(frozen=True)
class Authorization:
    access_key: str
    date: str  # YYYYMMDD of the credential scope
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


AUTH = re.compile(r"^AWS4-HMAC-SHA256\s+Credential=([^/,\s]+)/(\d{8})/([^/,\s]+)/([^/,\s]+)/"
                  r"aws4_request,\s*SignedHeaders=([a-z0-9;-]+),\s*Signature=([0-9a-f]{64})$")


def parse_authorization(value: str) -> Authorization:
    match = AUTH.match(value.strip())
    if not match:
        raise SignatureRejected("The Authorization header is not a SigV4 signature "
                                f"({ALGORITHM} Credential=..., SignedHeaders=..., Signature=...).")
    key, date, region, service, signed, signature = match.groups()
    return Authorization(key, date, region, service, tuple(signed.split(";")), signature)


class SigV4Checker:
    """Checks SigV4 signatures as AWS does for an AWS_IAM Function URL: known access key, the
    right region and service, a time within MAX_SKEW_S, a body that matches its hash, and the
    signature recomputed with botocore from what arrived. `keys`: access key id -> secret key."""

    def __init__(self, keys: Mapping[str, str], region: str, service: str = SERVICE,
                 max_skew_s: float = MAX_SKEW_S,
                 clock: Callable[[], dt.datetime] | None = None) -> None:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        self.keys, self.region, self.service = dict(keys), region, service
        self.max_skew_s = max_skew_s
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._auth, self._request, self._credentials = SigV4Auth, AWSRequest, Credentials

    def check(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> str:
        """The access key that signed the request, or SignatureRejected with the reason.
        `headers` as received (any case); `url` as the client addressed it (scheme, host, path,
        query)."""
        lower = {k.lower(): v for k, v in headers.items()}
        if "authorization" not in lower:
            raise SignatureRejected("The request is not signed: a Function URL with auth type "
                                    "AWS_IAM needs a SigV4 Authorization header.")
        auth = parse_authorization(lower["authorization"])
        if auth.access_key not in self.keys:
            raise SignatureRejected(f"The access key {auth.access_key[:4]}... is not known here.")
        if (auth.region, auth.service) != (self.region, self.service):
            raise SignatureRejected(f"The signature is for {auth.service} in {auth.region}, not "
                                    f"{self.service} in {self.region}.")
        if "host" not in auth.signed_headers or "x-amz-date" not in auth.signed_headers:
            raise SignatureRejected("The signature must cover the host and x-amz-date headers.")
        missing = [h for h in auth.signed_headers if h not in lower]
        if missing:
            raise SignatureRejected(f"Signed header {missing[0]} is missing from the request.")
        try:
            when = dt.datetime.strptime(lower["x-amz-date"], AMZ_DATE).replace(tzinfo=dt.UTC)
        except ValueError as err:
            raise SignatureRejected("x-amz-date is not a time like 20261203T120000Z.") from err
        skew = abs((self.clock() - when).total_seconds())
        if skew > self.max_skew_s or auth.date != lower["x-amz-date"][:8]:
            raise SignatureRejected(f"The signature's time is {skew:.0f} s away from now (more "
                                    f"than {self.max_skew_s:.0f} s): sign each request when you "
                                    "send it, with a clock that is right.")
        declared = lower.get("x-amz-content-sha256")
        if declared is not None and declared != hashlib.sha256(body).hexdigest():
            raise SignatureRejected("The body does not match its x-amz-content-sha256 hash.")
        request = self._request(method=method.upper(), url=url, data=body,
                                headers={h: lower[h] for h in auth.signed_headers})
        request.context["timestamp"] = lower["x-amz-date"]
        secret = self.keys[auth.access_key]
        token = lower.get("x-amz-security-token")
        signer = self._auth(self._credentials(auth.access_key, secret, token), self.service,
                            self.region)
        canonical = signer.canonical_request(request)
        expected = signer.signature(signer.string_to_sign(request, canonical), request)
        if not hmac.compare_digest(expected, auth.signature):
            raise SignatureRejected("The signature does not match: the secret key is wrong, or "
                                    "the request changed after it was signed.")
        return auth.access_key
