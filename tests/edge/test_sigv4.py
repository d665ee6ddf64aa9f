"""SigV4 verification: AWS's own test suite (tests/vectors/sigv4), botocore's signer, and every
tampering, skew, replay and malformed header refused with AWS's error name."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from bastion.edge import sigv4
from bastion.edge.sigv4 import SigV4Verifier
from bastion.identity.access_keys import (
    AccessKeyRecord,
    new_access_key_id,
    new_secret_access_key,
)
from bastion.store.kv import MemoryKV, RedisKV

pytestmark = pytest.mark.anyio

SUITE = Path(__file__).parents[1] / "vectors" / "sigv4" / "aws4_testsuite"
SUITE_KEY = AccessKeyRecord("AKIDEXAMPLE", "user", "u1",
                            b"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", True)
SUITE_TIME = 1440938160  # 20150830T123600Z
HOST = "kms.bastion.test"


class Keys:
    """A fixed set of key records (the verifier's KeySource; the database-backed one is
    tested in tests/identity/test_access_keys.py)."""

    def __init__(self, *records: AccessKeyRecord) -> None:
        self.records = {r.id: r for r in records}

    async def get(self, key_id: str) -> AccessKeyRecord | None:
        return self.records.get(key_id)


# --- AWS's test suite -------------------------------------------------------------------------
def _cases() -> list[Path]:
    return sorted(p for p in SUITE.rglob("*.req"))


def _parse_http(text: str) -> tuple[str, bytes, bytes, list[tuple[bytes, bytes]], bytes]:
    """A request file of the suite: request line, headers (continuation lines folded into
    the previous value), blank line, body."""
    head, _, body = text.partition("\n\n")
    lines = head.split("\n")
    method, _, rest = lines[0].partition(" ")
    target = rest.rsplit(" ", 1)[0]
    path, _, query = target.partition("?")
    headers: list[list[str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            headers[-1][1] += "\n" + line
        else:
            name, _, value = line.partition(":")
            headers.append([name, value])
    return (method, path.encode(), query.encode(),
            [(n.lower().encode(), v.encode()) for n, v in headers], body.encode())


def _expected_signature(case: Path) -> tuple[tuple[str, ...], str]:
    auth = sigv4.parse_authorization(case.with_suffix(".authz").read_text().strip())
    return auth.signed_headers, auth.signature


@pytest.mark.parametrize("case", _cases(), ids=lambda p: p.stem)
def test_suite_canonical_request_and_string_to_sign(case: Path) -> None:
    """Canonical request, string to sign and signature equal the suite's files."""
    method, path, query, headers, body = _parse_http(case.with_suffix(".sreq").read_text())
    signed, expected = _expected_signature(case)
    creq = sigv4.canonical_request(method, path, query, headers, signed,
                                   hashlib.sha256(body).hexdigest())
    assert creq.decode() == case.with_suffix(".creq").read_text()
    sts = sigv4.string_to_sign("20150830T123600Z", "20150830/us-east-1/service/aws4_request",
                               creq)
    assert sts.decode() == case.with_suffix(".sts").read_text()
    key = sigv4.signing_key(SUITE_KEY.secret, "20150830", "us-east-1", "service")
    assert sigv4.signature(key, sts) == expected


def _signed_request(case: Path) -> tuple[str, bytes, bytes, list[tuple[bytes, bytes]], bytes]:
    """The .sreq with the .authz header (in get-vanilla-with-session-token the .sreq's own
    Signature is not the HMAC of its .sts; the .authz is)."""
    method, path, query, headers, body = _parse_http(case.with_suffix(".sreq").read_text())
    authz = case.with_suffix(".authz").read_text().strip().encode()
    return method, path, query, [(n, authz if n == b"authorization" else v)
                                 for n, v in headers], body


@pytest.mark.parametrize("case", _cases(), ids=lambda p: p.stem)
async def test_suite_signed_requests_verify(case: Path) -> None:
    method, path, query, headers, body = _signed_request(case)
    verifier = SigV4Verifier(Keys(SUITE_KEY), MemoryKV(), service="service",
                             region="us-east-1", clock=lambda: SUITE_TIME + 30)
    if case.stem == "get-vanilla-with-session-token":
        with pytest.raises(sigv4.UnrecognizedClient):  # a long-term key takes no token
            await verifier.verify(method, path, query, headers, body)
        token = dict(headers)[b"x-amz-security-token"]
        temporary = replace(SUITE_KEY, session_token_hash=hashlib.sha256(token).hexdigest())
        verifier = SigV4Verifier(Keys(temporary), MemoryKV(), service="service",
                                 clock=lambda: SUITE_TIME)
        assert (await verifier.verify(method, path, query, headers, body)).key is temporary
        return
    if case.stem == "post-sts-header-after":  # the token is outside the signature
        with pytest.raises(sigv4.IncompleteSignature, match="Security-Token"):
            await verifier.verify(method, path, query, headers, body)
        return
    if case.stem == "post-sts-header-before":  # a token, but the key is long-term
        with pytest.raises(sigv4.UnrecognizedClient):
            await verifier.verify(method, path, query, headers, body)
        return
    verified = await verifier.verify(method, path, query, headers, body)
    assert verified.key.id == "AKIDEXAMPLE" and verified.signed_at == SUITE_TIME


async def test_suite_session_token_case_with_a_temporary_key() -> None:
    """post-sts-header-before, with a temporary key whose session token is the suite's."""
    case = SUITE / "post-sts-token" / "post-sts-header-before" / "post-sts-header-before.req"
    method, path, query, headers, body = _signed_request(case)
    token = dict(headers)[b"x-amz-security-token"]
    record = replace(SUITE_KEY, session_token_hash=hashlib.sha256(token).hexdigest(),
                     expires_at=SUITE_TIME + 3600)
    verifier = SigV4Verifier(Keys(record), MemoryKV(), service="service",
                             clock=lambda: SUITE_TIME)
    assert (await verifier.verify(method, path, query, headers, body)).key is record
    late = SigV4Verifier(Keys(record), MemoryKV(), service="service",
                         clock=lambda: SUITE_TIME + 3600, max_skew=7200)
    with pytest.raises(sigv4.ExpiredToken):
        await late.verify(method, path, query, headers, body)
    wrong = replace(record, session_token_hash=hashlib.sha256(b"other").hexdigest())
    with pytest.raises(sigv4.UnrecognizedClient):
        await SigV4Verifier(Keys(wrong), MemoryKV(), service="service",
                            clock=lambda: SUITE_TIME).verify(method, path, query, headers, body)


# --- botocore's signer ------------------------------------------------------------------------
Request = tuple[str, bytes, bytes, list[tuple[bytes, bytes]], bytes]


def botocore_signed(record: AccessKeyRecord, *, method: str = "POST", url: str = "/",
                    body: bytes = b'{"KeyId": "alias/app", "Plaintext": "aGk="}',
                    headers: dict[str, str] | None = None, region: str = "us-east-1",
                    service: str = "kms", params: dict[str, str] | None = None,
                    token: str | None = None) -> Request:
    """A request signed by botocore's SigV4Auth, as it would reach the server."""
    hdrs = {"Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "TrentService.Encrypt"}
    hdrs.update(headers or {})
    req = AWSRequest(method=method, url=f"https://{HOST}{url}", data=body, headers=hdrs,
                     params=params or {})
    SigV4Auth(Credentials(record.id, record.secret.decode(), token), service,
              region).add_auth(req)
    prepared = req.prepare()
    parts = urlsplit(prepared.url)
    wire = [(b"host", HOST.encode())]
    for name, value in prepared.headers.items():
        wire.append((name.lower().encode(),
                     value if isinstance(value, bytes) else value.encode()))
    return method, parts.path.encode(), parts.query.encode(), wire, prepared.body or b""


def new_record(**over: object) -> AccessKeyRecord:
    rec = AccessKeyRecord(new_access_key_id(), "user", "u1",
                          new_secret_access_key().encode(), True)
    return replace(rec, **over)  # type: ignore[arg-type]


def verifier_for(*records: AccessKeyRecord, **kw: object) -> SigV4Verifier:
    return SigV4Verifier(Keys(*records), MemoryKV(), service="kms", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("url", "params"), [
    ("/", None),
    ("/kms", None),
    ("/a/./b/../c", None),
    ("//double//slashes/", None),
    ("/%E1%88%B4/x%20y/$d", None),
    ("/", {"b": "2", "a": "1", "A": "0"}),
    ("/", {"x": "a b/c~d", "ሴ": "é", "empty": ""}),
    ("/?z=1&y=%2F%20~", None),
], ids=["root", "path", "dot-segments", "slashes", "encoded-path", "query-order",
        "query-encoding", "query-in-url"])
async def test_botocore_signed_requests_verify(url: str, params: dict[str, str] | None) -> None:
    rec = new_record()
    req = botocore_signed(rec, url=url, params=params)
    verified = await verifier_for(rec).verify(*req)
    assert verified.key is rec and verified.region == "us-east-1"
    assert abs(verified.signed_at - time.time()) < 5


async def test_botocore_header_spacing_and_unsigned_headers_are_not_covered() -> None:
    """Signed values are compared after trimming and folding white space; headers outside
    SignedHeaders may change freely."""
    rec = new_record()
    method, path, query, headers, body = botocore_signed(rec)
    headers = [(n, b"  application/x-amz-json-1.1  ") if n == b"content-type" else (n, v)
               for n, v in headers] + [(b"x-unsigned", b"anything")]
    assert (await verifier_for(rec).verify(method, path, query, headers, body)).key is rec


async def test_temporary_credentials_signed_by_botocore() -> None:
    token = secrets.token_urlsafe(48)
    rec = new_record(id="ASIA" + new_access_key_id()[4:],
                     session_token_hash=hashlib.sha256(token.encode()).hexdigest(),
                     expires_at=int(time.time()) + 900)
    assert (await verifier_for(rec).verify(*botocore_signed(rec, token=token))).key is rec
    with pytest.raises(sigv4.UnrecognizedClient):  # no token
        await verifier_for(rec).verify(*botocore_signed(rec))
    with pytest.raises(sigv4.UnrecognizedClient):  # another token
        await verifier_for(rec).verify(*botocore_signed(rec, token=token + "x"))


# --- tampering ----------------------------------------------------------------------------------
def _set(headers: list[tuple[bytes, bytes]], name: bytes, value: bytes) -> list[
        tuple[bytes, bytes]]:
    return [(n, value if n == name else v) for n, v in headers]


def _authz(headers: list[tuple[bytes, bytes]]) -> str:
    return dict(headers)[b"authorization"].decode()


def _with_authz(headers: list[tuple[bytes, bytes]], old: str, new: str) -> list[
        tuple[bytes, bytes]]:
    return _set(headers, b"authorization", _authz(headers).replace(old, new, 1).encode())


def _flip_signature(h: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    sig = _authz(h).rsplit("Signature=", 1)[1]
    return _with_authz(h, sig, sig[:-1] + ("0" if sig[-1] != "0" else "1"))


def _other_date(h: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    date = dict(h)[b"x-amz-date"].decode()
    return _set(h, b"x-amz-date", (date[:-3] + f"{(int(date[-3:-1]) + 1) % 60:02d}Z").encode())


def _other_scope_date(h: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    date = dict(h)[b"x-amz-date"].decode()[:8]
    return _with_authz(h, f"/{date}/", "/19990101/")


OTHER = new_record()
TAMPERING = {
    "method": (lambda r: ("PUT", *r[1:]), sigv4.InvalidSignature),
    "path": (lambda r: (r[0], b"/other", *r[2:]), sigv4.InvalidSignature),
    "query": (lambda r: (r[0], r[1], b"a=1", *r[3:]), sigv4.InvalidSignature),
    "signed-header": (lambda r: (*r[:3], _set(r[3], b"x-amz-target",
                                              b"TrentService.Decrypt"), r[4]),
                      sigv4.InvalidSignature),
    "host": (lambda r: (*r[:3], _set(r[3], b"host", b"evil.test"), r[4]),
             sigv4.InvalidSignature),
    "body": (lambda r: (*r[:4], r[4].replace(b"aGk=", b"aGl=")), sigv4.InvalidSignature),
    "body-appended": (lambda r: (*r[:4], r[4] + b" "), sigv4.InvalidSignature),
    "date": (lambda r: (*r[:3], _other_date(r[3]), r[4]), sigv4.InvalidSignature),
    "scope-date": (lambda r: (*r[:3], _other_scope_date(r[3]), r[4]), sigv4.InvalidSignature),
    "region": (lambda r: (*r[:3], _with_authz(r[3], "/us-east-1/", "/eu-west-1/"), r[4]),
               sigv4.InvalidSignature),
    "service": (lambda r: (*r[:3], _with_authz(r[3], "/kms/", "/s3/"), r[4]),
                sigv4.InvalidSignature),
    "key-id-other": (lambda r: (*r[:3], _with_authz(r[3], "Credential=" + _authz(r[3]).split(
        "Credential=")[1][:20], "Credential=" + OTHER.id), r[4]), sigv4.InvalidSignature),
    "key-id-unknown": (lambda r: (*r[:3], _with_authz(r[3], "Credential=" + _authz(r[3]).split(
        "Credential=")[1][:20], "Credential=AKIAAAAAAAAAAAAAAAAA"), r[4]),
        sigv4.UnrecognizedClient),
    "signature": (lambda r: (*r[:3], _flip_signature(r[3]), r[4]), sigv4.InvalidSignature),
    "signed-header-removed": (lambda r: (*r[:3], [(n, v) for n, v in r[3]
                                                  if n != b"x-amz-target"], r[4]),
                              sigv4.IncompleteSignature),
    # content-type taken out of the signed list: refused before the signature is checked
    "signed-headers-list": (lambda r: (*r[:3], _with_authz(r[3], "SignedHeaders=content-type;",
                                                           "SignedHeaders="), r[4]),
                            sigv4.IncompleteSignature),
    "content-sha256-lies": (lambda r: (*r[:3], [*r[3], (b"x-amz-content-sha256",
                                                       hashlib.sha256(b"x").hexdigest()
                                                       .encode())], r[4]),
                            sigv4.InvalidSignature),
    "unsigned-payload": (lambda r: (*r[:3], [*r[3], (b"x-amz-content-sha256",
                                                    b"UNSIGNED-PAYLOAD")], r[4]),
                         sigv4.IncompleteSignature),
}


@pytest.mark.parametrize("name", list(TAMPERING))
async def test_every_tampering_is_refused(name: str) -> None:
    rec = new_record()
    mutate, error = TAMPERING[name]
    req = botocore_signed(rec)
    with pytest.raises(error) as info:
        await verifier_for(rec, OTHER).verify(*mutate(req))
    assert info.value.status == 400
    assert rec.secret.decode() not in info.value.message
    # the untouched request still verifies: the refusal was the tampering's doing
    assert (await verifier_for(rec, OTHER).verify(*req)).key is rec


async def test_region_is_enforced_when_configured() -> None:
    rec = new_record()
    with pytest.raises(sigv4.InvalidSignature, match="region"):
        await verifier_for(rec, region="eu-west-1").verify(*botocore_signed(rec))
    assert await verifier_for(rec, region="eu-west-1").verify(
        *botocore_signed(rec, region="eu-west-1"))


async def test_other_service_is_refused() -> None:
    rec = new_record()
    with pytest.raises(sigv4.InvalidSignature, match="service"):
        await verifier_for(rec).verify(*botocore_signed(rec, service="s3"))


async def test_inactive_key_is_unrecognized() -> None:
    rec = new_record(active=False)
    with pytest.raises(sigv4.UnrecognizedClient) as info:
        await verifier_for(rec).verify(*botocore_signed(rec))
    assert info.value.access_key_id == rec.id


# --- clock skew and replay ----------------------------------------------------------------------
@pytest.mark.parametrize(("offset", "ok"), [(-299, True), (299, True), (-301, False),
                                            (301, False)])
async def test_clock_skew_window(offset: int, ok: bool) -> None:
    rec = new_record()
    req = botocore_signed(rec)
    verifier = verifier_for(rec, clock=lambda: time.time() + offset)
    if ok:
        assert await verifier.verify(*req)
        return
    word = "expired" if offset > 0 else "not yet current"
    with pytest.raises(sigv4.InvalidSignature, match=f"Signature {word}: .* 5 min"):
        await verifier.verify(*req)


@pytest.fixture(params=["memory", "redis"])
async def kv(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    store = MemoryKV() if request.param == "memory" else RedisKV(
        "redis://127.0.0.1:6379/0", prefix=f"bastion-test:{secrets.token_hex(4)}:")
    yield store
    await store.close()


async def test_replayed_signature_is_refused(kv: MemoryKV | RedisKV) -> None:
    rec = new_record()
    verifier = SigV4Verifier(Keys(rec), kv, service="kms")
    req = botocore_signed(rec)
    await verifier.verify(*req)
    with pytest.raises(sigv4.ReplayedSignature, match="already used") as info:
        await verifier.verify(*req)
    assert info.value.code == "ThrottlingException"  # SDKs re-sign and retry it
    # another instance sharing the store refuses it too
    with pytest.raises(sigv4.ReplayedSignature, match="already used"):
        await SigV4Verifier(Keys(rec), kv, service="kms").verify(*req)
    # a refused (tampered) request does not burn the signature of a real one
    fresh = botocore_signed(rec, body=b'{"KeyId": "other"}')
    with pytest.raises(sigv4.InvalidSignature):
        await verifier.verify(*fresh[:4], b"{}")
    assert await verifier.verify(*fresh)


async def test_replay_protection_can_be_turned_off() -> None:
    rec = new_record()
    verifier = verifier_for(rec, replay_protection=False)
    req = botocore_signed(rec)
    assert await verifier.verify(*req) and await verifier.verify(*req)


# --- malformed headers ----------------------------------------------------------------------
GOOD = ("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=" + "a" * 64)
MALFORMED = {
    "other-algorithm": GOOD.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512"),
    "sigv2": "AWS AKIDEXAMPLE:c2lnbmF0dXJl",
    "no-credential": GOOD.replace("Credential=", "Cred="),
    "no-signature": GOOD.split(", Signature")[0],
    "no-signed-headers": GOOD.replace("SignedHeaders=host;x-amz-date, ", ""),
    "repeated": GOOD + ", Signature=" + "b" * 64,
    "short-credential": GOOD.replace("/us-east-1/service", "/us-east-1"),
    "terminator": GOOD.replace("aws4_request", "aws5_request"),
    "bad-date": GOOD.replace("20150830", "2015-08-30"),
    "bad-region": GOOD.replace("us-east-1", "US EAST"),
    "unsorted-headers": GOOD.replace("host;x-amz-date", "x-amz-date;host"),
    "duplicate-headers": GOOD.replace("host;x-amz-date", "host;host;x-amz-date"),
    "upper-case-header": GOOD.replace("host;x-amz-date", "Host;x-amz-date"),
    "short-signature": GOOD[:-1],
    "upper-signature": GOOD[:-64] + "A" * 64,
    "huge": GOOD + " " * 5000,
    "empty": "",
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_authorization_is_incomplete_signature(name: str) -> None:
    with pytest.raises(sigv4.IncompleteSignature):
        sigv4.parse_authorization(MALFORMED[name])


async def test_missing_authorization_and_date() -> None:
    rec = new_record()
    method, path, query, headers, body = botocore_signed(rec)
    with pytest.raises(sigv4.MissingAuthenticationToken, match="Missing Authentication Token"):
        await verifier_for(rec).verify(method, path, query,
                                       [(n, v) for n, v in headers if n != b"authorization"],
                                       body)
    with pytest.raises(sigv4.IncompleteSignature, match="X-Amz-Date"):
        await verifier_for(rec).verify(method, path, query,
                                       [(n, v) for n, v in headers if n != b"x-amz-date"], body)
    with pytest.raises(sigv4.IncompleteSignature, match="two Authorization"):
        await verifier_for(rec).verify(method, path, query,
                                       [*headers, (b"authorization", _authz(headers).encode())],
                                       body)
    with pytest.raises(sigv4.IncompleteSignature, match="ISO 8601"):
        await verifier_for(rec).verify(method, path, query,
                                       _set(headers, b"x-amz-date", b"20150830T256000Z"), body)


@pytest.mark.parametrize("signed", ["content-type;x-amz-date;x-amz-target",
                                    "content-type;host;x-amz-target"],
                         ids=["host-unsigned", "date-unsigned"])
async def test_host_and_date_must_be_signed(signed: str) -> None:
    rec = new_record()
    method, path, query, headers, body = botocore_signed(rec)
    headers = _with_authz(headers, "SignedHeaders=content-type;host;x-amz-date;x-amz-target",
                          f"SignedHeaders={signed}")
    with pytest.raises(sigv4.IncompleteSignature, match="must be a signed header"):
        await verifier_for(rec).verify(method, path, query, headers, body)


@pytest.mark.parametrize(("raw", "canonical"), [
    (b"", "/"), (b"/", "/"), (b"//", "/"), (b"/a/../..", "/"), (b"/./a/", "/a/"),
    (b"/a%2Fb", "/a%252Fb"), (b"/a b", "/a%20b"), (b"/~user", "/~user"),
])
def test_canonical_uri(raw: bytes, canonical: str) -> None:
    assert sigv4.canonical_uri(raw) == canonical


@pytest.mark.parametrize(("raw", "canonical"), [
    (b"", ""), (b"b=1&a=2", "a=2&b=1"), (b"a=2&a=1", "a=1&a=2"), (b"a", "a="),
    (b"a=%7e&b=+&c=%2B", "a=~&b=%20&c=%2B"), (b"&&a=1&", "a=1"), (b"k=%E1%88%B4", "k=%E1%88%B4"),
])
def test_canonical_query(raw: bytes, canonical: str) -> None:
    assert sigv4.canonical_query(raw) == canonical


def test_query_caps() -> None:
    with pytest.raises(sigv4.IncompleteSignature):
        sigv4.canonical_query(b"a=1&" * 300)
    with pytest.raises(sigv4.IncompleteSignature):
        sigv4.canonical_query(b"a=" + b"x" * 9000)


def test_secret_is_not_in_repr() -> None:
    rec = new_record()
    assert rec.secret.decode() not in repr(rec)
