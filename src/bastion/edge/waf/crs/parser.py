"""A lexer and parser for the SecLang subset CRS is written in (ModSecurity Reference Manual
v3, "Configuration Directives" and "Variables/Operators/Actions" syntax): directives with
``\\``-newline continuations and ``#`` comments, double-quoted arguments (``\\"`` is a quote,
any other backslash is kept for the regex), comma-separated actions with single-quoted values,
``|``-separated variables with ``!``/``&`` prefixes and ``:key``, ``:'key'`` or ``:/regex/``.

Malformed input raises ``SecLangError`` with the line number; nothing is evaluated here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from bastion.edge.waf.crs.model import Operator, Variable


class SecLangError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass(frozen=True)
class Directive:
    name: str
    args: tuple[str, ...]
    line: int


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, text) of each directive; continuations joined, comments dropped."""
    buf: list[str] = []
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not buf:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            start = n
        if line.endswith("\\") and not line.endswith("\\\\\\"):
            buf.append(line[:-1])
            continue
        buf.append(line)
        yield start, "".join(buf).strip()
        buf = []
    if buf:
        yield start, "".join(buf).strip()


def _words(line: str, n: int) -> list[str]:
    """The whitespace-separated words of a directive; quoted words unquoted (``\\"``→``"``)."""
    out: list[str] = []
    i, size = 0, len(line)
    while i < size:
        c = line[i]
        if c in " \t":
            i += 1
            continue
        if c in "\"'":
            word: list[str] = []
            i += 1
            while i < size and line[i] != c:
                if line[i] == "\\" and i + 1 < size and line[i + 1] == c:
                    i += 1
                word.append(line[i])
                i += 1
            if i >= size:
                raise SecLangError(n, "unterminated quoted argument")
            out.append("".join(word))
            i += 1
        else:
            j = i
            while j < size and line[j] not in " \t":
                j += 1
            out.append(line[i:j])
            i = j
    return out


def directives(text: str) -> list[Directive]:
    """The directives of a configuration file's text, in order."""
    return [Directive(words[0], tuple(words[1:]), n)
            for n, line in _logical_lines(text) if (words := _words(line, n))]


def actions(text: str, line: int = 0) -> list[tuple[str, str]]:
    """``id:1,phase:2,t:none,msg:'a, b',setvar:tx.x=+1`` as (name, value) pairs."""
    out: list[tuple[str, str]] = []
    i, size = 0, len(text)
    while i < size:
        while i < size and text[i] in " \t,":
            i += 1
        if i >= size:
            break
        j = i
        while j < size and text[j] not in ":,":
            j += 1
        name = text[i:j].strip()
        value = ""
        if j < size and text[j] == ":":
            j += 1
            while j < size and text[j] in " \t":
                j += 1
            if j < size and text[j] == "'":
                buf: list[str] = []
                j += 1
                while j < size and text[j] != "'":
                    if text[j] == "\\" and j + 1 < size and text[j + 1] == "'":
                        j += 1
                    buf.append(text[j])
                    j += 1
                if j >= size:
                    raise SecLangError(line, f"unterminated quote in action {name!r}")
                value = "".join(buf)
                j += 1
            else:
                k = j
                while k < size and text[k] != ",":
                    k += 1
                value = text[j:k].strip()
                j = k
        if not name:
            raise SecLangError(line, "empty action")
        out.append((name, value))
        i = j
    return out


def variables(text: str, line: int = 0) -> tuple[Variable, ...]:
    """``ARGS|!ARGS:foo|&TX:x|REQUEST_HEADERS:/^x-/|XML:/*``."""
    out: list[Variable] = []
    i, size = 0, len(text)
    while i < size:
        negated = count = False
        if text[i] == "!":
            negated, i = True, i + 1
        elif text[i] == "&":
            count, i = True, i + 1
        j = i
        while j < size and text[j] not in ":|":
            j += 1
        coll = text[i:j].strip().upper()
        if not coll:
            raise SecLangError(line, f"empty variable in {text!r}")
        key, regex = "", False
        if j < size and text[j] == ":":
            j += 1
            if j < size and text[j] in "'/" and coll != "XML":
                quote = text[j]
                end = text.find(quote, j + 1)
                while end > 0 and quote == "/" and text[end - 1] == "\\":
                    end = text.find(quote, end + 1)
                if end < 0:
                    raise SecLangError(line, f"unterminated key in {text!r}")
                key, regex = text[j + 1:end], quote == "/"
                j = end + 1
            else:
                k = j
                while k < size and text[k] != "|":
                    k += 1
                key = text[j:k]
                j = k
        out.append(Variable(coll, key, regex, negated, count))
        if j < size and text[j] != "|":
            raise SecLangError(line, f"unexpected {text[j]!r} in variables")
        i = j + 1
    return tuple(out)


def operator(text: str) -> Operator:
    """``@rx a|b``, ``!@eq 0``, a bare regex (``@rx``)."""
    negated = text.startswith("!")
    body = text[1:] if negated else text
    if body.startswith("@"):
        name, _, arg = body[1:].partition(" ")
        return Operator(name, arg.strip() if name != "rx" else arg, negated)
    return Operator("rx", body, negated)
