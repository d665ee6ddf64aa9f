"""Encryption context (AWS KMS Developer Guide, "Encryption context"): a map of non-secret
strings bound to a ciphertext as additional authenticated data. Decrypting needs the exact
same map (order does not matter, case does).

Canonical encoding (the AAD bytes): the pair count, then each pair sorted by the UTF-8 bytes
of its key, every field length-prefixed::

    u32 count || (u32 len(k) || k || u32 len(v) || v)*      (big-endian, UTF-8)

Lengths make the encoding injective: two different maps never give the same bytes (no
separator a key or value could contain).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from bastion.kms.errors import ValidationException

MAX_CONTEXT_BYTES = 8192  # all keys and values, UTF-8 (AWS does not state one; bounded here)
MAX_PAIRS = 64
_U32 = struct.Struct(">I")
EMPTY = _U32.pack(0)


def parse_context(value: Any, field: str = "EncryptionContext") -> dict[str, str]:
    """A request's encryption context, checked: a JSON object of string values."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationException(f"{field} must be a map of strings")
    if len(value) > MAX_PAIRS:
        raise ValidationException(f"{field} has more than {MAX_PAIRS} pairs")
    total = 0
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ValidationException(f"{field} keys and values must be strings")
        if not k:
            raise ValidationException(f"{field} keys must not be empty")
        try:
            total += len(k.encode()) + len(v.encode())
        except UnicodeEncodeError:
            raise ValidationException(f"{field} must be valid UTF-8") from None
    if total > MAX_CONTEXT_BYTES:
        raise ValidationException(f"{field} is longer than {MAX_CONTEXT_BYTES} bytes")
    return dict(value)


def canonical(context: Mapping[str, str]) -> bytes:
    """The injective byte encoding above (``EMPTY`` for no context)."""
    if not context:
        return EMPTY
    pairs = sorted((k.encode(), v.encode()) for k, v in context.items())
    out = [_U32.pack(len(pairs))]
    for k, v in pairs:
        out += (_U32.pack(len(k)), k, _U32.pack(len(v)), v)
    return b"".join(out)


def condition_keys(context: Mapping[str, str]) -> dict[str, Any]:
    """``kms:EncryptionContext:<key>`` and ``kms:EncryptionContextKeys`` for policies
    (AWS KMS Developer Guide, "kms:EncryptionContext:context-key")."""
    out: dict[str, Any] = {f"kms:EncryptionContext:{k}": v for k, v in context.items()}
    out["kms:EncryptionContextKeys"] = sorted(context)
    return out
