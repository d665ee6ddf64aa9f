"""SecLang's comparison and validation operators (ModSecurity Reference Manual v3,
"Operators") on one transformed value; ``@rx``/``@pm`` are matched in ``interpreter``."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from bastion.edge.waf.operators import OPERATORS as CODE

HEX = frozenset("0123456789abcdefABCDEF")


def _int(text: str) -> int:
    """C ``atoi``: the leading integer, 0 when there is none."""
    text = text.strip()
    end = 1 if text[:1] in "+-" else 0
    while end < len(text) and text[end].isdigit():
        end += 1
    try:
        return int(text[:end])
    except ValueError:
        return 0


@lru_cache(maxsize=64)
def byte_ranges(arg: str) -> frozenset[int]:
    allowed: set[int] = set()
    for part in arg.replace(" ", "").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        allowed.update(range(int(lo), int(hi or lo) + 1))
    return frozenset(allowed)


def bad_bytes(value: str, allowed: frozenset[int]) -> bool:
    return any(b not in allowed for b in value.encode("utf-8", "surrogateescape"))


def bad_url_encoding(value: str) -> bool:
    i = value.find("%")
    while i >= 0:
        if i + 2 >= len(value) or value[i + 1] not in HEX or value[i + 2] not in HEX:
            return True
        i = value.find("%", i + 3)
    return False


def bad_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return "\ufffd" in value


def _word(value: str, arg: str) -> bool:
    i = value.find(arg)
    while i >= 0:
        before = value[i - 1] if i else " "
        after = value[i + len(arg)] if i + len(arg) < len(value) else " "
        if not (before.isalnum() or before == "_") and not (after.isalnum() or after == "_"):
            return True
        i = value.find(arg, i + 1)
    return False


def _code(name: str) -> Callable[[str, str], bool]:
    fn = CODE[name][0]
    return lambda v, _a: fn(v) is not None


# name -> (value, expanded argument) -> matched
COMPARE: dict[str, Callable[[str, str], bool]] = {
    "streq": lambda v, a: v == a,
    "beginsWith": lambda v, a: v.startswith(a),
    "endsWith": lambda v, a: v.endswith(a),
    "contains": lambda v, a: a in v,
    "strmatch": lambda v, a: a in v,
    "containsWord": _word,
    "within": lambda v, a: bool(v) and v in a,
    "eq": lambda v, a: _int(v) == _int(a),
    "ge": lambda v, a: _int(v) >= _int(a),
    "gt": lambda v, a: _int(v) > _int(a),
    "lt": lambda v, a: _int(v) < _int(a),
    "le": lambda v, a: _int(v) <= _int(a),
    "validateByteRange": lambda v, a: bad_bytes(v, byte_ranges(a)),
    "validateUrlEncoding": lambda v, _a: bad_url_encoding(v),
    "validateUtf8Encoding": lambda v, _a: bad_utf8(v),
    "unconditionalMatch": lambda _v, _a: True,
    "detectSQLi": _code("detectSQLi"),
    "detectXSS": _code("detectXSS"),
}
