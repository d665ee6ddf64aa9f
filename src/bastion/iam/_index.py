"""Statements indexed by action, so that a decision never scans every statement.

Index layout (built once per :class:`~bastion.iam.PolicySet` or :class:`~bastion.iam.Policy`):

- exact lowercase action (``orders:getorder``) → statements;
- service prefix (``orders``) → patterns with a wildcard only after the colon (``orders:get*``);
- patterns with a wildcard in the service part (``*``, ``ord*:get*``);
- ``NotAction`` statements (they apply to every action *not* listed).

The candidates for an action depend on the action alone (Action never holds policy variables), so
they are memoised per action string, up to :data:`MEMO_SIZE` actions of at most
:data:`MEMO_MAX_ACTION` characters; the memo is an internal cache of an immutable value.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from bastion.iam._wildcard import Matcher, compile_glob, has_wildcard

if TYPE_CHECKING:
    from bastion.iam.policy import Statement

MEMO_SIZE = 4096
MEMO_MAX_ACTION = 256


class Selection:
    """The Deny (or Allow) statements of one action, in policy order, with a resource pre-filter.

    Statements whose Resource element is "equals one of these ARNs / starts with one of these
    prefixes" (``Resources.keys``) are found by dictionary lookups: one for the exact ARN and one
    per distinct prefix length (``resource[:n]``), instead of one test per statement. The rest
    (``general``: NotResource, variables, wildcards before the resource part, trust policies)
    are tested one by one. :meth:`select` returns ``(ordinal, statement, resource_matched)``.
    """

    __slots__ = ("all", "general", "exact", "prefixes")

    def __init__(self, statements: Sequence[Statement]) -> None:
        self.all = tuple(statements)
        general: list[tuple[int, Statement]] = []
        exact: dict[str, list[tuple[int, Statement]]] = {}
        by_length: dict[int, dict[str, list[tuple[int, Statement]]]] = {}
        for ordinal, st in enumerate(self.all):
            keys = st.resources.keys if st.resources is not None else None
            if keys is None:
                general.append((ordinal, st))
                continue
            for arn in keys[0]:
                exact.setdefault(arn, []).append((ordinal, st))
            for prefix in keys[1]:
                by_length.setdefault(len(prefix), {}).setdefault(prefix, []).append((ordinal, st))
        self.general = tuple(general)
        self.exact = {k: tuple(v) for k, v in exact.items()}
        self.prefixes = tuple(
            (n, {k: tuple(v) for k, v in table.items()}) for n, table in sorted(by_length.items())
        )

    def __len__(self) -> int:
        return len(self.all)

    def __iter__(self) -> Iterator[Statement]:
        return iter(self.all)

    def select(self, resource: str) -> list[tuple[int, Statement, bool]]:
        """Statements that may apply to ``resource``, in policy order; the flag tells whether
        the Resource element is already known to match (only the Condition remains)."""
        out = [(o, st, False) for o, st in self.general]
        seen: set[int] = set()
        hits = self.exact.get(resource)
        if hits:
            for o, st in hits:
                seen.add(o)
                out.append((o, st, True))
        for n, table in self.prefixes:
            hits = table.get(resource[:n])
            if hits:
                for o, st in hits:
                    if o not in seen:
                        seen.add(o)
                        out.append((o, st, True))
        if self.general and seen or len(seen) > 1:
            out.sort(key=_ordinal)
        return out


def _ordinal(item: tuple[int, Statement, bool]) -> int:
    return item[0]


Candidates = tuple[Selection, Selection]  # (denies, allows)


class ActionIndex:
    __slots__ = ("statements", "exact", "by_service", "wild", "not_action", "_memo")

    def __init__(self, statements: Sequence[Statement]) -> None:
        self.statements = tuple(statements)
        self.exact: dict[str, list[int]] = {}
        self.by_service: dict[str, list[tuple[Matcher, int]]] = {}
        self.wild: list[tuple[Matcher, int]] = []
        self.not_action: list[tuple[tuple[Matcher, ...], int]] = []
        for ordinal, st in enumerate(self.statements):
            if st.not_action:
                self.not_action.append((tuple(compile_glob(a) for a in st.actions), ordinal))
                continue
            for action in st.actions:
                service, sep, _ = action.partition(":")
                if not has_wildcard(action):
                    self.exact.setdefault(action, []).append(ordinal)
                elif sep and not has_wildcard(service):
                    self.by_service.setdefault(service, []).append((compile_glob(action), ordinal))
                else:
                    self.wild.append((compile_glob(action), ordinal))
        self._memo: dict[str, Candidates] = {}

    def candidates(self, action: str) -> Candidates:
        """Statements whose Action/NotAction matches the lowercase ``action``, in policy order."""
        hit = self._memo.get(action)
        if hit is not None:
            return hit
        found = self._compute(action)
        if len(action) <= MEMO_MAX_ACTION:
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            self._memo[action] = found
        return found

    def _compute(self, action: str) -> Candidates:
        ordinals = set(self.exact.get(action, ()))
        service, sep, _ = action.partition(":")
        if sep:
            for matcher, ordinal in self.by_service.get(service, ()):
                if ordinal not in ordinals and matcher(action):
                    ordinals.add(ordinal)
        for matcher, ordinal in self.wild:
            if ordinal not in ordinals and matcher(action):
                ordinals.add(ordinal)
        for matchers, ordinal in self.not_action:
            if not any(m(action) for m in matchers):
                ordinals.add(ordinal)
        chosen = [self.statements[o] for o in sorted(ordinals)]
        return (
            Selection([s for s in chosen if s.is_deny]),
            Selection([s for s in chosen if not s.is_deny]),
        )
