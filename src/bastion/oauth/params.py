"""Reading OAuth parameters: size caps, form encoding, and no repeated parameters
(RFC 6749 §3.1 and §3.2: "Request and response parameters MUST NOT be included more than
once")."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

from bastion.oauth.errors import InvalidRequest, PayloadTooLarge

MAX_PARAM_LEN = 4096


def _single(pairs: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidRequest(f"parameter repeated: {key[:40]}")
        if len(value) > MAX_PARAM_LEN:
            raise InvalidRequest(f"parameter too long: {key[:40]}")
        if value != "":  # RFC 6749 §3.1: parameters sent without a value are omitted
            out[key] = value
    return out


def query_params(request: Request) -> dict[str, str]:
    try:
        pairs = parse_qsl(request.url.query, keep_blank_values=True, strict_parsing=False,
                          errors="strict", max_num_fields=100)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("malformed query string") from None
    return _single(pairs)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidRequest("malformed Content-Length")
        if int(declared) > limit:
            raise PayloadTooLarge("request body too large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge("request body too large")
        chunks.append(chunk)
    return b"".join(chunks)


async def form_params(request: Request, limit: int) -> dict[str, str]:
    """RFC 6749 §3.2: application/x-www-form-urlencoded with UTF-8."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise InvalidRequest("content type must be application/x-www-form-urlencoded")
    body = await read_body(request, limit)
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=100)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("malformed form body") from None
    return _single(pairs)
