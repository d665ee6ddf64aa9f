"""Audit records: CloudTrail-shaped, sanitised and redacted when built, canonical as bytes.

``build_record`` is the only way a record is made, and it cannot fail on its inputs' values:
whatever a caller hands it (hostile strings, bytes, sets, NaN, deep or huge structures) comes
out as plain JSON types within fixed caps, with secrets replaced by ``[REDACTED]`` (names in
``SECRET_NAMES``/``SECRET_PARTS``; JWTs, PEM private keys, credentials in URLs and headers in
any text). ``canonical_bytes`` is ASCII-only JSON with sorted keys: every control character,
U+2028 and non-ASCII character is escaped, so a record is always exactly one line and the
bytes that are hashed are the bytes that are stored. ``to_ocsf`` maps a record to OCSF 1.3.0.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import functools
import hashlib
import ipaddress
import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

import orjson

from bastion.audit.events import (
    EVENTS,
    HTTP_ACTIVITIES,
    OCSF_CATEGORIES,
    OCSF_CLASSES,
    OCSF_VERSION,
    OTHER,
    SQL_ACTIVITIES,
    EventType,
    activity_name,
    event_type,
)

EVENT_VERSION = "1.0"  # version of Bastion's record format (not CloudTrail's)
REDACTED = "[REDACTED]"

MAX_RECORD_BYTES = 32 * 1024  # canonical bytes of one record
MAX_STRING_BYTES = 8 * 1024  # one string value, measured escaped (as in the canonical bytes)
MAX_USER_AGENT_BYTES = 2 * 1024
MAX_MESSAGE_BYTES = 4 * 1024  # errorMessage
MAX_ID_BYTES = 128  # eventID, requestID, errorCode
MAX_KEY_BYTES = 128  # a mapping key
MAX_DEPTH = 10  # containers below a top-level field
MAX_ITEMS = 100  # entries kept per list or mapping
MAX_NODES = 4000  # values visited per record, whatever the shape
_SCAN_CHARS = 1024 * 1024  # text beyond this is cut before any pattern runs

# Keys naming a secret, compared after lower-casing and dropping everything but [a-z0-9]
# ("Client-Secret", "client_secret" and "clientSecret" are all "clientsecret").
SECRET_NAMES = frozenset({
    "code", "authorizationcode", "authcode", "devicecode", "usercode", "codeverifier",
    "otp", "totp", "hotp", "otpcode", "totpcode", "mfacode", "pin", "recoverycode",
    "recoverycodes", "backupcode", "backupcodes", "verificationcode",
    "authorization", "proxyauthorization", "cookie", "cookies", "setcookie", "dpop",
    "sessionid", "sessionkey", "sig", "signature", "xamzsignature", "cvv", "cvc", "cardnumber",
})
SECRET_PARTS = ("password", "passwd", "passphrase", "secret", "token", "privatekey",
                "keymaterial", "apikey", "assertion", "plaintext", "ciphertext", "credentials",
                "cookie")
# Names containing a part above that are not secret.
NOT_SECRET = frozenset({
    "tokentype", "tokentypehint", "tokenendpoint", "tokenendpointauthmethod",
    "tokenendpointauthsigningalg", "clientassertiontype", "passwordlastused",
    "passwordlastchanged", "secretarn", "tokenuse", "tokenfamily",
})
_JWK_PRIVATE = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k", "priv"})
_NON_ALNUM = re.compile(r"[^a-z0-9]")

_SURROGATES = re.compile("[\ud800-\udfff]")
_PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]+ )?PRIVATE KEY( BLOCK)?-----.*?"
                  r"(?:-----END ([A-Z0-9 ]+ )?PRIVATE KEY( BLOCK)?-----|\Z)", re.DOTALL)
# A JOSE compact serialisation: a header that is base64url of "{..." and 2 or 4 more parts.
_JWT = re.compile(r"(?<![A-Za-z0-9_-])e[w-z0-9_-][A-Za-z0-9_-]{8,}"
                  r"(?:\.[A-Za-z0-9_-]*){2}(?:\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*)?")
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic|dpop|negotiate)(\s+)([A-Za-z0-9._~+/=-]{8,})")
_HEADER = re.compile(r"(?i)\b((?:set-)?cookie|authorization|proxy-authorization|x-api-key)"
                     r"(\s*[:=]\s*)([^\r\n]+)")
_QUERY = re.compile(r"(?i)(?<![A-Za-z0-9_])((?:client_)?secret|password|passwd|pwd|"
                    r"(?:access_|refresh_|id_|logout_|subject_|actor_|device_)?token|code|"
                    r"code_verifier|(?:client_)?assertion|api_?key|otp|totp|sig|signature)"
                    r"=([^&#\s\"'<>]+)")
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*):([^/\s@]+)@")


class _Budget:
    __slots__ = ("nodes",)

    def __init__(self, nodes: int) -> None:
        self.nodes = nodes


@functools.lru_cache(maxsize=4096)  # the same few keys come back in every record
def is_secret_name(key: str) -> bool:
    """Does this mapping key name a secret? See SECRET_NAMES and SECRET_PARTS."""
    norm = _NON_ALNUM.sub("", key.lower())
    if norm in SECRET_NAMES:
        return True
    return norm not in NOT_SECRET and any(part in norm for part in SECRET_PARTS)


def _jwt_sub(match: re.Match[str]) -> str:
    header = match.group(0).split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (ValueError, UnicodeDecodeError):
        return match.group(0)
    return "[REDACTED:jwt]" if isinstance(decoded, dict) else match.group(0)


def _credential_sub(match: re.Match[str]) -> str:
    """``Bearer <credential>``: a word of one case only ("Basic authentication") is prose."""
    credential = match.group(3)
    if credential.isalpha() and (credential.islower() or credential.isupper()):
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}{REDACTED}"


# Every pattern below needs one of these to match: text without any (identifiers, ARNs,
# names, most values) skips the scrubbing passes. A JWT has two dots, a credential after a
# scheme a space, a header or query secret ":" or "=", user info "@", PEM "-----".
_MAYBE_SECRET = re.compile(r"[=@\s]|\.[^.]*\.|-----|(?i:cookie|authorization|api-key)")


def scrub_text(text: str) -> str:
    """Replace secrets that can be recognised in free text."""
    if _MAYBE_SECRET.search(text) is None:
        return text
    if "PRIVATE KEY-----" in text:
        text = _PEM.sub("[REDACTED:private-key]", text)
    text = _JWT.sub(_jwt_sub, text)
    text = _AUTH_SCHEME.sub(_credential_sub, text)
    text = _HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _QUERY.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    return _URL_USERINFO.sub(lambda m: f"{m.group(1)}:{REDACTED}@", text)


def _escaped_len(text: str) -> int:
    return len(json.dumps(text)) - 2


def clean_text(text: str, cap: int = MAX_STRING_BYTES) -> str:
    """Lone surrogates -> U+FFFD, secrets scrubbed, then cut so that the escaped JSON form is
    at most ``cap`` bytes (a marker says how long it was)."""
    if len(text) <= _MEMO_CHARS:  # the same short values come back in every record
        return _clean_short(text, cap)
    return _clean_text(text, cap)


_MEMO_CHARS = 256


def _clean_text(text: str, cap: int) -> str:
    original = len(text)
    if original > _SCAN_CHARS:
        text = text[:_SCAN_CHARS]
    if not text.isascii():
        text = _SURROGATES.sub("\ufffd", text)
    text = scrub_text(text)
    if len(text) <= cap // 6 or _escaped_len(text) <= cap:  # 6: the longest escape (\uXXXX)
        return text
    marker = f"...[truncated {original} chars]"
    room = cap - len(marker)
    keep = min(len(text), room)
    while keep > 0 and _escaped_len(text[:keep]) > room:
        keep = keep * room // _escaped_len(text[:keep]) - 1
    return text[:max(keep, 0)] + marker


# a pure function of (text, cap): memoised for short text, bounded
_clean_short = functools.lru_cache(maxsize=8192)(_clean_text)


def _clean_key(key: object) -> str:
    if isinstance(key, str):
        return clean_text(key, MAX_KEY_BYTES)
    if key is None or isinstance(key, bool | int | float):
        return json.dumps(key) if not isinstance(key, float) or math.isfinite(key) else str(key)
    if isinstance(key, bytes | bytearray):
        return clean_text(bytes(key[:MAX_KEY_BYTES]).decode("utf-8", "replace"), MAX_KEY_BYTES)
    return f"<{type(key).__qualname__}>"


def _type_name(value: object) -> str:
    return f"<{type(value).__qualname__}>"


def clean_value(value: object, *, depth: int = 0, budget: _Budget | None = None,
                cap: int = MAX_STRING_BYTES) -> Any:
    """Any Python value -> JSON-safe value within the caps; never raises."""
    budget = budget if budget is not None else _Budget(MAX_NODES)
    try:
        return _clean(value, depth, budget, cap)
    except Exception:  # a hostile __iter__/__str__/property: keep only the type
        return _type_name(value)


def _clean(value: object, depth: int, budget: _Budget, cap: int) -> Any:
    budget.nodes -= 1
    if budget.nodes < 0:
        return "[omitted: too many values]"
    kind = type(value)  # the common exact types first; subclasses take the long way below
    if kind is str:
        return clean_text(value, cap)  # type: ignore[arg-type]
    if kind is dict or kind is list or kind is tuple:
        if depth >= MAX_DEPTH:
            return "[omitted: nested too deep]"
        if kind is dict:
            return _clean_mapping(value, depth, budget, cap)  # type: ignore[arg-type]
        return _clean_list(value, depth, budget, cap)  # type: ignore[arg-type]
    if value is None or kind is bool:
        return value
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, enum.Enum):
        return _clean(value.value, depth, budget, cap)
    if isinstance(value, int):
        if value.bit_length() > 64:
            return f"[integer of {value.bit_length()} bits]"
        return int(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, str):
        return clean_text(str.__str__(value), cap)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value[:_SCAN_CHARS])
        return clean_text(raw.decode("utf-8", errors="replace"), cap)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
            return value.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
        return value.isoformat(timespec="milliseconds")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value) if value.is_finite() else ("NaN" if value.is_nan() else
                                                     ("Infinity" if value > 0 else "-Infinity"))
    if isinstance(value, uuid.UUID | ipaddress.IPv4Address | ipaddress.IPv6Address
                  | ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    if depth >= MAX_DEPTH:
        return "[omitted: nested too deep]"
    if isinstance(value, Mapping):
        return _clean_mapping(value, depth, budget, cap)
    if isinstance(value, list | tuple):
        return _clean_list(value, depth, budget, cap)
    if isinstance(value, set | frozenset):
        items = _clean_list(list(value)[:MAX_ITEMS + 1], depth, budget, cap)
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return _clean_mapping(fields, depth, budget, cap)
    if isinstance(value, BaseException):
        return {"type": type(value).__qualname__, "message": clean_text(str(value), cap)}
    return _type_name(value)


def _clean_list(items: Sequence[object], depth: int, budget: _Budget, cap: int) -> list[Any]:
    out = [_clean(v, depth + 1, budget, cap) for v in items[:MAX_ITEMS]]
    if len(items) > MAX_ITEMS:
        out.append(f"[{len(items) - MAX_ITEMS} more items]")
    return out


def _clean_mapping(mapping: Mapping[Any, Any], depth: int, budget: _Budget,
                   cap: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    jwk = "kty" in mapping
    for n, (key, value) in enumerate(mapping.items()):
        if n >= MAX_ITEMS:
            out["[truncated]"] = f"{len(mapping) - MAX_ITEMS} more keys"
            break
        name = _clean_key(key)
        if is_secret_name(name) or (jwk and name in _JWK_PRIVATE):
            out[name] = REDACTED if value is not None else None
        else:
            out[name] = _clean(value, depth + 1, budget, cap)
    return out


# built once: json.dumps with options builds a new encoder per call (a third of the cost)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                              allow_nan=False)


def canonical_bytes(record: Mapping[str, Any]) -> bytes:
    """The stored and hashed form: sorted keys, no spaces, ASCII only, no NaN. One line.

    orjson writes it in a microsecond when the record is plain ASCII (the common case);
    anything else (non-ASCII text, which must be escaped, a null, which may have been a NaN
    that must be refused, or a value orjson refuses) goes through the standard encoder.
    Verification never re-encodes: it hashes the stored bytes. (The two encoders agree on
    everything records hold except float exponents, 1e-05 vs 1e-5.)"""
    try:
        out = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    except (TypeError, ValueError):
        out = b""
    # orjson writes NaN as null and leaves DEL (0x7f) raw; the standard encoder refuses the
    # one and escapes the other
    if out and out.isascii() and b"null" not in out and b"\x7f" not in out:
        return out
    return _CANONICAL.encode(record).encode("ascii")


def _iso_time(seconds: float) -> str:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) \
            or not math.isfinite(seconds) or not 0 <= seconds < 253402300800:
        raise ValueError(f"event_time must be unix seconds in years 1970-9999: {seconds!r}")
    ms = int(round(seconds * 1000))
    when = dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=ms)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@functools.lru_cache(maxsize=4096)  # the same peers come back
def _ip_or_name(source: str) -> str:
    try:
        return str(ipaddress.ip_address(source.strip()))
    except ValueError:
        return clean_text(source, 256)


def _short(value: object, cap: int) -> str | None:
    if value is None:
        return None
    cleaned = clean_value(value, cap=cap)
    return cleaned if isinstance(cleaned, str) else clean_text(canonical_json(cleaned), cap)


def canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


_SHRINK = ("requestParameters", "responseElements", "additionalEventData", "resources")
_IDENTITY_KEYS = ("type", "principalId", "arn", "accountId", "userName", "clientId",
                  "roleArn", "sessionName")


def build_record(event_name: str, *, event_time: float | None = None,
                 user_identity: Mapping[str, Any] | None = None, source_ip: str | None = None,
                 user_agent: str | None = None,
                 request_parameters: Mapping[str, Any] | None = None,
                 response_elements: Mapping[str, Any] | None = None,
                 error_code: str | None = None, error_message: str | None = None,
                 request_id: str | None = None, resources: Sequence[Mapping[str, Any]] = (),
                 additional: Mapping[str, Any] | None = None,
                 event_id: str | None = None) -> dict[str, Any]:
    """A CloudTrail-shaped record for ``event_name`` (ValueError if it is not in the
    catalogue). Every value is sanitised and redacted here; the canonical bytes of the result
    are at most MAX_RECORD_BYTES. As in CloudTrail, optional fields that were not given
    (errorCode, requestParameters, resources...) are absent rather than null."""
    et = event_type(event_name)
    if event_time is None:
        event_time = dt.datetime.now(dt.UTC).timestamp()
    budget = _Budget(MAX_NODES)
    ident = clean_value(user_identity, budget=budget, cap=1024) if user_identity is not None \
        else {"type": "Unknown"}
    if not isinstance(ident, dict):
        ident = {"type": "Unknown", "invalid": ident}
    record: dict[str, Any] = {
        "eventVersion": EVENT_VERSION,
        "eventTime": _iso_time(event_time),
        "eventSource": et.source,
        "eventName": et.name,
        "eventType": et.event_type,
        "eventCategory": et.event_category,
        "readOnly": et.read_only,
        "eventID": _short(event_id, MAX_ID_BYTES) or str(uuid.uuid4()),
        "userIdentity": ident,
    }
    optional = {
        "requestID": _short(request_id, MAX_ID_BYTES),
        "sourceIPAddress": _ip_or_name(source_ip) if isinstance(source_ip, str)
        else _short(source_ip, 256),
        "userAgent": _short(user_agent, MAX_USER_AGENT_BYTES),
        "errorCode": _short(error_code, MAX_ID_BYTES),
        "errorMessage": _short(error_message, MAX_MESSAGE_BYTES),
        "requestParameters": _mapping(request_parameters, budget),
        "responseElements": _mapping(response_elements, budget),
        "additionalEventData": _mapping(additional, budget),
        "resources": _resources(resources, budget) or None,
    }
    record.update((k, v) for k, v in optional.items() if v is not None)
    return _fit(record)


def _mapping(value: object, budget: _Budget) -> dict[str, Any] | None:
    if value is None:
        return None
    cleaned = clean_value(value, budget=budget)
    return cleaned if isinstance(cleaned, dict) else {"value": cleaned}


def _resources(value: object, budget: _Budget) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        value = [value]
    cleaned = clean_value(value, budget=budget)
    return cleaned if isinstance(cleaned, list) else [cleaned]


def _fit(record: dict[str, Any]) -> dict[str, Any]:
    """Enforce MAX_RECORD_BYTES: the largest parts give way to a note with their size and
    SHA-256, then identity and free text shrink."""
    size = len(canonical_bytes(record))
    if size <= MAX_RECORD_BYTES:
        return record
    parts = sorted((f for f in _SHRINK if record.get(f)),
                   key=lambda f: -len(canonical_json(record[f])))
    for name in parts:
        encoded = canonical_json(record[name]).encode("ascii")
        note = {"omitted": f"{name} exceeded the record size cap", "bytes": len(encoded),
                "sha256": hashlib.sha256(encoded).hexdigest()}
        record[name] = [note] if name == "resources" else note
        if len(canonical_bytes(record)) <= MAX_RECORD_BYTES:
            return record
    ident = record["userIdentity"]
    record["userIdentity"] = {k: _short(ident[k], 256) for k in _IDENTITY_KEYS if k in ident}
    for name, cap in (("errorMessage", 1024), ("userAgent", 512)):
        if record.get(name) is not None:
            record[name] = clean_text(record[name], cap)
    return record


# --- OCSF ---------------------------------------------------------------------------------

_USER_TYPES = {"User": 1, "Admin": 2, "System": 3}
_STATUS = {1: "Success", 2: "Failure"}
_SEVERITY = {0: "Unknown", 1: "Informational", 2: "Low", 3: "Medium", 4: "High",
             5: "Critical", 6: "Fatal"}
_TARGET_KEYS = ("userName", "roleName", "clientName", "clientId", "groupName")


@functools.lru_cache(maxsize=1)
def _product_version() -> str | None:
    try:
        return metadata.version("bastion")
    except metadata.PackageNotFoundError:
        return None


def _get(record: Mapping[str, Any], key: str) -> Any:
    try:
        return record.get(key)
    except Exception:
        return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _ms(event_time: object) -> int:
    if not isinstance(event_time, str):
        return 0
    try:
        when = dt.datetime.fromisoformat(event_time.replace("Z", "+00:00"))
    except ValueError:
        return 0
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(round(when.timestamp() * 1000))


def _user(ident: Mapping[str, Any]) -> dict[str, Any]:
    kind = _text(ident.get("type")) or "Unknown"
    user: dict[str, Any] = {"type": kind, "type_id": _USER_TYPES.get(kind, 99 if kind !=
                                                                     "Unknown" else 0)}
    name = _text(ident.get("userName")) or _text(ident.get("clientId")) \
        or _text(ident.get("sessionName"))
    uid = _text(ident.get("principalId")) or _text(ident.get("arn"))
    if name:
        user["name"] = name
    if uid:
        user["uid"] = uid
    if _text(ident.get("arn")) and ident.get("arn") != uid:
        user["uid_alt"] = ident["arn"]
    if _text(ident.get("accountId")):
        user["account"] = {"uid": ident["accountId"], "type_id": 99, "type": "Bastion"}
    return user


def _activity(et: EventType | None, record: Mapping[str, Any]) -> int:
    if et is None:
        return OTHER
    params = _dict(_get(record, "requestParameters"))
    if et.ocsf_class_uid == 6005:
        command = _text(params.get("command")) or _text(params.get("class")) or ""
        return SQL_ACTIVITIES.get(command.upper(), et.ocsf_activity_id)
    if et.ocsf_class_uid == 4002:
        method = _text(params.get("method")) or _text(params.get("httpMethod")) or ""
        return HTTP_ACTIVITIES.get(method.upper(), et.ocsf_activity_id)
    return et.ocsf_activity_id


def _resource_list(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    resources = _get(record, "resources")
    for res in resources if isinstance(resources, list) else []:
        res = _dict(res)
        item = {k: v for k, v in (("uid", _text(res.get("ARN"))),
                                  ("type", _text(res.get("type")))) if v}
        if item:
            out.append(item)
    return out


def to_ocsf(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record as an OCSF 1.3.0 event of its catalogue class. Never raises on a record
    read back from storage; an unknown eventName maps to API Activity / Other."""
    name = _text(_get(record, "eventName")) or "Unknown"
    et = EVENTS.get(name)
    class_uid = et.ocsf_class_uid if et else 6003
    cls = OCSF_CLASSES[class_uid]
    activity_id = _activity(et, record)
    error_code = _text(_get(record, "errorCode"))
    status_id = 2 if error_code else 1
    severity_id = et.severity_id if et else 1
    if error_code and severity_id < 2:
        severity_id = 2
    ident = _dict(_get(record, "userIdentity"))
    params = _dict(_get(record, "requestParameters"))
    request_id = _text(_get(record, "requestID"))
    event_id = _text(_get(record, "eventID"))
    source = _text(_get(record, "eventSource")) or "unknown"
    actor_user = _user(ident)
    act_name = activity_name(class_uid, activity_id, name)
    product: dict[str, Any] = {"name": "Bastion", "vendor_name": "Bastion"}
    if _product_version():
        product["version"] = _product_version()
    metadata_: dict[str, Any] = {"version": OCSF_VERSION, "product": product,
                                 "log_name": "audit", "event_code": name,
                                 "profiles": ["cloud"]}
    if event_id:
        metadata_["uid"] = event_id
    if request_id:
        metadata_["correlation_uid"] = request_id
    if _text(_get(record, "eventTime")):
        metadata_["original_time"] = record["eventTime"]
    api: dict[str, Any] = {"operation": name, "service": {"name": source}}
    if request_id:
        api["request"] = {"uid": request_id}
    if error_code:
        api["response"] = {"error": error_code}
        if _text(_get(record, "errorMessage")):
            api["response"]["error_message"] = record["errorMessage"]
    event: dict[str, Any] = {
        "class_uid": class_uid, "class_name": cls.name,
        "category_uid": cls.category_uid, "category_name": OCSF_CATEGORIES[cls.category_uid],
        "activity_id": activity_id, "activity_name": act_name,
        "type_uid": class_uid * 100 + activity_id, "type_name": f"{cls.name}: {act_name}",
        "time": _ms(_get(record, "eventTime")),
        "severity_id": severity_id, "severity": _SEVERITY[severity_id],
        "status_id": status_id, "status": _STATUS[status_id],
        "message": f"{name} failed: {error_code}" if error_code else f"{name} succeeded",
        "metadata": metadata_, "cloud": {"provider": "Bastion"}, "api": api,
        "actor": {"user": actor_user},
    }
    if error_code:
        event["status_code"] = error_code
        if _text(_get(record, "errorMessage")):
            event["status_detail"] = record["errorMessage"]
    if ident.get("type") == "Client" and _text(ident.get("clientId")):
        event["actor"]["app_uid"] = ident["clientId"]
    src = _text(_get(record, "sourceIPAddress"))
    if src:
        try:
            event["src_endpoint"] = {"ip": str(ipaddress.ip_address(src))}
        except ValueError:
            event["src_endpoint"] = {"svc_name": src}
    http: dict[str, Any] = {}
    if _text(_get(record, "userAgent")):
        http["user_agent"] = record["userAgent"]
    if request_id:
        http["uid"] = request_id
    for key in ("method", "httpMethod"):
        if _text(params.get(key)):
            http["http_method"] = params[key].upper()
    path = _text(params.get("path")) or _text(params.get("url"))
    if path:
        http["url"] = {"path": path} if path.startswith("/") else {"url_string": path}
    if http:
        event["http_request"] = http
    resources = _resource_list(record)
    if resources:
        event["resources"] = resources
    _class_specific(event, class_uid, name, record, ident, params, resources)
    event["unmapped"] = {k: record[k] for k in (
        "eventVersion", "eventType", "eventCategory", "readOnly", "userIdentity",
        "sourceIPAddress", "requestParameters", "responseElements", "additionalEventData",
        "resources") if _get(record, k) not in (None, [], {})}
    return event


def _target_user(ident: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    for key in _TARGET_KEYS:
        if _text(params.get(key)):
            kind = "Role" if key == "roleName" else "Client" if key.startswith("client") \
                else "User"
            return {"name": params[key], "type": kind, "type_id": _USER_TYPES.get(kind, 99)}
    return _user(ident)


def _class_specific(event: dict[str, Any], class_uid: int, name: str,
                    record: Mapping[str, Any], ident: Mapping[str, Any],
                    params: Mapping[str, Any], resources: list[dict[str, Any]]) -> None:
    """Attributes each class requires (OCSF 1.3.0)."""
    if class_uid == 3002:  # Authentication: user (required), service
        event["user"] = _user(ident)
        event["service"] = {"name": event["api"]["service"]["name"]}
        if name == "VerifyMfa":
            event["is_mfa"] = True
    elif class_uid == 3001:  # Account Change: the target user or role (required)
        event["user"] = _target_user(ident, params)
        if _text(params.get("policyArn")) or _text(params.get("policyName")):
            event["policy"] = {"uid": params.get("policyArn") or params.get("policyName"),
                               "name": params.get("policyName") or params.get("policyArn")}
    elif class_uid == 3003:  # Authorize Session: user (required), privileges
        event["user"] = _user(ident)
        if _text(params.get("roleArn")):
            event["privileges"] = [params["roleArn"]]
        elif _text(params.get("scope")):
            event["privileges"] = params["scope"].split()
    elif class_uid == 3004:  # Entity Management: entity (required)
        entity: dict[str, Any] = {"type": name.removeprefix("Create").removeprefix("Delete")}
        for key in ("policyName", "groupName", "clientId", "clientName", "userName",
                    "roleName", "resourceArn"):
            if _text(params.get(key)):
                entity["name"] = params[key]
                break
        if resources:
            entity["uid"] = resources[0].get("uid")
        if "name" not in entity and "uid" not in entity:
            entity["name"] = name
        event["entity"] = entity
    elif class_uid == 3006:  # Group Management: group (required)
        event["group"] = {k: v for k, v in (("name", _text(params.get("groupName"))),
                                            ("uid", resources[0].get("uid") if resources
                                             else None)) if v} or {"name": "unknown"}
        if _text(params.get("userName")):
            event["user"] = {"name": params["userName"], "type": "User", "type_id": 1}
        if _text(params.get("policyArn")) or _text(params.get("policyName")):
            event["privileges"] = [params.get("policyArn") or params.get("policyName")]
    elif class_uid == 4002:  # HTTP Activity at the edge: what the control did
        blocked = name != "UnderAttackChallenge"
        event["action_id"], event["action"] = 2, "Denied"
        event["disposition_id"], event["disposition"] = (2, "Blocked") if blocked \
            else (99, "Challenge")
        event.setdefault("http_request", {})
    elif class_uid == 6004:  # Web Resource Access Activity: http_request, web_resources
        event.setdefault("http_request", {})
        event["web_resources"] = [{"uid": r["uid"], **({"type": r["type"]} if "type" in r
                                                       else {})}
                                  for r in resources if "uid" in r] or [{"name": "unknown"}]
    elif class_uid == 6005:  # Datastore Activity: database (at least one of database/table)
        event["database"] = {"name": _text(params.get("database")) or "bastion",
                             "type_id": 1, "type": "Relational"}
        event["type_id"], event["type"] = 1, "Database"
        statement = _text(params.get("statement"))
        if statement:
            event["query_info"] = {"query_string": statement}
    elif class_uid == 2004:  # Detection Finding: finding_info (required); status is the
        # finding's (1 New), not the outcome
        event["finding_info"] = {"uid": event["metadata"].get("uid") or name, "title": name,
                                 "types": [name]}
        if _text(_get(record, "errorMessage")):
            event["finding_info"]["desc"] = record["errorMessage"]
        event["status_id"], event["status"] = 1, "New"
