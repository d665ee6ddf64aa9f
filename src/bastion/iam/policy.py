"""Parsing and compiling one policy document ("IAM JSON policy grammar").

:func:`parse_policy` validates (:mod:`bastion.iam.validate`) and refuses any document with an
``ERROR`` finding, then compiles each statement once: lowercase action patterns, ARN matchers per
component for ``Resource``, principal sets, condition clauses. Evaluation never re-reads the JSON.

Element rules implemented here:

- ``Action``/``NotAction`` match case-insensitively ("IAM JSON policy elements: Action").
- ``Resource``/``NotResource`` match case-sensitively, component by component; ``"*"`` matches
  every resource, ARN or not ("IAM JSON policy elements: Resource").
- A ``Version`` of ``2008-10-17``, or none, disables policy variables ("IAM JSON policy elements:
  Version").
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bastion.iam import variables
from bastion.iam._index import ActionIndex
from bastion.iam._wildcard import Wild
from bastion.iam.arnmatch import ArnMatcher, ArnTemplate, compile_arn
from bastion.iam.conditions import Clause, Tri, compile_clause, evaluate_all
from bastion.iam.context import MISSING, RequestState
from bastion.iam.decision import MatchedStatement, Source
from bastion.iam.principal import PrincipalSpec, compile_principal
from bastion.iam.validate import Finding, Kind, PolicyError, analyze, plain

SOURCES: tuple[Source, ...] = ("identity", "resource", "boundary", "session")


def _always(_resource: str) -> bool:
    return True


def _prefix_of(pieces: Sequence[variables.Piece]) -> str | None:
    """``arn:p:s:r:a:res/*`` → ``arn:p:s:r:a:res/``: when the only wildcard is one trailing
    ``*`` that lies in the resource component (the literal part holds the five colons), the
    component-wise ARN match is exactly ``startswith`` of that literal part."""
    if len(pieces) < 2 or pieces[-1] is not Wild.STAR:
        return None
    literal = pieces[:-1]
    if not all(type(p) is str for p in literal):
        return None
    text = "".join(p for p in literal if isinstance(p, str))
    return text if text.count(":") >= 5 and text.startswith("arn:") else None


class Resources:
    """A compiled ``Resource``/``NotResource`` element.

    ``check`` is set when the element holds no policy variable: an exact boolean test of the
    request's resource string, built from C-level callables where possible (a frozenset lookup
    for literal ARNs, one ``startswith`` over a tuple for ``...:resource/prefix*`` patterns).
    """

    __slots__ = ("anything", "exact", "arns", "templates", "negate", "check", "keys")

    def __init__(self, patterns: Sequence[str], *, negate: bool, use_vars: bool) -> None:
        self.negate = negate
        self.anything = "*" in patterns
        exact: set[str] = set()
        prefixes: list[str] = []
        arns: list[ArnMatcher] = []
        templates: list[ArnTemplate] = []
        for pattern in patterns:
            if pattern == "*":
                continue
            pieces = variables.parse(pattern, variables=use_vars, wildcards=True)
            if all(isinstance(p, str) for p in pieces):
                exact.add("".join(p for p in pieces if isinstance(p, str)))
                continue
            prefix = _prefix_of(pieces)
            if prefix is not None:
                prefixes.append(prefix)
            compiled = compile_arn(pieces)
            if isinstance(compiled, ArnTemplate):
                templates.append(compiled)
            else:
                arns.append(compiled)
        self.exact = frozenset(exact)
        self.arns = tuple(arns)
        self.templates = tuple(templates)
        self.check = self._static_check(prefixes)
        #: ``(exact ARNs, prefixes)`` when the element is exactly "equals one of / starts with
        #: one of" (``"*"`` is the empty prefix), for the action index's resource pre-filter
        self.keys: tuple[frozenset[str], tuple[str, ...]] | None = None
        if not negate and not templates and len(prefixes) == len(arns):
            starts = ("",) if self.anything else tuple(prefixes)
            self.keys = (frozenset() if self.anything else self.exact, starts)

    def _static_check(self, prefixes: list[str]) -> Callable[[str], bool] | None:
        if self.templates:
            return None
        positive: Callable[[str], bool]
        if self.anything:
            positive = _always
        elif len(prefixes) == len(self.arns):  # every wildcard pattern is a plain prefix
            if not prefixes:
                positive = self.exact.__contains__
            elif not self.exact:
                positive = operator.methodcaller("startswith", tuple(prefixes))
            else:
                exact, starts = self.exact, tuple(prefixes)
                positive = lambda r: r in exact or r.startswith(starts)  # noqa: E731
        else:
            exact, arns = self.exact, self.arns
            positive = lambda r: r in exact or any(m(r) for m in arns)  # noqa: E731
        if self.negate:
            inner = positive
            return lambda r: not inner(r)
        return positive

    def test(self, state: RequestState) -> Tri:
        resource = state.resource
        r: Tri = False
        if self.anything or resource in self.exact:
            r = True
        else:
            for m in self.arns:
                if m(resource):
                    r = True
                    break
            else:
                unknown = False
                for t in self.templates:
                    found = t.match_text(resource, state.ctx)
                    if found:
                        r = True
                        break
                    if found is None:
                        unknown = True
                else:
                    r = None if unknown else False
        if self.negate:
            return None if r is None else not r
        return r


@dataclass(frozen=True, slots=True, eq=False)
class Statement:
    """One compiled statement. ``index`` is its position in the policy's ``Statement`` list."""

    policy_id: str
    sid: str | None
    index: int
    effect: Literal["Allow", "Deny"]
    actions: tuple[str, ...]  # lowercase patterns of Action, or of NotAction
    not_action: bool
    resources: Resources | None  # None: a trust policy (no Resource element)
    principal: PrincipalSpec | None  # None: identity-kind policy
    not_principal: bool
    conditions: tuple[Clause, ...]
    matched: Mapping[Source, MatchedStatement] = field(repr=False)
    #: statements with the same Resource/NotResource, Condition and Version share one result
    #: per request (copies of a statement across attached policies are common)
    memo_key: str = field(repr=False, default="")

    @property
    def is_deny(self) -> bool:
        return self.effect == "Deny"

    def test(self, state: RequestState) -> Tri:
        """Resource and Condition (the action is matched by the index); Kleene AND."""
        if not self.memo_key:
            return self._test(state)
        memo = state.ctx.memo
        r = memo.get(self.memo_key, MISSING)
        if r is MISSING:
            r = memo[self.memo_key] = self._test(state)
        return r  # type: ignore[return-value]

    def _test(self, state: RequestState) -> Tri:
        resources = self.resources
        r: Tri = True if resources is None else resources.test(state)
        if r is False or not self.conditions:
            return r
        c = evaluate_all(self.conditions, state.ctx)
        if c is False:
            return False
        return None if (c is None or r is None) else True


@dataclass(frozen=True, eq=False)
class Policy:
    """A validated, compiled policy. ``document`` is a plain copy of the JSON it came from."""

    policy_id: str
    version: str
    kind: Kind
    statements: tuple[Statement, ...]
    document: dict[str, Any] = field(repr=False)
    findings: tuple[Finding, ...] = field(repr=False)  # the non-ERROR findings
    index: ActionIndex = field(repr=False)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _compile_statement(st: dict[str, Any], index: int, policy_id: str, kind: str,
                       use_vars: bool) -> Statement:
    sid = st.get("Sid")
    effect: Literal["Allow", "Deny"] = "Deny" if st["Effect"] == "Deny" else "Allow"
    not_action = "NotAction" in st
    actions = tuple(a.lower() for a in _as_list(st["NotAction" if not_action else "Action"]))
    resources: Resources | None = None
    if kind != "trust":
        not_resource = "NotResource" in st
        patterns = _as_list(st["NotResource" if not_resource else "Resource"])
        resources = Resources(patterns, negate=not_resource, use_vars=use_vars)
    principal: PrincipalSpec | None = None
    not_principal = False
    if kind in ("resource", "trust"):
        not_principal = "NotPrincipal" in st
        principal = compile_principal(st["NotPrincipal" if not_principal else "Principal"])
    clauses = []
    for op_name, entries in (st.get("Condition") or {}).items():
        for key, values in entries.items():
            clauses.append(compile_clause(op_name, key, values, variables_enabled=use_vars))
    matched = {
        source: MatchedStatement(policy_id, sid, index, effect, source) for source in SOURCES
    }
    memo_key = ""
    if clauses or (resources is not None and resources.templates):  # worth sharing
        body = {k: st[k] for k in ("Resource", "NotResource", "Condition") if k in st}
        memo_key = "statement:" + json.dumps([body, kind == "trust", use_vars], sort_keys=True)
    return Statement(policy_id, sid, index, effect, actions, not_action, resources, principal,
                     not_principal, tuple(clauses), matched, memo_key)


def parse_policy(doc: str | bytes | Mapping[str, Any], *, policy_id: str = "",
                 kind: Kind = "identity", max_size: int | None = None) -> Policy:
    """Validate and compile a policy; :class:`PolicyError` when any finding is an ``ERROR``.

    ``max_size`` overrides the size quota of ``kind`` (see :func:`validate_policy`).
    """
    findings, value = analyze(doc, kind, max_size)
    if value is None or any(f.severity == "ERROR" for f in findings):
        raise PolicyError(findings)
    document: dict[str, Any] = plain(value)
    version = document.get("Version", "2008-10-17")
    raw = document["Statement"]
    items = raw if isinstance(raw, list) else [raw]
    use_vars = version == "2012-10-17"
    statements = tuple(
        _compile_statement(st, i, policy_id, kind, use_vars) for i, st in enumerate(items)
    )
    return Policy(policy_id, version, kind, statements, document, tuple(findings),
                  ActionIndex(statements))
