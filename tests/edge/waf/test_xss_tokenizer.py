"""XSS tokenizer: public payloads are caught, HTML-ish prose and API values are not.

Tables: ``tokenizer_data/xss_attack.txt`` (PayloadsAllTheThings, our context and
obfuscation forms) and ``tokenizer_data/xss_benign.txt``; sources and licences in
``README-tokenizer-data.md``.
"""

from __future__ import annotations

import random

import pytest

from bastion.edge.waf.xss import MAX_ATTRS, MAX_TAGS, detect_xss
from tests.edge.waf.tokenizer_cases import hostile_inputs, load, params, timed

_OLD_BROWSERS = "needs a browser of the IE/Netscape era; modern parsers do not run it"
_FRAGMENT = "a fragment or locator probe, not an executable payload on its own"
KNOWN_MISSES = {
    "patt-intruders-011": _FRAGMENT,
    "patt-intruders-051": "onerror/= gives onerror no value in the HTML tokenizer",
    "patt-intruders-110": "'<script>/*' opens a script whose body is only a comment start",
    "patt-intruders-174": "the escaped quotes leave onerror inside an unquoted alt value",
    "patt-rsnake-002": _FRAGMENT,
    "patt-rsnake-010": _FRAGMENT,
    "patt-rsnake-029": _OLD_BROWSERS,
    "patt-rsnake-037": "scheme with a placeholder body ([code]) and no script",
    "patt-rsnake-038": "scheme with a placeholder body ([code]) and no script",
    "patt-rsnake-051": _FRAGMENT,
    "patt-rsnake-052": _OLD_BROWSERS,
    "patt-rsnake-058": "Flash getURL: a JavaScript URL inside a script string",
    "patt-rsnake-059": _FRAGMENT,
    "patt-rsnake-060": _OLD_BROWSERS,
    "patt-rsnake-062": _FRAGMENT,
    "patt-rsnake-064": "server-side include, not HTML",
    "patt-rsnake-065": "PHP, not HTML",
    "patt-quick-007": "script-context payload without a string to break",
    "patt-quick-008": "harmless markup (an injection marker in a heading)",
    "patt-quick-015": "script-context payload without a string to break",
    "patt-jhaddix-002": "a literal backslash-zero in the tag name: not a script tag",
    "patt-jhaddix-033": "'+' for spaces: form-decoding is the engine's step, not ours",
    "patt-jhaddix-035": "'+' for spaces: form-decoding is the engine's step, not ours",
    "patt-jhaddix-081": "an ordinary https link inside <math>",
}

ATTACKS = load("xss_attack.txt", decode=True)
BENIGN = load("xss_benign.txt", decode=False)


def test_tables_are_large_enough() -> None:
    assert len(ATTACKS) >= 150
    assert len(BENIGN) >= 150


@pytest.mark.parametrize("value", params(ATTACKS, KNOWN_MISSES))
def test_attack_is_detected(value: str) -> None:
    assert detect_xss(value) is not None


@pytest.mark.parametrize("value", params(BENIGN, {}))
def test_benign_value_passes(value: str) -> None:
    assert detect_xss(value) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("<script>alert(1)</script>", "tag:script", id="script-body"),
        pytest.param("<script src=//x.example/a.js>", "tag:script", id="script-src"),
        pytest.param("<iframe src=//x.example>", "tag:iframe", id="iframe-src"),
        pytest.param("<svg/onload=alert(1)>", "event:onload", id="slash-separator"),
        pytest.param("<x onpointerrawupdate=f()>", "event:onpointerrawupdate", id="any-tag"),
        pytest.param("<a href=jav&#x09;ascript:alert(1)>", "url:javascript", id="entity-tab"),
        pytest.param("<a href='&#0000106avascript:x()'>", "url:javascript", id="no-semicolon"),
        pytest.param("<a href=' javascript:x()'>", "url:javascript", id="leading-space"),
        pytest.param("<embed src=//x.example/a.swf>", "tag:embed", id="embed"),
        pytest.param("<a href='data:text/html,<script>'>", "url:data", id="data-url"),
        pytest.param("<iframe srcdoc='<b>'>", "attr:srcdoc", id="srcdoc"),
        pytest.param("<button formaction=javascript:x()>", "url:javascript", id="formaction"),
        pytest.param("<meta http-equiv=refresh content='0;url=//x'>", "tag:meta-http-equiv",
                     id="meta-refresh"),
        pytest.param("<style>a{b:expression(alert(1))}</style>", "css:expression",
                     id="style-expression"),
        pytest.param("<p style='x:expr/**/ession(1)'>", "css:expression", id="css-comment"),
        pytest.param('" onmouseover="alert(1)', "event:onmouseover", id="after-double-quote"),
        pytest.param("' onfocus='x()' autofocus '", "event:onfocus", id="after-single-quote"),
        pytest.param("x onclick=alert(1)", "event:onclick", id="unquoted-attribute"),
        pytest.param("javascript:alert(1)", "url:javascript", id="value-is-url"),
        pytest.param("';alert(1)//", "js:alert", id="javascript-string-break"),
        pytest.param("<noscript><p title='</noscript><img src=x onerror=x()>'>",
                     "event:onerror", id="markup-in-attribute-value"),
    ],
)
def test_reason(value: str, expected: str) -> None:
    assert detect_xss(value) == expected


def test_tag_flood_is_refused_not_passed() -> None:
    """Past MAX_TAGS tags the value is reported rather than let through unread."""
    assert detect_xss("<b>x</b>" * (MAX_TAGS // 2 - 1)) is None
    assert detect_xss("<b>x</b>" * MAX_TAGS + "<script>alert(1)</script>") == "tag-flood"


def test_attribute_flood_is_refused_not_half_read() -> None:
    assert detect_xss("<img " + "a=1 " * 30 + "onerror=alert(1)>") == "event:onerror"
    assert detect_xss("<img " + "a=1 " * (MAX_ATTRS + 1) + "onerror=alert(1)>") == "attr-flood"
    assert detect_xss("it's " + "a=1&" * (MAX_ATTRS + 1)) is None  # prose after a quote


@pytest.mark.parametrize("value", hostile_inputs())
def test_hostile_input_is_bounded(value: str) -> None:
    """Never raises; a 1 MiB value takes well under a second (linear scans, capped tags)."""
    result, seconds = timed(detect_xss, value)
    assert result is None or isinstance(result, str)
    assert seconds < 1.0


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("\ud800<svg onload=alert(1)>", id="lone-surrogate"),
        pytest.param(" " * (1 << 20) + "<script>alert(1)</script>", id="after-1mib-of-spaces"),
        pytest.param("<a href='" + "&#x09;" * 40 + "javascript:x()'>", id="many-tab-refs"),
    ],
)
def test_hostile_attack_still_detected(value: str) -> None:
    assert detect_xss(value) is not None


def test_random_noise_never_raises() -> None:
    rnd = random.Random(941)  # noqa: S311 - fuzzing, not crypto
    alphabet = "<>/=\"'` \t\nabcdefghijklmnopqrstuvwxyz:&#;x09()!-\x00\ud800é"
    for _ in range(5000):
        value = "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(60)))
        result = detect_xss(value)
        assert result is None or isinstance(result, str)
