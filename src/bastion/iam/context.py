"""The request context as seen by conditions and policy variables.

IAM JSON policy elements: Condition › "The request context": keys are case-insensitive, values
are case-sensitive. The caller's mapping is read lazily and defensively; nothing here raises.

Sentinels (``MISSING``, ``UNKNOWN``) keep "the key is absent" (which AWS defines precisely: plain
operators are false, negated operators true, ``...IfExists`` true) apart from "the key cannot be
read" (a non-mapping context, two keys that differ only in case, a value of an unsupported type,
a list longer than :data:`MAX_CONTEXT_VALUES`). An unreadable key makes the condition *unknown*,
which the evaluator resolves fail-closed (see :mod:`bastion.iam.evaluate`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping

from bastion.iam.arn import Identity, parse_identity, parse_identity_cached

#: A multi-valued context key with more values than this is unreadable (condition unknown).
MAX_CONTEXT_VALUES = 4096


class Sentinel(enum.Enum):
    MISSING = "missing"
    UNKNOWN = "unknown"


MISSING = Sentinel.MISSING
UNKNOWN = Sentinel.UNKNOWN

Scalar = str | int | float | bool | bytes
Values = tuple[object, ...]


class ContextView:
    """Case-insensitive, read-only view of a request context."""

    __slots__ = ("_raw", "_lower", "_broken", "memo")

    def __init__(self, context: object) -> None:
        self._raw = context
        self._lower: dict[str, object] | None = None
        self._broken = False
        #: per-request results of condition clauses, keyed by ``Clause.memo_key``
        self.memo: dict[str, object] = {}

    def _build(self) -> dict[str, object]:
        raw = self._raw
        lower: dict[str, object] = {}
        try:
            if type(raw) is dict and all(type(k) is str for k in raw):
                lower = {k.lower(): v for k, v in raw.items()}
                if len(lower) == len(raw):
                    self._lower = lower
                    return lower
                lower = {}
            if not isinstance(raw, Mapping):
                raise TypeError("context is not a mapping")
            for key, value in raw.items():
                if not isinstance(key, str):
                    continue
                k = key.lower()
                # Two spellings of one key: ambiguous, so unreadable.
                lower[k] = UNKNOWN if k in lower else value
        except Exception:  # not a mapping, or a hostile one: every key is unreadable
            lower = {}
            self._broken = True
        self._lower = lower
        return lower

    def get(self, key: str) -> object:
        """Raw value for a lowercase ``key``, or ``MISSING`` / ``UNKNOWN``."""
        lower = self._lower
        if lower is None:
            lower = self._build()
        if self._broken:
            return UNKNOWN
        return lower.get(key, MISSING)

    def peek(self, key: str) -> object:
        """Like :meth:`get`, without building the lowercase map when the context is a plain
        dict (a scan of the keys of the same length): for one-off lookups."""
        raw = self._raw
        if self._lower is not None or type(raw) is not dict:
            return self.get(key)
        n = len(key)
        found: object = MISSING
        for k, v in raw.items():
            if type(k) is str and len(k) == n and k.lower() == key:
                if found is not MISSING:
                    return UNKNOWN
                found = v
        return found


def as_values(raw: object) -> Values | Sentinel:
    if raw is MISSING or raw is None:
        return ()
    if raw is UNKNOWN:
        return UNKNOWN
    if isinstance(raw, str | int | float | bytes):  # bool is an int
        return (raw,)
    if isinstance(raw, list | tuple | set | frozenset):
        if len(raw) > MAX_CONTEXT_VALUES:
            return UNKNOWN
        return tuple(raw)
    return UNKNOWN


def as_text(value: object) -> str | None:
    """A context value as the string that String/ARN operators and variables compare."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        try:
            return str(value)
        except ValueError:  # more digits than sys.get_int_max_str_digits()
            return None
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return None


class RequestState:
    """Per-decision view of a request: lowercase action, context view, lazily parsed principal."""

    __slots__ = ("principal", "action", "resource", "ctx", "_identity")

    def __init__(self, principal: str, action: str, resource: str, context: object) -> None:
        self.principal = principal
        self.action = action.lower()
        self.resource = resource
        self.ctx = ContextView(context)
        self._identity: Identity | None = None

    @property
    def identity(self) -> Identity:
        ident = self._identity
        if ident is None:
            principal = self.principal
            if len(principal) <= 512:
                ident = self._identity = parse_identity_cached(principal)
            else:
                ident = self._identity = parse_identity(principal)
        return ident
