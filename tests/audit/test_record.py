"""Audit records: shape, redaction (by key name at any depth, and by shape in free text),
hostile values that must never raise nor split a record, size caps, canonical bytes, OCSF."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import ipaddress
import json
import re
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from bastion.audit.events import EVENTS, OCSF_CLASSES, OCSF_VERSION, OTHER
from bastion.audit.record import (
    MAX_RECORD_BYTES,
    MAX_USER_AGENT_BYTES,
    REDACTED,
    build_record,
    canonical_bytes,
    canonicalize,
    clean_text,
    is_secret_name,
    to_ocsf,
)

T0 = 1_700_000_000.25  # 2023-11-14T22:13:20.250Z


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    head = header or {"alg": "ES256", "typ": "at+jwt", "kid": "k1"}
    return ".".join([b64(json.dumps(head).encode()), b64(json.dumps(claims).encode()),
                     b64(b"\x01" * 64)])


JWT = jwt({"sub": "alice", "scope": "order:view", "jti": "JTI-SECRET-1"})
JWE = ".".join([b64(b'{"alg":"RSA-OAEP","enc":"A256GCM"}'), b64(b"k" * 40), b64(b"iv" * 6),
                b64(b"ciphertext" * 5), b64(b"tag" * 5)])
_ED = ed25519.Ed25519PrivateKey.generate()
_EC = ec.generate_private_key(ec.SECP256R1())
_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_NONE = serialization.NoEncryption()
PEMS = {
    "pkcs8": _ED.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               _NONE).decode(),
    "rsa": _RSA.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.TraditionalOpenSSL, _NONE).decode(),
    "ec": _EC.private_bytes(serialization.Encoding.PEM,
                            serialization.PrivateFormat.TraditionalOpenSSL, _NONE).decode(),
    "openssh": _ED.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                 _NONE).decode(),
    "encrypted": _EC.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.BestAvailableEncryption(b"pw")).decode(),
}
PUBLIC_PEM = _ED.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo
                                           ).decode()


def body(record: dict[str, Any]) -> bytes:
    data = canonical_bytes(record)
    data.decode("utf-8")  # RFC 8785: UTF-8, and one line: every control character escaped
    assert not any(b < 0x20 for b in data), data[:200]
    assert len(data) <= MAX_RECORD_BYTES
    assert canonical_bytes(json.loads(data)) == data  # what is stored re-encodes identically
    assert canonicalize(json.loads(data)) == data  # the fast path is the reference
    return data


def ocsf_bytes(record: dict[str, Any]) -> bytes:
    return json.dumps(to_ocsf(record), ensure_ascii=True, allow_nan=False).encode()


# --- shape --------------------------------------------------------------------------------

def test_cloudtrail_shape() -> None:
    record = build_record(
        "Login", event_time=T0, user_identity={"type": "User", "userName": "alice",
                                               "principalId": "u-1"},
        source_ip="2001:db8:0:0::1", user_agent="Mozilla/5.0", request_id="req-1",
        request_parameters={"username": "alice"}, error_code="InvalidCredentials",
        error_message="wrong password", resources=[{"ARN": "arn:bastion:iam::1:user/alice"}],
        additional={"MFAUsed": "No"}, event_id="ev-1")
    assert record == {
        "eventVersion": "1.0", "eventTime": "2023-11-14T22:13:20.250Z",
        "eventSource": "idp.bastion", "eventName": "Login", "eventType": "SignIn",
        "eventCategory": "Management", "readOnly": False, "eventID": "ev-1",
        "requestID": "req-1",
        "userIdentity": {"type": "User", "userName": "alice", "principalId": "u-1"},
        "sourceIPAddress": "2001:db8::1", "userAgent": "Mozilla/5.0",
        "errorCode": "InvalidCredentials", "errorMessage": "wrong password",
        "requestParameters": {"username": "alice"},
        "resources": [{"ARN": "arn:bastion:iam::1:user/alice"}],
        "additionalEventData": {"MFAUsed": "No"}}
    body(record)


def test_defaults() -> None:
    record = build_record("ListOrders")
    assert uuid.UUID(record["eventID"]).version == 4
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["eventTime"])
    assert record["readOnly"] is True and record["eventCategory"] == "Data"
    assert record["userIdentity"] == {"type": "Unknown"}
    for absent in ("errorCode", "errorMessage", "requestParameters", "responseElements",
                   "resources", "additionalEventData", "requestID", "userAgent"):
        assert absent not in record


@pytest.mark.parametrize("name", ["LoginFailed", "", "login"])
def test_unknown_event_name(name: str) -> None:
    with pytest.raises(ValueError):
        build_record(name)


@pytest.mark.parametrize("when", [float("nan"), float("inf"), -1.0, 1e13, True, "now"],
                         ids=repr)
def test_bad_event_time(when: Any) -> None:
    with pytest.raises(ValueError):
        build_record("Login", event_time=when)


# --- redaction by key name ----------------------------------------------------------------

SECRET_KEYS = [
    "password", "secret", "client_secret", "token", "access_token", "refresh_token",
    "id_token", "code", "code_verifier", "assertion", "client_assertion", "authorization",
    "cookie", "set-cookie", "private_key", "key_material", "plaintext", "ciphertext_blob",
    "totp", "otp", "mfa_code", "signature", "new_password", "passphrase", "api_key",
    "x-api-key", "device_code", "user_code", "session_token", "secret_access_key",
    "logout_token", "subject_token", "recovery_codes", "proxy-authorization", "dpop",
    "credentials", "pin",
]


def spellings(key: str) -> list[str]:
    words = re.split(r"[-_]", key)
    camel = words[0] + "".join(w.title() for w in words[1:])
    return sorted({key, key.upper(), key.replace("_", "-"), key.replace("-", "_"), camel,
                   camel[0].upper() + camel[1:]})


@pytest.mark.parametrize("key", [s for k in SECRET_KEYS for s in spellings(k)])
@pytest.mark.parametrize("where", ["top", "nested", "in-list", "deep"])
def test_secret_keys_are_redacted(key: str, where: str) -> None:
    secret = f"SECRET-VALUE-{key}-42"
    value: Any = {key: secret}
    if where == "nested":
        value = {"form": {key: secret}}
    elif where == "in-list":
        value = {"items": [{"x": 1}, {key: secret}]}
    elif where == "deep":
        value = {"a": {"b": [{"c": {"d": {key: secret}}}]}}
    record = build_record("IssueToken", request_parameters=value, response_elements=value,
                          additional=value, user_identity={"type": "Client", key: secret})
    assert secret.encode() not in body(record)
    assert secret.encode() not in ocsf_bytes(record)
    assert REDACTED.encode() in body(record)


@pytest.mark.parametrize("key", ["token_type", "tokenType", "token_type_hint", "keyId",
                                 "key_id", "errorCode", "code_challenge",
                                 "code_challenge_method", "state", "nonce", "kid",
                                 "client_assertion_type", "token_endpoint", "grant_type",
                                 "clientId", "scope", "status_code", "countryCode", "jti"])
def test_ordinary_keys_are_kept(key: str) -> None:
    assert not is_secret_name(key)
    record = build_record("IssueToken", request_parameters={key: "visible-value"})
    assert record["requestParameters"][key] == "visible-value"


def test_private_members_of_a_jwk_are_redacted() -> None:
    jwk = {"kty": "EC", "crv": "P-256", "x": "X-PUB", "y": "Y-PUB", "d": "D-PRIVATE-1"}
    oct_key = {"kty": "oct", "k": "K-PRIVATE-2", "kid": "a"}
    record = build_record("CreateKey", request_parameters={"jwk": jwk, "keys": [oct_key]},
                          response_elements={"d": "not-a-jwk-so-kept"})
    data = body(record)
    assert b"D-PRIVATE-1" not in data and b"K-PRIVATE-2" not in data
    assert b"X-PUB" in data and b"not-a-jwk-so-kept" in data


def test_null_secret_stays_null() -> None:
    record = build_record("IssueToken", request_parameters={"client_secret": None})
    assert record["requestParameters"] == {"client_secret": None}


# --- redaction by shape in free text ------------------------------------------------------

UNSIGNED = jwt({"sub": "x", "secret": "UNSIGNED-CLAIM"}, {"alg": "none"})[:-86]


def payload(token: str) -> str:
    return token.split(".")[1]


FREE_TEXT = [
    ("jwt-alone", JWT, [payload(JWT)]),
    ("jwt-in-sentence", f"token {JWT} was rejected", [payload(JWT)]),
    ("bearer-jwt", f"Authorization: Bearer {JWT}", [payload(JWT)]),
    ("jwe-five-parts", f"got {JWE}.", [JWE.split(".")[1], JWE.split(".")[3]]),
    ("jwt-unsigned", UNSIGNED, [payload(UNSIGNED)]),
    ("bearer-opaque", "Bearer QmFzdGlvblRva2VuOjEyMzQ1Njc4OTA", ["QmFzdGlvblRva2VuOjEyMzQ1"]),
    ("basic", "authorization=Basic YWxpY2U6czNjcjN0IQ==", ["YWxpY2U6czNjcjN0IQ"]),
    ("query-code", "GET /callback?code=AUTHCODE-123&state=xyz", ["AUTHCODE-123"]),
    ("query-tokens", "/x?access_token=AT-1&refresh_token=RT-2&id_token=IT-3",
     ["AT-1", "RT-2", "IT-3"]),
    ("form-secret", "grant_type=client_credentials&client_secret=CS-99",
     ["CS-99"]),
    ("url-password", "postgresql://bastion:DBPASS-7@db:5432/bastion", ["DBPASS-7"]),
    ("cookie-header", "Cookie: __Host-session=SESSION-ID-1; theme=dark", ["SESSION-ID-1"]),
    ("set-cookie-header", "set-cookie: sid=SID-2; HttpOnly", ["SID-2"]),
    ("api-key-header", "X-Api-Key: APIKEY-3", ["APIKEY-3"]),
] + [(f"pem-{name}", f"key is\n{pem}\nend", [pem.splitlines()[1][:40]])
     for name, pem in PEMS.items()] + [
    ("pem-truncated", PEMS["rsa"][:300], [PEMS["rsa"].splitlines()[2][:40]]),
]


@pytest.mark.parametrize(("text", "secrets"), [c[1:] for c in FREE_TEXT],
                         ids=[c[0] for c in FREE_TEXT])
@pytest.mark.parametrize("field", ["user_agent", "error_message", "param", "nested-list",
                                   "key"])
def test_secrets_in_free_text_are_redacted(text: str, secrets: list[str], field: str) -> None:
    kwargs: dict[str, Any] = {}
    if field == "param":
        kwargs["request_parameters"] = {"note": text}
    elif field == "nested-list":
        kwargs["additional"] = {"lines": ["ok", {"msg": text}]}
    elif field == "key":
        kwargs["request_parameters"] = {text[:100]: 1}
        secrets = [s for s in secrets if s in text[:100]]
    else:
        kwargs[field] = text
    record = build_record("Login", **kwargs)
    data, ocsf = body(record), ocsf_bytes(record)
    for secret in secrets:
        escaped = json.dumps(secret)[1:-1].encode()
        assert escaped not in data and escaped not in ocsf, (secret, data)


@pytest.mark.parametrize("text", [
    "example.com.foo", "exceptional.case.handling", "Basic authentication required",
    "version 1.2.3", "eyJ", "a.b.c", PUBLIC_PEM, "errorCode=400 status code 401",
    "https://idp.example.com/authorize?client_id=web&scope=openid",
], ids=lambda t: t[:24])
def test_ordinary_text_is_kept(text: str) -> None:
    assert clean_text(text) == text


def test_redaction_keeps_the_context() -> None:
    assert clean_text(f"token {JWT} was rejected") == "token [REDACTED:jwt] was rejected"
    assert clean_text("a?code=X1&state=s") == "a?code=[REDACTED]&state=s"
    assert clean_text(f"k: {PEMS['ec']}") == "k: [REDACTED:private-key]\n"


def test_many_secrets_never_reach_the_bytes_or_ocsf() -> None:
    """Records built the way services will build them, full of secrets everywhere."""
    secrets = [f"S3CR3T-{i:03d}-{uuid.uuid4().hex}" for i in range(40)]
    token = jwt({"sub": "alice", "jti": secrets[39]})
    secrets.append(payload(token))
    records = []
    for i, name in enumerate(EVENTS):
        s = secrets[i % 30:i % 30 + 8]
        records.append(build_record(
            name, event_time=T0,
            user_identity={"type": "Client", "clientId": "web", "clientSecret": s[0]},
            user_agent=f"curl/8 Bearer {s[1]}",
            request_parameters={"grant_type": "authorization_code", "code": s[2],
                                "code_verifier": s[3], "redirect_uri": f"https://a/cb?code={s[4]}",
                                "headers": [["Authorization", f"Basic {s[5]}"]],
                                "body": {"password": s[6], "nested": [{"Refresh-Token": s[7]}]}},
            response_elements={"access_token": token, "id_token": token,
                               "Plaintext": secrets[30], "CiphertextBlob": secrets[31],
                               "keyMaterial": secrets[32]},
            error_message=f"replayed token {token}; key {PEMS['pkcs8']}",
            additional={"cookie": secrets[33], "set-cookie": [secrets[34]],
                        "Authorization": f"DPoP {secrets[35]}", "otp": secrets[36],
                        "TOTP": secrets[37], "signature": secrets[38]}))
    for record in records:
        data, ocsf = body(record), ocsf_bytes(record)
        for secret in [*secrets, token, PEMS["pkcs8"].splitlines()[1]]:
            assert secret.encode() not in data, (record["eventName"], secret)
            assert secret.encode() not in ocsf, (record["eventName"], secret)


# --- hostile values -----------------------------------------------------------------------

class Exploding:
    def __str__(self) -> str:
        raise RuntimeError("boom")

    __repr__ = __str__


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Creds:
    user: str
    password: str


def _deep(levels: int, leaf: Any = "bottom") -> Any:
    value = leaf
    for i in range(levels):
        value = {"k": value} if i % 2 else [value]
    return value


_cycle: dict[str, Any] = {"name": "loop"}
_cycle["self"] = _cycle

HOSTILE: list[tuple[str, dict[str, Any]]] = [
    ("10MB-user-agent", {"user_agent": "A" * 10_000_000}),
    ("10MB-non-ascii-user-agent", {"user_agent": "é\u2028" * 5_000_000}),
    ("control-chars", {"user_agent": "a\nb\rc\x00d\u2028e\u2029f\x1b[31m",
                       "request_parameters": {"v\n": "line1\nline2\r\n{\"fake\":1}"}}),
    ("invalid-utf8-bytes", {"request_parameters": {"raw": b"\xff\xfe\xc3(\xed\xa0\x80",
                                                   b"\xffkey": 1}}),
    ("lone-surrogates", {"user_agent": "x\ud800y\udfffz",
                         "request_parameters": {"k\udc80": "\ud83d", "ok": "\U0001f600"}}),
    ("nan-and-inf", {"request_parameters": {"a": float("nan"), "b": float("inf"),
                                            "c": -float("inf"), "d": decimal.Decimal("NaN"),
                                            "e": decimal.Decimal("1.10")}}),
    ("deep-10000-levels", {"request_parameters": {"deep": _deep(10_000)}}),
    ("deep-dicts-10000", {"additional": _deep(10_000, {"x": 1})}),
    ("huge-list", {"request_parameters": {"ids": list(range(1_000_000))}}),
    ("wide-dict", {"request_parameters": {f"k{i}": i for i in range(100_000)}}),
    ("wide-and-deep", {"request_parameters": {f"k{i}": _deep(50) for i in range(200)}}),
    ("many-big-strings", {"request_parameters": {f"k{i}": "x" * 9000 for i in range(50)},
                          "response_elements": {"r": ["y" * 9000] * 20}}),
    ("escape-heavy", {"request_parameters": {f"k{i}": "\x00" * 8000 for i in range(20)},
                      "error_message": "\u2028" * 100_000}),
    ("huge-int", {"request_parameters": {"n": 10 ** 5000, "m": -(2 ** 70), "ok": 2 ** 63}}),
    ("odd-types", {"request_parameters": {
        "set": {3, 1, 2}, "frozen": frozenset({"b", "a"}), "when": dt.datetime(2024, 1, 2),
        "aware": dt.datetime(2024, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        "day": dt.date(2024, 1, 2), "dur": dt.timedelta(seconds=90),
        "id": uuid.UUID(int=1), "ip": ipaddress.ip_address("::1"), "color": Color.RED,
        "obj": object(), "exploding": Exploding(), "creds": Creds("u", "PW-IN-DATACLASS"),
        "exc": ValueError("bad input"), "tuple": (1, 2), "bytes": b"ok", "none": None,
        "cls": int, 7: "int key", None: "none key", ("t",): "tuple key",
        1.5: "float key", float("nan"): "nan key", True: "bool key"}}),
    ("cycle", {"request_parameters": _cycle}),
    ("not-a-mapping", {"request_parameters": ["a", "list"],  # type: ignore[dict-item]
                       "user_identity": "just a string", "resources": "not a list"}),
    ("huge-identity", {"user_identity": {f"k{i}": "v" * 5000 for i in range(500)},
                       "source_ip": "x" * 100_000, "request_id": "r" * 100_000,
                       "event_id": "\n" * 1000, "error_code": "E" * 100_000}),
    ("many-resources", {"resources": [{"ARN": "a" * 5000}] * 1000}),
]


@pytest.mark.parametrize("kwargs", [h[1] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_values_never_raise_nor_split(kwargs: dict[str, Any]) -> None:
    record = build_record("CreateOrder", **kwargs)
    data = body(record)
    # one JSON Lines line (RFC 8785 writes U+2028/U+2029 as they are; JSON Lines splits on
    # LF only, and CR and every other control character are escaped)
    assert b"\n" not in data and b"\r" not in data
    assert b"PW-IN-DATACLASS" not in data
    json.loads(data)
    ocsf_bytes(record)


def test_control_characters_are_escaped_not_lost() -> None:
    record = build_record("Login", user_agent="a\nb\u2028c\x00")
    assert b'"userAgent":"a\\nb\xe2\x80\xa8c\\u0000"' in body(record)  # RFC 8785 §3.2.2.2
    assert record["userAgent"] == "a\nb\u2028c\x00"


def test_invalid_utf8_and_surrogates_become_replacement_characters() -> None:
    record = build_record("Login", user_agent="x\ud800y",
                          request_parameters={"raw": b"ok\xffok"})
    assert record["userAgent"] == "x\ufffdy"
    assert record["requestParameters"]["raw"] == "ok\ufffdok"


def test_long_strings_are_cut_with_a_marker() -> None:
    record = build_record("Login", user_agent="A" * 10_000_000)
    assert record["userAgent"].endswith("...[truncated 10000000 chars]")
    assert len(json.dumps(record["userAgent"])) - 2 <= MAX_USER_AGENT_BYTES
    wide = build_record("Login", user_agent="\u2028" * 10_000)
    assert len(json.dumps(wide["userAgent"])) - 2 <= MAX_USER_AGENT_BYTES


def test_large_parts_give_way_to_a_note_with_their_digest() -> None:
    record = build_record("CreateOrder", request_parameters={"k": ["x" * 8000] * 10},
                          response_elements={"small": 1})
    note = record["requestParameters"]
    assert note["omitted"].startswith("requestParameters") and len(note["sha256"]) == 64
    assert record["responseElements"] == {"small": 1}
    assert len(body(record)) <= MAX_RECORD_BYTES


def test_deep_and_wide_values_are_bounded() -> None:
    record = build_record("CreateOrder", request_parameters={"deep": _deep(10_000)},
                          additional={"ids": list(range(1000))})
    assert "[omitted: nested too deep]" in json.dumps(record)
    assert record["additionalEventData"]["ids"][-1] == "[900 more items]"


def test_odd_types_convert_to_json() -> None:
    params = build_record("CreateOrder", request_parameters=dict(HOSTILE)["odd-types"]
                          ["request_parameters"])["requestParameters"]
    assert params["set"] == [1, 2, 3] and params["frozen"] == ["a", "b"]
    assert params["aware"] == "2024-01-01T22:00:00.000Z"
    assert params["when"] == "2024-01-02T00:00:00.000" and params["day"] == "2024-01-02"
    assert params["color"] == "red" and params["obj"] == "<object>"
    assert params["exploding"] == "<Exploding>" and params["cls"] == "<type>"
    assert params["creds"] == {"user": "u", "password": REDACTED}
    assert params["7"] == "int key" and params["null"] == "none key"
    ints = build_record("CreateOrder", request_parameters=dict(HOSTILE)["huge-int"]
                        ["request_parameters"])["requestParameters"]
    # beyond 2**53 an IEEE 754 double is not exact (RFC 8785 §3.2.2.3): kept as text
    assert ints == {"n": "[integer of 16610 bits]", "m": "[integer of 71 bits]",
                    "ok": str(2 ** 63)}
    exact = build_record("CreateOrder", request_parameters={"max": 2 ** 53 - 1,
                                                           "min": -(2 ** 53 - 1),
                                                           "over": 2 ** 53})
    assert exact["requestParameters"] == {"max": 2 ** 53 - 1, "min": -(2 ** 53 - 1),
                                          "over": str(2 ** 53)}


# --- canonical bytes ----------------------------------------------------------------------

def test_canonical_bytes_are_deterministic() -> None:
    a = {"b": 1, "a": {"y": [1, 2], "x": "é"}}
    b = {"a": {"x": "é", "y": [1, 2]}, "b": 1}
    assert canonical_bytes(a) == canonical_bytes(b) == \
        b'{"a":{"x":"\xc3\xa9","y":[1,2]},"b":1}'


def test_canonical_bytes_refuse_nan() -> None:
    with pytest.raises(ValueError):
        canonical_bytes({"x": float("nan")})


# --- OCSF ---------------------------------------------------------------------------------

REQUIRED = ["activity_id", "category_uid", "class_uid", "metadata", "severity_id", "time",
            "type_uid"]
CLASS_REQUIRED = {
    2004: ["finding_info"], 3001: ["user"], 3002: ["user"], 3003: ["user"], 3004: ["entity"],
    3006: ["group"], 4002: ["http_request"], 6003: ["actor", "api", "src_endpoint"],
    6004: ["http_request", "web_resources"], 6005: ["actor", "src_endpoint", "database"],
}


def sample(name: str, *, failed: bool = False) -> dict[str, Any]:
    return build_record(
        name, event_time=T0, event_id="ev-1", request_id="req-1", source_ip="203.0.113.9",
        user_agent="curl/8.5.0",
        user_identity={"type": "User", "userName": "alice", "principalId": "u-1",
                       "arn": "arn:bastion:iam::1:user/alice"},
        request_parameters={"userName": "bob", "groupName": "ops", "roleArn": "arn:r",
                            "policyArn": "arn:p", "method": "GET", "command": "SELECT",
                            "statement": "SELECT 1"},
        resources=[{"ARN": "arn:bastion:x::1:thing/1", "type": "Bastion::Thing"}],
        error_code="AccessDenied" if failed else None, error_message="no" if failed else None)


@pytest.mark.parametrize("failed", [False, True], ids=["success", "failure"])
@pytest.mark.parametrize("name", list(EVENTS), ids=lambda n: n)
def test_every_event_maps_to_its_ocsf_class(name: str, failed: bool) -> None:
    et = EVENTS[name]
    event = to_ocsf(sample(name, failed=failed))
    json.dumps(event, allow_nan=False)
    cls = OCSF_CLASSES[et.ocsf_class_uid]
    assert event["class_uid"] == cls.uid and event["class_name"] == cls.name
    assert event["category_uid"] == cls.category_uid == cls.uid // 1000
    assert event["activity_id"] in cls.activities or event["activity_id"] == OTHER
    assert event["type_uid"] == cls.uid * 100 + event["activity_id"]
    for attr in REQUIRED + CLASS_REQUIRED[cls.uid]:
        assert event.get(attr) not in (None, {}, []), attr
    assert event["time"] == 1_700_000_000_250
    meta = event["metadata"]
    assert meta["version"] == OCSF_VERSION and meta["product"]["name"] == "Bastion"
    assert meta["product"]["vendor_name"] == "Bastion"
    assert meta["uid"] == "ev-1" and meta["correlation_uid"] == "req-1"
    assert event["api"] == {"operation": name, "service": {"name": et.source},
                            "request": {"uid": "req-1"},
                            **({"response": {"error": "AccessDenied", "error_message": "no"}}
                               if failed else {})}
    assert event["actor"]["user"]["name"] == "alice"
    assert event["src_endpoint"] == {"ip": "203.0.113.9"}
    assert event["http_request"]["user_agent"] == "curl/8.5.0"
    if cls.uid == 2004:
        assert (event["status_id"], event["status"]) == (1, "New")
    else:
        assert (event["status_id"], event["status"]) == ((2, "Failure") if failed
                                                         else (1, "Success"))
    assert event["severity_id"] >= (2 if failed else 1)
    assert event["unmapped"]["requestParameters"]["userName"] == "bob"


@pytest.mark.parametrize(("command", "activity"), [
    ("SELECT", 4), ("INSERT", 6), ("UPDATE", 2), ("DELETE", 7), ("select", 4), ("VACUUM", 4)])
def test_sql_statement_activity(command: str, activity: int) -> None:
    record = build_record("SqlStatement", request_parameters={
        "class": "READ", "command": command, "statement": f"{command} ..."})
    assert to_ocsf(record)["activity_id"] == activity


@pytest.mark.parametrize(("method", "activity"), [("GET", 3), ("POST", 6), ("delete", 2),
                                                  ("PATCH", OTHER), (None, OTHER)])
def test_http_activity_from_method(method: str | None, activity: int) -> None:
    record = build_record("WafBlock", request_parameters={"method": method, "path": "/x"})
    event = to_ocsf(record)
    assert event["activity_id"] == activity
    assert (event["action_id"], event["disposition_id"]) == (2, 2)
    assert event["http_request"]["url"] == {"path": "/x"}


def test_challenge_is_not_a_block() -> None:
    event = to_ocsf(build_record("UnderAttackChallenge"))
    assert (event["disposition_id"], event["disposition"]) == (99, "Challenge")


def test_waf_detect_mode_match_is_allowed_and_detected() -> None:
    event = to_ocsf(build_record("WafMatch", request_parameters={"method": "GET"}))
    assert (event["action_id"], event["disposition_id"]) == (1, 15)
    assert event["disposition"] == "Detected"


@pytest.mark.parametrize("record", [
    {}, {"eventName": 5}, {"eventName": "NoSuchEvent", "eventTime": "yesterday"},
    {"eventName": "Login", "userIdentity": "x", "requestParameters": [1],
     "resources": "x", "sourceIPAddress": "not-an-ip", "errorCode": 5},
], ids=["empty", "name-not-string", "unknown-name", "wrong-types"])
def test_to_ocsf_accepts_damaged_records(record: dict[str, Any]) -> None:
    event = to_ocsf(record)
    json.dumps(event, allow_nan=False)
    assert event["class_uid"] in OCSF_CLASSES


@pytest.mark.parametrize("kind, type_id", [("IAMUser", 1), ("LocalOperator", 2),
                                           ("Bastion", 3), ("Client", 99), ("Unknown", 0)])
def test_ocsf_user_type_of_each_identity_type_records_carry(kind: str, type_id: int) -> None:
    """docs/audit.md lists the userIdentity types the code emits; IAMUser was mapped to
    Other (99) because the table only knew "User"."""
    record = build_record("Login", user_identity={"type": kind, "principalId": "p"})
    assert to_ocsf(record)["actor"]["user"]["type_id"] == type_id
