"""Immutable sets of identity-kind policies with one merged action index."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from bastion.iam._index import ActionIndex, Candidates
from bastion.iam.policy import Policy


class PolicySet:
    """An immutable, indexed set of identity-kind policies (identity, boundary or session).

    Resource-based and trust policies carry a ``Principal`` and are evaluated on their own
    (``evaluate(..., resource_policy=...)``); putting one here is a ``ValueError``.
    """

    __slots__ = ("_policies", "_index")

    def __init__(self, policies: Iterable[Policy] = ()) -> None:
        items = tuple(policies)
        for p in items:
            if not isinstance(p, Policy):
                raise TypeError(f"PolicySet takes Policy objects, not {type(p).__name__}")
            if p.kind in ("resource", "trust"):
                raise ValueError(f"policy {p.policy_id!r} is a {p.kind} policy; pass it as "
                                 "resource_policy")
        self._policies = items
        self._index = ActionIndex([s for p in items for s in p.statements])

    @property
    def policies(self) -> tuple[Policy, ...]:
        return self._policies

    def candidates(self, action: str) -> Candidates:
        return self._index.candidates(action)

    def __len__(self) -> int:
        return len(self._policies)

    def __iter__(self) -> Iterator[Policy]:
        return iter(self._policies)

    def __repr__(self) -> str:
        return f"PolicySet({len(self._policies)} policies)"
