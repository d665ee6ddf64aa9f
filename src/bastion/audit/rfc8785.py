"""RFC 8785: JSON Canonicalization Scheme (JCS). https://www.rfc-editor.org/rfc/rfc8785

The bytes of an audit record that are hashed and stored. JCS is what lets a verifier written
anywhere else (there are implementations in most languages) parse a record and get the very
same bytes back: object members sorted by their UTF-16 code units, no whitespace, strings
escaped minimally and written as UTF-8, numbers written the way ECMAScript writes IEEE 754
doubles (``1`` for ``1.0``, ``1e-7``, ``1e+21``).

``canonicalize`` is the reference; ``canonical_bytes`` uses orjson when its output is provably
the same (only strings, booleans, null, safe integers, lists and dicts, and no key with a
character outside the Basic Multilingual Plane, which could sort differently) and the
reference otherwise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import orjson

MAX_SAFE_INTEGER = 2**53 - 1  # RFC 8785 §3.2.2.3 (I-JSON, RFC 7493 §2.2): beyond, not exact

# orjson options: anything but plain JSON types (datetime, dataclass, subclasses) raises,
# and goes to the reference, which refuses it
_OPTIONS = (orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
            | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS)


def _plain(value: Any) -> bool:
    """True when orjson writes exactly the RFC 8785 bytes for ``value``: only exact dict,
    list, str, bool, None and safe integers (orjson spells floats its own way, 1.0 and
    1e+16), and no key with a character beyond the BMP (orjson sorts by code point, RFC 8785
    §3.2.3 by UTF-16 code units). Its string escaping is JCS's."""
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is str or item is None or kind is bool:
            continue
        if kind is dict:
            for key in item:
                if type(key) is not str or not (key.isascii() or max(key) <= "\uffff"):
                    return False
            extend(item.values())
        elif kind is list:
            extend(item)
        elif kind is int:
            if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                return False
        else:
            return False
    return True


def _number(value: float) -> str:
    """RFC 8785 §3.2.2.3: ECMAScript Number::toString (ECMA-262 §7.1.12.1) of a double."""
    if not math.isfinite(value):
        raise ValueError("JCS has no NaN or Infinity (RFC 8785 §3.2.2.3)")
    if value == 0:
        return "0"  # also -0
    sign = "-" if value < 0 else ""
    mantissa, _, exp = repr(abs(value)).partition("e")  # repr: the shortest round trip
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    n = len(whole) + int(exp or 0) - (len(whole + frac) - len((whole + frac).lstrip("0")))
    digits = digits.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        e = n - 1
        text = (digits[0] + ("." + digits[1:] if k > 1 else "")
                + ("e+" if e >= 0 else "e-") + str(abs(e)))
    return sign + text


def _encode(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))  # the same minimal escaping
    elif isinstance(value, int):
        text = str(int(value))
        # beyond 2**53: only when the nearest double prints as these very digits (what a
        # JCS parser reading them back as a double writes again); anything else would change
        if abs(value) > MAX_SAFE_INTEGER and (abs(value) >= 2**1024
                                              or _number(float(value)) != text):
            raise ValueError("an integer beyond 2**53 that a double cannot hold exactly")
        out.append(text)
    elif isinstance(value, float):
        out.append(_number(value))
    elif isinstance(value, Mapping):
        out.append("{")
        keys = list(value)
        if not all(isinstance(k, str) for k in keys):
            raise TypeError("JSON object keys are strings")
        for i, key in enumerate(sorted(keys, key=lambda k: k.encode("utf-16-be",
                                                                    "surrogatepass"))):
            if i:
                out.append(",")
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":")
            _encode(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"not a JSON value: {type(value).__name__}")


def canonicalize(value: Any) -> bytes:
    """The RFC 8785 canonical form of a JSON value (dict, list, str, int, float, bool,
    None). ValueError for NaN, infinities, unsafe integers and lone surrogates; TypeError
    for anything that is not JSON."""
    out: list[str] = []
    _encode(value, out)
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a lone surrogate cannot be encoded as UTF-8") from None


def canonical_bytes(value: Any) -> bytes:
    """``canonicalize(value)``, in a microsecond for the usual record (orjson, when nothing in
    its output could differ from the reference)."""
    if _plain(value):
        try:
            return orjson.dumps(value, option=_OPTIONS)
        except orjson.JSONEncodeError:  # a lone surrogate: the reference names it
            pass
    return canonicalize(value)
