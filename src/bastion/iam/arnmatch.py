"""ARN patterns: the ``Resource`` element and the ARN condition operators.

"IAM JSON policy elements: Condition operators › Amazon Resource Name (ARN) condition operators":
"Each of the six colon-delimited components of the ARN is checked separately and each can include
multi-character match wildcards (*) or single-character match wildcards (?)". The resource
component is everything after the fifth colon. Patterns with policy variables
(:class:`ArnTemplate`) resolve only their variable components per request; a variable's value is
literal text and never splits a component.
"""

from __future__ import annotations

from collections.abc import Sequence

from bastion.iam import variables
from bastion.iam._wildcard import Matcher, Wild, compile_tokens
from bastion.iam.arn import split_arn
from bastion.iam.context import MISSING, ContextView
from bastion.iam.variables import Var

Tri = bool | None


class ArnMatcher:
    """Six per-component matchers; a subject that is not an ARN never matches.

    When the first five components are literal (the usual case) the pattern is also kept as
    ``prefix`` (``arn:p:s:r:a:``, colon-terminated) plus a matcher of the resource part, so a
    subject is tested with one ``startswith`` and no split: a literal prefix ending in ``:`` fixes
    the first five components exactly, since none of them holds a colon.
    """

    __slots__ = ("parts", "prefix", "tail")

    def __init__(self, parts: tuple[Matcher, ...], prefix: str | None = None) -> None:
        self.parts = parts
        self.prefix = prefix
        self.tail = parts[5] if parts else None

    def __call__(self, subject: str) -> bool:
        prefix = self.prefix
        if prefix is not None:
            assert self.tail is not None
            return subject.startswith(prefix) and self.tail(subject[len(prefix):])
        comps = split_arn(subject)
        return comps is not None and self.match_parts(comps)

    def match_parts(self, comps: Sequence[str]) -> bool:
        for m, c in zip(self.parts, comps, strict=True):
            if not m(c):
                return False
        return True


class _NeverArn(ArnMatcher):
    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(())

    def match_parts(self, comps: Sequence[str]) -> bool:
        return False


NEVER_ARN = _NeverArn()


class _Component:
    """One ARN component holding policy variables, resolved per request.

    The common shapes are specialised: no wildcard (``user/${aws:username}``: equality) and a
    single trailing ``*`` (``home/${aws:username}/*``: prefix); anything else compiles a matcher
    from the resolved tokens. The resolved text is shared per request by identical components.
    """

    __slots__ = ("pieces", "mode", "memo_key")

    def __init__(self, pieces: list[variables.Piece]) -> None:
        wild = [p for p in pieces if isinstance(p, Wild)]
        if not wild:
            self.mode = "eq"
        elif len(wild) == 1 and pieces[-1] is Wild.STAR:
            self.mode = "prefix"
            pieces = pieces[:-1]
        else:
            self.mode = "general"
        self.pieces = pieces
        self.memo_key = "arn-component:" + repr(pieces)

    def match(self, part: str, ctx: ContextView) -> Tri:
        if self.mode == "general":
            tokens = variables.resolve(self.pieces, ctx)
            if tokens is None:
                return None
            return compile_tokens(tokens)(part)
        memo = ctx.memo
        text = memo.get(self.memo_key, MISSING)
        if text is MISSING:
            text = memo[self.memo_key] = variables.resolve_text(self.pieces, ctx)
        if text is None:
            return None
        assert isinstance(text, str)
        return part == text if self.mode == "eq" else part.startswith(text)


class ArnTemplate:
    """An ARN pattern with policy variables: static components are precompiled, the others are
    resolved per request (a variable's value is literal and never splits a component).

    As for :class:`ArnMatcher`, a literal first five components become one ``prefix``.
    """

    __slots__ = ("comps", "prefix")

    def __init__(self, comps: tuple[Matcher | _Component, ...], prefix: str | None) -> None:
        self.comps = comps
        self.prefix = prefix

    def match_text(self, subject: str, ctx: ContextView) -> Tri:
        prefix = self.prefix
        if prefix is not None:
            tail = self.comps[5]
            if not subject.startswith(prefix):
                return False
            rest = subject[len(prefix):]
            if isinstance(tail, _Component):
                return tail.match(rest, ctx)
            return tail(rest)
        parts = split_arn(subject)
        if parts is None:
            return False
        return self.match_parts(parts, ctx)

    def match_parts(self, parts: Sequence[str], ctx: ContextView) -> Tri:
        unknown = False
        templated = []
        for comp, part in zip(self.comps, parts, strict=True):
            if isinstance(comp, _Component):
                templated.append((comp, part))
            elif not comp(part):
                return False
        for comp, part in templated:
            r = comp.match(part, ctx)
            if r is False:
                return False
            if r is None:
                unknown = True
        return None if unknown else True


def compile_arn(pieces: Sequence[variables.Piece]) -> ArnMatcher | ArnTemplate:
    """Compile ARN pattern pieces; a pattern that is not six components never matches."""
    comps = variables.split_pieces(pieces, ":", 5)
    if len(comps) != 6 or comps[0] != ["arn"]:
        return NEVER_ARN
    prefix: str | None = None
    if not any(isinstance(p, Wild | Var) for comp in comps[:5] for p in comp):
        # literal first five components (each without ':'), see ArnMatcher
        prefix = ":".join("".join(p for p in comp if isinstance(p, str)) for comp in comps[:5])
        prefix += ":"
    compiled: list[Matcher | _Component] = []
    for comp in comps:
        if variables.has_var(comp):
            compiled.append(_Component(comp))
        else:
            compiled.append(compile_tokens([p for p in comp if not isinstance(p, variables.Var)]))
    if any(isinstance(c, _Component) for c in compiled):
        return ArnTemplate(tuple(compiled), prefix)
    return ArnMatcher(tuple(c for c in compiled if not isinstance(c, _Component)), prefix)
