"""The HTTP plumbing every Bastion endpoint shares, one copy each: capped body reads and the
media-type check (so every API refuses oversized and malformed bodies the same way before
parsing), the loopback test (redirect URIs, ``--dev``), and CSRF tokens of HTML forms.

Each protocol renders the refusal in its own shape (OAuth ``invalid_request``, AWS
``InvalidInput``, RFC 9457 problem details): these functions raise :class:`BodyError`, whose
``status`` is 400, 413 or 415, and whose message is safe to show.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from typing import Any

from starlette.requests import Request


class BodyError(ValueError):
    """A request body refused before parsing; ``str(exc)`` is safe to show."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def media_type(request: Request) -> str:
    """The request's media type, lower-case, without parameters."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, never more than ``limit`` bytes read: a declared ``Content-Length``
    over the limit is refused before reading, a stream that grows past it while reading."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):  # "²".isdigit() is True
            raise BodyError(400, "malformed Content-Length")
        if int(declared) > limit:
            raise BodyError(413, f"the body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyError(413, f"the body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, limit: int) -> Any:
    """An ``application/json`` body, parsed; 415 for another media type, 413 past ``limit``,
    400 for anything that is not JSON (deep nesting included)."""
    if media_type(request) != "application/json":
        raise BodyError(415, "send application/json")
    body = await read_body(request, limit)
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise BodyError(400, "the body is not valid JSON") from None


def is_loopback_host(host: str | None) -> bool:
    """``localhost`` or a loopback IP literal (``127.0.0.0/8``, ``[::1]``); never a name
    that merely resolves there."""
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def csrf_token(browser: str, purpose: str) -> str:
    """The token a form carries: HMAC-SHA256 keyed by the browser's secret cookie over what
    the form is for (a pending request's id, ``logout``), so it is bound to both."""
    return hmac.new(browser.encode(), b"csrf:" + purpose.encode(), hashlib.sha256).hexdigest()


def csrf_ok(browser: str | None, purpose: str, presented: str | None) -> bool:
    """Whether ``presented`` is this browser's token for ``purpose`` (constant time)."""
    if not browser or not presented:
        return False
    return hmac.compare_digest(csrf_token(browser, purpose).encode(), presented.encode())
