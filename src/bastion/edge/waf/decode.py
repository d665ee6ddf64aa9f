"""Request decoding: a request as the fields a backend would see, each named by a
collection and a name (ModSecurity's variables: ``ARGS:q``, ``REQUEST_HEADERS:x-foo``;
Bastion's ``JSON:items.0.name``, ``JSON_NAMES:items.0.name``, ``XML:/order/item@id``).

Decoded: the query and ``application/x-www-form-urlencoded`` bodies (RFC 3986 §2.1 percent-
encoding, ``+`` as space), ``multipart/form-data`` (RFC 7578, python-multipart's parser,
parts bounded), JSON (RFC 8259) at any depth up to ``MAX_DEPTH`` with field names and
values and every duplicate key, XML (expat: text and attributes; a DOCTYPE or ENTITY is
reported in ``XML_DTD`` and parsing stops there, so no entity is ever expanded), cookies
(RFC 6265 §5.4), every header name and value, the path and its segments, the raw body when
no parser applies, and the framing headers (``FRAMING``: signs of request smuggling, RFC 9112
§6.3). ``Content-Encoding`` gzip and deflate are inflated with a hard output cap.

What cannot be inspected is refused (``Refused``, a 4xx): a body past the limit (413), an
encoding that cannot be decoded (415), a broken multipart body or over-deep JSON (400).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.parsers import expat

from python_multipart.multipart import MultipartParser, parse_options_header

from bastion.edge.waf.transforms import url_decode

MAX_DEPTH = 64  # JSON and XML nesting
MAX_FIELDS = 10_000  # fields of one request
MAX_PARTS = 256  # multipart parts
MAX_HEADER_BYTES = 65_536  # all header names and values together
MAX_ENCODINGS = 2  # Content-Encoding layers
TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

Field = tuple[str, str, str]  # collection, name, value


@dataclass(frozen=True)
class HttpRequest:
    """One request as the WAF sees it. ``target``: the request target as sent (origin form
    ``/p?q``, or absolute form); ``headers``: (name, value) in order, duplicates kept."""

    method: str
    target: str
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""


class Refused(Exception):
    """The request cannot be inspected; answered with ``status`` (a 4xx)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Decoded:
    fields: list[Field] = field(default_factory=list)
    path: str = "/"

    def add(self, collection: str, name: str, value: str) -> None:
        if len(self.fields) >= MAX_FIELDS:
            raise Refused(400, "too many parameters")
        self.fields.append((collection, name, value))


def split_target(target: str) -> tuple[str, str]:
    """(path, query) of a request target; the fragment, scheme and authority dropped."""
    target = target.partition("#")[0]
    if not target.startswith("/") and "://" in target.partition("?")[0]:
        rest = target.split("://", 1)[1]
        slash = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=-1)
        target = rest[slash:] if slash >= 0 else "/"
        if target.startswith("?"):
            target = "/" + target
    path, _, query = target.partition("?")
    return path or "/", query


def parse_pairs(data: str, out: Decoded, collection: str = "ARGS") -> None:
    """``a=1&b=2`` (query or form), each name and value percent-decoded."""
    for pair in data.split("&"):
        if not pair:
            continue
        raw_name, eq, raw_value = pair.partition("=")
        name = url_decode(raw_name)
        out.add(collection, name, url_decode(raw_value) if eq else "")
        out.add(collection + "_NAMES", name, name)


def decode(req: HttpRequest, *, body_limit: int) -> Decoded:
    """The fields of ``req``; ``Refused`` when it cannot be inspected."""
    out = Decoded()
    if not req.method or not all(c in TOKEN for c in req.method):
        raise Refused(400, "malformed method")
    out.add("REQUEST_METHOD", "", req.method)
    raw_path, query = split_target(req.target)
    out.add("REQUEST_URI_RAW", "", req.target)
    path = url_decode(raw_path, plus=False)
    out.path = path
    out.add("REQUEST_PATH", "", path)
    for i, seg in enumerate(raw_path.split("/")):
        if seg:
            out.add("PATH_SEGMENTS", str(i), url_decode(seg, plus=False))
    parse_pairs(query, out)
    size = 0
    headers: dict[str, list[str]] = {}
    for name, value in req.headers:
        size += len(name) + len(value)
        if size > MAX_HEADER_BYTES:
            raise Refused(431, "request headers too large")
        low = name.lower()
        headers.setdefault(low, []).append(value)
        out.add("REQUEST_HEADERS_NAMES", low, low)
        if low == "cookie":
            cookies(value, out)
        else:
            out.add("REQUEST_HEADERS", low, value)
    framing(headers, out)
    if req.body:
        body(req.body, headers, out, body_limit)
    return out


def cookies(header: str, out: Decoded) -> None:
    """RFC 6265 §5.4 ``name=value; name2=value2``; values percent-decoded (as many
    frameworks do) and unquoted."""
    for item in header.split(";"):
        name, eq, value = item.strip().partition("=")
        if not name and not eq:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        out.add("REQUEST_COOKIES", name, url_decode(value, plus=False))
        out.add("REQUEST_COOKIES_NAMES", name, name)


def framing(headers: dict[str, list[str]], out: Decoded) -> None:
    """Signs of request smuggling (RFC 9112 §6.1, §6.3): Content-Length with Transfer-
    Encoding, a Transfer-Encoding other than exactly ``chunked``, Content-Lengths that
    disagree or are not digits, obfuscated header names."""
    cl = headers.get("content-length", [])
    te = headers.get("transfer-encoding", [])
    if cl and te:
        out.add("FRAMING", "cl-te", "content-length and transfer-encoding")
    for value in te:
        codings = [c.strip().lower() for c in value.split(",")]
        if value != value.strip() or any(c not in ("chunked", "identity") for c in codings) \
                or codings[-1:] != ["chunked"] or "\t" in value:
            out.add("FRAMING", "te-obfuscated", value[:64])
    if len(te) > 1:
        out.add("FRAMING", "te-duplicate", ", ".join(te)[:64])
    values = {v.strip() for v in cl}
    if len(values) > 1 or any(not v.isdigit() for v in values):
        out.add("FRAMING", "cl-invalid", ", ".join(cl)[:64])
    for name in headers:
        if name != name.strip() or any(c not in TOKEN for c in name):
            if "transfer" in name or "content-length" in name:
                out.add("FRAMING", "header-obfuscated", name[:64])


def inflate(data: bytes, encodings: str, limit: int) -> bytes:
    """Undo ``Content-Encoding`` (RFC 9110 §8.4), never producing more than ``limit``
    bytes: 413 past it (a decompression bomb), 415 for an unsupported coding."""
    codings = [c.strip().lower() for c in encodings.split(",") if c.strip()]
    if len(codings) > MAX_ENCODINGS:
        raise Refused(415, "too many content codings")
    for coding in reversed(codings):
        if coding == "identity":
            continue
        if coding not in ("gzip", "x-gzip", "deflate"):
            raise Refused(415, f"unsupported content-encoding {coding[:20]!r}")
        wbits = 31 if coding in ("gzip", "x-gzip") else (15 if data[:1] == b"\x78" else -15)
        inflater = zlib.decompressobj(wbits)
        try:
            result = inflater.decompress(data, limit + 1)
        except zlib.error:
            raise Refused(400, "malformed compressed body") from None
        if len(result) > limit or inflater.unconsumed_tail:
            raise Refused(413, "decompressed body too large")
        if not inflater.eof:
            raise Refused(400, "truncated compressed body")
        data = result
    return data


def body(data: bytes, headers: dict[str, list[str]], out: Decoded, limit: int) -> None:
    if len(data) > limit:
        raise Refused(413, "request body too large to inspect")
    encoding = ", ".join(headers.get("content-encoding", []))
    if encoding:
        data = inflate(data, encoding, limit)
    ctype = (headers.get("content-type") or [""])[0]
    media, params = parse_options_header(ctype)
    mtype = media.decode("latin-1").lower()
    head = data[:64].lstrip().lower()
    if mtype == "application/x-www-form-urlencoded":
        parse_pairs(data.decode("utf-8", "replace"), out)
    elif mtype == "multipart/form-data":
        multipart(data, params.get(b"boundary", b""), out, limit)
    elif mtype in ("application/json", "text/json") or mtype.endswith("+json"):
        if not json_body(data, out):
            out.add("REQUEST_BODY", "", data.decode("utf-8", "replace"))
    elif mtype in ("application/xml", "text/xml") or mtype.endswith("+xml") \
            or head.startswith((b"<?xml", b"<!doctype", b"<!entity")):
        if not xml_body(data, out):
            out.add("REQUEST_BODY", "", data.decode("utf-8", "replace"))
    else:
        out.add("REQUEST_BODY", "", data.decode("utf-8", "replace"))


class _Object(list[tuple[str, Any]]):
    """A JSON object as its (key, value) pairs, duplicates kept."""


def json_body(data: bytes, out: Decoded) -> bool:
    """Every key and string value of a JSON document (False if it is not JSON)."""
    try:
        doc = json.loads(data, object_pairs_hook=_Object)
    except RecursionError:
        raise Refused(400, "JSON nested too deeply") from None
    except ValueError:
        return False
    stack: list[tuple[str, Any, int]] = [("", doc, 0)]
    while stack:
        path, node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise Refused(400, "JSON nested too deeply")
        if isinstance(node, _Object):
            for key, value in reversed(node):
                sub = f"{path}.{key}" if path else key
                out.add("JSON_NAMES", sub, key)
                stack.append((sub, value, depth + 1))
        elif isinstance(node, list):
            for i in range(len(node) - 1, -1, -1):
                stack.append((f"{path}.{i}" if path else str(i), node[i], depth + 1))
        elif isinstance(node, str):
            out.add("JSON", path, node)
    return True


class _StopXml(Exception):
    pass


def xml_body(data: bytes, out: Decoded) -> bool:
    """Text and attributes of an XML document by element path. A DOCTYPE or ENTITY
    declaration is reported (``XML_DTD``) and parsing stops: nothing is ever expanded or
    fetched (the XXE and "billion laughs" defences). False if it is not XML."""
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    path: list[str] = []
    text: list[list[str]] = []

    def doctype(name: str, sysid: str | None, pubid: str | None, internal: int) -> None:
        ext = f" SYSTEM {sysid}" if sysid else ""
        ext = f" PUBLIC {pubid}{ext}" if pubid else ext
        out.add("XML_DTD", "doctype", f"<!DOCTYPE {name}{ext}>")

    def entity(name: str, is_param: int, value: str | None, base: str | None,
               sysid: str | None, pubid: str | None, notation: str | None) -> None:
        kind = "SYSTEM" if sysid else "PUBLIC" if pubid else "INTERNAL"
        pct = "% " if is_param else ""
        target = sysid or pubid or value or ""
        out.add("XML_DTD", "entity", f"<!ENTITY {pct}{name} {kind} {target[:256]}>")
        raise _StopXml

    def start(name: str, attrs: dict[str, str]) -> None:
        if len(path) >= MAX_DEPTH:
            raise Refused(400, "XML nested too deeply")
        path.append(name)
        text.append([])
        where = "/" + "/".join(path)
        for key, value in attrs.items():
            out.add("XML", f"{where}@{key}", value)

    def end(name: str) -> None:
        chunks = text.pop() if text else []
        content = "".join(chunks).strip()
        if content:
            out.add("XML", "/" + "/".join(path), content)
        if path:
            path.pop()

    def chars(data: str) -> None:
        if text:
            text[-1].append(data)

    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = entity
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(data, True)
    except _StopXml:
        return True
    except expat.ExpatError:
        return bool(path) or any(f[0] == "XML_DTD" for f in out.fields)
    return True


def multipart(data: bytes, boundary: bytes, out: Decoded, limit: int) -> None:
    """RFC 7578 parts: text fields as ``ARGS``, file names as ``FILES``, file contents
    as ``FILES_CONTENT``, part headers as ``MULTIPART_HEADERS``; 400 when the body is not
    well-formed multipart or has more than ``MAX_PARTS`` parts."""
    if not boundary or len(boundary) > 200:
        raise Refused(400, "multipart body without a valid boundary")
    parts: list[dict[str, Any]] = []
    state: dict[str, Any] = {"field": b"", "value": b"", "ended": False}

    def on_part_begin() -> None:
        if len(parts) >= MAX_PARTS:
            raise Refused(400, "too many multipart parts")
        parts.append({"headers": [], "data": []})

    def on_part_data(buf: bytes, start: int, end: int) -> None:
        parts[-1]["data"].append(buf[start:end])

    def on_header_field(buf: bytes, start: int, end: int) -> None:
        state["field"] += buf[start:end]

    def on_header_value(buf: bytes, start: int, end: int) -> None:
        state["value"] += buf[start:end]

    def on_header_end() -> None:
        parts[-1]["headers"].append((state["field"].decode("latin-1").lower(),
                                     state["value"].decode("latin-1")))
        state["field"], state["value"] = b"", b""

    def on_end() -> None:
        state["ended"] = True

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_part_data": on_part_data,
        "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_end": on_end}, max_size=limit)
    try:
        parser.write(data)
        parser.finalize()
    except Refused:
        raise
    except Exception:  # python-multipart's parse errors
        raise Refused(400, "malformed multipart body") from None
    if not state["ended"] or not parts:
        raise Refused(400, "malformed multipart body")
    for part in parts:
        hdrs = dict(part["headers"])
        _, opts = parse_options_header(hdrs.get("content-disposition", ""))
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        content = b"".join(part["data"])
        if hdrs.get("content-transfer-encoding", "").strip().lower() == "base64":
            from bastion.edge.waf.transforms import base64_decode

            text = base64_decode(content.decode("latin-1"))
        else:
            text = content.decode("utf-8", "replace")
        for key, value in part["headers"]:
            if key not in ("content-disposition",):
                out.add("MULTIPART_HEADERS", f"{name}:{key}", value)
        out.add("ARGS_NAMES", name, name)
        if b"filename" in opts or b"filename*" in opts:
            filename = (opts.get(b"filename") or opts.get(b"filename*") or b"")
            out.add("FILES", name, filename.decode("utf-8", "replace"))
            out.add("FILES_CONTENT", name, text)
        else:
            out.add("ARGS", name, text)
