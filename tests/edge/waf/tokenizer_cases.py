"""Load the tokenizer tables in ``tokenizer_data/`` as pytest params with stable ids.

File format: one value per line; ``## `` starts a comment; ``## source: <tag> <origin>``
starts a section whose cases get ids ``<tag>-<n>``; ``\\n``/``\\t`` in a value are escapes.
Attack values are URL-decoded once (``%3C`` -> ``<``), as the engine decodes a query value
before it calls a tokenizer; benign values are stored as they arrive decoded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import unquote

import pytest

DATA = Path(__file__).parent / "tokenizer_data"


def load(name: str, *, decode: bool) -> list[tuple[str, str]]:
    """``[(id, value)]`` of ``tokenizer_data/<name>``."""
    cases: list[tuple[str, str]] = []
    tag, count = "bastion", 0
    for line in (DATA / name).read_text(encoding="utf-8").split("\n"):
        if line.startswith("## "):
            if line.startswith("## source: "):
                tag, count = line.split()[2], 0
            continue
        if not line:
            continue
        value = line.replace("\\n", "\n").replace("\\t", "\t")
        count += 1
        cases.append((f"{tag}-{count:03d}", unquote(value) if decode else value))
    return cases


def params(cases: Iterable[tuple[str, str]], known: dict[str, str]) -> list[object]:
    """pytest params; ids in ``known`` are strict xfails with the reason given."""
    out: list[object] = []
    for case_id, value in cases:
        marks = [pytest.mark.xfail(strict=True, reason=known[case_id])] if case_id in known else []
        out.append(pytest.param(value, id=case_id, marks=marks))
    return out


def hostile_inputs() -> list[object]:
    """Inputs meant to make a scanner slow or crash: 1 MiB values, nesting, broken UTF-16."""
    mib = 1 << 20
    cases = {
        "1mib-letters": "a" * mib,
        "1mib-spaces-then-attack": " " * mib + "' or 1=1--<script>alert(1)</script>",
        "1mib-digits": "9" * mib,
        "1mib-quotes": "'" * mib,
        "1mib-dquotes": '"' * mib,
        "1mib-backslashes-in-string": "'" + "\\a" * (mib // 2),
        "1mib-lt": "<" * mib,
        "1mib-tags": "<a>" * (mib // 3),
        "1mib-attrs": "<a " + "x=1 " * (mib // 4) + ">",
        "1mib-entities": '<a href="' + "&#x09;" * (mib // 6) + 'javascript:alert(1)">',
        "1mib-comment-pairs": "/**/" * (mib // 4),
        "nested-comments": "/*" * 50_000 + "*/" * 50_000,
        "unterminated-comment": "1 /* " + "x" * mib,
        "unterminated-string": "' " + "x" * mib,
        "unterminated-tag": "<img src=x " + "a" * mib,
        "unterminated-html-comment": "<!--" + "-" * mib,
        "nul-bytes": "1\x00or\x001=1" + "\x00" * mib,
        "lone-surrogates": "\ud800' or 1=1--\udfff<svg onload=alert(1)>",
        "huge-number": "1" + "0" * 100_000 + " or 1=1",
        "huge-hex": "0x" + "f" * mib,
        "huge-exponent": "1e" + "9" * mib,
        "many-semicolons": ";" * mib,
        "many-parens": "(" * mib,
        "many-at": "@" * mib,
        "many-dollar": "$$" * (mib // 2),
        "mixed-noise": ("'\"`<>/*-#@;()" * (mib // 14)),
    }
    return [pytest.param(v, id=k) for k, v in cases.items()]


def timed(fn: Callable[[str], str | None], value: str) -> tuple[str | None, float]:
    """Result and CPU seconds of one call."""
    start = time.process_time()
    result = fn(value)
    return result, time.process_time() - start
