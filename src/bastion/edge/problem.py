"""Problem Details for HTTP APIs (RFC 9457), the one error shape of Bastion's non-OAuth JSON
APIs (Orders, the admin API). OAuth endpoints keep RFC 6749's ``error`` bodies, the STS and
KMS APIs keep AWS's shapes: clients of those parse them.

    {"type": "about:blank", "title": "Bad Request", "status": 400,
     "detail": "quantity: must be at least 1", "instance": "urn:bastion:request:<id>"}

``detail`` is for humans and must never carry a secret or an internal error; extension
members (RFC 9457 §3.2) carry machine-readable specifics such as validation ``errors``.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from starlette.responses import JSONResponse

from bastion.audit.context import current_request

MEDIA_TYPE = "application/problem+json"


def problem_body(status: int, detail: str | None = None, *, title: str | None = None,
                 type_: str = "about:blank", **extensions: Any) -> dict[str, Any]:
    """The problem object; ``title`` defaults to the status phrase (RFC 9457 §4.2.1: with
    ``about:blank`` the title SHOULD be the status phrase)."""
    body: dict[str, Any] = {"type": type_,
                            "title": title or HTTPStatus(status).phrase, "status": status}
    if detail is not None:
        body["detail"] = detail
    info = current_request.get()
    if info is not None:
        body["instance"] = f"urn:bastion:request:{info.request_id}"
    for key, value in extensions.items():
        if key not in body:
            body[key] = value
    return body


def problem(status: int, detail: str | None = None, *, title: str | None = None,
            type_: str = "about:blank", headers: dict[str, str] | None = None,
            **extensions: Any) -> JSONResponse:
    """An RFC 9457 response (``application/problem+json``, ``Cache-Control: no-store``)."""
    return JSONResponse(problem_body(status, detail, title=title, type_=type_, **extensions),
                        status_code=status, media_type=MEDIA_TYPE,
                        headers={"Cache-Control": "no-store", **(headers or {})})
