"""The "under attack" mode: a proof-of-work challenge for browsers before anything behind the
edge (the idea of Anubis and of Cloudflare's JS challenge).

    Challenge(app, key=derive_key(wrapper), mode="auto", difficulty=16, audit=trail)

While the mode is on, a request without credentials and without a valid pass cookie is not
passed on: ``GET``/``HEAD`` get a small HTML page (``503``, ``Retry-After``) whose script
finds a nonce such that ``SHA-256(challenge || nonce)`` starts with ``difficulty`` zero
bits (WebCrypto ``crypto.subtle.digest``) and navigates to :data:`VERIFY_PATH`; other
methods get ``503`` with ``Retry-After`` and an RFC 9457 problem body. The challenge is
``<expiry>.<random>.<difficulty>.<mac>``: an HMAC-SHA-256 over its fields and the client
IP, so it is short-lived, cannot be forged, and is only good for the IP it was issued to.
Verification is O(1) (one HMAC, one SHA-256); a valid solution gets a ``303`` back to the
page asked for with a cookie ``<expiry>.<mac>``, the MAC binding the client IP
(``scope["state"]["client_ip"]``) and the expiry: HttpOnly, SameSite=Lax, Secure (and
named ``__Host-…``) over TLS. Every MAC is compared with ``hmac.compare_digest``.

Requests with credentials pass unchallenged: an ``Authorization`` header of the Bearer,
DPoP, Basic or SigV4 (``AWS4-HMAC-SHA256``) schemes, a presigned SigV4 query, and the
``exempt`` paths (machine endpoints such as ``/token`` whose client authentication is in
the form body). A header is easy to forge, so these requests remain subject to every other
layer (rate limits, WAF, authentication); the challenge only keeps cheap browser-shaped
floods off what is behind it.

``mode="auto"`` turns itself on when the flood protection refuses (load shedding, the
connection caps: :class:`~bastion.edge.counters.EdgeCounters`) at least ``trigger_rate``
requests per second for ``trigger_seconds``, and off after ``calm_seconds`` below it.
Transitions are logged and audited (``UnderAttackChallenge``); refusals are counted in the
counters (layer ``challenge``) and audited in aggregate: the first of each reason per
``window`` at once, the others summed into one record when the window ends.

The key must be the same on every instance (a cookie from one is valid on all):
:func:`derive_key` derives it from the KEK.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import hashlib
import hmac
import html
import json
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl, quote

from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from bastion.edge.counters import COUNTERS, EdgeCounters
from bastion.edge.problem import MEDIA_TYPE, problem_body

log = logging.getLogger("bastion.edge.challenge")

Mode = Literal["off", "on", "auto"]
VERIFY_PATH = "/_bastion/challenge"
CREDENTIAL_SCHEMES = (b"bearer ", b"dpop ", b"basic ", b"aws4-hmac-sha256 ")
# refusals of the flood protection that mean sustained overload (edge/counters.py)
OVERLOAD = (("shed", "overloaded"), ("server", "ip_connection_cap"),
            ("server", "connection_cap"))
MAX_QUERY = 2048
MAX_NONCE = 20
TOP_SOURCES = 10
MAX_SOURCES = 1_000

_SCRIPT = """(async () => {
  const m = document.getElementById("pow");
  const c = m.dataset.challenge, d = Number(m.dataset.difficulty), enc = new TextEncoder();
  const zeros = (h) => { let n = 0; for (const b of h) { if (b === 0) { n += 8; continue; }
    return n + Math.clz32(b) - 24; } return n; };
  if (!window.crypto || !crypto.subtle) {
    m.textContent = "This check needs a secure (https) connection."; return; }
  for (let base = 0; ; base += 64) {
    const batch = [];
    for (let i = 0; i < 64; i++) {
      batch.push(crypto.subtle.digest("SHA-256", enc.encode(c + (base + i)))); }
    const hashes = await Promise.all(batch);
    for (let i = 0; i < 64; i++) {
      if (zeros(new Uint8Array(hashes[i])) >= d) {
        location.replace(m.dataset.action + "?c=" + encodeURIComponent(c) + "&n=" +
          (base + i) + "&r=" + encodeURIComponent(m.dataset.next));
        return; } } }
})();"""
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
CSP = (f"default-src 'none'; script-src 'sha256-{_SCRIPT_HASH}'; style-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="robots" content="noindex"><meta name="viewport" content="width=device-width">
<title>Checking your browser</title>
<style>body{{font-family:sans-serif;max-width:32em;margin:4em auto;padding:0 1em}}</style>
</head><body><h1>Checking your browser&hellip;</h1>
<p id="pow" data-challenge="{challenge}" data-difficulty="{difficulty}"
 data-action="{action}" data-next="{next}">This site is under heavy load. Your browser is
solving a small puzzle; you will be on your way in a moment.</p>
<noscript><p>Please enable JavaScript to continue.</p></noscript>
<script>{script}</script></body></html>"""


class AuditSink(Protocol):
    async def emit(self, event_name: str, **fields: Any) -> Any: ...


def derive_key(keyed_hash: Callable[[str, str], str]) -> bytes:
    """The challenge key from the KEK's keyed hash (``KeyWrapper.keyed_hash``): the same on
    every instance that shares the KEK, useless for anything else."""
    return bytes.fromhex(keyed_hash("under-attack-challenge", "bastion/edge/challenge/v1"))


def leading_zero_bits(digest: bytes) -> int:
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def _covers(prefixes: frozenset[str], path: str) -> bool:
    """``/token`` covers ``/token`` and ``/token/...``, not ``/tokenx``."""
    if path in prefixes:
        return True
    cut = path.find("/", 1)
    while cut != -1:
        if path[:cut] in prefixes:
            return True
        cut = path.find("/", cut + 1)
    return False


def safe_next(value: str) -> str:
    """A local path to go back to (no open redirect): ``/`` unless it is one."""
    if (not value.startswith("/") or value.startswith(("//", "/\\")) or len(value) > 2048
            or any(ord(ch) < 0x21 or ch == "\\" for ch in value)):
        return "/"
    return value


class Challenge:
    """Pure ASGI middleware; see the module docstring. Place it right after ``Shed``."""

    def __init__(self, app: ASGIApp, *, key: bytes, mode: Mode = "on", difficulty: int = 16,
                 cookie_ttl: int = 3600, challenge_ttl: int = 300,
                 trigger_rate: float = 50.0, trigger_seconds: float = 10.0,
                 calm_seconds: float = 300.0, exempt: Sequence[str] = ("/healthz",),
                 secure: bool | None = None, retry_after: int = 1,
                 audit: AuditSink | None = None, counters: EdgeCounters | None = None,
                 window: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        if len(key) < 32:
            raise ValueError("key must be at least 32 bytes")
        if mode not in ("off", "on", "auto"):
            raise ValueError("mode must be off, on or auto")
        if not 1 <= difficulty <= 32:
            raise ValueError("difficulty must be 1..32 bits")
        if cookie_ttl < 1 or challenge_ttl < 1 or retry_after < 1 or window <= 0:
            raise ValueError("ttls, retry_after and window must be positive")
        if trigger_rate <= 0 or trigger_seconds <= 0 or calm_seconds <= 0:
            raise ValueError("trigger_rate, trigger_seconds and calm_seconds must be > 0")
        if not all(p.startswith("/") for p in exempt):
            raise ValueError("exempt paths must be absolute")
        self.app = app
        self._key = key
        self.mode: Mode = mode
        self.difficulty = difficulty
        self.cookie_ttl = cookie_ttl
        self.challenge_ttl = challenge_ttl
        self.trigger_rate = trigger_rate
        self.trigger_seconds = trigger_seconds
        self.calm_seconds = calm_seconds
        self.exempt = frozenset(p.rstrip("/") or "/" for p in exempt)
        self.secure = secure
        self.retry_after = retry_after
        self.audit = audit
        self.counters = counters or COUNTERS
        self.window = window
        self.clock = clock
        self.active = mode == "on"
        self._sample: tuple[float, int] | None = None  # (time, overload refusals then)
        self._hot_since: float | None = None
        self._calm_since: float | None = None
        self._open: dict[str, tuple[int, Counter[str]]] = {}  # reason -> summed refusals
        self._tasks: set[asyncio.Task[None]] = set()

    # --- the request path -------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.mode == "off":
            await self.app(scope, receive, send)
            return
        if self.mode == "auto":
            await self._watch()
        path: str = scope["path"]
        if path == VERIFY_PATH:
            await self._verify(scope, send)
            return
        if not self.active or _covers(self.exempt, path) or self._credentialed(scope):
            await self.app(scope, receive, send)
            return
        ip = self._ip(scope)
        reason = self._cookie_state(scope, ip)
        if reason is None:
            await self.app(scope, receive, send)
            return
        await self._refused(reason, ip, scope)
        await self._challenge(scope, send, ip)

    def _credentialed(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization" and value[:17].lower().startswith(CREDENTIAL_SCHEMES):
                return True
        query: bytes = scope.get("query_string", b"")
        return b"X-Amz-Signature=" in query and b"X-Amz-Algorithm=AWS4-HMAC-SHA256" in query

    @staticmethod
    def _ip(scope: Scope) -> str:
        ip = scope.get("state", {}).get("client_ip")
        if ip is None and scope.get("client"):
            ip = str(scope["client"][0])
        return str(ip or "-")

    def _secure(self, scope: Scope) -> bool:
        return self.secure if self.secure is not None else scope.get("scheme") == "https"

    def _cookie_name(self, scope: Scope) -> str:
        return "__Host-bastion-pass" if self._secure(scope) else "bastion-pass"

    def _mac(self, *parts: str) -> str:
        message = "\x00".join(parts).encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    # --- the pass cookie ------------------------------------------------------------------
    def make_cookie(self, ip: str, now: float | None = None) -> str:
        expiry = int(self.clock() if now is None else now) + self.cookie_ttl
        return f"{expiry}.{self._mac('pass', str(expiry), ip)}"

    def _cookie_state(self, scope: Scope, ip: str) -> str | None:
        """None when the request carries a valid pass, else the refusal reason."""
        raw = Headers(scope=scope).get("cookie")
        value = cookie_parser(raw[:8192]).get(self._cookie_name(scope)) if raw else None
        if not value:
            return "challenged"
        expiry, _, mac = value.partition(".")
        if not (expiry.isascii() and expiry.isdigit() and len(expiry) <= 12 and mac):
            return "invalid_cookie"
        good = hmac.compare_digest(mac.encode(), self._mac("pass", expiry, ip).encode())
        now = self.clock()
        if not good or not now < int(expiry) <= now + self.cookie_ttl + 60:
            return "invalid_cookie"
        return None

    # --- the challenge ----------------------------------------------------------------
    def make_challenge(self, ip: str, now: float | None = None) -> str:
        expiry = int(self.clock() if now is None else now) + self.challenge_ttl
        fields = f"{expiry}.{secrets.token_urlsafe(12)}.{self.difficulty}"
        return f"{fields}.{self._mac('challenge', fields, ip)}"

    def check_solution(self, challenge: str, nonce: str, ip: str) -> str | None:
        """None when ``nonce`` solves ``challenge`` for ``ip`` now, else the reason."""
        parts = challenge.split(".")
        if (len(parts) != 4 or not nonce.isascii() or not nonce.isdigit()
                or len(nonce) > MAX_NONCE):
            return "malformed"
        expiry, _, bits, mac = parts
        if not (expiry.isascii() and expiry.isdigit() and len(expiry) <= 12
                and bits.isascii() and bits.isdigit() and len(bits) <= 2):
            return "malformed"
        good = hmac.compare_digest(mac.encode(),
                                   self._mac("challenge", ".".join(parts[:3]), ip).encode())
        if not good:
            return "bad_signature"  # forged, or issued to another IP
        now = self.clock()
        if not now < int(expiry) <= now + self.challenge_ttl + 60:
            return "expired"
        digest = hashlib.sha256((challenge + nonce).encode()).digest()
        if leading_zero_bits(digest) < max(int(bits), self.difficulty):
            return "insufficient_work"
        return None

    async def _verify(self, scope: Scope, send: Send) -> None:
        query = scope.get("query_string", b"")[:MAX_QUERY].decode("latin-1")
        params = dict(parse_qsl(query, max_num_fields=8))
        ip = self._ip(scope)
        target = safe_next(params.get("r", "/"))
        if scope["method"] not in ("GET", "HEAD"):
            await self._problem(scope, send, 405, "use GET", [(b"allow", b"GET, HEAD")])
            return
        problem = self.check_solution(params.get("c", ""), params.get("n", ""), ip)
        if problem is not None:
            log.info("challenge: invalid solution from %s (%s)", ip, problem)
            await self._refused("invalid_solution", ip, scope, detail=problem)
            await self._problem(scope, send, 403, "the challenge was not solved; reload "
                                "the page to get a new one")
            return
        cookie = (f"{self._cookie_name(scope)}={self.make_cookie(ip)}; Path=/; "
                  f"Max-Age={self.cookie_ttl}; HttpOnly; SameSite=Lax")
        if self._secure(scope):
            cookie += "; Secure"
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", quote(target, safe="/?&=%:@!$'()*+,;~-._").encode()),
                                (b"set-cookie", cookie.encode()),
                                (b"cache-control", b"no-store"),
                                (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    async def _challenge(self, scope: Scope, send: Send, ip: str) -> None:
        accept = Headers(scope=scope).get("accept", "*/*")
        if scope["method"] not in ("GET", "HEAD") or not (
                "text/html" in accept or "*/*" in accept):
            await self._problem(scope, send, 503, "the service is under attack: this "
                                "request needs credentials or a browser check; load a page "
                                "in a browser first", [(b"retry-after",
                                                        str(self.retry_after).encode())])
            return
        raw = scope.get("raw_path")  # as the browser sent it (still percent-encoded)
        target = raw.decode("latin-1") if raw else quote(scope["path"])
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        page = _PAGE.format(challenge=html.escape(self.make_challenge(ip)),
                            difficulty=self.difficulty, action=VERIFY_PATH,
                            next=html.escape(safe_next(target)), script=_SCRIPT).encode()
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", str(len(page)).encode()),
            (b"cache-control", b"no-store"),
            (b"retry-after", str(self.retry_after).encode()),
            (b"content-security-policy", CSP.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer")]})
        await send({"type": "http.response.body",
                    "body": b"" if scope["method"] == "HEAD" else page})

    async def _problem(self, scope: Scope, send: Send, status: int, detail: str,
                       extra: list[tuple[bytes, bytes]] | None = None) -> None:
        body = problem_body(status, detail)
        request_id = scope.get("state", {}).get("request_id")
        if "instance" not in body and request_id:
            body["instance"] = f"urn:bastion:request:{request_id}"
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", MEDIA_TYPE.encode()), (b"content-length", str(len(data)).encode()),
            (b"cache-control", b"no-store"), *(extra or [])]})
        await send({"type": "http.response.body", "body": data})

    # --- auto mode ----------------------------------------------------------------------
    def _overload_total(self) -> int:
        refusals = self.counters.refusals
        return sum(refusals.get(key, 0) for key in OVERLOAD)

    async def _watch(self) -> None:
        """Sample the flood protection's refusals (at most once a second, on requests) and
        switch the mode on sustained overload, off after a calm period."""
        now, total = self.clock(), self._overload_total()
        if self._sample is None:
            self._sample = (now, total)
            return
        then, before = self._sample
        if now - then < 1.0:
            return
        self._sample = (now, total)
        rate = (total - before) / (now - then)
        if rate >= self.trigger_rate:
            self._calm_since = None
            if self._hot_since is None:
                self._hot_since = then
            if not self.active and now - self._hot_since >= self.trigger_seconds:
                await self._switch(True, rate)
        else:
            self._hot_since = None
            if self._calm_since is None:
                self._calm_since = then
            if self.active and now - self._calm_since >= self.calm_seconds:
                await self._switch(False, rate)

    async def _switch(self, on: bool, rate: float) -> None:
        self.active = on
        state = "on" if on else "off"
        log.warning("under attack mode %s (auto): %.1f overload refusals/s, trigger %g/s",
                    state, rate, self.trigger_rate)
        if self.audit is not None:
            try:
                await self.audit.emit(
                    "UnderAttackChallenge", user_identity={"type": "Anonymous"},
                    request_parameters={"mode": "auto", "state": state},
                    request_id=None, source_ip=None, user_agent=None,
                    additional={"transition": state, "overloadRate": round(rate, 1),
                                "triggerRate": self.trigger_rate,
                                "triggerSeconds": self.trigger_seconds,
                                "calmSeconds": self.calm_seconds})
            except Exception:
                log.exception("under attack mode: the transition could not be audited")

    # --- refusals: counted, audited in aggregate ------------------------------------------
    async def _refused(self, reason: str, ip: str, scope: Scope, **params: str) -> None:
        self.counters.refusals[("challenge", reason)] += 1
        entry = self._open.get(reason)
        if entry is not None:
            count, sources = entry
            if ip in sources or len(sources) < MAX_SOURCES:
                sources[ip] += 1
            else:
                sources["*"] += 1
            self._open[reason] = (count + 1, sources)
            return
        self._open[reason] = (0, Counter())
        asyncio.get_running_loop().call_later(self.window, self._due, reason,
                                              context=contextvars.Context())
        if self.audit is not None:
            await self.audit.emit(
                "UnderAttackChallenge", user_identity={"type": "Anonymous"},
                request_parameters={"reason": reason, "method": scope["method"],
                                    "path": scope["path"][:200], **params},
                error_code="ChallengeRequired", error_message=f"challenge: {reason}",
                additional={"refusals": 1, "aggregated": False,
                            "windowSeconds": self.window})

    def _due(self, reason: str) -> None:
        entry = self._open.pop(reason, None)
        if entry is None or entry[0] == 0:
            return
        task = asyncio.get_running_loop().create_task(self._summary(reason, *entry))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _summary(self, reason: str, count: int, sources: Counter[str]) -> None:
        top = dict(sources.most_common(TOP_SOURCES))
        log.info("challenge: %d more refused (%s) in %gs from %d sources", count, reason,
                 self.window, len(sources))
        if self.audit is None:
            return
        try:
            await self.audit.emit(
                "UnderAttackChallenge", user_identity={"type": "Anonymous"},
                request_parameters={"reason": reason}, error_code="ChallengeRequired",
                error_message=f"challenge: {reason} ({count} in {self.window:g}s)",
                request_id=None, source_ip=next(iter(top), None), user_agent=None,
                additional={"refusals": count, "aggregated": True,
                            "windowSeconds": self.window, "sources": top,
                            "distinctSources": len(sources)})
        except Exception:
            log.exception("under attack mode: an aggregated audit record could not be written")

    async def flush(self) -> None:
        """Write the pending aggregated counts now (shutdown, tests)."""
        for reason in list(self._open):
            count, sources = self._open.pop(reason)
            if count:
                await self._summary(reason, count, sources)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def flush_challenges(app: object) -> None:
    """Write the pending aggregated refusal counts of every ``Challenge`` in a built
    middleware stack (at shutdown, before the audit trail closes)."""
    node = getattr(app, "middleware_stack", None) or app
    for _ in range(64):  # a stack, not a cycle
        if isinstance(node, Challenge):
            await node.flush()
        node = getattr(node, "app", None)
        if node is None:
            return
