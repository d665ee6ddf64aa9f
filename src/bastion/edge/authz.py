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
from dataclasses import dataclass
from typing import Any

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from bastion.audit.context import current_request
from bastion.audit.trail import AuditTrail
from bastion.iam.authorizer import Authorizer, Principal, Subject
from bastion.iam.scheme import parse_principal_arn
from bastion.tokens.errors import BearerError
from bastion.tokens.starlette import BearerAuthMiddleware
from bastion.tokens.verify import TokenVerifier, VerifiedToken

MAX_PARAM = 256
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


def authenticate(verifier: TokenVerifier, audit: AuditTrail) -> Middleware:
    """Bearer authentication whose every refusal is an ``Authenticate`` audit record (with
    the RFC 6750 error code; never the token)."""
    async def refused(err: BearerError) -> None:
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

    def __call__(self, action: str, resource: str) -> list[Middleware]:
        return [authenticate(self.verifier, self.audit),
                Middleware(Authorize, iam=self.iam, audit=self.audit, action=action,
                           resource=resource)]


class Authorize:
    def __init__(self, app: ASGIApp, *, iam: Authorizer, audit: AuditTrail, action: str,
                 resource: str, audit_allowed: bool = False) -> None:
        if ":" not in action or not resource.startswith("arn:"):
            raise ValueError("action must be service:Action and resource an ARN template")
        self.app = app
        self.iam = iam
        self.audit = audit
        self.action = action
        self.resource = resource
        self.audit_allowed = audit_allowed

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
        resource = self.resource_arn(scope)
        req = current_request.get()
        principal, decision = await self.iam.decide(
            subject, self.action, resource, source_ip=req.source_ip if req else None,
            secure=req.secure if req else scope.get("scheme") == "https")
        state["principal"], state["decision"], state["subject"] = principal, decision, subject
        if decision.allowed:
            if self.audit_allowed:
                await self.audit.emit(self.action.split(":", 1)[1],
                                      user_identity=user_identity(subject, principal),
                                      resources=[{"ARN": resource}],
                                      additional={"decision": decision.to_dict()})
            await self.app(scope, receive, send)
            return
        who = principal.arn if principal else f"{subject.kind} {subject.key}"
        message = (f"{who} is not authorized to perform: {self.action} on resource: "
                   f"{resource} because {decision.reason}")
        await self.audit.emit("AccessDenied", user_identity=user_identity(subject, principal),
                              request_parameters={"action": self.action},
                              resources=[{"ARN": resource}], error_code="AccessDenied",
                              error_message=message,
                              additional={"decision": decision.to_dict()})
        body = json.dumps({"error": "insufficient_scope", "error_description": message,
                           "request_id": state.get("request_id")}).encode()
        challenge = 'Bearer realm="bastion", error="insufficient_scope"'
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"cache-control", b"no-store"),
                                (b"www-authenticate", challenge.encode())]})
        await send({"type": "http.response.body", "body": body})
