"""Request context: a request id for correlation (``X-Request-Id`` on every response, and in
every audit record the request causes), the peer address and user agent for the audit trail,
the fail-closed answer when the trail cannot record a security decision, and the access log
(method, path without the query string, which may carry codes or state, status, duration,
request id; never headers or bodies).

The request id is always Bastion's own: a client-sent ``X-Request-Id`` is not trusted (it
could collide with or forge another request's records).

The client IP is computed here, once: the peer address, or behind ``trusted_proxies`` the
right-most untrusted hop of their forwarding header (``bastion.edge.clientip``). It goes to
``scope["state"]["client_ip"]`` (the connection's own peer to ``"peer_ip"``), into
``scope["client"]`` (so ``request.client.host`` agrees) and into the audit context; rate
limits, IAM's ``aws:SourceIp``, the WAF and the audit trail all read that one value."""

from __future__ import annotations

import json
import logging
import secrets
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.audit.context import RequestInfo, current_request
from bastion.audit.trail import AuditUnavailable
from bastion.edge.clientip import TrustedProxies

log = logging.getLogger("bastion.edge")
access_log = logging.getLogger("bastion.access")
MAX_UA = 512


class RequestContext:
    def __init__(self, app: ASGIApp, *, trusted_proxies: TrustedProxies | None = None) -> None:
        self.app = app
        self.proxies = trusted_proxies if trusted_proxies else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = secrets.token_hex(12)
        user_agent = None
        for name, value in scope["headers"]:
            if name == b"user-agent":
                user_agent = value[:MAX_UA].decode("latin-1")
                break
        client = scope.get("client")
        peer = str(client[0]) if client else None
        source_ip = peer
        if self.proxies is not None:
            source_ip = self.proxies.client_ip(peer, scope["headers"])
            if source_ip != peer and client:
                scope["client"] = (source_ip, 0)
        info = RequestInfo(request_id=request_id, source_ip=source_ip,
                           user_agent=user_agent, secure=scope.get("scheme") == "https",
                           method=scope["method"], path=scope["path"])
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["client_ip"] = source_ip
        state["peer_ip"] = peer
        token = current_request.set(info)
        start = time.perf_counter()
        status = 0  # 0: no response started
        rid = request_id.encode()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid)]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except AuditUnavailable:
            if status:
                raise
            # fail closed: a security decision that cannot be recorded is not given
            body = json.dumps({"error": "temporarily_unavailable",
                               "error_description": "the audit trail is unavailable",
                               "request_id": request_id}).encode()
            await send_wrapper({"type": "http.response.start", "status": 503,
                                "headers": [(b"content-type", b"application/json"),
                                            (b"content-length", str(len(body)).encode()),
                                            (b"cache-control", b"no-store"),
                                            (b"retry-after", b"5")]})
            await send_wrapper({"type": "http.response.body", "body": body})
        finally:
            current_request.reset(token)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info("%s %s %s %d %.1fms %s", info.source_ip or "-",
                                info.method, info.path[:200], status or 500,
                                (time.perf_counter() - start) * 1000, request_id)
