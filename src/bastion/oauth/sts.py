"""Role assumption, like AWS STS ``AssumeRole``: a caller authenticated by a bearer token
asks for short-lived credentials (an access token) of a role.

    POST /sts   Action=AssumeRole&RoleArn=…&RoleSessionName=…[&DurationSeconds=…][&Policy=…]

Decided by one evaluation (:func:`bastion.iam.evaluate` with the trust policy as the
resource policy), with the rules AWS applies within one account: a trust statement counts only
when its Principal, Action *and* Condition all match; one naming the caller's own ARN is
enough on its own; one naming the caller's role (role chaining) is limited by the caller's
permissions boundary and session policy; one trusting the whole account (``root``, the
account ID, ``*``) delegates to the caller's identity-based policies, which must then allow
``sts:AssumeRole`` on the role too; an explicit deny anywhere refuses.

The token's ``sub`` is the session ARN (``arn:bastion:sts::<acct>:assumed-role/<role>/<s>``);
it carries the session policy (``Policy``), which intersects with the role's policies, the
caller's ``amr`` (so ``aws:MultiFactorAuthPresent`` survives chaining) and ``act`` (RFC 8693
§4.1, nested for chained sessions). Its lifetime never exceeds ``DurationSeconds``, the
parent token's remaining lifetime, nor ``Settings.max_jwt_ttl`` (how long a retired signing
key stays published). It joins the token family of the token that minted it (a session
minted from a session inherits the family), so revoking or logging out the grant denies it,
and it lists its ancestors' ``jti`` (``sts_parents``) so that revoking any of them denies
it too. Every answer, refusals included, is an ``AssumeRole`` audit record; errors are AWS
STS's codes in a JSON body.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bastion.edge.authz import SESSION_PARENTS_CLAIM, any_revoked, subject_of, user_identity
from bastion.iam import Decision, PolicyError, evaluate, parse_policy, validate_policy
from bastion.iam import Request as IamRequest
from bastion.iam.authorizer import Principal, Subject
from bastion.iam.scheme import SESSION_NAME_RE, parse_principal_arn, principal_arn, session_arn
from bastion.iam.store import ROLE_SQL
from bastion.oauth.errors import OAuthError
from bastion.oauth.params import form_params
from bastion.oauth.provider import Provider
from bastion.tokens.verify import VerifiedToken

ACTION = "sts:AssumeRole"
MAX_SESSION_POLICY = 2048
MAX_CHAIN = 8  # sessions minted from sessions: at most this many ancestors
PARENTS_CLAIM = SESSION_PARENTS_CLAIM
_DURATION_RE = re.compile(r"[0-9]{1,6}")  # ASCII digits only (int() takes any script's)


class StsError(Exception):
    """An STS error answer: AWS's ``Code`` and a message safe to show the caller."""

    def __init__(self, code: str, message: str, status: int = 400, *,
                 audit: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.audit = audit  # the audit record's message when it says more than the client's

    def response(self) -> JSONResponse:
        return JSONResponse({"Error": {"Code": self.code, "Message": self.message}},
                            status_code=self.status, headers={"Cache-Control": "no-store"})


@dataclass
class _Call:
    """What the audit record of this call says, filled in as the request is read."""

    actor: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)
    role_arn: str | None = None


def _param(value: str, limit: int = 256) -> str:
    return value[:limit]


async def assume_role_endpoint(provider: Provider, request: Request) -> Response:
    token = request.scope.get("state", {}).get("token")
    if not isinstance(token, VerifiedToken):  # pragma: no cover - bearer runs first
        return StsError("AccessDenied", "not authenticated", 401).response()
    subject = subject_of(token, provider.settings.account_id)
    call = _Call(user_identity(subject, None))
    try:
        return await _assume_role(provider, request, token, call)
    except StsError as exc:
        await provider.audit.emit(
            "AssumeRole", user_identity=call.actor, request_parameters=call.params,
            resources=[{"ARN": call.role_arn}] if call.role_arn else (),
            error_code=exc.code, error_message=(exc.audit or exc.message)[:500])
        return exc.response()


async def _read(provider: Provider, request: Request) -> dict[str, str]:
    """The form, with the size cap and no-repeat rule of the other endpoints."""
    try:
        return await form_params(request, provider.settings.max_body_bytes)
    except OAuthError as exc:
        if exc.status_code == 413:
            raise StsError("RequestEntityTooLarge", "request body too large", 413) from None
        raise StsError("ValidationError", exc.description or "malformed request") from None


def duration(raw: str | None, role_max: int) -> int:
    """``DurationSeconds`` checked against the role's maximum (default: an hour at most)."""
    if raw is None:
        return min(3600, role_max)
    if not _DURATION_RE.fullmatch(raw):
        raise StsError("ValidationError", "DurationSeconds must be an integer")
    seconds = int(raw)
    if not 900 <= seconds <= role_max:
        raise StsError("ValidationError", f"DurationSeconds must be 900-{role_max}")
    return seconds


def session_policy(raw: str | None) -> str | None:
    """The ``Policy`` parameter validated as a session policy, in compact JSON."""
    if raw is None:
        return None
    if len(raw) > MAX_SESSION_POLICY:
        raise StsError("PackedPolicyTooLarge", "the session policy is too large")
    errors = [f for f in validate_policy(raw, kind="session") if f.severity == "ERROR"]
    if errors:
        raise StsError("MalformedPolicyDocument", f"{errors[0].path}: {errors[0].message}")
    return json.dumps(json.loads(raw), separators=(",", ":"))


def _parents(token: VerifiedToken) -> list[str]:
    """The minting token's ``jti`` followed by its own ancestors (for a session)."""
    inherited = token.claims.get(PARENTS_CLAIM, [])
    if not isinstance(inherited, list) or not all(isinstance(j, str) for j in inherited):
        raise StsError("AccessDenied", "malformed session credentials", 403)
    if token.jti is None:
        raise StsError("AccessDenied", "credentials without jti cannot be chained", 403)
    parents = [token.jti, *inherited]
    if len(parents) > MAX_CHAIN:
        raise StsError("AccessDenied", f"role chaining is limited to {MAX_CHAIN} sessions", 403)
    return parents


async def _assume_role(provider: Provider, request: Request, token: VerifiedToken,
                       call: _Call) -> Response:
    account = provider.settings.account_id
    params = await _read(provider, request)
    role_arn = params.get("RoleArn", "")
    session_name = params.get("RoleSessionName", "")
    call.params = {"action": _param(params.get("Action", ""), 64),
                   "roleArn": _param(role_arn), "roleSessionName": _param(session_name, 64)}
    if params.get("Action") != "AssumeRole":
        raise StsError("InvalidAction", "Action must be AssumeRole")
    ref = parse_principal_arn(role_arn, account)
    if ref is None or ref.kind != "role" or ref.session:
        raise StsError("ValidationError", "RoleArn must be a role ARN of this account")
    # decide, audit and answer on the one canonical spelling of the role's ARN
    role_arn = principal_arn("role", ref.name, account)
    call.role_arn = role_arn
    if not SESSION_NAME_RE.fullmatch(session_name):
        raise StsError("ValidationError", "RoleSessionName must be 2-64 of [A-Za-z0-9_+=,.@-]")
    policy = session_policy(params.get("Policy"))
    call.params["policy"] = policy is not None
    parents = _parents(token)

    def denied(why: str) -> StsError:
        message = f"not authorized to perform: {ACTION} on resource: {role_arn}"
        return StsError("AccessDenied", message, 403, audit=f"{message} because {why}")

    subject = subject_of(token, account)
    principal = await provider.iam.principal(subject)
    call.actor = user_identity(subject, principal)
    role = await provider.fast.one(ROLE_SQL, name=ref.name)
    if await any_revoked(provider.fast, parents):
        raise denied("the credentials or one they descend from were revoked")
    if role is None or principal is None:
        raise denied("no such role" if principal is not None else "unknown principal")
    seconds = duration(params.get("DurationSeconds"), int(role[3]))
    call.params["durationSeconds"] = seconds
    decision = decide(provider, request, subject, principal, role_arn, ref.name, role[2])
    if not decision.allowed:
        raise denied(decision.reason)

    now = int(time.time())
    ttl = min(seconds, token.expires_at - now, provider.settings.max_jwt_ttl)
    if ttl <= 0:
        raise StsError("ExpiredToken", "the credentials have expired", 403)
    session = session_arn(ref.name, session_name, account)
    act: dict[str, Any] = {"sub": principal.arn}
    if isinstance(token.claims.get("act"), dict):
        act["act"] = token.claims["act"]  # RFC 8693 §4.1: prior actors nest
    extra: dict[str, Any] = {"principal_arn": session, "act": act, PARENTS_CLAIM: parents}
    for claim in ("amr", "auth_time"):
        if claim in token.claims:
            extra[claim] = token.claims[claim]
    if policy is not None:
        extra["session_policy"] = policy
    issued = provider.tokens.access_token(
        subject=session, client_id=token.client_id or "sts", audience=provider.api_audience,
        scope=" ".join(sorted(token.scopes)), ttl=ttl, extra=extra)
    async with provider.fast.transaction() as tx:
        # the family of the minting token (a session's is its parent's): logout and
        # revocation of the grant then deny this token too
        row = await tx.one("SELECT i.family_id, f.revoked_at FROM issued_access_tokens i "
                           "JOIN token_families f ON f.id = i.family_id WHERE i.jti = :jti",
                           jti=token.jti)
        if row is not None:
            if row["revoked_at"] is not None:
                raise denied("the grant was revoked")
            await tx.run("INSERT INTO issued_access_tokens (jti, family_id, expires_at) "
                          "VALUES (:jti, :f, :exp)", jti=issued.jti, f=row["family_id"],
                          exp=issued.expires_at)
    expiration = datetime.fromtimestamp(issued.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    await provider.audit.emit("AssumeRole", user_identity=call.actor,
                              request_parameters=call.params,
                              response_elements={"assumedRoleUser": session,
                                                 "expiration": expiration},
                              resources=[{"ARN": role_arn}])
    return JSONResponse({
        "Credentials": {"AccessToken": issued.token, "TokenType": "Bearer",
                        "Expiration": expiration},
        "AssumedRoleUser": {"Arn": session, "AssumedRoleId": f"{ref.name}:{session_name}"},
    }, headers={"Cache-Control": "no-store"})


def decide(provider: Provider, request: Request, subject: Subject, principal: Principal,
           role_arn: str, role_name: str, trust_text: str) -> Decision:
    """One evaluation: the trust policy as the resource policy, with the caller's identity
    policies, permissions boundary and session policy (see the module docstring)."""
    try:
        trust = parse_policy(trust_text, kind="trust", policy_id=f"{role_name}/trust")
    except PolicyError:  # stored trust policies are validated; refuse if one is not
        return Decision("implicitDeny", (), "the stored trust policy does not compile")
    ctx = provider.iam.context(subject, principal, source_ip=request.client.host
                               if request.client else None,
                               secure=request.url.scheme == "https")
    return evaluate(IamRequest(principal.arn, ACTION, role_arn, ctx), principal.identity,
                    resource_policy=trust, boundary=principal.boundary,
                    session=principal.session)
