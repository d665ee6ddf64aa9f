"""The WAF engine (edge/waf/engine.py): the public contract, anomaly scoring, paranoia
levels, exclusions, rules as data (the shape a SecLang loader produces), bounded time on
hostile input, thread safety, redaction."""

from __future__ import annotations

import json
import threading
import time

import pytest

from bastion.edge.waf import (
    Exclusion,
    HttpRequest,
    Match,
    Rule,
    Verdict,
    Waf,
    WafConfig,
    load_rules,
)
from bastion.edge.waf.engine import redact

FAMILIES = {"sqli", "xss", "rce", "lfi", "rfi", "ssrf", "ssti", "nosqli", "ldap", "xxe",
            "crlf", "smuggling", "java", "php-object", "scanner"}
JSON_CT = ("content-type", "application/json")


def post_json(doc: object, path: str = "/api") -> HttpRequest:
    return HttpRequest("POST", path, [JSON_CT], json.dumps(doc).encode())


def test_the_public_contract() -> None:
    waf = Waf(WafConfig(paranoia=1, inbound_threshold=5, body_limit=131072, exclusions=()))
    v = waf.inspect(HttpRequest(method="POST", target="/path?q=1",
                                headers=[("content-type", "application/json")],
                                body=b'{"items": [{"name": "<script>alert(1)</script>"}]}'))
    assert isinstance(v, Verdict) and v.blocked and v.score >= 5
    m = v.matches[0]
    assert isinstance(m, Match)
    assert {x.location for x in v.matches} == {"JSON:items.0.name"}
    assert m.rule_id and m.family == "xss" and isinstance(m.redacted, str)


def test_the_own_pack_covers_every_family_with_unique_ids_and_all_compile() -> None:
    rules = load_rules()
    assert {r.family for r in rules} == FAMILIES
    assert len({r.id for r in rules}) == len(rules)
    waf = Waf(WafConfig(paranoia=4))
    assert waf.skipped == {}
    assert len(waf.rules) == len(rules)


def rule(id_: str, pattern: str, **kw: object) -> Rule:
    return Rule(id=id_, family=str(kw.pop("family", "test")), targets=("ARGS", "JSON"),
                operator="rx", argument=pattern, **kw)  # type: ignore[arg-type]


def test_scores_add_up_to_the_threshold() -> None:
    rules = [rule("1", "alpha", severity="warning"), rule("2", "beta", severity="notice"),
             rule("3", "gamma", severity="critical")]
    waf = Waf(WafConfig(rules=rules, inbound_threshold=5))
    assert waf.inspect(HttpRequest("GET", "/?a=alpha")).score == 3
    v = waf.inspect(HttpRequest("GET", "/?a=alpha&b=beta"))
    assert (v.score, v.blocked, v.status) == (5, True, 403)
    v = waf.inspect(HttpRequest("GET", "/?a=alpha&b=alpha"))  # a rule counts once
    assert (v.score, v.blocked) == (3, False)
    assert Waf(WafConfig(rules=rules, inbound_threshold=9)).inspect(
        HttpRequest("GET", "/?a=gamma")).blocked is False


def test_paranoia_levels_select_rules() -> None:
    rules = [rule("1", "one"), rule("2", "two", paranoia=2), rule("4", "four", paranoia=4)]
    assert [r.id for r in Waf(WafConfig(rules=rules)).rules] == ["1"]
    assert [r.id for r in Waf(WafConfig(rules=rules, paranoia=3)).rules] == ["1", "2"]
    assert not Waf(WafConfig(rules=rules)).inspect(HttpRequest("GET", "/?x=two")).matches


def test_targets_names_and_negations() -> None:
    r = Rule(id="9", family="t", targets=("REQUEST_HEADERS:x-a", "ARGS", "!ARGS:safe",
                                          "!ARGS:skip_*"), operator="rx", argument="bad")
    waf = Waf(WafConfig(rules=[r]))
    assert waf.inspect(HttpRequest("GET", "/", [("x-a", "bad")])).matches
    assert not waf.inspect(HttpRequest("GET", "/", [("x-b", "bad")])).matches
    assert waf.inspect(HttpRequest("GET", "/?other=bad")).matches
    assert not waf.inspect(HttpRequest("GET", "/?safe=bad&skip_me=bad")).matches


def test_a_hit_in_an_excluded_field_does_not_hide_one_in_another() -> None:
    r = rule("7", "evil")
    waf = Waf(WafConfig(rules=[r], exclusions=[Exclusion(("/",), ("7",), (), ("ARGS:a",))]))
    v = waf.inspect(HttpRequest("GET", "/?a=evil&b=evil"))
    assert [m.location for m in v.matches] == ["ARGS:b"]
    assert not waf.inspect(HttpRequest("GET", "/?a=evil")).matches


def test_exclusions_by_path_family_and_target() -> None:
    exclusions = [
        {"paths": ["/notes"], "families": ["sqli"], "targets": ["JSON:body"]},
        {"paths": ["/iam"], "rule_ids": ["110100"], "targets": ["JSON:policy.*"]},
        Exclusion(paths=("/legacy",)),  # everything, below /legacy
    ]
    waf = Waf(WafConfig(exclusions=exclusions))
    sqli = "1' OR '1'='1"
    assert not waf.inspect(post_json({"body": sqli}, "/notes/1")).blocked
    assert waf.inspect(post_json({"title": sqli}, "/notes/1")).blocked
    assert waf.inspect(post_json({"body": sqli}, "/notesx")).blocked
    assert waf.inspect(post_json({"body": "<script>alert(1)</script>"}, "/notes")).blocked
    assert not waf.inspect(post_json({"x": "<script>"}, "/legacy/a")).matches
    with pytest.raises(ValueError, match="unknown exclusion keys"):
        Waf(WafConfig(exclusions=[{"path": "/x"}]))


def test_rules_that_hyperscan_cannot_compile() -> None:
    re2_only = rule("1", r"\x{263a}")  # needs UTF-8 mode in Hyperscan: RE2 alone runs it
    lookahead = rule("2", "foo(?=bar)")  # neither exact in Hyperscan nor valid RE2
    waf = Waf(WafConfig(rules=[re2_only, lookahead]))
    assert "2" in waf.skipped and "not supported" in waf.skipped["2"]
    assert [r.id for r in waf.rules] == ["1"]
    assert waf.inspect(HttpRequest("GET", "/?q=%E2%98%BA")).matches[0].rule_id == "1"


@pytest.mark.parametrize(("kw", "message"), [
    ({"severity": "fatal"}, "severity"), ({"paranoia": 5}, "paranoia"),
    ({"operator": "regex"}, "unknown operator"), ({"targets": ("ARGZ",)}, "unknown target"),
    ({"transforms": ("rot13",)}, "unknown transformation"),
])
def test_bad_rules_are_refused(kw: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"id": "1", "family": "t", "targets": ("ARGS",),
                               "operator": "rx", "argument": "x"}
    with pytest.raises(ValueError, match=message):
        Rule(**{**base, **kw})  # type: ignore[arg-type]


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="paranoia"):
        WafConfig(paranoia=0)
    with pytest.raises(ValueError, match="threshold"):
        WafConfig(inbound_threshold=0)


def test_uninspectable_requests_are_refused_with_their_status() -> None:
    waf = Waf(WafConfig(body_limit=1024))
    v = waf.inspect(HttpRequest("POST", "/", [], b"x" * 2048))
    assert (v.blocked, v.status, v.score) == (True, 413, 0)
    v = waf.inspect(HttpRequest("POST", "/", [("content-encoding", "br")], b"x"))
    assert (v.blocked, v.status) == (True, 415)


@pytest.mark.parametrize("hostile", [
    "'" * 120_000, "<" * 120_000, "(" * 120_000, "a" * 120_000 + "!", "%" * 120_000,
    "${" * 60_000, "&#" * 60_000, "\\u" * 60_000, "/*" * 60_000, "../" * 40_000,
    "' OR " * 24_000, "<a " * 40_000, "http://" * 17_000,
], ids=lambda s: repr(s[:6]))
def test_hostile_inputs_take_bounded_time(hostile: str) -> None:
    waf = Waf(WafConfig())
    body = json.dumps({"v": hostile}).encode()
    start = time.process_time()
    waf.inspect(HttpRequest("POST", "/", [JSON_CT], body))
    waf.inspect(HttpRequest("POST", "/", [("content-type", "text/plain")], hostile.encode()))
    assert time.process_time() - start < 3.0


def test_inspect_is_thread_safe() -> None:
    waf = Waf(WafConfig())
    attack = HttpRequest("GET", "/?q=%3Cscript%3Ealert(1)%3C/script%3E")
    benign = post_json({"name": "Siobhán O'Connor", "note": "12\" skillet"})
    expected = (waf.inspect(attack).score, waf.inspect(benign).score)
    errors: list[object] = []

    def work() -> None:
        for _ in range(100):
            got = (waf.inspect(attack).score, waf.inspect(benign).score)
            if got != expected:
                errors.append(got)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and expected[0] >= 5 and expected[1] == 0


def test_matches_are_redacted() -> None:
    secret = "' OR 1=1 -- " + "s3cr3t" * 20
    v = Waf(WafConfig()).inspect(HttpRequest("GET", "/?token=" + secret.replace(" ", "+")))
    assert v.blocked
    for m in v.matches:
        assert "s3cr3ts3cr3t" not in m.redacted and len(m.redacted) < 40
    assert redact("abc") == "abc"
    assert redact("x" * 100) == "xxxxxxxxxxxx…(100 chars)"
    assert redact("\x00\x1b[31m") == "??[31m"
