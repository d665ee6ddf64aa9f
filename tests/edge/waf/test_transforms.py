"""Transformations (edge/waf/transforms.py): ModSecurity's semantics, total on any input,
linear in its size."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.edge.waf.transforms import TRANSFORMS, apply, check_chain

CASES = [
    ("urlDecodeUni", "a%20b+c", "a b c"),
    ("urlDecodeUni", "%u0027%u003c", "'<"),
    ("urlDecodeUni", "..%c0%af..%c0%afetc", "../../etc"),
    ("urlDecodeUni", "%e0%80%afx", "/x"),
    ("urlDecodeUni", "..%c1%9cwin", "..\\win"),
    ("urlDecodeUni", "%uff0e%uff0e%u2215", "../"),
    ("urlDecodeUni", "100%", "100%"),  # invalid escapes are kept
    ("urlDecodeUni", "%zz%4", "%zz%4"),
    ("urlDecodeUni", "%ff%fe", "\ufffd\ufffd"),  # invalid UTF-8 is replaced, not an error
    ("htmlEntityDecode", "&lt;script&gt;&#x61;&#98;", "<script>ab"),
    ("htmlEntityDecode", "&#60script", "<script"),
    ("jsDecode", "\\x3cscript\\u003e\\74\\n", "<script><\n"),
    ("jsDecode", "trailing\\", "trailing\\"),
    ("jsDecode", "\\xZZ\\u12", "xZZu12"),
    ("cssDecode", "\\6a avascript\\3a", "javascript:"),
    ("cssDecode", "a\\\nb\\", "ab"),
    ("lowercase", "SeLeCt", "select"),
    ("compressWhitespace", "a \t\n b\xa0\xa0c", "a b c"),
    ("removeNulls", "a\x00b", "ab"),
    ("replaceComments", "un/**/ion/*x*/sel/*", "un ion sel "),
    ("normalizePath", "/a/./b//c/../d", "/a/b/d"),
    ("normalizePath", "/../../etc/passwd", "/../../etc/passwd"),
    ("normalizePath", "a/b/../../../x", "../x"),
    ("normalizePathWin", "C:\\windows\\..\\windows\\win.ini", "C:/windows/win.ini"),
    ("base64Decode", "PHNjcmlwdD4", "<script>"),
    ("base64Decode", "not base64!", "not base64!"),
    ("utf8toUnicode", "a\u00e9\uff0e", "a%u00e9."),
    ("cmdLine", "c^a\"t, /etc/passwd ; W'h'O'a'M'i", "cat/etc/passwd whoami"),
    ("shellUnquote", "c'a't${IFS}/etc/pa\\ss\"w\"d", "cat /etc/passwd"),
]


@pytest.mark.parametrize(("name", "value", "expected"), CASES,
                         ids=[f"{c[0]}:{c[1][:20]!r}" for c in CASES])
def test_transform(name: str, value: str, expected: str) -> None:
    assert TRANSFORMS[name](value) == expected


def test_chains_apply_in_order_and_unknown_names_are_refused() -> None:
    assert apply(check_chain(["urlDecodeUni", "urlDecodeUni", "lowercase"]),
                 "%252E%252E%252F") == "../"
    assert check_chain(["none", "lowercase"]) == ("lowercase",)
    with pytest.raises(ValueError, match="unknown transformation 'rot13'"):
        check_chain(["rot13"])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_every_transform_is_total(value: str) -> None:
    for fn in TRANSFORMS.values():
        assert isinstance(fn(value), str)


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transforms_are_linear_on_hostile_input(name: str) -> None:
    hostile = ("%u" * 50_000 + "\\x" * 50_000 + "&#" * 50_000 + "/*" * 50_000
               + "/.." * 50_000 + "%c0%af" * 20_000)
    start = time.process_time()
    TRANSFORMS[name](hostile)
    assert time.process_time() - start < 2.0
