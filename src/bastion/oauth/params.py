"""Reading OAuth parameters: size caps, form encoding, and no repeated parameters
(RFC 6749 §3.1 and §3.2: "Request and response parameters MUST NOT be included more than
once")."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

from bastion.edge import http
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
    """``edge.http.read_body`` with OAuth's errors."""
    try:
        return await http.read_body(request, limit)
    except http.BodyError as exc:
        if exc.status == 413:
            raise PayloadTooLarge("request body too large") from None
        raise InvalidRequest(str(exc)) from None


async def form_params(request: Request, limit: int) -> dict[str, str]:
    """RFC 6749 §3.2: application/x-www-form-urlencoded with UTF-8."""
    if http.media_type(request) != "application/x-www-form-urlencoded":
        raise InvalidRequest("content type must be application/x-www-form-urlencoded")
    body = await read_body(request, limit)
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=100)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("malformed form body") from None
    return _single(pairs)
