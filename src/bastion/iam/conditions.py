"""IAM JSON policy elements: Condition operators, compiled.

Semantics (AWS IAM User Guide, "IAM JSON policy elements: Condition operators" and "Conditions with
multiple context keys or values"):

- Several operators in one ``Condition`` block are ANDed; several keys under one operator are
  ANDed; several values for one key are ORed. For a *negated* operator (``StringNotEquals``,
  ``StringNotEqualsIgnoreCase``, ``StringNotLike``, ``NumericNotEquals``, ``DateNotEquals``,
  ``NotIpAddress``, ``ArnNotEquals``, ``ArnNotLike``) the values are NORed: true only when the
  context value matches none of them.
- A key absent from the request context makes a condition false, except for negated operators
  (true), ``...IfExists`` (true) and ``Null`` (which tests presence).
- ``ForAnyValue:`` is true when at least one context value satisfies the operator (false when the
  key is absent or empty); ``ForAllValues:`` is true when every context value does, *and also when
  the key is absent or empty* (AWS: "It also returns true if there are no context keys in the
  request"). ``IfExists`` wins over both for an absent key (true). With a negated operator each
  context value is tested on its own: ``ForAllValues:StringNotLike`` is true when no context value
  is like any policy value.
- A plain (unqualified) operator on a multi-valued context key: Bastion treats a positive operator
  as "any context value matches" and a negated operator as its exact negation, "no context value
  matches any policy value". AWS asks for a set operator here; this choice keeps a negated
  operator in a Deny from being dodged by adding an extra value.
- ``ArnEquals`` and ``ArnLike`` are the same test (both take wildcards, component by component).

Three-valued results: ``True``, ``False`` and ``None`` (*unknown*: a context value of the wrong
type, an unreadable key, an unresolvable policy variable). Unknown propagates with Kleene logic
(``False`` wins an AND, ``True`` wins an OR, negation keeps unknown) and is resolved fail-closed by
the evaluator.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bastion.iam import variables
from bastion.iam._wildcard import Matcher, compile_tokens
from bastion.iam.arnmatch import ArnMatcher, ArnTemplate, compile_arn
from bastion.iam.context import MISSING, UNKNOWN, ContextView, as_text, as_values
from bastion.iam.values import (
    IpNetwork,
    parse_base64,
    parse_bool,
    parse_cidr,
    parse_date,
    parse_ip,
    parse_number,
    value_text,
)
from bastion.iam.variables import Var

Tri = bool | None
Check = Callable[[object], Tri]


@dataclass(frozen=True, slots=True)
class Operator:
    name: str
    family: str  # string | numeric | date | bool | binary | ip | arn | null
    negated: bool = False
    compare: str = "eq"  # eq | icase | like | lt | le | gt | ge
    variables: bool = False  # policy variables allowed in values


def _ops() -> dict[str, Operator]:
    ops = [
        Operator("StringEquals", "string", variables=True),
        Operator("StringNotEquals", "string", True, variables=True),
        Operator("StringEqualsIgnoreCase", "string", False, "icase", True),
        Operator("StringNotEqualsIgnoreCase", "string", True, "icase", True),
        Operator("StringLike", "string", False, "like", True),
        Operator("StringNotLike", "string", True, "like", True),
        Operator("Bool", "bool", variables=True),
        Operator("BinaryEquals", "binary"),
        Operator("IpAddress", "ip"),
        Operator("NotIpAddress", "ip", True),
        Operator("ArnEquals", "arn", False, "like", True),
        Operator("ArnLike", "arn", False, "like", True),
        Operator("ArnNotEquals", "arn", True, "like", True),
        Operator("ArnNotLike", "arn", True, "like", True),
        Operator("Null", "null"),
    ]
    for family, prefix in (("numeric", "Numeric"), ("date", "Date")):
        ops += [
            Operator(f"{prefix}Equals", family),
            Operator(f"{prefix}NotEquals", family, True),
            Operator(f"{prefix}LessThan", family, False, "lt"),
            Operator(f"{prefix}LessThanEquals", family, False, "le"),
            Operator(f"{prefix}GreaterThan", family, False, "gt"),
            Operator(f"{prefix}GreaterThanEquals", family, False, "ge"),
        ]
    return {op.name: op for op in ops}


OPERATORS: dict[str, Operator] = _ops()
ALL = "ForAllValues"
ANY = "ForAnyValue"


class OperatorError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_operator(text: str) -> tuple[Operator, str | None, bool]:
    """``"ForAnyValue:StringLikeIfExists"`` → (StringLike, "ForAnyValue", True)."""
    qualifier: str | None = None
    name = text
    head, sep, rest = text.partition(":")
    if sep:
        if head not in (ALL, ANY):
            raise OperatorError("UNKNOWN_OPERATOR", f"unknown set operator {head!r}")
        qualifier, name = head, rest
    if_exists = False
    if name not in OPERATORS and name.endswith("IfExists"):
        name, if_exists = name[: -len("IfExists")], True
    op = OPERATORS.get(name)
    if op is None:
        raise OperatorError("UNKNOWN_OPERATOR", f"unknown condition operator {text!r}")
    if op.family == "null" and (if_exists or qualifier):
        raise OperatorError(
            "INVALID_OPERATOR_QUALIFIER",
            "Null takes neither ...IfExists nor ForAllValues:/ForAnyValue:",
        )
    return op, qualifier, if_exists


# -- tests: one per family; ``bind`` resolves policy variables for one request -------------------


def _any_true(check: Check, values: Sequence[object]) -> Tri:
    unknown = False
    for v in values:
        r = check(v)
        if r:
            return True
        if r is None:
            unknown = True
    return None if unknown else False


class _StringEquals:
    __slots__ = ("constants", "templates", "icase")

    def __init__(self, constants: frozenset[str], templates: tuple[list[variables.Piece], ...],
                 icase: bool) -> None:
        self.constants = constants
        self.templates = templates
        self.icase = icase

    def bind(self, ctx: ContextView) -> Check:
        if not self.templates:
            return self.check
        allowed = set(self.constants)
        unknown = False
        for t in self.templates:
            text = variables.resolve_text(t, ctx)
            if text is None:
                unknown = True
            else:
                allowed.add(text.lower() if self.icase else text)
        return lambda v: self._check(v, allowed, unknown)

    def check(self, value: object) -> Tri:
        return self._check(value, self.constants, False)

    def _check(self, value: object, allowed: frozenset[str] | set[str], unknown: bool) -> Tri:
        text = value if type(value) is str else as_text(value)
        if text is None:
            return None
        if self.icase:
            text = text.lower()
        if text in allowed:
            return True
        return None if unknown else False


class _Like:
    """StringLike values: compiled matchers plus templated ones (variables)."""

    __slots__ = ("constants", "templates")

    def __init__(self, constants: tuple[Matcher, ...],
                 templates: tuple[list[variables.Piece], ...]) -> None:
        self.constants = constants
        self.templates = templates

    def bind(self, ctx: ContextView) -> Check:
        if not self.templates:
            return self.check
        matchers = list(self.constants)
        unknown = False
        for t in self.templates:
            tokens = variables.resolve(t, ctx)
            if tokens is None:
                unknown = True
            else:
                matchers.append(compile_tokens(tokens))
        return lambda v: self._check(v, matchers, unknown)

    def check(self, value: object) -> Tri:
        return self._check(value, self.constants, False)

    @staticmethod
    def _check(value: object, matchers: Sequence[Matcher], unknown: bool) -> Tri:
        text = value if type(value) is str else as_text(value)
        if text is None:
            return None
        for m in matchers:
            if m(text):
                return True
        return None if unknown else False


class _Arn:
    """ArnEquals/ArnLike values; a context value that is not an ARN matches nothing."""

    __slots__ = ("constants", "templates")

    def __init__(self, constants: tuple[ArnMatcher, ...],
                 templates: tuple[ArnTemplate, ...]) -> None:
        self.constants = constants
        self.templates = templates

    def bind(self, ctx: ContextView) -> Check:
        if not self.templates:
            return self.check
        return lambda v: self._check(v, ctx)

    def check(self, value: object) -> Tri:
        return self._check(value, None)

    def _check(self, value: object, ctx: ContextView | None) -> Tri:
        text = value if type(value) is str else as_text(value)
        if text is None:
            return None
        for m in self.constants:
            if m(text):
                return True
        unknown = False
        if ctx is not None:
            for t in self.templates:
                r = t.match_text(text, ctx)
                if r:
                    return True
                if r is None:
                    unknown = True
        return None if unknown else False


_CMP: dict[str, Callable[[object, object], bool]] = {
    "eq": lambda a, b: a == b,
    "lt": lambda a, b: a < b,  # type: ignore[operator]
    "le": lambda a, b: a <= b,  # type: ignore[operator]
    "gt": lambda a, b: a > b,  # type: ignore[operator]
    "ge": lambda a, b: a >= b,  # type: ignore[operator]
}


class _Ordered:
    """Numeric and Date values: ``context <cmp> policy`` for any policy value."""

    __slots__ = ("values", "cmp", "parse")

    def __init__(self, values: tuple[object, ...], cmp: str,
                 parse: Callable[[object], object]) -> None:
        self.values = values
        self.cmp = _CMP[cmp]
        self.parse = parse

    def bind(self, ctx: ContextView) -> Check:
        return self.check

    def check(self, value: object) -> Tri:
        try:
            v = self.parse(value)
        except (ValueError, ArithmeticError, OverflowError):
            return None
        cmp = self.cmp
        for p in self.values:
            if cmp(v, p):
                return True
        return False


class _Bool:
    __slots__ = ("constants", "templates")

    def __init__(self, constants: frozenset[bool], templates: tuple[list[variables.Piece], ...]):
        self.constants = constants
        self.templates = templates

    def bind(self, ctx: ContextView) -> Check:
        if not self.templates:
            return self.check
        allowed = set(self.constants)
        unknown = False
        for t in self.templates:
            try:
                allowed.add(parse_bool(variables.resolve_text(t, ctx)))
            except ValueError:
                unknown = True
        return lambda v: self._check(v, allowed, unknown)

    def check(self, value: object) -> Tri:
        return self._check(value, self.constants, False)

    @staticmethod
    def _check(value: object, allowed: frozenset[bool] | set[bool], unknown: bool) -> Tri:
        try:
            b = parse_bool(value)
        except ValueError:
            return None
        if b in allowed:
            return True
        return None if unknown else False


class _Set:
    """BinaryEquals: decoded bytes in a set."""

    __slots__ = ("values",)

    def __init__(self, values: frozenset[bytes]) -> None:
        self.values = values

    def bind(self, ctx: ContextView) -> Check:
        return self.check

    def check(self, value: object) -> Tri:
        try:
            return parse_base64(value) in self.values
        except ValueError:
            return None


class _Ip:
    """IpAddress values as ``(version, netmask, network)`` integers."""

    __slots__ = ("networks",)

    def __init__(self, networks: tuple[IpNetwork, ...]) -> None:
        self.networks = tuple(
            (n.version, int(n.netmask), int(n.network_address)) for n in networks
        )

    def bind(self, ctx: ContextView) -> Check:
        return self.check

    def check(self, value: object) -> Tri:
        try:
            version, addr = parse_ip(value)
        except ValueError:
            return None
        for net_version, mask, network in self.networks:
            if version == net_version and addr & mask == network:
                return True
        return False


_Test = _StringEquals | _Like | _Arn | _Ordered | _Bool | _Set | _Ip


# -- clauses ---------------------------------------------------------------------------------

_SCALARS = frozenset({str, bool, int, float, bytes})


class Clause:
    """One ``operator → key → values`` entry of a Condition block."""

    __slots__ = ("key", "operator", "qualifier", "if_exists", "negated", "test", "null", "memo_key")

    def __init__(self, key: str, operator: Operator, qualifier: str | None, if_exists: bool,
                 test: _Test | None, null: frozenset[bool] | None, memo_key: str = "") -> None:
        #: identical clauses (same operator, key, values, Version) share one result per request
        self.memo_key = memo_key
        self.key = key
        self.operator = operator
        self.qualifier = qualifier
        self.if_exists = if_exists
        self.negated = operator.negated
        self.test = test
        self.null = null

    def evaluate(self, ctx: ContextView) -> Tri:
        memo = ctx.memo
        r = memo.get(self.memo_key, MISSING)
        if r is MISSING:
            r = memo[self.memo_key] = self._evaluate(ctx)
        return r  # type: ignore[return-value]

    def _evaluate(self, ctx: ContextView) -> Tri:
        raw = ctx.get(self.key)
        if raw is UNKNOWN:
            return None
        if self.qualifier is None and type(raw) in _SCALARS and self.test is not None:
            r = self.test.bind(ctx)(raw)  # one plain value: the common case
            return (None if r is None else not r) if self.negated else r
        if self.null is not None:
            absent = raw is MISSING or raw is None or (
                isinstance(raw, list | tuple | set | frozenset) and not raw
            )
            return absent in self.null
        values = as_values(raw)
        if values is UNKNOWN:
            return None
        assert isinstance(values, tuple)
        if not values:
            if self.if_exists or self.qualifier == ALL:
                return True
            if self.qualifier == ANY:
                return False
            return self.negated
        assert self.test is not None
        check = self.test.bind(ctx)
        if self.qualifier is None:
            r = _any_true(check, values)
            return (None if r is None else not r) if self.negated else r
        per_value: Check = check
        if self.negated:
            def per_value(v: object) -> Tri:
                r = check(v)
                return None if r is None else not r
        if self.qualifier == ANY:
            return _any_true(per_value, values)
        unknown = False  # ForAllValues
        for v in values:
            r = per_value(v)
            if r is False:
                return False
            if r is None:
                unknown = True
        return None if unknown else True


def evaluate_all(clauses: Sequence[Clause], ctx: ContextView) -> Tri:
    """AND of the clauses (Kleene), stopping at the first false one."""
    unknown = False
    for clause in clauses:
        r = clause.evaluate(ctx)
        if r is False:
            return False
        if r is None:
            unknown = True
    return None if unknown else True


def compile_clause(operator_name: str, key: str, raw_values: object, *,
                   variables_enabled: bool) -> Clause:
    """Compile one validated clause (``raw_values``: a scalar or a list of scalars)."""
    op, qualifier, if_exists = parse_operator(operator_name)
    values = raw_values if isinstance(raw_values, list) else [raw_values]
    key = key.lower()
    memo_key = json.dumps([operator_name, key, values, variables_enabled])
    if op.family == "null":
        return Clause(key, op, None, False, None, frozenset(parse_bool(v) for v in values),
                      memo_key)
    use_vars = variables_enabled and op.variables
    test: _Test
    if op.family == "string" and op.compare in ("eq", "icase"):
        consts: set[str] = set()
        templates = []
        for v in values:
            text = value_text(v) or ""
            pieces = variables.parse(text, variables=use_vars, wildcards=False)
            if variables.has_var(pieces):
                templates.append(pieces)
            else:
                consts.add(text.lower() if op.compare == "icase" else text)
        test = _StringEquals(frozenset(consts), tuple(templates), op.compare == "icase")
    elif op.family == "string":
        matchers: list[Matcher] = []
        templates = []
        for v in values:
            pieces = variables.parse(value_text(v) or "", variables=use_vars, wildcards=True)
            if variables.has_var(pieces):
                templates.append(pieces)
            else:
                matchers.append(compile_tokens([p for p in pieces if not isinstance(p, Var)]))
        test = _Like(tuple(matchers), tuple(templates))
    elif op.family == "arn":
        arns: list[ArnMatcher] = []
        arn_templates: list[ArnTemplate] = []
        for v in values:
            pieces = variables.parse(value_text(v) or "", variables=use_vars, wildcards=True)
            compiled = compile_arn(pieces)
            if isinstance(compiled, ArnTemplate):
                arn_templates.append(compiled)
            else:
                arns.append(compiled)
        test = _Arn(tuple(arns), tuple(arn_templates))
    elif op.family == "numeric":
        test = _Ordered(tuple(parse_number(v) for v in values), op.compare, parse_number)
    elif op.family == "date":
        test = _Ordered(tuple(parse_date(v) for v in values), op.compare, parse_date)
    elif op.family == "bool":
        bools: set[bool] = set()
        templates = []
        for v in values:
            text = value_text(v) or ""
            pieces = variables.parse(text, variables=use_vars, wildcards=False)
            if variables.has_var(pieces):
                templates.append(pieces)
            else:
                bools.add(parse_bool(v))
        test = _Bool(frozenset(bools), tuple(templates))
    elif op.family == "binary":
        test = _Set(frozenset(parse_base64(v) for v in values))
    else:
        test = _Ip(tuple(parse_cidr(v) for v in values))
    return Clause(key, op, qualifier, if_exists, test, None, memo_key)


def check_value(op: Operator, raw: object) -> tuple[str, str] | None:
    """``(code, message)`` when ``raw`` is not a valid value for ``op`` (validation)."""
    try:
        if op.family == "numeric":
            parse_number(raw)
        elif op.family == "date":
            parse_date(raw)
        elif op.family == "null":
            parse_bool(raw)
        elif op.family == "bool":
            if not (isinstance(raw, str) and "${" in raw):
                parse_bool(raw)
        elif op.family == "binary":
            parse_base64(raw)
        elif op.family == "ip":
            parse_cidr(raw)
        elif value_text(raw) is None:
            return "INVALID_TYPE", "a condition value must be a string"
    except ValueError:
        code = {
            "numeric": ("INVALID_NUMBER", "is not a number"),
            "date": ("INVALID_DATE", "is not an ISO 8601 date/time or epoch seconds"),
            "null": ("INVALID_BOOLEAN", "Null takes 'true' or 'false'"),
            "bool": ("INVALID_BOOLEAN", "is not 'true' or 'false'"),
            "binary": ("INVALID_BASE64", "is not base64"),
            "ip": ("INVALID_CIDR", "is not an IPv4/IPv6 address or CIDR block"),
        }[op.family]
        return code[0], f"{raw!r} {code[1]}"
    return None
