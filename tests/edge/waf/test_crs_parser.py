"""The SecLang lexer and parser on tricky snippets, and the loader and interpreter on small
hand-written rule sets (chain, setvar macros, ctl, skipAfter, paranoia gating)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.edge.waf.crs import CrsWaf, load_crs
from bastion.edge.waf.crs.model import Variable
from bastion.edge.waf.crs.parser import SecLangError, actions, directives, operator, variables
from bastion.edge.waf.decode import HttpRequest


def test_continuations_comments_and_quotes() -> None:
    text = (
        '# a comment\n'
        'SecRule REQUEST_HEADERS:User-Agent "@rx ^a\\"b\\\\d" \\\n'
        '    "id:1,\\\n'
        '    phase:1,pass,msg:\'it\\\'s, here\'"\n'
        '  # indented comment\n'
        'SecMarker "END-X"\n')
    ds = directives(text)
    assert [d.name for d in ds] == ["SecRule", "SecMarker"]
    rule = ds[0]
    assert rule.line == 2
    assert rule.args[0] == "REQUEST_HEADERS:User-Agent"
    assert rule.args[1] == '@rx ^a"b\\\\d'  # \" unquoted, other backslashes kept
    assert actions(rule.args[2]) == [("id", "1"), ("phase", "1"), ("pass", ""),
                                     ("msg", "it's, here")]
    assert ds[1].args == ("END-X",)


@pytest.mark.parametrize(("text", "expected"), [
    ("ARGS", (Variable("ARGS"),)),
    ("ARGS|!ARGS:foo", (Variable("ARGS"), Variable("ARGS", "foo", negated=True))),
    ("&TX:x", (Variable("TX", "x", count=True),)),
    ("REQUEST_COOKIES:/__utm|_pk/", (Variable("REQUEST_COOKIES", "__utm|_pk", regex=True),)),
    ("request_headers:'x|y'|XML:/*",
     (Variable("REQUEST_HEADERS", "x|y"), Variable("XML", "/*"))),
], ids=["plain", "negated-key", "count", "regex-key-with-bar", "quoted-key-and-xml"])
def test_variables(text: str, expected: tuple[Variable, ...]) -> None:
    assert variables(text) == expected


def test_operators() -> None:
    assert operator("@rx a b") == operator("a b")
    assert operator("!@within %{tx.m}").negated
    assert operator("@pmFromFile x.data").argument == "x.data"
    assert operator("@eq 0").name == "eq"


@pytest.mark.parametrize("text", ['SecRule ARGS "@rx x', "SecAction \"id:1,msg:'x\""],
                         ids=["unterminated-argument", "unterminated-action-quote"])
def test_malformed_is_an_error_with_a_line(text: str) -> None:
    with pytest.raises(SecLangError, match="line 1"):
        for d in directives(text):
            actions(d.args[-1], d.line)


RULES = r"""
SecComponentSignature "TEST/1.0"
SecDefaultAction "phase:2,log,auditlog,pass"
SecRule &TX:paranoia_level "@eq 0" "id:10,phase:1,pass,nolog,setvar:tx.paranoia_level=1"
SecAction "id:11,phase:1,pass,nolog,setvar:tx.anomaly_score=0,setvar:tx.critical=5"
SecRule TX:PARANOIA_LEVEL "@lt 2" "id:20,phase:2,pass,nolog,skipAfter:END-PL2"
SecRule ARGS "@contains pl2only" "id:21,phase:2,block,severity:'CRITICAL',\
    setvar:'tx.anomaly_score=+%{tx.critical}'"
SecMarker "END-PL2"
SecRule ARGS:x "@rx ^(\d+)$" "id:30,phase:2,block,capture,chain,severity:'CRITICAL'"
    SecRule TX:1 "@gt 100" "setvar:'tx.anomaly_score=+%{tx.critical}'"
SecRule REQUEST_HEADERS:X-Skip "@streq yes" "id:40,phase:1,pass,nolog,ctl:ruleRemoveById=50"
SecRule ARGS "@pm evil wicked" "id:50,phase:2,block,t:lowercase,severity:'CRITICAL',\
    setvar:'tx.anomaly_score=+%{tx.critical}'"
SecRule ARGS "@rx (?<=a)b" "id:60,phase:2,block"
SecRule RESPONSE_BODY "@rx x" "id:70,phase:4,block"
SecRule TX:ANOMALY_SCORE "@ge 5" "id:99,phase:2,deny,msg:'score %{tx.anomaly_score}'"
"""


@pytest.fixture
def crs_dir(tmp_path: Path) -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "REQUEST-1-TEST.conf").write_text(RULES)
    return tmp_path


def _ids(waf: CrsWaf, target: str, headers: list[tuple[str, str]] | None = None) -> set[str]:
    return {m.rule_id for m in waf.inspect(HttpRequest("GET", target, headers or [])).matches}


def test_loader_reports_skips(crs_dir: Path) -> None:
    rs = load_crs(crs_dir)
    assert rs.version == "TEST/1.0"
    assert {s.id: s.reason for s in rs.skipped} == {
        "60": "regex not supported by RE2: invalid perl operator: (?<=",
        "70": "response phase (3-5): responses are not inspected"}


def test_sequential_semantics(crs_dir: Path) -> None:
    pl1 = CrsWaf(load_crs(crs_dir, paranoia=1))
    pl2 = CrsWaf(load_crs(crs_dir, paranoia=2))
    assert _ids(pl1, "/?a=pl2only") == set()  # skipAfter jumps over the PL2 rule
    assert _ids(pl2, "/?a=pl2only") == {"21", "99"}
    assert _ids(pl1, "/?x=101") == {"30", "99"}  # capture into TX:1, chained @gt
    assert _ids(pl1, "/?x=99") == set()
    assert _ids(pl1, "/?a=EVIL") == {"50", "99"}
    assert _ids(pl1, "/?a=EVIL", [("X-Skip", "yes")]) == set()  # ctl:ruleRemoveById
    verdict = pl1.inspect(HttpRequest("GET", "/?a=evil&x=500"))
    assert verdict.blocked and verdict.score == 10
    assert [m.description for m in verdict.matches if m.rule_id == "99"] == ["score 10"]


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no CRS rule files"):
        load_crs(tmp_path)
