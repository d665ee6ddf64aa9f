"""IAM policy elements: Variables and tags.

Rules implemented (AWS IAM User Guide, "IAM policy elements: Variables and tags"):

- Variables exist only in ``"Version": "2012-10-17"`` policies; in ``2008-10-17`` (or without a
  Version) ``${...}`` is literal text.
- They may appear in ``Resource``/``NotResource`` and in condition values of the String, ARN and
  Bool operator families; never in ``Action``.
- ``${key}`` is replaced by the single value of the context key (case-insensitive name).
  ``${key, 'default'}`` supplies a default when the key is absent.
- ``${*}``, ``${?}`` and ``${$}`` stand for the literal characters ``*``, ``?`` and ``$``.
- A substituted value is always literal text: a user named ``*`` does not become a wildcard.

Unresolvable variables (key absent and no default, multi-valued key, value of an unsupported type)
make the value *unknown*; see :mod:`bastion.iam.evaluate` for how unknown resolves (no match for
Allow, match for Deny).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from bastion.iam._wildcard import Token, Wild, tokenize
from bastion.iam.context import MISSING, ContextView, as_text

_VARIABLE = re.compile(r"\$\{([^{}]*)\}")
_INNER = re.compile(r"^\s*([^\s,'$]|[^\s,'$][^,'$]*[^\s,'$])\s*(?:,\s*'([^']*)'\s*)?$")
_SPECIAL = {"*": "*", "?": "?", "$": "$"}


@dataclass(frozen=True, slots=True)
class Var:
    """``${key}`` or ``${key, 'default'}``; ``key`` is lowercase."""

    key: str
    default: str | None = None


Piece = str | Wild | Var


def check_variable_syntax(text: str) -> str | None:
    """An error message when ``text`` holds a malformed variable, else ``None``."""
    for body in _VARIABLE.findall(text):
        if body.strip() in _SPECIAL:
            continue
        if not _INNER.fullmatch(body):
            return f"malformed policy variable ${{{body}}}"
    rest = _VARIABLE.sub("", text)
    if "${" in rest:
        return "unterminated policy variable '${'"
    return None


def parse(text: str, *, variables: bool, wildcards: bool) -> list[Piece]:
    """Split ``text`` into literal, wildcard and variable pieces.

    Malformed ``${`` sequences stay literal (validation reports them as errors beforehand).
    """

    def literal(chunk: str) -> list[Piece]:
        if not chunk:
            return []
        if wildcards:
            return list(tokenize(chunk))
        return [chunk]

    if not variables or "${" not in text:
        return literal(text)
    pieces: list[Piece] = []
    pos = 0
    for m in _VARIABLE.finditer(text):
        body = m.group(1)
        stripped = body.strip()
        if stripped in _SPECIAL:
            var: Piece = _SPECIAL[stripped]
        else:
            inner = _INNER.fullmatch(body)
            if inner is None:
                continue
            var = Var(inner.group(1).lower(), inner.group(2))
        pieces.extend(literal(text[pos : m.start()]))
        pieces.append(var)
        pos = m.end()
    pieces.extend(literal(text[pos:]))
    return pieces


def has_var(pieces: Sequence[Piece]) -> bool:
    return any(isinstance(p, Var) for p in pieces)


def variable_value(var: Var, ctx: ContextView) -> str | None:
    """The text a variable stands for in this request, or ``None`` when unresolvable."""
    raw = ctx.get(var.key)
    if raw is MISSING or raw is None:
        return var.default
    if isinstance(raw, list | tuple):
        # Multivalued context keys cannot be used as variables; a one-element list is
        # accepted as the single value.
        if len(raw) != 1:
            return None
        raw = raw[0]
    return as_text(raw)


def resolve(pieces: Sequence[Piece], ctx: ContextView) -> list[Token] | None:
    """Substitute variables (as literal text); ``None`` when any is unresolvable."""
    out: list[Token] = []
    for p in pieces:
        if isinstance(p, Var):
            value = variable_value(p, ctx)
            if value is None:
                return None
            out.append(value)
        else:
            out.append(p)
    return out


def resolve_text(pieces: Sequence[Piece], ctx: ContextView) -> str | None:
    """Like :func:`resolve`, joined into one string (a wildcard piece becomes its character)."""
    out: list[str] = []
    for p in pieces:
        if type(p) is str:
            out.append(p)
        elif isinstance(p, Var):
            value = variable_value(p, ctx)
            if value is None:
                return None
            out.append(value)
        else:
            assert isinstance(p, Wild)
            out.append(p.value)
    return "".join(out)


def split_pieces(pieces: Sequence[Piece], sep: str, maxsplit: int) -> list[list[Piece]]:
    """Split on ``sep`` inside literal pieces only (a variable's value never splits)."""
    parts: list[list[Piece]] = [[]]
    for p in pieces:
        if isinstance(p, str) and len(parts) <= maxsplit and sep in p:
            chunks = p.split(sep, maxsplit - len(parts) + 1)
            for i, chunk in enumerate(chunks):
                if i:
                    parts.append([])
                if chunk:
                    parts[-1].append(chunk)
        else:
            parts[-1].append(p)
    return parts
