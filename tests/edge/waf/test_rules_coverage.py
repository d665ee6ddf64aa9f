"""Rules added for attack shapes of the public collections (OWASP CRS regression tests,
PayloadsAllTheThings, payloadbox): Java class names and gadget keywords (plain and base64),
Windows batch control flow, Unix command prefixes and glob obfuscation, Node.js prototype
pollution, Perl/PHP code, encoded traversal and absolute system paths, restricted files,
SQL operators after a closed quote, tag-less XSS gadgets, request splitting and CRLF in
names. Every rule: attacks that fire it (by id, at paranoia 1 unless marked) and benign
look-alikes that pass."""

from __future__ import annotations

import pytest

from bastion.edge.waf import HttpRequest
from tests.edge.waf.rules_helper import BASE, verdict, waf

ATTACKS = [
    # Java
    ("111305", "java.lang.Runtime", "header"),
    ("111305", "java.io.BufferedReader", "cookie"),
    ("111305", "org.apache.commons.collections.functors", "json"),
    ("111305", "javax.naming.InitialContext", "form"),
    ("111305", "com.sun.org.apache.xalan.internal", "json-key"),
    ("111306", "runtime.forclosure", "body"),
    ("111306", "ProcessBuilder.evil.clonetransformer", "cookie"),
    ("111306", "cHJvdG90eXBlc2VyaWFsaXphdGlvbmZhY3Rvcnk", "json"),
    ("111306", "aW52b2tlcnRyYW5zZm9ybWVy", "query"),
    # Windows batch, Unix commands
    ("110307", "FOR /F \"tokens=1,2* delims=,\" %%G IN (C:\\a.txt) DO ECHO %%G", "query"),
    ("110307", "for %i in (*) do set LIST=!LIST! %i", "form"),
    ("110307", "IF /I \"%var%\" LEQ \"1\" ECHO less", "query"),
    ("110307", "if exist C:\\nonexistent echo hey", "json"),
    ("110307", "IF %ERRORLEVEL% NEQ 0 echo test", "header"),
    ("110308", "nohup ifconfig", "query"),
    ("110308", "; strace whoami", "form"),
    ("110308", ";lastlog -u root", "json"),
    ("110308", "; ssh-copy-id user@server", "query"),
    ("110309", "vim -c ':!/bin/sh'", "form"),
    ("110309", "find /etc -name passwd -exec cat {} +", "json"),
    ("110310", "& ping -n 30 127.0.0.1 &", "query"),
    ("110310", "&& netsh firewall set opmode disable", "form"),
    ("110310", "() { :;}; echo vulnerable", "header"),
    ("110310", "$(`ls`)", "json"),
    ("110310", "; reg add HKLM\\System\\X /v fDeny /t REG_DWORD /d 0", "cookie"),
    ("110312", "cat /etc/[p]asswd", "query"),
    ("110312", "/???/c?t /e??/p?ss??", "form"),
    ("110312", "{,ifconfig}", "json"),
    ("110313", "__proto__[admin]=1", "json-key"),
    ("110313", "constructor[prototype][isAdmin]", "query"),
    ("110313", "require('child_process').exec('id')", "json"),
    ("110313", "_$$ND_FUNC$$_function(){}", "cookie"),
    ("110314", "@{[ system 'id' ]}", "query"),
    ("110314", "(string)\"system\"('uname');", "form"),
    ("110314", "$_SERVER['HTTP_X']", "json"),
    ("110314", "| phpinfo()", "query"),
    ("110314", "<?php echo 1; ?>", "body"),
    # traversal and file inclusion
    ("110404", "/0x2e0x2e/0x2e0x2e/etc/passwd", "query"),
    ("110404", "..2f..2f..2fetc2fpasswd", "cookie"),
    ("110404", "Li4vLi4vLi4vZXRjL3Bhc3N3ZA==", "json"),
    ("110404", "/%25c0%25ae%25c0%25ae/%25c0%25ae%25c0%25ae/x", "header"),
    ("110405", "/etc/hostname", "header"),
    ("110405", "/proc/net/tcp", "cookie"),
    ("110405", "C:\\inetpub\\wwwroot\\global.asa", "form"),
    ("110405", "/opt/lampp/logs/access_log", "query"),
    ("110403", "convert.iconv.UTF8.CSISO2022KR", "query"),
    # SQL
    ("110107", "admin@juice-sh.op' or glob (id,id);", "form"),
    ("110107", "id'not like id--", "query"),
    ("110107", "z' or email notnull--", "json"),
    ("110107", "'admin', '1'='1'", "body"),
    ("110107", "OR '{\"b\":2}'::jsonb @> '{\"b\":2}'::jsonb", "query"),
    ("110108", "x'&email--", "form"),
    ("110108", "a'or?--", "query"),
    ("110108", "DELETE FROM users;--", "header"),
    # XSS without a tag
    ("110207", "window[\"alert\"](window[\"document\"][\"cookie\"])", "form"),
    ("110207", "document /*foo*/ . cookie", "query"),
    ("110207", "[].sort.call`${alert}1337`", "query"),
    ("110207", "(![]+[])[+!+[]]+(!![]+[])[+[]]", "json"),
    ("110207", "+ADw-script+AD4-alert(1)+ADw-/script+AD4-", "query"),
    ("110207", "<v:vmlframe src=\"foo.com/sup.fml\"/>", "cookie"),
    # CRLF and request splitting
    ("111103", "GET http://www.foo.bar HTTP/1.1", "query"),
    ("111103", "aaa\nGET / HTTP/1.1", "form"),
    ("111104", "Headerdata%0dInjectedHeader: response_splitting_code", "header"),
    ("111105", "/%%0a0aSet-Cookie:crlf=injection", "form"),
    ("110110", "|| c == 'x'", "query"),
    ("110110", "x or 1=1--", "form"),
]

PL2_ATTACKS = [
    ("111307", "cnVudGltZQ", "query"),
    ("110109", "CAST(", "form"),
    ("110109", "function(foo)::text", "query"),
    ("110109", "EXECUTE IMMEDIATE \"", "json"),
    ("110109", "rtrim(", "query"),
    ("110109", "in (0,1)", "json"),
]

BENIGN = [
    "I learned Java at school; java is also coffee", "Runtime error on line 3",
    "The ProcessBuilder docs were unclear", "for each item in (the list) do nothing",
    "If not defined, the default is used", "if x == 1: print('one')",
    "Just in time; w00t", "nohup is a unix tool", "find the best deal",
    "Use `vim` or `nano`", "prototype design review", "constructor arguments",
    "The /etc directory holds config", "See C:/program files missing dll",
    "My system (an old laptop) is slow", "O'Brien-Smith -- great service",
    "It's 5' - 10\"", "Rock 'n' roll", "Bob's or Alice's", "the 12\" skillet's handle",
    "window seat please", "document the API", "Don't forget [] brackets",
    "GET the latest version over HTTP/2", "Line one\nLocation: Paris",
    "postgres::text casting is explained in the docs", "count (of items) is 3",
    "a.b.c@example.com", "arn:aws:s3:::bucket/${aws:username}/*",
    "SELECT COUNT(*) AS total FROM orders WHERE status = 'paid'",
    "Run `npm ci && npm test` in CI", "Tom & Jerry & friends",
]


def request(payload: str, where: str) -> HttpRequest:
    if where == "path":
        return HttpRequest("GET", "/files/" + payload, BASE)
    from tests.edge.waf.rules_helper import request as placed

    return placed(payload, where)


def fired(payload: str, where: str, paranoia: int = 1) -> set[str]:
    return {m.rule_id for m in waf(paranoia).inspect(request(payload, where)).matches}


@pytest.mark.parametrize(("rule_id", "payload", "where"), ATTACKS,
                         ids=[f"{a[0]}-{i}" for i, a in enumerate(ATTACKS)])
def test_attack_fires_its_rule_and_is_blocked(rule_id: str, payload: str, where: str) -> None:
    v = waf(1).inspect(request(payload, where))
    assert rule_id in {m.rule_id for m in v.matches}, v.matches
    assert v.blocked


@pytest.mark.parametrize(("rule_id", "payload", "where"), PL2_ATTACKS,
                         ids=[f"{a[0]}-{i}" for i, a in enumerate(PL2_ATTACKS)])
def test_paranoia_2_rules(rule_id: str, payload: str, where: str) -> None:
    assert rule_id not in fired(payload, where, 1)
    assert rule_id in fired(payload, where, 2)


@pytest.mark.parametrize("where", ["query", "form", "json", "header", "cookie"])
@pytest.mark.parametrize("payload", BENIGN)
def test_benign_look_alikes_pass(payload: str, where: str) -> None:
    v = verdict(payload, where)
    assert not v.blocked, v.matches


@pytest.mark.parametrize(("path", "blocked"), [
    ("/.env", True), ("/.git/config", True), ("/app/.claude/settings.json", True),
    ("/backup.sql.zip", True), ("/wp-content/debug.log", True), ("/@fs/.env", True),
    ("/.well-known/openid-configuration", False), ("/.well-known/jwks.json", False),
    ("/static/app.js", False), ("/docs/changelog.md", False), ("/api/v1/whoami", False),
])
def test_restricted_files_in_the_path(path: str, blocked: bool) -> None:
    v = waf(1).inspect(HttpRequest("GET", path, BASE))
    assert v.blocked is blocked, v.matches
    if blocked:
        assert "110406" in {m.rule_id for m in v.matches}


@pytest.mark.parametrize(("target", "rule_id"), [
    ("/files/ls%20-l%20%2Ftmp", "110311"), ("/static/which%20netcat/meta", "110311"),
    ("/download/%7C%20whoami", "110311"),
    ("/get?param%0d%0a=test", "111102"),
])
def test_commands_and_line_breaks_in_the_path_and_names(target: str, rule_id: str) -> None:
    v = waf(1).inspect(HttpRequest("GET", target, BASE))
    assert rule_id in {m.rule_id for m in v.matches}, v.matches
    assert v.blocked


@pytest.mark.parametrize(("value", "internal"), [
    ("http:127.0.0.1", True), ("http:/2852039166", True), ("http:0xA9FEA9FE", True),
    ("http:[::ffff:a9fe:a9fe]", True), ("acap://\u2460\u2461\u2466.\u24ea.\u24ea.\u2460", True),
    ("irc://\u24db\u24de\u24d2\u24d0\u24db\u24d7\u24de\u24e2\u24e3", True),
    ("http://169\u3002254\u3002169\u3002254/", True), ("http://\\l\\o\\c\\a\\l\\h\\o\\s\\t/", True),
    ("http://google.com:80 &@127.88.23.245:22/", True), ("http://0x41414141A9FEA9FE/", True),
    ("https://metadata.packet.net/userdata", True), ("http://host.containers.internal/", True),
    ("https://api.example.com/v1?x=1", False), ("see http: the spec", False),
    ("meeting at 12:30", False), ("user@localhost", False), ("https://a.example/@me", False),
    ("mailto:someone@example.com", False), ("ssh:github.com", False),
])
def test_ssrf_notations(value: str, internal: bool) -> None:
    from bastion.edge.waf.operators import ssrf

    assert (ssrf(value) is not None) is internal


def test_multiline_values_and_oauth_traffic_pass() -> None:
    body = (b"grant_type=authorization_code&code=abc&redirect_uri=http%3A%2F%2F127.0.0.1"
            b"%3A8765%2Fcallback&code_verifier=dBjftJeZ4CVP-mJ92K9_s-OwZ5oD0HZqbY_7r3Z9Y"
            b"&note=line+one%0D%0Aline+two")
    v = waf(1).inspect(HttpRequest("POST", "/oauth/token", [
        *BASE, ("content-type", "application/x-www-form-urlencoded")], body))
    assert not v.blocked, v.matches
