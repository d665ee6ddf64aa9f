"""The AWS KMS wire API on ``bastion serve``: AWS JSON 1.1 over HTTP, signed with SigV4.

The protocol (AWS KMS API Reference, "Making API requests"; Smithy's ``awsJson1_1``
protocol): ``POST`` to ``/kms`` (any request) or ``/`` (only requests that carry
``X-Amz-Target``, so no other route of ``/`` is shadowed), ``X-Amz-Target:
TrentService.<Operation>``, ``Content-Type: application/x-amz-json-1.1``, the operation's
input as a JSON object. Answers are JSON with ``x-amzn-RequestId`` (the request id of the
edge's RequestContext, the one in every audit record the call causes); errors are
``{"__type": "<Name>", "message": "..."}`` with AWS's names: the SigV4 ones
(``MissingAuthenticationTokenException``, ``IncompleteSignatureException``,
``UnrecognizedClientException``, ``InvalidSignatureException``, ``ExpiredTokenException``),
``SerializationException`` for a body that is not a JSON object, and the KMS service's own
(``NotFoundException``, ``AccessDeniedException``…).

Steps: read the body (``kms_api_max_body`` at most), verify SigV4 (``edge/sigv4.py``; every
refusal is an ``Authenticate`` audit record naming the access key id, never the secret or
signature, within the budget of ``kms/refusals.py`` so that a flood of unsigned garbage is
counted rather than written one record each), resolve the key's owner to its IAM
principal (a user with the roles their tokens would carry, a client with its roles, as
``edge/authz.py`` does for bearer tokens; a deleted or disabled owner is refused like an
unknown key), then ``provider.kms.call``: the service authorizes (key policy, IAM, grants)
and audits the call, naming the access key (``userIdentity.accessKeyId``). A signed
request refused before dispatch (no such operation, a body that is not JSON) is audited
too: under its operation's name, or ``UnknownOperation`` with the ``X-Amz-Target`` it gave;
never with its body. A body over ``kms_api_max_body`` (413) is refused before its signature
can be checked: an ``Authenticate`` record within the same budget (reason ``BodyTooLarge``).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from cachetools import LRUCache
from starlette.routing import BaseRoute, Match
from starlette.types import Receive, Scope, Send

from bastion.audit.context import current_request
from bastion.audit.trail import AuditUnavailable
from bastion.edge.sigv4 import (
    INVALID_TOKEN,
    SigV4Error,
    SigV4Verifier,
    UnrecognizedClient,
    parse_authorization,
)
from bastion.iam.authorizer import Subject
from bastion.identity.access_keys import AccessKeyRecord, AccessKeys
from bastion.kms.core import Caller
from bastion.kms.errors import KMSError, UnknownOperationException, ValidationException
from bastion.kms.refusals import RefusalAudit
from bastion.kms.service import OPERATIONS, user_identity
from bastion.oauth.families import load_subject
from bastion.oauth.provider import Provider

log = logging.getLogger("bastion.kms")
TARGET_PREFIX = "TrentService."
CONTENT_TYPES = frozenset({"application/x-amz-json-1.1", "application/x-amz-json-1.0",
                           "application/json"})
JSON_TYPE = b"application/x-amz-json-1.1"
_OPERATION_RE = re.compile(r"[A-Za-z]{1,64}")  # fullmatch: no backtracking to speak of
_TARGET_RE = re.compile(r"[A-Za-z0-9_.]{1,96}")  # an X-Amz-Target an audit record may copy
SUBJECTS_CACHED = 10_000


def serialization_error(message: str) -> KMSError:
    return KMSError(message, code="SerializationException", status=400)


def parse_body(body: bytes) -> dict[str, Any]:
    """The request object: strict JSON (no NaN, no duplicate member; nesting deeper than
    the interpreter's recursion limit is refused), an object; an empty body is ``{}``."""
    if not body.strip():
        return {}

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise ValueError(f"duplicate member {key[:64]!r}")
            out[key] = value
        return out

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        value = json.loads(body, object_pairs_hook=pairs, parse_constant=constant)
    except (ValueError, RecursionError) as exc:
        detail = str(exc) if isinstance(exc, ValueError) else "too deep"
        raise serialization_error(f"The request is not valid JSON: {detail[:200]}") from None
    if not isinstance(value, dict):
        raise serialization_error("The request must be a JSON object.")
    return value


class KeyOwners:
    """The IAM subject an access key speaks for, cached like the key (the STS wire API
    uses it too)."""

    def __init__(self, provider: Provider, ttl: float) -> None:
        self.provider = provider
        self._ttl = ttl
        self._subjects: LRUCache[tuple[str, str], tuple[float, Subject | None]] = LRUCache(
            SUBJECTS_CACHED)

    async def subject(self, record: AccessKeyRecord) -> Subject | None:
        """The IAM subject a key speaks for (cached like the key): a user with their own and
        their groups' roles; a client with its roles; a role session. None when the owner is
        gone or disabled."""
        # a role's sessions differ (name, session policy): each key is its own slot
        slot = (record.owner_kind,
                record.id if record.owner_kind == "role" else record.owner_id)
        now = time.monotonic()
        hit = self._subjects.get(slot)
        if hit is not None and hit[0] > now:
            return hit[1]
        subject: Subject | None = None
        if record.owner_kind == "user":
            user = await load_subject(self.provider.fast, record.owner_id)
            if user is not None and not user.disabled:
                subject = Subject("user", user.id, tuple(sorted(user.roles)))
        elif record.owner_kind == "client":
            client = await self.provider.client(record.owner_id)
            if client is not None:
                subject = Subject("client", client.client_id, tuple(sorted(client.roles)),
                                  client_id=client.client_id)
        elif record.owner_kind == "role" and record.session:
            name, policy = record.session.get("name"), record.session.get("policy")
            if isinstance(name, str):
                subject = Subject("role", record.owner_id, (), name,
                                  policy if isinstance(policy, str) else None)
        self._subjects[slot] = (now + self._ttl, subject)
        return subject


class SigV4Plumbing(NamedTuple):
    """What a SigV4 wire API (this one, the STS's) is built on: its access keys, the
    verifier of ``service``'s signatures, the keys' owners and the refusal budget."""

    keys: AccessKeys
    verifier: SigV4Verifier
    owners: KeyOwners
    refusals: RefusalAudit

    @classmethod
    def build(cls, provider: Provider, *, service: str) -> SigV4Plumbing:
        s = provider.settings
        keys = AccessKeys(provider.fast, provider.wrapper, s.access_key_cache_ttl)
        verifier = SigV4Verifier(keys, provider.kv, service=service, region=s.kms_region,
                                 max_skew=s.sigv4_max_skew,
                                 replay_protection=s.sigv4_replay_protection)
        return cls(keys, verifier, KeyOwners(provider, s.access_key_cache_ttl),
                   RefusalAudit(provider.audit, service=service))


class KmsAPI:
    """The ASGI endpoint of the wire API (``routes()`` places it)."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.max_body = provider.settings.kms_api_max_body
        self.keys, self.verifier, self.owners, self.refusals = SigV4Plumbing.build(
            provider, service="kms")

    def routes(self) -> list[BaseRoute]:
        """``/kms`` (and ``/kms/``, where SDKs given an endpoint ending in ``/kms`` post) for
        every POST; ``/`` only for POSTs that carry ``X-Amz-Target``."""
        return [AmzTargetRoute(("/kms", "/kms/"), self, require_target=False),
                AmzTargetRoute(("/",), self, require_target=True)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.setdefault("state", {})
        request_id = str(state.get("request_id") or "")
        try:
            status, body = 200, await self._handle(scope, receive, state, request_id)
        except KMSError as exc:
            status, body = exc.status, json.dumps(exc.to_dict()).encode()
        except SigV4Error as exc:
            status = exc.status
            body = json.dumps({"__type": exc.code, "message": exc.message}).encode()
        except AuditUnavailable:
            raise  # the edge answers 503: a decision that cannot be recorded is not given
        except Exception:
            log.exception("KMS wire API: request %s failed", request_id)
            status, body = 500, json.dumps({"__type": "KMSInternalException",
                                            "message": "An internal error occurred."}).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", JSON_TYPE), (b"content-length", str(len(body)).encode()),
            (b"x-amzn-requestid", request_id.encode()), (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, scope: Scope, receive: Receive, state: dict[str, Any],
                      request_id: str) -> bytes:
        headers: Sequence[tuple[bytes, bytes]] = scope["headers"]
        try:
            raw = await self._read(scope, receive)
        except KMSError as exc:  # 413: refused before anyone is authenticated
            await self._too_large(exc, headers, state.get("client_ip"))
            raise
        try:
            verified = await self.verifier.verify(
                scope["method"], scope.get("raw_path") or scope["path"].encode(),
                scope.get("query_string", b""), headers, raw)
            record = verified.key
            subject = await self.owners.subject(record)
            principal = await self.provider.iam.principal(subject) if subject else None
            if principal is None:
                raise UnrecognizedClient(INVALID_TOKEN, record.id)
        except SigV4Error as exc:
            await self._refused(exc, state.get("client_ip"))
            raise
        try:
            await self.keys.touch(record, verified.service, verified.region)
        except Exception:  # "last used" is bookkeeping: its write never fails the call
            log.warning("could not record the last use of access key %s", record.id,
                        exc_info=True)
        req = current_request.get()
        caller = Caller(principal.arn, self.provider.settings.account_id, subject=subject,
                        source_ip=state.get("client_ip"), request_id=request_id,
                        secure=req.secure if req else scope.get("scheme") == "https",
                        user_agent=req.user_agent if req else None, access_key_id=record.id)
        target = _header(headers, b"x-amz-target")
        try:
            operation = self._operation(target)
            if operation not in OPERATIONS:
                raise UnknownOperationException(f"Unknown operation {operation[:64]!r}")
            ctype = _header(headers, b"content-type")
            if ctype is not None and ctype.split(";")[0].strip().lower() not in CONTENT_TYPES:
                raise serialization_error("Content-Type must be application/x-amz-json-1.1.")
            request = parse_body(raw)
        except KMSError as exc:
            # refused before dispatch, by an authenticated caller: audited in full, never
            # with the body (it may hold a plaintext)
            await self._undispatched(caller, target, exc)
            raise
        response = await self.provider.kms.call(operation, request, caller)
        return json.dumps(response).encode()

    async def _undispatched(self, caller: Caller, target: str | None, exc: KMSError) -> None:
        """The audit record of a signed request that never reached an operation: under the
        operation's own name when it is one, else ``UnknownOperation`` with the target (its
        shape checked first; a malformed one is not copied)."""
        name = target[len(TARGET_PREFIX):] if target and target.startswith(TARGET_PREFIX) \
            else ""
        params: dict[str, Any] = {}
        if target is not None:
            params["target"] = target if _TARGET_RE.fullmatch(target) else "(malformed)"
        fields: dict[str, Any] = {
            "user_identity": user_identity(caller), "request_parameters": params or None,
            "error_code": exc.code, "error_message": exc.message,
            "request_id": caller.request_id or None, "source_ip": caller.source_ip,
            "user_agent": caller.user_agent}
        event = name if name in OPERATIONS else "UnknownOperation"
        await self.provider.audit.emit(event, **fields)

    async def _read(self, scope: Scope, receive: Receive) -> bytes:
        declared = _header(scope["headers"], b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            raise ValidationException(f"The request body is larger than {self.max_body} "
                                      "bytes.", status=413)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise ValidationException(f"The request body is larger than {self.max_body} "
                                          "bytes.", status=413)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    @staticmethod
    def _operation(target: str | None) -> str:
        if target is None:
            raise KMSError("The request names no operation (X-Amz-Target).",
                           code="UnknownOperationException")
        if not target.startswith(TARGET_PREFIX) or not _OPERATION_RE.fullmatch(
                target[len(TARGET_PREFIX):]):
            raise KMSError("X-Amz-Target must be TrentService.<Operation>.",
                           code="UnknownOperationException")
        return target[len(TARGET_PREFIX):]

    async def _refused(self, exc: SigV4Error, source_ip: str | None) -> None:
        """An ``Authenticate`` record (or a count: kms/refusals.py) naming the access key
        id when the request gave a well-formed one; never the signature or the body."""
        ident: dict[str, Any] = {"type": "Unknown"}
        if exc.access_key_id:
            ident["accessKeyId"] = exc.access_key_id[:128]
        await self.refusals.refused("Authenticate", source_ip, exc.code, user_identity=ident,
                                    error_message=exc.message,
                                    additional={"scheme": "AWS4-HMAC-SHA256",
                                                "service": "kms",
                                                "reason": type(exc).__name__})

    async def _too_large(self, exc: KMSError, headers: Sequence[tuple[bytes, bytes]],
                         source_ip: str | None) -> None:
        """A body refused for its size (413) is refused before its signature is checked
        (SigV4 signs the body's hash): an ``Authenticate`` record (or a count) like the
        SigV4 refusals, naming the access key id and target the request claims (their
        shape checked first), never the body or the signature."""
        ident: dict[str, Any] = {"type": "Unknown"}
        authorization = _header(headers, b"authorization")
        if authorization is not None:
            try:
                ident["accessKeyId"] = parse_authorization(authorization).access_key_id
            except SigV4Error as bad:  # the id when the header got that far, unverified
                if bad.access_key_id:
                    ident["accessKeyId"] = bad.access_key_id[:128]
        target = _header(headers, b"x-amz-target")
        params = None if target is None else {
            "target": target if _TARGET_RE.fullmatch(target) else "(malformed)"}
        await self.refusals.refused("Authenticate", source_ip, exc.code, user_identity=ident,
                                    request_parameters=params, error_message=exc.message,
                                    additional={"service": "kms", "reason": "BodyTooLarge",
                                                "maxBody": self.max_body})


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1").strip()
    return None


class AmzTargetRoute(BaseRoute):
    """``POST`` to one of ``paths`` to the wire API; with ``require_target``, only when it carries
    ``X-Amz-Target`` (other requests fall through to the routes after it)."""

    def __init__(self, paths: tuple[str, ...], app: KmsAPI, *, require_target: bool) -> None:
        self.paths = frozenset(paths)
        self.app = app
        self.require_target = require_target

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["path"] not in self.paths or scope["method"] != "POST":
            return Match.NONE, {}
        if self.require_target and not any(k == b"x-amz-target" for k, _ in scope["headers"]):
            return Match.NONE, {}
        return Match.FULL, {}

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        from starlette.routing import NoMatchFound

        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


__all__ = ["AmzTargetRoute", "KeyOwners", "KmsAPI", "SigV4Plumbing", "parse_body"]
