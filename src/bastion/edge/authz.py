"""Authorization at the edge: each route declares the IAM action it performs and the ARN of
the resource it touches; this middleware asks IAM before the endpoint runs.

    Route("/orders/{order_id}", api.get_order, methods=["GET"], middleware=[
        bearer, Middleware(Authorize, iam=iam, audit=audit, action="orders:GetOrder",
                           resource="arn:bastion:orders::{account}:order/{order_id}")])

The principal comes from the verified bearer token (``BearerAuthMiddleware`` runs first);
where the request comes from grants nothing (127.0.0.1 included). A denial is a 403 in RFC
6750's shape with IAM's wording, and an ``AccessDenied`` audit record, written before the
answer leaves. The decision and principal are left in ``scope["state"]`` for the endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from bastion.audit.context import current_request
from bastion.audit.trail import AuditTrail
from bastion.edge.metrics import Refusals
from bastion.edge.tls import mtls_spiffe_id
from bastion.iam import Decision
from bastion.iam.authorizer import Authorizer, Principal, Subject
from bastion.iam.scheme import parse_principal_arn
from bastion.store.fast import FastStore
from bastion.tokens.errors import BearerError
from bastion.tokens.starlette import BearerAuthMiddleware
from bastion.tokens.verify import TokenVerifier, VerifiedToken

MAX_PARAM = 256
# the condition keys a route's action fills from its request (path parameters, stored state)
ContextHook = Callable[[Scope], Awaitable[dict[str, Any]]]
SESSION_PARENTS_CLAIM = "sts_parents"  # the jti of every token an STS session descends from
MFA_METHODS = frozenset({"otp", "mfa", "hwk", "swk", "sms"})


def subject_of(token: VerifiedToken, account: str) -> Subject:
    """The IAM subject an access token speaks for."""
    claims = token.claims
    scopes = tuple(sorted(token.scopes))
    amr = claims.get("amr")
    mfa = isinstance(amr, list) and any(m in MFA_METHODS for m in amr)
    ref = parse_principal_arn(str(claims.get("principal_arn", "")), account)
    if ref is not None and ref.kind == "role" and ref.session:
        policy = claims.get("session_policy")
        return Subject("role", ref.name, (), ref.session,
                       policy if isinstance(policy, str) else None, token.client_id, scopes,
                       mfa)
    if ref is not None and ref.kind == "client" or (
            ref is None and token.client_id is not None and token.subject == token.client_id):
        return Subject("client", token.client_id or token.subject, tuple(sorted(token.roles)),
                       client_id=token.client_id, scopes=scopes)
    return Subject("user", token.subject, tuple(sorted(token.roles)),
                   client_id=token.client_id, scopes=scopes, mfa=mfa)


def user_identity(subject: Subject, principal: Principal | None) -> dict[str, Any]:
    """CloudTrail's ``userIdentity`` for a subject."""
    kind = {"user": "IAMUser", "client": "Client", "group": "Group", "role": "Role"}[
        subject.kind]
    if subject.session:
        kind = "AssumedRole"
    ident: dict[str, Any] = {"type": kind, "principalId": subject.key}
    if principal is not None:
        ident["arn"] = principal.arn
        ident["userName"] = principal.name
    if subject.client_id:
        ident["clientId"] = subject.client_id
    return ident


def authenticate(verifier: TokenVerifier, audit: AuditTrail,
                 metrics: Refusals | None = None) -> Middleware:
    """Bearer authentication whose every refusal is an ``Authenticate`` audit record (with
    the RFC 6750 error code; never the token), counted as ``("authn", code)``."""
    async def refused(err: BearerError) -> None:
        if metrics is not None:
            metrics.refused("authn", err.error or "missing_token")
        await audit.emit("Authenticate", user_identity={"type": "Anonymous"},
                         error_code=err.error or "missing_token",
                         error_message=err.description or "no bearer token")

    return Middleware(BearerAuthMiddleware, verifier=verifier, on_failure=refused)


@dataclass(frozen=True)
class Guard:
    """The middleware of a protected route: bearer authentication (refusals audited), then
    ``Authorize``. ``guard("orders:GetOrder", ARN)`` is the route's ``middleware=``."""

    verifier: TokenVerifier
    iam: Authorizer
    audit: AuditTrail
    metrics: Refusals | None = None

    def __call__(self, action: str, resource: str, *, scope: str | None = None,
                 context: ContextHook | None = None) -> list[Middleware]:
        return [authenticate(self.verifier, self.audit, self.metrics),
                Middleware(Authorize, iam=self.iam, audit=self.audit, action=action,
                           resource=resource, scope=scope, context=context,
                           metrics=self.metrics)]


class Authorize:
    def __init__(self, app: ASGIApp, *, iam: Authorizer, audit: AuditTrail, action: str,
                 resource: str, audit_allowed: bool = False,
                 scope: str | None = None, context: ContextHook | None = None,
                 metrics: Refusals | None = None) -> None:
        if ":" not in action or not resource.startswith("arn:"):
            raise ValueError("action must be service:Action and resource an ARN template")
        self.scope = scope  # an OAuth scope the token must carry, whatever IAM allows
        self.context = context  # the action's own condition keys (e.g. iam:PolicyARN)
        self.app = app
        self.iam = iam
        self.audit = audit
        self.action = action
        self.resource = resource
        self.audit_allowed = audit_allowed
        self.metrics = metrics  # refusals counted as ("authn"|"iam", reason)

    def resource_arn(self, scope: Scope) -> str:
        params = {k: str(v)[:MAX_PARAM] for k, v in scope.get("path_params", {}).items()}
        return self.resource.format(account=self.iam.account, **params)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        token = state.get("token")
        if not isinstance(token, VerifiedToken):  # pragma: no cover - bearer runs first
            raise RuntimeError("Authorize needs BearerAuthMiddleware before it")
        subject = subject_of(token, self.iam.account)
        if await self._parent_revoked(token):
            if self.metrics is not None:
                self.metrics.refused("authn", "parent_revoked")
            await self.audit.emit("Authenticate", user_identity=user_identity(subject, None),
                                  error_code="invalid_token",
                                  error_message="a parent of the session was revoked")
            await _send_json(send, 401, {"error": "invalid_token",
                                         "error_description": "the token was revoked"},
                             'Bearer realm="bastion", error="invalid_token"')
            return
        resource = self.resource_arn(scope)
        req = current_request.get()
        # refusals that need no policy come first: the condition-key hook and the policy
        # lookups never see a request the scope gate or the name check refuses
        refusal = None
        if self.scope is not None and self.scope not in token.scopes:
            refusal = f"the token lacks the scope {self.scope}"
        elif not all(_clean_param(v) for v in scope.get("path_params", {}).values()):
            refusal = "a name in the request path is malformed"
        if refusal is not None:
            principal = await self.iam.principal(subject)
            decision = Decision("implicitDeny", (), refusal)
        else:
            extra = await self.context(scope) if self.context is not None else None
            spiffe_id = mtls_spiffe_id(scope)  # the verified client certificate's (mTLS)
            if spiffe_id is not None:
                extra = {**(extra or {}), "bastion:MtlsSpiffeId": spiffe_id}
            principal, decision = await self.iam.decide(
                subject, self.action, resource, source_ip=req.source_ip if req else None,
                secure=req.secure if req else scope.get("scheme") == "https", extra=extra)
        state["principal"], state["decision"], state["subject"] = principal, decision, subject
        if decision.allowed:
            if self.audit_allowed:
                await self.audit.emit(self.action.split(":", 1)[1],
                                      user_identity=user_identity(subject, principal),
                                      resources=[{"ARN": resource}],
                                      additional={"decision": decision.to_dict()})
            await self.app(scope, receive, send)
            return
        if self.metrics is not None:
            self.metrics.refused("iam", "missing_scope" if self.scope is not None
                                 and self.scope not in token.scopes else decision.decision)
        who = principal.arn if principal else f"{subject.kind} {subject.key}"
        message = (f"{who} is not authorized to perform: {self.action} on resource: "
                   f"{resource} because {decision.reason}")
        await self.audit.emit("AccessDenied", user_identity=user_identity(subject, principal),
                              request_parameters={"action": self.action},
                              resources=[{"ARN": resource}], error_code="AccessDenied",
                              error_message=message,
                              additional={"decision": decision.to_dict()})
        await _send_json(send, 403, {"error": "insufficient_scope",
                                     "error_description": message,
                                     "request_id": state.get("request_id")},
                         'Bearer realm="bastion", error="insufficient_scope"')

    async def _parent_revoked(self, token: VerifiedToken) -> bool:
        """An STS session dies with every token it descends from (``sts_parents`` lists them). The
        database's record is read: the session is as revoked as its parent, at once.
        Malformed lists fail closed."""
        parents = token.claims.get(SESSION_PARENTS_CLAIM)
        if parents is None:
            return False
        if not isinstance(parents, list) or not parents or len(parents) > 16 \
                or not all(isinstance(j, str) for j in parents):
            return True
        return await any_revoked(self.iam.store, parents)


def _clean_param(value: object) -> bool:
    """A path parameter fit to name something: printable text (no NUL, no control
    characters). Longer ones are cut at ``MAX_PARAM`` in the ARN and refused by the
    endpoint's own grammar."""
    return str(value).isprintable()


async def any_revoked(store: FastStore, jtis: list[str]) -> bool:
    """Whether the database records the revocation of any of ``jtis``."""
    if not jtis:
        return False
    names = {f"j{i}": jti for i, jti in enumerate(jtis)}
    marks = ", ".join(f":{k}" for k in names)
    row = await store.one(f"SELECT 1 FROM revoked_tokens WHERE jti IN ({marks})",  # noqa: S608
                          **names)
    return row is not None


async def _send_json(send: Send, status: int, body: dict[str, Any], challenge: str) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()),
                            (b"cache-control", b"no-store"),
                            (b"www-authenticate", challenge.encode())]})
    await send({"type": "http.response.body", "body": data})
