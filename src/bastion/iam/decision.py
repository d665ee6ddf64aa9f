"""The result of an authorization decision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Source = Literal["identity", "resource", "boundary", "session"]
Outcome = Literal["allowed", "explicitDeny", "implicitDeny"]


@dataclass(frozen=True, slots=True)
class MatchedStatement:
    """A statement that decided the request (``index``: position in its policy's list)."""

    policy_id: str
    sid: str | None
    index: int
    effect: str
    source: Source

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy_id": self.policy_id,
            "sid": self.sid,
            "index": self.index,
            "effect": self.effect,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """``statements``: the matching Deny statements (explicitDeny), the Allow statements that
    granted the request (allowed), or nothing (implicitDeny, where ``reason`` names the gate)."""

    decision: Outcome
    statements: tuple[MatchedStatement, ...]
    reason: str

    @property
    def allowed(self) -> bool:
        return self.decision == "allowed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "allowed": self.allowed,
            "statements": [s.to_dict() for s in self.statements],
            "reason": self.reason,
        }
