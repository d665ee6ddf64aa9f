"""The authorization request: who does what to which resource, in which context."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Request:
    """``context`` keys are case-insensitive; values are ``str | int | float | bool`` or a
    list/tuple of those (a multi-valued key such as ``bastion:Scope``).

    Global keys (``aws:SourceIp``, ``aws:CurrentTime``, ``aws:PrincipalTag/<k>``, ``aws:username``,
    ``bastion:ClientId``...) are ordinary entries that the caller fills; nothing is derived from
    ``principal``. Anything else in ``context`` (wrong types, NaN, nested mappings, a non-mapping)
    is tolerated: it makes the conditions that read it *unknown*, which fails closed.
    """

    principal: str
    action: str
    resource: str
    context: Mapping[str, object] = field(default_factory=dict, hash=False)
