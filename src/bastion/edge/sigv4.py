"""AWS Signature Version 4 verification, header-based (``Authorization: AWS4-HMAC-SHA256``).

The spec: IAM User Guide, "AWS Signature Version 4 for API requests" and "Create a signed AWS
API request" (https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html),
checked against AWS's Signature Version 4 test suite (``tests/vectors/sigv4``) and botocore's
signer. The steps, each a pure function here:

1. Canonical request: method, canonical URI, canonical query string, canonical headers,
   signed headers, payload hash, one per line (``canonical_request``).
2. String to sign: algorithm, request date, credential scope, hex SHA-256 of (1).
3. Signing key: HMAC-SHA256 chained over ``"AWS4" + secret``, date, region, service,
   ``aws4_request`` (``signing_key``; derived keys are cached per key/date/region/service).
4. Signature: hex HMAC-SHA256 of (2) under (3), compared in constant time.

Beyond the signature, ``SigV4Verifier`` refuses a request whose date is more than
``max_skew`` from the server's clock (AWS's JSON services: 5 minutes, "Signature expired:
… (… - 5 min.)"), whose credential scope names another service or region, that does not
sign ``host`` and ``x-amz-date`` (and the session token when it carries one), or whose
``x-amz-content-sha256`` is not the hash of the body. With replay protection on, a signature
is accepted once: it is remembered in the KV store until it would have expired anyway.
Two byte-identical requests signed by one key in the same second have one signature: the
second is refused as a replay, with a name SDKs retry (``ReplayedSignature``).

Errors carry the names AWS's JSON services answer with (``__type``); every one is HTTP 400,
as AWS KMS answers them. None holds a secret, a signature or a canonical request.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote, unquote_to_bytes

from cachetools import LRUCache

from bastion.identity.access_keys import AccessKeyRecord
from bastion.store.kv import KV

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_AUTHORIZATION = 4096  # bytes of the Authorization header
MAX_SIGNED_HEADERS = 64
MAX_QUERY = 8192
MAX_QUERY_PARAMS = 256
DERIVED_KEYS_CACHED = 10_000
# with fullmatch: character classes and fixed counts only (linear, nothing to backtrack)
_DATE_RE = re.compile(r"\d{8}")
_AMZ_DATE_RE = re.compile(r"\d{8}T\d{6}Z")
_REGION_RE = re.compile(r"[a-z0-9-]{1,32}")
_SERVICE_RE = re.compile(r"[a-z0-9-]{1,64}")
_KEY_ID_RE = re.compile(r"[A-Za-z0-9]{1,128}")  # the store checks its own shape
_SIGNATURE_RE = re.compile(r"[0-9a-f]{64}")
_HEADER_NAME_RE = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]{1,128}")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")


# --- errors ---------------------------------------------------------------------------------
class SigV4Error(Exception):
    """A refused signature. ``code`` is the AWS ``__type``; ``message`` is safe to send;
    ``access_key_id`` (not a secret; CloudTrail records it) is set once it is known."""

    code = "IncompleteSignatureException"
    status = 400

    def __init__(self, message: str, access_key_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.access_key_id = access_key_id


# present in a request, these must be among its SignedHeaders
MUST_SIGN = frozenset({b"x-amz-target", b"content-type"})


class MissingAuthenticationToken(SigV4Error):
    """No ``Authorization`` header (AWS: "Missing Authentication Token")."""

    code = "MissingAuthenticationTokenException"


class IncompleteSignature(SigV4Error):
    """The header does not follow SigV4's grammar ("The request signature does not conform
    to AWS standards")."""

    code = "IncompleteSignatureException"


class UnrecognizedClient(SigV4Error):
    """Unknown, inactive or unusable access key ("The security token included in the request
    is invalid")."""

    code = "UnrecognizedClientException"


class InvalidSignature(SigV4Error):
    """Wrong signature, scope, date skew or a replay."""

    code = "InvalidSignatureException"


class ReplayedSignature(SigV4Error):
    """A signature already accepted. AWS has no such refusal (it accepts replays within the
    skew window); the name is ``ThrottlingException`` because a legitimate client can meet
    it too, by sending two byte-identical requests in one second (same key, date, body),
    and SDKs retry that error with a fresh signature, while a replayed request stays
    refused (a replayer cannot sign)."""

    code = "ThrottlingException"


class ExpiredToken(SigV4Error):
    """Temporary credentials past their expiry."""

    code = "ExpiredTokenException"


INVALID_TOKEN = "The security token included in the request is invalid."  # noqa: S105
MISMATCH = ("The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method. Consult the service "
            "documentation for details.")


# --- step 0: the Authorization header -------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Authorization:
    access_key_id: str
    date: str  # YYYYMMDD
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/{TERMINATOR}"


def parse_authorization(value: str) -> Authorization:
    """``AWS4-HMAC-SHA256 Credential=AKID/date/region/service/aws4_request,
    SignedHeaders=a;b, Signature=hex``. Raises ``IncompleteSignature``."""
    if len(value) > MAX_AUTHORIZATION:
        raise IncompleteSignature("The Authorization header is too long.")
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise IncompleteSignature(f"Unsupported AWS 'algorithm': '{algorithm[:32]}'.")
    params: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, val = part.strip().partition("=")
        if not sep or name not in ("Credential", "SignedHeaders", "Signature"):
            raise IncompleteSignature(
                f"Authorization header parameter is not valid: '{name[:32]}'.")
        if name in params:
            raise IncompleteSignature(f"Authorization header repeats '{name}'.")
        params[name] = val.strip()
    for name in ("Credential", "SignedHeaders", "Signature"):
        if name not in params:
            raise IncompleteSignature(f"Authorization header requires '{name}' parameter.")
    parts = params["Credential"].split("/")
    if len(parts) != 5:
        raise IncompleteSignature("Credential must have exactly 5 slash-delimited elements, "
                                  "e.g. keyid/date/region/service/term.")
    key_id, date, region, service, term = parts
    if not _KEY_ID_RE.fullmatch(key_id):
        raise IncompleteSignature("The access key id in Credential is malformed.")
    if term != TERMINATOR:
        raise IncompleteSignature(
            f"Credential should be scoped with a valid terminator: '{TERMINATOR}'.", key_id)
    if not _DATE_RE.fullmatch(date):
        raise IncompleteSignature("Credential should be scoped to a valid date (YYYYMMDD).",
                                  key_id)
    if not _REGION_RE.fullmatch(region) or not _SERVICE_RE.fullmatch(service):
        raise IncompleteSignature("Credential should be scoped to a valid region and service.",
                                  key_id)
    names = params["SignedHeaders"].split(";")
    if len(names) > MAX_SIGNED_HEADERS or not all(_HEADER_NAME_RE.fullmatch(n) for n in names):
        raise IncompleteSignature("SignedHeaders must be lower-case header names separated "
                                  "by ';'.", key_id)
    if any(a >= b for a, b in zip(names, names[1:], strict=False)):
        raise IncompleteSignature("SignedHeaders must be sorted and unique.", key_id)
    if not _SIGNATURE_RE.fullmatch(params["Signature"]):
        raise IncompleteSignature("Signature must be 64 lower-case hexadecimal digits.",
                                  key_id)
    return Authorization(key_id, date, region, service, tuple(names), params["Signature"])


# --- step 1: the canonical request ----------------------------------------------------------
def _remove_dot_segments(path: bytes) -> bytes:
    """RFC 3986 §5.2.4, with empty segments dropped too (AWS collapses ``//``), keeping the
    leading and a trailing slash: the SigV4 test suite's ``normalize-path`` cases."""
    out: list[bytes] = []
    for seg in path.split(b"/"):
        if seg == b".." and out:
            out.pop()
        elif seg not in (b"", b".", b".."):
            out.append(seg)
    lead = b"/" if path.startswith(b"/") else b""
    trail = b"/" if path.endswith(b"/") and out else b""
    return lead + b"/".join(out) + trail


def canonical_uri(raw_path: bytes) -> str:
    """The path as sent, normalised, then URI-encoded once more: every service but S3
    double-encodes (the path on the wire is already encoded)."""
    if not raw_path:
        return "/"
    return quote(_remove_dot_segments(raw_path) or b"/", safe="/~")


def _encode(value: bytes) -> str:
    """SigV4's UriEncode: every byte but ``A-Za-z0-9-_.~`` as ``%XX`` (upper-case hex)."""
    return quote(value, safe="-_.~")


def canonical_query(raw_query: bytes) -> str:
    """Parameters decoded, re-encoded with UriEncode, sorted by name then value (so that
    ``%7e`` and ``~`` are one parameter, as AWS's servers decode them)."""
    if not raw_query:
        return ""
    if len(raw_query) > MAX_QUERY:
        raise IncompleteSignature("The query string is too long.")
    pairs: list[tuple[str, str]] = []
    for part in raw_query.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        # a "+" is a space, as in forms: botocore signs a space as %20 but sends "+"
        pairs.append((_encode(unquote_to_bytes(name.replace(b"+", b" "))),
                      _encode(unquote_to_bytes(value.replace(b"+", b" ")))))
        if len(pairs) > MAX_QUERY_PARAMS:
            raise IncompleteSignature("The query string has too many parameters.")
    pairs.sort()
    return "&".join(f"{n}={v}" for n, v in pairs)


def canonical_headers(headers: Iterable[tuple[bytes, bytes]],
                      signed: Sequence[str]) -> bytes:
    """``name:value\\n`` per signed header: lower-case name, values trimmed with inner runs
    of white space folded to one space, repeated headers joined by ``,`` in order."""
    wanted: dict[bytes, list[bytes]] = {name.encode(): [] for name in signed}
    for name, value in headers:
        values = wanted.get(name.lower())
        if values is not None:
            values.append(b" ".join(value.split()))
    lines = []
    for name, values in wanted.items():
        if not values:
            raise IncompleteSignature(
                f"A signed header is missing from the request: '{name.decode()}'.")
        lines.append(name + b":" + b",".join(values) + b"\n")
    return b"".join(lines)


def canonical_request(method: str, raw_path: bytes, raw_query: bytes,
                      headers: Iterable[tuple[bytes, bytes]], signed: Sequence[str],
                      payload_hash: str) -> bytes:
    return b"\n".join((
        method.encode(), canonical_uri(raw_path).encode(), canonical_query(raw_query).encode(),
        canonical_headers(headers, signed), ";".join(signed).encode(), payload_hash.encode()))


# --- steps 2 to 4 ---------------------------------------------------------------------------
def string_to_sign(amz_date: str, scope: str, creq: bytes) -> bytes:
    return "\n".join((ALGORITHM, amz_date, scope, hashlib.sha256(creq).hexdigest())).encode()


def signing_key(secret: bytes, date: str, region: str, service: str) -> bytes:
    key = hmac.digest(b"AWS4" + secret, date.encode(), "sha256")
    key = hmac.digest(key, region.encode(), "sha256")
    key = hmac.digest(key, service.encode(), "sha256")
    return hmac.digest(key, TERMINATOR.encode(), "sha256")


def signature(key: bytes, sts: bytes) -> str:
    return hmac.new(key, sts, hashlib.sha256).hexdigest()


def parse_amz_date(value: str) -> int:
    """``YYYYMMDDTHHMMSSZ`` (ISO 8601 basic, UTC) as Unix seconds; ValueError otherwise."""
    if not _AMZ_DATE_RE.fullmatch(value):
        raise ValueError("not an X-Amz-Date")
    fields = (int(value[0:4]), int(value[4:6]), int(value[6:8]), int(value[9:11]),
              int(value[11:13]), int(value[13:15]))
    if not (1 <= fields[1] <= 12 and 1 <= fields[2] <= 31 and fields[3] < 24
            and fields[4] < 60 and fields[5] < 61):
        raise ValueError("not an X-Amz-Date")
    return calendar.timegm((*fields, 0, 0, 0))


def _amz(ts: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(ts))


# --- the verifier -----------------------------------------------------------------------------
class KeySource(Protocol):
    async def get(self, key_id: str) -> AccessKeyRecord | None: ...


@dataclass(frozen=True, slots=True)
class Verified:
    key: AccessKeyRecord
    region: str
    service: str
    signed_at: int  # Unix seconds (X-Amz-Date)


class SigV4Verifier:
    """Verifies requests to one service (``kms``). ``region`` (when set) is the only region
    accepted in credential scopes; empty accepts any well-formed one. ``clock`` is for
    tests."""

    def __init__(self, keys: KeySource, kv: KV, *, service: str, region: str = "",
                 max_skew: float = 300.0, replay_protection: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        if not _SERVICE_RE.fullmatch(service) or (region and not _REGION_RE.fullmatch(region)):
            raise ValueError("service and region must be lower-case names")
        if max_skew <= 0:
            raise ValueError("max_skew must be positive")
        self.keys = keys
        self.kv = kv
        self.service = service
        self.region = region
        self.max_skew = max_skew
        self.replay_protection = replay_protection
        self.clock = clock
        self._derived: LRUCache[tuple[str, str, str], tuple[bytes, bytes]] = LRUCache(
            DERIVED_KEYS_CACHED)

    def _signing_key(self, record: AccessKeyRecord, auth: Authorization) -> bytes:
        slot = (record.id, auth.date, auth.region)
        hit = self._derived.get(slot)
        if hit is not None and hmac.compare_digest(hit[0], record.secret):
            return hit[1]
        key = signing_key(record.secret, auth.date, auth.region, auth.service)
        self._derived[slot] = (record.secret, key)
        return key

    async def verify(self, method: str, raw_path: bytes, raw_query: bytes,
                     headers: Sequence[tuple[bytes, bytes]], body: bytes) -> Verified:
        """The verified key and scope, or a ``SigV4Error``."""
        authz = date_value = token = content_sha = None
        must_sign: set[str] = set()
        for name, value in headers:
            lname = name.lower()
            if lname in MUST_SIGN:
                must_sign.add(lname.decode())
            if lname == b"authorization":
                if authz is not None:
                    raise IncompleteSignature("The request has two Authorization headers.")
                authz = value
            elif lname == b"x-amz-date":
                date_value = value
            elif lname == b"x-amz-security-token":
                token = value
            elif lname == b"x-amz-content-sha256":
                content_sha = value
        if authz is None:
            raise MissingAuthenticationToken("Missing Authentication Token")
        auth = parse_authorization(authz.decode("latin-1"))
        kid = auth.access_key_id
        if auth.service != self.service:
            raise InvalidSignature(
                f"Credential should be scoped to correct service: '{self.service}'.", kid)
        if self.region and auth.region != self.region:
            raise InvalidSignature(
                f"Credential should be scoped to a valid region, not '{auth.region}'.", kid)
        if "host" not in auth.signed_headers:
            raise IncompleteSignature("'Host' must be a signed header.", kid)
        if date_value is None:
            raise IncompleteSignature("Authorization header requires existence of a "
                                      "'X-Amz-Date' header.", kid)
        if "x-amz-date" not in auth.signed_headers:
            raise IncompleteSignature("'X-Amz-Date' must be a signed header.", kid)
        if token is not None and "x-amz-security-token" not in auth.signed_headers:
            raise IncompleteSignature("'X-Amz-Security-Token' must be a signed header.", kid)
        unsigned = sorted(must_sign - set(auth.signed_headers))
        if unsigned:
            # the operation and how the body is read: swapping either on a captured request
            # must break the signature (SDKs and the AWS CLI sign both)
            raise IncompleteSignature(f"'{unsigned[0]}' must be a signed header.", kid)
        amz_date = date_value.decode("latin-1").strip()
        try:
            signed_at = parse_amz_date(amz_date)
        except ValueError:
            raise IncompleteSignature("X-Amz-Date must be in the ISO 8601 basic format "
                                      "YYYYMMDD'T'HHMMSS'Z'.", kid) from None
        if amz_date[:8] != auth.date:
            raise InvalidSignature("Date in Credential scope does not match YYYYMMDD from "
                                   f"X-Amz-Date: '{auth.date}' != '{amz_date[:8]}'.", kid)
        payload_hash = hashlib.sha256(body).hexdigest()
        if content_sha is not None:
            claimed = content_sha.decode("latin-1").strip()
            if not _HEX64_RE.fullmatch(claimed):
                raise IncompleteSignature("x-amz-content-sha256 must be the hex SHA-256 of "
                                          "the payload (unsigned payloads are refused).", kid)
            if claimed != payload_hash:
                raise InvalidSignature("The provided 'x-amz-content-sha256' header does not "
                                       "match what was computed.", kid)
        record = await self.keys.get(kid)
        if record is None or not record.active:
            raise UnrecognizedClient(INVALID_TOKEN, kid)
        now = self.clock()
        self._check_session(record, token, now)
        creq = canonical_request(method, raw_path, raw_query, headers, auth.signed_headers,
                                 payload_hash)
        expected = signature(self._signing_key(record, auth),
                             string_to_sign(amz_date, auth.scope, creq))
        if not hmac.compare_digest(expected, auth.signature):
            raise InvalidSignature(MISMATCH, kid)
        skew = int(self.max_skew // 60)
        if signed_at < now - self.max_skew:
            raise InvalidSignature(
                f"Signature expired: {amz_date} is now earlier than "
                f"{_amz(now - self.max_skew)} ({_amz(now)} - {skew} min.)", kid)
        if signed_at > now + self.max_skew:
            raise InvalidSignature(
                f"Signature not yet current: {amz_date} is still later than "
                f"{_amz(now + self.max_skew)} ({_amz(now)} + {skew} min.)", kid)
        if self.replay_protection:
            ttl = max(1.0, signed_at + self.max_skew - now + 1)
            if not await self.kv.add(f"sigv4:{auth.signature}", b"1", ttl):
                raise ReplayedSignature("This request signature was already used: a "
                                        "replay, or an identical request signed in the same "
                                        "second. Sign the request again.", kid)
        return Verified(record, auth.region, auth.service, signed_at)

    @staticmethod
    def _check_session(record: AccessKeyRecord, token: bytes | None, now: float) -> None:
        """Temporary keys (``ASIA``) need their session token; long-term keys take none."""
        if not record.temporary and record.session_token_hash is None:
            if token is not None:
                raise UnrecognizedClient(INVALID_TOKEN, record.id)
            return
        if token is None or record.session_token_hash is None:
            raise UnrecognizedClient(INVALID_TOKEN, record.id)
        digest = hashlib.sha256(token.strip()).hexdigest()
        if not hmac.compare_digest(digest, record.session_token_hash):
            raise UnrecognizedClient(INVALID_TOKEN, record.id)
        if record.expires_at is not None and now >= record.expires_at:
            raise ExpiredToken("The security token included in the request is expired",
                               record.id)
