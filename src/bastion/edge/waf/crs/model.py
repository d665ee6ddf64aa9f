"""The SecLang objects CRS is made of: variables, operators, actions, rules (with their
chain) and markers (ModSecurity Reference Manual v3, "Configuration Directives")."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Variable:
    """``COLL``, ``COLL:key``, ``COLL:/regex/``, ``!COLL:key`` (excluded), ``&COLL`` (count)."""

    collection: str
    key: str = ""
    regex: bool = False
    negated: bool = False
    count: bool = False


@dataclass(frozen=True)
class Operator:
    name: str  # rx, pm, eq, ... (no "@")
    argument: str = ""
    negated: bool = False


@dataclass
class SecRule:
    """A ``SecRule`` or ``SecAction`` (``operator.name == "unconditionalMatch"``); the rules of
    a ``chain`` hang off ``chained`` (the first one carries id, phase and disruptive action)."""

    id: str
    phase: int
    variables: tuple[Variable, ...]
    operator: Operator
    transforms: tuple[str, ...]
    actions: list[tuple[str, str]]
    file: str = ""
    line: int = 0
    chained: SecRule | None = None
    tags: tuple[str, ...] = ()
    msg: str = ""
    severity: str = ""
    disruptive: str = ""  # deny, block, pass, allow, drop, redirect
    capture: bool = False
    log: bool = True

    def links(self) -> list[SecRule]:
        """This rule and the rules chained to it, in order."""
        out, rule = [], self
        while rule is not None:
            out.append(rule)
            rule = rule.chained  # type: ignore[assignment]
        return out


@dataclass(frozen=True)
class Marker:
    """``SecMarker NAME``: the target of ``skipAfter``."""

    name: str


@dataclass
class Skipped:
    id: str
    file: str
    reason: str


@dataclass
class Defaults:
    """``SecDefaultAction`` per phase: the disruptive action a ``block`` means."""

    disruptive: dict[int, str] = field(default_factory=lambda: {1: "pass", 2: "pass"})
