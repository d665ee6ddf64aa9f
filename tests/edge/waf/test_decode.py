"""Request decoding (edge/waf/decode.py): every place a backend reads, bounded, and a
clear 4xx for what cannot be inspected."""

from __future__ import annotations

import gzip
import json
import time
import zlib

import pytest

from bastion.edge.waf.decode import MAX_DEPTH, HttpRequest, Refused, decode

LIMIT = 131_072


def fields(method: str = "GET", target: str = "/", headers: list[tuple[str, str]] | None = None,
           body: bytes = b"", limit: int = LIMIT) -> dict[str, str]:
    d = decode(HttpRequest(method, target, headers or [], body), body_limit=limit)
    out: dict[str, str] = {}
    for coll, name, value in d.fields:
        out.setdefault(f"{coll}:{name}" if name else coll, value)
    return out


def refused(status: int, **kw: object) -> str:
    with pytest.raises(Refused) as info:
        fields(**kw)  # type: ignore[arg-type]
    assert info.value.status == status
    return info.value.reason


def test_query_path_and_segments() -> None:
    f = fields(target="/api/v1/it%27s/x?q=a+b%20c&empty&n%61me=v&q=second#frag")
    assert f["ARGS:q"] == "a b c" and f["ARGS:empty"] == "" and f["ARGS:name"] == "v"
    assert f["ARGS_NAMES:name"] == "name"
    assert f["REQUEST_PATH"] == "/api/v1/it's/x"
    assert f["PATH_SEGMENTS:3"] == "it's"
    assert f["REQUEST_URI_RAW"].endswith("#frag")


def test_absolute_form_target() -> None:
    f = fields(target="http://example.com:8080/p?x=1")
    assert f["REQUEST_PATH"] == "/p" and f["ARGS:x"] == "1"


def test_a_url_inside_the_path_is_not_taken_for_an_absolute_target() -> None:
    f = fields(target="/files/en%0d%0aLocation:%20https://evil.example/x?a=1")
    assert f["REQUEST_PATH"] == "/files/en\r\nLocation: https://evil.example/x"


def test_duplicate_parameters_are_all_inspected() -> None:
    d = decode(HttpRequest("GET", "/?a=1&a=2&a=3"), body_limit=LIMIT)
    assert [v for c, n, v in d.fields if c == "ARGS"] == ["1", "2", "3"]


def test_every_header_name_and_value_and_cookies() -> None:
    f = fields(headers=[("X-Custom", "value"), ("Cookie", 'sid=abc; pref="a%20b"; flag')])
    assert f["REQUEST_HEADERS:x-custom"] == "value"
    assert f["REQUEST_HEADERS_NAMES:x-custom"] == "x-custom"
    assert f["REQUEST_COOKIES:sid"] == "abc" and f["REQUEST_COOKIES:pref"] == "a b"
    assert "REQUEST_HEADERS:cookie" not in f  # parsed into cookies instead


def test_form_body() -> None:
    f = fields("POST", headers=[("content-type", "application/x-www-form-urlencoded")],
               body=b"user=bob&comment=it%27s+fine")
    assert f["ARGS:comment"] == "it's fine"


def test_json_names_values_duplicates_and_arrays() -> None:
    body = b'{"a": {"b": [1, "x", {"c": "y"}]}, "d": "first", "d": "second", "$ne": null}'
    d = decode(HttpRequest("POST", "/", [("content-type", "application/json")], body),
               body_limit=LIMIT)
    got = [(c, n, v) for c, n, v in d.fields if c.startswith("JSON")]
    assert ("JSON", "a.b.1", "x") in got and ("JSON", "a.b.2.c", "y") in got
    assert ("JSON", "d", "first") in got and ("JSON", "d", "second") in got
    assert ("JSON_NAMES", "$ne", "$ne") in got and ("JSON_NAMES", "a.b", "b") in got


def test_invalid_json_is_inspected_as_raw_body() -> None:
    f = fields("POST", headers=[("content-type", "application/json")], body=b"{'x': 1")
    assert f["REQUEST_BODY"] == "{'x': 1"


@pytest.mark.parametrize("depth", [MAX_DEPTH + 2, 100_000])
def test_deeply_nested_json_is_refused(depth: int) -> None:
    body = b"[" * depth + b"]" * depth
    reason = refused(400, method="POST", headers=[("content-type", "application/json")],
                     body=body, limit=10 ** 6)
    assert "nested" in reason


def test_xml_text_attributes_and_doctype() -> None:
    body = b'<?xml version="1.0"?><order id="7"><item sku="a&amp;b">Pan</item></order>'
    f = fields("POST", headers=[("content-type", "application/xml")], body=body)
    assert f["XML:/order@id"] == "7" and f["XML:/order/item@sku"] == "a&b"
    assert f["XML:/order/item"] == "Pan"


def test_xml_external_entity_is_reported_and_never_expanded() -> None:
    body = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b"<r>&x;</r>")
    f = fields("POST", headers=[("content-type", "text/xml")], body=body)
    assert f["XML_DTD:entity"] == "<!ENTITY x SYSTEM file:///etc/passwd>"
    assert "XML:/r" not in f


def test_billion_laughs_stops_at_the_first_entity() -> None:
    lol = b"".join(b'<!ENTITY l%d "&l%d;&l%d;&l%d;&l%d;&l%d;&l%d;&l%d;&l%d;&l%d;&l%d;">'
                   % (i, *(i - 1,) * 10) for i in range(1, 10))
    body = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY l0 "lol">' + lol + b"]><r>&l9;</r>"
    start = time.process_time()
    f = fields("POST", headers=[("content-type", "application/xml")], body=body)
    assert time.process_time() - start < 0.5
    assert f["XML_DTD:entity"].startswith("<!ENTITY l0 INTERNAL")


def test_xml_sent_as_another_type_is_still_parsed() -> None:
    f = fields("POST", headers=[("content-type", "text/plain")],
               body=b'<!DOCTYPE r SYSTEM "http://evil/x.dtd"><r/>')
    assert f["XML_DTD:doctype"] == "<!DOCTYPE r SYSTEM http://evil/x.dtd>"


MULTIPART = (b"--BND\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n"
             b"--BND\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.php\"\r\n"
             b"Content-Type: text/plain\r\n\r\n<?php echo 1; ?>\r\n"
             b"--BND\r\nContent-Disposition: form-data; name=\"enc\"\r\n"
             b"Content-Transfer-Encoding: base64\r\n\r\nJyBPUiAxPTE=\r\n--BND--\r\n")


def test_multipart_fields_files_and_declared_base64() -> None:
    f = fields("POST", headers=[("content-type", "multipart/form-data; boundary=BND")],
               body=MULTIPART)
    assert f["ARGS:title"] == "hello"
    assert f["FILES:file"] == "a.php" and f["FILES_CONTENT:file"] == "<?php echo 1; ?>"
    assert f["ARGS:enc"] == "' OR 1=1"


@pytest.mark.parametrize(("ctype", "body"), [
    ("multipart/form-data", MULTIPART),  # no boundary
    ("multipart/form-data; boundary=OTHER", MULTIPART),  # wrong boundary
    ("multipart/form-data; boundary=BND", MULTIPART[:60]),  # truncated
    ("multipart/form-data; boundary=BND", b"--BND\r\ngarbage without headers end"),
], ids=["no-boundary", "wrong-boundary", "truncated", "garbage"])
def test_broken_multipart_is_refused(ctype: str, body: bytes) -> None:
    assert "multipart" in refused(400, method="POST", headers=[("content-type", ctype)],
                                  body=body)


def test_too_many_multipart_parts_are_refused() -> None:
    part = b"--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n"
    assert "parts" in refused(400, method="POST", body=part * 300 + b"--B--\r\n",
                              headers=[("content-type", "multipart/form-data; boundary=B")])


def test_body_past_the_limit_is_refused() -> None:
    refused(413, method="POST", body=b"x" * 2000, limit=1000)


@pytest.mark.parametrize("coding", ["gzip", "deflate", "x-gzip"])
def test_compressed_bodies_are_inflated(coding: str) -> None:
    data = json.dumps({"q": "hello"}).encode()
    packed = gzip.compress(data) if "gzip" in coding else zlib.compress(data)
    f = fields("POST", headers=[("content-type", "application/json"),
                                ("content-encoding", coding)], body=packed)
    assert f["JSON:q"] == "hello"


def test_raw_deflate_is_inflated() -> None:
    c = zlib.compressobj(wbits=-15)
    packed = c.compress(b"a=1") + c.flush()
    f = fields("POST", headers=[("content-type", "application/x-www-form-urlencoded"),
                                ("content-encoding", "deflate")], body=packed)
    assert f["ARGS:a"] == "1"


def test_a_decompression_bomb_is_refused_without_inflating_it() -> None:
    bomb = gzip.compress(b"\0" * (50 * 1024 ** 2))
    start = time.process_time()
    reason = refused(413, method="POST", headers=[("content-encoding", "gzip")], body=bomb)
    assert "decompressed" in reason and time.process_time() - start < 1.0


@pytest.mark.parametrize(("coding", "status"), [("br", 415), ("zstd", 415), ("compress", 415),
                                                ("gzip, gzip, gzip", 415)])
def test_unsupported_encodings_are_refused(coding: str, status: int) -> None:
    refused(status, method="POST", headers=[("content-encoding", coding)], body=b"x")


def test_corrupt_compressed_body_is_refused() -> None:
    refused(400, method="POST", headers=[("content-encoding", "gzip")], body=b"\x1f\x8bnot")
    refused(400, method="POST", headers=[("content-encoding", "gzip")],
            body=gzip.compress(b"hello")[:-6])


def test_gigantic_headers_are_refused() -> None:
    refused(431, headers=[("cookie", "a=" + "x" * 70_000)])


def test_malformed_method_is_refused() -> None:
    refused(400, method="GE T")


def test_too_many_parameters_are_refused() -> None:
    refused(400, target="/?" + "&".join(f"a{i}=1" for i in range(6000)))


@pytest.mark.parametrize(("headers", "sign"), [
    ([("content-length", "5"), ("transfer-encoding", "chunked")], "cl-te"),
    ([("transfer-encoding", "xchunked")], "te-obfuscated"),
    ([("transfer-encoding", " chunked")], "te-obfuscated"),
    ([("transfer-encoding", "chunked\t")], "te-obfuscated"),
    ([("transfer-encoding", "chunked, identity")], "te-obfuscated"),
    ([("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")], "te-duplicate"),
    ([("content-length", "5"), ("content-length", "6")], "cl-invalid"),
    ([("content-length", "+5")], "cl-invalid"),
    ([("transfer-encoding ", "chunked")], "header-obfuscated"),
])
def test_framing_signs(headers: list[tuple[str, str]], sign: str) -> None:
    assert f"FRAMING:{sign}" in fields("POST", headers=headers)


def test_ordinary_framing_is_clean() -> None:
    assert not [k for k in fields("POST", headers=[("content-length", "3")], body=b"a=b")
                if k.startswith("FRAMING")]
    assert not [k for k in fields("POST", headers=[("transfer-encoding", "chunked")])
                if k.startswith("FRAMING")]
