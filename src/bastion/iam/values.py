"""Policy and context values of the typed condition operators (IAM JSON policy elements:
Condition operators): numbers, dates, booleans, base64, IP addresses.

Each parser raises ``ValueError`` on a value it does not accept; validation turns that into a
finding, evaluation into an *unknown* result. Text longer than a few hundred characters is
refused before parsing (bounded work on hostile input); parsed IPs and dates are memoised.
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import math
import re
from datetime import UTC, datetime
from decimal import Decimal

from bastion.iam.context import as_text

_MAX_SCALAR_TEXT = 256

_NUMBER_RE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,4})?", re.ASCII)
_EPOCH_RE = re.compile(r"-?\d{1,12}(\.\d{1,9})?", re.ASCII)


def parse_number(raw: object) -> Decimal:
    if isinstance(raw, bool):
        raise ValueError("not a number")
    if isinstance(raw, int):
        return Decimal(raw)
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise ValueError("not a finite number")
        return Decimal(repr(raw))
    if isinstance(raw, str) and len(raw) <= _MAX_SCALAR_TEXT and _NUMBER_RE.fullmatch(raw):
        return Decimal(raw)
    raise ValueError("not a number")


def parse_date(raw: object) -> float:
    """ISO 8601 date/time (UTC when no offset is given) or epoch seconds → epoch seconds."""
    if type(raw) is str:
        return _parse_date_text(raw)
    if isinstance(raw, bool):
        raise ValueError("not a date")
    if isinstance(raw, int | float):
        value = float(raw)
        if not math.isfinite(value):
            raise ValueError("not a date")
        return value
    if not isinstance(raw, str):
        raise ValueError("not a date")
    return _parse_date_text(str(raw))


@functools.lru_cache(maxsize=1024)
def _parse_date_text(raw: str) -> float:
    if len(raw) > 64:
        raise ValueError("not a date")
    if _EPOCH_RE.fullmatch(raw):
        return float(raw)
    stamp = datetime.fromisoformat(raw)  # raises ValueError
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def parse_bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        low = raw.lower()
        if low == "true":
            return True
        if low == "false":
            return False
    raise ValueError("not a boolean")


def parse_base64(raw: object) -> bytes:
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, str):
        try:
            return base64.b64decode(raw.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            pass
    raise ValueError("not base64")


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_cidr(raw: object) -> IpNetwork:
    if not isinstance(raw, str) or len(raw) > 64:
        raise ValueError("not a CIDR")
    return ipaddress.ip_network(raw, strict=False)


def parse_ip(raw: object) -> tuple[int, int]:
    """``(version, integer)`` of an IP address given as text."""
    if type(raw) is not str or len(raw) > 64:
        raise ValueError("not an IP address")
    return _parse_ip_text(raw)


@functools.lru_cache(maxsize=1024)
def _parse_ip_text(raw: str) -> tuple[int, int]:
    addr = ipaddress.ip_address(raw)
    return addr.version, int(addr)


def value_text(raw: object) -> str | None:
    """A policy value of a String/ARN condition as text (JSON numbers and booleans allowed)."""
    if isinstance(raw, str | bool | int):
        return as_text(raw)
    return None
