"""Sanitising and redaction: any Python value becomes plain JSON within fixed caps, with
secrets replaced by ``[REDACTED]``.

``clean_value`` cannot fail on its input's value: hostile strings, bytes, sets, NaN, deep or
huge structures all come out as JSON types (integers beyond 2**53 as text, so that RFC 8785
canonical bytes hold them exactly). A value is redacted when its key names a secret
(``SECRET_NAMES``/``SECRET_PARTS``); free text is scrubbed of JWTs, PEM private keys, and
credentials in URLs, headers and query strings (``scrub_text``). See docs/audit.md.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import functools
import ipaddress
import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from bastion.audit.rfc8785 import MAX_SAFE_INTEGER

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
        if abs(value) > MAX_SAFE_INTEGER:  # not exact as an IEEE 754 double: as text
            return str(int(value))
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
