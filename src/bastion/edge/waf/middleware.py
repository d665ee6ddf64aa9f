"""The WAF as pure ASGI middleware, usable in any Starlette/FastAPI app:

    app = WafMiddleware(app, waf=Waf(WafConfig(paranoia=1)), mode="block", audit=trail)

Every HTTP request is inspected before the app sees it, whatever its path or method: the
body is read (up to the inspection limit), inspected with the request line and headers,
then replayed to the app unchanged. Modes: ``block`` refuses a request whose anomaly score
reaches the threshold with ``403`` (RFC 9457 problem, the request id, no rule detail) and a
``WafBlock`` audit record carrying the rule ids, the score and redacted matches; ``detect``
records ``WafMatch`` and lets it pass; ``off`` does nothing.

A request that cannot be inspected is refused with its 4xx: a body past the limit ``413``
(unless its path is in ``unlimited_paths``: then its head is inspected and the body streams
through), an undecodable ``Content-Encoding`` ``415``, malformed multipart or JSON nested
too deep ``400``. An error inside the engine refuses the request with ``503`` (fail closed)
unless ``fail_open``; either way it is logged and audited.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, Literal, Protocol

import anyio.to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.edge.metrics import Refusals
from bastion.edge.problem import MEDIA_TYPE, problem_body
from bastion.edge.waf.decode import HttpRequest
from bastion.edge.waf.engine import Verdict, Waf

log = logging.getLogger("bastion.edge.waf")
Mode = Literal["block", "detect", "off"]
THREAD_THRESHOLD = 16_384  # bodies larger than this are inspected off the event loop
ERROR_CODES = {400: "MalformedRequest", 403: "AnomalyScoreExceeded", 413: "BodyTooLarge",
               415: "UnsupportedEncoding", 431: "HeadersTooLarge", 503: "EngineError"}


class AuditSink(Protocol):
    async def emit(self, event_name: str, **fields: Any) -> Any: ...


class WafMiddleware:
    """See the module docstring."""

    def __init__(self, app: ASGIApp, *, waf: Waf, mode: Mode = "block",
                 audit: AuditSink | None = None, fail_open: bool = False,
                 unlimited_paths: Sequence[str] = (),
                 metrics: Refusals | None = None) -> None:
        if mode not in ("block", "detect", "off"):
            raise ValueError("mode is block, detect or off")
        if not isinstance(waf, Waf):
            raise TypeError("waf must be a bastion.edge.waf.Waf")
        if not all(p.startswith("/") for p in unlimited_paths):
            raise ValueError("unlimited_paths must be absolute paths")
        self.app = app
        self.waf = waf
        self.mode = mode
        self.audit = audit
        self.fail_open = fail_open
        self.unlimited_paths = tuple(unlimited_paths)
        self.metrics = metrics
        self.limit = waf.config.body_limit

    def _unlimited(self, path: str) -> bool:
        return any(path == p or path.startswith(p.rstrip("/") + "/")
                   for p in self.unlimited_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.mode == "off":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        over = False
        disconnected = False
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
                break
            chunk = message.get("body", b"")
            more = bool(message.get("more_body", False))
            chunks.append(chunk)
            size += len(chunk)
            if size > self.limit:
                over = True
                break
        if disconnected:
            return
        if over and not self._unlimited(scope["path"]):
            verdict = Verdict(True, 0, [], 413, "request body too large to inspect")
        else:
            request = self._request(scope, b"" if over else b"".join(chunks))
            try:
                if size > THREAD_THRESHOLD:
                    verdict = await anyio.to_thread.run_sync(self.waf.inspect, request)
                else:
                    verdict = self.waf.inspect(request)
            except Exception:
                log.exception("waf: the engine failed on %s %s", scope["method"],
                              scope["path"][:200])
                await self._audit(scope, "WafBlock", None, "EngineError",
                                  "the WAF engine failed" + (
                                      "; passed (fail open)" if self.fail_open else ""))
                if not self.fail_open:
                    await self._answer(scope, send, 503,
                                       "the request could not be inspected; try again")
                    return
                verdict = Verdict(False, 0)
        if verdict.blocked:
            if await self._refused(scope, send, verdict):
                return
        elif verdict.matches:
            log.info("waf: score %d below threshold on %s %s: %s", verdict.score,
                     scope["method"], scope["path"][:200],
                     ", ".join(m.rule_id for m in verdict.matches))
        await self.app(scope, _replay(chunks, more and not disconnected, receive), send)

    def _request(self, scope: Scope, body: bytes) -> HttpRequest:
        raw = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
        target = raw.decode("latin-1")
        query = scope.get("query_string", b"")
        if query:
            target += "?" + query.decode("latin-1")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        return HttpRequest(scope["method"], target, headers, body)

    async def _refused(self, scope: Scope, send: Send, verdict: Verdict) -> bool:
        """Record the verdict; answer and return True if the request is refused."""
        families = sorted({m.family for m in verdict.matches})
        status = verdict.status if verdict.status >= 400 else 403
        summary = ", ".join(f"{m.rule_id}@{m.location[:60]}" for m in verdict.matches[:20])
        if self.mode == "detect":
            log.warning("waf (detect): would refuse %s %s with %d (score %d: %s%s)",
                        scope["method"], scope["path"][:200], status, verdict.score,
                        summary, verdict.reason if not summary else "")
            await self._audit(scope, "WafMatch", verdict, None, "detected, passed (detect)")
            return False
        log.warning("waf: refused %s %s with %d (score %d: %s%s)", scope["method"],
                    scope["path"][:200], status, verdict.score, summary,
                    verdict.reason if not summary else "")
        if self.metrics is not None:
            self.metrics.refused("waf", families[0] if families else ERROR_CODES.get(
                status, "refused").lower())
        await self._audit(scope, "WafBlock", verdict, ERROR_CODES.get(status, "Refused"),
                          verdict.reason or "refused")
        detail = ("the request was refused by the web application firewall"
                  if status == 403 else verdict.reason)
        await self._answer(scope, send, status, detail)
        return True

    async def _audit(self, scope: Scope, event: str, verdict: Verdict | None,
                     error_code: str | None, message: str) -> None:
        if self.audit is None:
            return
        params: dict[str, Any] = {"method": scope["method"], "path": scope["path"][:200],
                                  "mode": self.mode}
        if verdict is not None:
            params.update(score=verdict.score,
                          threshold=self.waf.config.inbound_threshold,
                          paranoia=self.waf.config.paranoia,
                          rules=[{"id": m.rule_id, "family": m.family,
                                  "location": m.location[:120], "match": m.redacted}
                                 for m in verdict.matches[:32]])
        fields: dict[str, Any] = {"user_identity": {"type": "Anonymous"},
                                  "request_parameters": params, "error_message": message}
        if error_code is not None:
            fields["error_code"] = error_code
        await self.audit.emit(event, **fields)

    async def _answer(self, scope: Scope, send: Send, status: int, detail: str) -> None:
        request_id = scope.get("state", {}).get("request_id")
        body = problem_body(status, detail)
        if "instance" not in body and request_id:
            body["instance"] = f"urn:bastion:request:{request_id}"
        data = json.dumps(body).encode()
        headers = [(b"content-type", MEDIA_TYPE.encode()),
                   (b"content-length", str(len(data)).encode()),
                   (b"cache-control", b"no-store")]
        if status == 503:
            headers.append((b"retry-after", b"5"))
        if status >= 400 and status != 403:
            headers.append((b"connection", b"close"))  # the unread body is not drained
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})


def _replay(chunks: list[bytes], more: bool, receive: Receive) -> Receive:
    """A ``receive`` giving the app the body already read, then the rest of the stream."""
    pending = list(chunks)

    async def replay() -> Message:
        if pending:
            body = b"".join(pending)
            pending.clear()
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()  # the rest of the body, or http.disconnect

    return replay
