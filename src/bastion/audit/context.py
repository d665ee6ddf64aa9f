"""The request being served, as the audit trail needs it: correlation id, source address,
user agent, transport. Set once per request by ``bastion.edge.request.RequestContext``;
read by whoever records an event, however deep, without threading it through calls."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestInfo:
    request_id: str
    source_ip: str | None
    user_agent: str | None
    secure: bool
    method: str = ""
    path: str = ""


current_request: ContextVar[RequestInfo | None] = ContextVar("bastion_request", default=None)
