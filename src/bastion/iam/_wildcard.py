"""Glob matching with IAM's two wildcards: ``*`` (any run, possibly empty) and ``?`` (one char).

IAM JSON policy elements: Action ("You can use wildcards (``*`` or ``?``)"), Resource, and the
``StringLike`` / ``ArnLike`` condition operators all share this matcher. There are no character
classes: ``[`` is an ordinary character (unlike :mod:`fnmatch`).

The matcher never backtracks over the subject: the pattern is split on ``*`` into fixed-length
segments; the first is anchored at the start, the last at the end, and every middle segment is
placed at its leftmost possible position (``str.find`` or, for segments holding ``?``, a
quantifier-free regex). Leftmost placement is optimal because segments have a fixed length, so the
work is O(len(subject) x len(pattern)) in C, whatever the subject (a 1 MB hostile string included).
A translated regex such as ``^a.*b.*c$`` would instead backtrack polynomially on such a subject.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence

Matcher = Callable[[str], bool]


class Wild(enum.Enum):
    """Wildcard token; literal text is carried as ``str`` tokens."""

    STAR = "*"
    QMARK = "?"


STAR = Wild.STAR
QMARK = Wild.QMARK
Token = str | Wild


def has_wildcard(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


def _always(_subject: str) -> bool:
    return True


class _Segment:
    """A fixed-length run of literal text and ``?``."""

    __slots__ = ("length", "literal", "regex")

    def __init__(self, runs: Sequence[Token]) -> None:
        self.length = sum(len(r) if isinstance(r, str) else 1 for r in runs)
        if QMARK in runs:
            self.literal: str | None = None
            self.regex: re.Pattern[str] | None = re.compile(
                "".join("." if isinstance(r, Wild) else re.escape(r) for r in runs), re.DOTALL
            )
        else:
            self.literal = "".join(r for r in runs if isinstance(r, str))
            self.regex = None

    def at(self, subject: str, pos: int) -> bool:
        if self.literal is not None:
            return subject.startswith(self.literal, pos)
        assert self.regex is not None
        return self.regex.match(subject, pos) is not None

    def find(self, subject: str, start: int, end: int) -> int:
        if self.literal is not None:
            return subject.find(self.literal, start, end)
        assert self.regex is not None
        found = self.regex.search(subject, start, end)
        return -1 if found is None else found.start()


class _Exact:
    __slots__ = ("seg",)

    def __init__(self, seg: _Segment) -> None:
        self.seg = seg

    def __call__(self, subject: str) -> bool:
        return len(subject) == self.seg.length and self.seg.at(subject, 0)


class _PrefixSuffix:
    __slots__ = ("prefix", "suffix", "minimum")

    def __init__(self, prefix: str, suffix: str) -> None:
        self.prefix = prefix
        self.suffix = suffix
        self.minimum = len(prefix) + len(suffix)

    def __call__(self, subject: str) -> bool:
        return (
            len(subject) >= self.minimum
            and subject.startswith(self.prefix)
            and subject.endswith(self.suffix)
        )


class _General:
    __slots__ = ("first", "last", "middle", "minimum")

    def __init__(self, segments: list[_Segment]) -> None:
        self.first = segments[0]
        self.last = segments[-1]
        self.middle = tuple(s for s in segments[1:-1] if s.length)
        self.minimum = sum(s.length for s in segments)

    def __call__(self, subject: str) -> bool:
        n = len(subject)
        if n < self.minimum:
            return False
        if not self.first.at(subject, 0):
            return False
        end = n - self.last.length
        if not self.last.at(subject, end):
            return False
        pos = self.first.length
        for seg in self.middle:
            found = seg.find(subject, pos, end)
            if found < 0:
                return False
            pos = found + seg.length
        return True


def runs(tokens: Sequence[Token]) -> list[Token]:
    """Merge adjacent literal tokens and collapse runs of ``*``."""
    out: list[Token] = []
    for tok in tokens:
        if isinstance(tok, Wild):
            if tok is STAR and out and out[-1] is STAR:
                continue
            out.append(tok)
        elif tok:
            if out and isinstance(out[-1], str):
                out[-1] += tok
            else:
                out.append(tok)
    return out


def compile_tokens(tokens: Sequence[Token]) -> Matcher:
    """Compile a token list: ``str`` tokens are literal (even ``"*"``), ``Wild`` are wildcards."""
    parts = runs(tokens)
    n = len(parts)
    if n == 0:
        return "".__eq__
    if n == 1:
        only = parts[0]
        if isinstance(only, str):
            return only.__eq__
        if only is STAR:
            return _always
    if QMARK not in parts:
        stars = parts.count(STAR)
        if stars == 1:
            if n == 2 and parts[1] is STAR:
                prefix = parts[0]
                assert isinstance(prefix, str)
                return lambda s: s.startswith(prefix)
            if n == 2 and parts[0] is STAR:
                suffix = parts[1]
                assert isinstance(suffix, str)
                return lambda s: s.endswith(suffix)
            first, _, last = parts
            assert isinstance(first, str) and isinstance(last, str)
            return _PrefixSuffix(first, last)
    segments: list[list[Token]] = [[]]
    for p in parts:
        if p is STAR:
            segments.append([])
        else:
            segments[-1].append(p)
    if len(segments) == 1:
        return _Exact(_Segment(segments[0]))
    return _General([_Segment(s) for s in segments])


def tokenize(pattern: str) -> list[Token]:
    """Split a plain pattern (no policy variables) into literal runs and wildcards."""
    tokens: list[Token] = []
    start = 0
    for i, ch in enumerate(pattern):
        if ch == "*" or ch == "?":
            if i > start:
                tokens.append(pattern[start:i])
            tokens.append(STAR if ch == "*" else QMARK)
            start = i + 1
    if start < len(pattern):
        tokens.append(pattern[start:])
    return tokens


def compile_glob(pattern: str) -> Matcher:
    """Compile ``pattern`` (``*`` and ``?`` wildcards, everything else literal)."""
    return compile_tokens(tokenize(pattern))
