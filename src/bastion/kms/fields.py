"""Request fields checked as the AWS KMS API Reference constrains them (type, length, enum,
range); every violation is a ``ValidationException`` naming the field, never echoing a
secret value."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

from bastion.kms.errors import ValidationException

Request = dict[str, Any]


def _bad(field: str, why: str) -> ValidationException:
    return ValidationException(f"1 validation error detected: Value at '{field}' failed to "
                               f"satisfy constraint: {why}")


def string(req: Request, field: str, *, required: bool = False, min_len: int = 1,
           max_len: int = 2048) -> str | None:
    value = req.get(field)
    if value is None:
        if required:
            raise _bad(field, "Member must not be null")
        return None
    if not isinstance(value, str):
        raise _bad(field, "Member must be a string")
    if not min_len <= len(value) <= max_len:
        raise _bad(field, f"Member must have length between {min_len} and {max_len}")
    return value


def required_string(req: Request, field: str, *, min_len: int = 1,
                    max_len: int = 2048) -> str:
    value = string(req, field, required=True, min_len=min_len, max_len=max_len)
    assert value is not None
    return value


def enum(req: Request, field: str, allowed: Sequence[str], *, required: bool = False,
         default: str | None = None) -> str | None:
    value = req.get(field)
    if value is None:
        if required:
            raise _bad(field, "Member must not be null")
        return default
    if not isinstance(value, str) or value not in allowed:
        raise _bad(field, "Member must satisfy enum value set: [" + ", ".join(allowed) + "]")
    return value


def integer(req: Request, field: str, lo: int, hi: int, *, required: bool = False,
            default: int | None = None) -> int | None:
    value = req.get(field)
    if value is None:
        if required:
            raise _bad(field, "Member must not be null")
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(field, "Member must be an integer")
    if not lo <= value <= hi:
        raise _bad(field, f"Member must have value between {lo} and {hi}")
    return value


def boolean(req: Request, field: str, default: bool = False) -> bool:
    value = req.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _bad(field, "Member must be a boolean")
    return value


def blob(req: Request, field: str, *, required: bool = False, min_len: int = 1,
         max_len: int = 4096) -> bytes | None:
    """A base64 blob (the JSON 1.1 encoding of ``blob`` members)."""
    value = req.get(field)
    if value is None:
        if required:
            raise _bad(field, "Member must not be null")
        return None
    if not isinstance(value, str) or len(value) > (max_len + 2) // 3 * 4 + 4:
        raise _bad(field, f"Member must have length less than or equal to {max_len}")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(field, "Member must be base64-encoded binary data") from None
    if not min_len <= len(raw) <= max_len:
        raise _bad(field, f"Member must have length between {min_len} and {max_len}")
    return raw


def required_blob(req: Request, field: str, *, min_len: int = 1, max_len: int = 4096) -> bytes:
    value = blob(req, field, required=True, min_len=min_len, max_len=max_len)
    assert value is not None
    return value


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def string_list(req: Request, field: str, *, max_items: int, max_len: int = 128,
                required: bool = False) -> list[str] | None:
    value = req.get(field)
    if value is None:
        if required:
            raise _bad(field, "Member must not be null")
        return None
    if not isinstance(value, list) or len(value) > max_items:
        raise _bad(field, f"Member must be a list of at most {max_items} strings")
    for item in value:
        if not isinstance(item, str) or not 1 <= len(item) <= max_len:
            raise _bad(field, f"Member must contain strings of length 1 to {max_len}")
    return list(value)


def grant_tokens(req: Request) -> None:
    """``GrantTokens``: accepted and checked for shape (grants are not implemented yet)."""
    string_list(req, "GrantTokens", max_items=10, max_len=8192)
