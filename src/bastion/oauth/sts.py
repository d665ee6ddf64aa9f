"""Role assumption, like AWS STS ``AssumeRole``: a caller authenticated by a bearer token
asks for short-lived credentials (an access token) of a role.

    POST /sts   Action=AssumeRole&RoleArn=…&RoleSessionName=…[&DurationSeconds=…][&Policy=…]

Allowed as AWS allows it within one account: the role's trust policy must allow
``sts:AssumeRole`` for the caller, and nothing may deny it explicitly. A trust policy that
names the caller's ARN is enough on its own; one that trusts the whole account (``root``,
an account id or ``*``) delegates to the caller's identity policies, which must then allow
``sts:AssumeRole`` on the role too. The token's ``sub`` is the session ARN
(``arn:bastion:sts::<acct>:assumed-role/<role>/<session>``); it carries the session policy
(``Policy``), which intersects with the role's policies, and ``act`` (RFC 8693 §4.1) names
the caller. Errors are AWS STS's codes in a JSON body.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bastion.edge.authz import subject_of, user_identity
from bastion.iam import PolicyError, PolicySet, evaluate, parse_policy, validate_policy
from bastion.iam import Request as IamRequest
from bastion.iam.scheme import SESSION_NAME_RE, parse_principal_arn, principal_arn, session_arn
from bastion.iam.store import ROLE_SQL
from bastion.oauth.provider import Provider
from bastion.tokens.verify import VerifiedToken

ACTION = "sts:AssumeRole"
MAX_SESSION_POLICY = 2048


def _error(code: str, message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"Error": {"Code": code, "Message": message}}, status_code=status,
                        headers={"Cache-Control": "no-store"})


def _names_caller(trust: dict[str, Any], arns: set[str]) -> bool:
    """Whether an Allow statement of the trust policy names one of ``arns`` itself."""
    statements = trust.get("Statement", [])
    for st in statements if isinstance(statements, list) else [statements]:
        if not isinstance(st, dict) or st.get("Effect") != "Allow":
            continue
        principal = st.get("Principal")
        values = principal.get("AWS", []) if isinstance(principal, dict) else []
        values = [values] if isinstance(values, str) else values
        if any(v in arns for v in values if isinstance(v, str)):
            return True
    return False


async def assume_role_endpoint(provider: Provider, request: Request) -> Response:
    token = request.scope.get("state", {}).get("token")
    if not isinstance(token, VerifiedToken):  # pragma: no cover - bearer runs first
        return _error("AccessDenied", "not authenticated", 401)
    form = await request.form()
    params = {k: v for k, v in form.items() if isinstance(v, str)}
    if params.get("Action") != "AssumeRole":
        return _error("InvalidAction", "Action must be AssumeRole")
    account = provider.settings.account_id
    role_arn = params.get("RoleArn", "")
    session_name = params.get("RoleSessionName", "")
    ref = parse_principal_arn(role_arn, account)
    if ref is None or ref.kind != "role" or ref.session:
        return _error("ValidationError", "RoleArn must be a role ARN of this account")
    if not SESSION_NAME_RE.fullmatch(session_name):
        return _error("ValidationError", "RoleSessionName must be 2-64 of [\\w+=,.@-]")
    session_policy = params.get("Policy")
    if session_policy is not None:
        if len(session_policy) > MAX_SESSION_POLICY:
            return _error("PackedPolicyTooLarge", "the session policy is too large")
        errors = [f for f in validate_policy(session_policy, kind="session")
                  if f.severity == "ERROR"]
        if errors:
            return _error("MalformedPolicyDocument", f"{errors[0].path}: {errors[0].message}")
        session_policy = json.dumps(json.loads(session_policy), separators=(",", ":"))

    role = await provider.fast.one(ROLE_SQL, name=ref.name)
    subject = subject_of(token, account)
    principal = await provider.iam.principal(subject)
    denied = _error("AccessDenied", f"not authorized to perform: {ACTION} on resource: "
                    f"{role_arn}", 403)
    actor = user_identity(subject, principal)
    if role is None or principal is None:
        await provider.audit.emit("AssumeRole", user_identity=actor,
                                  request_parameters={"roleArn": role_arn,
                                                      "roleSessionName": session_name},
                                  error_code="AccessDenied", error_message="no such role")
        return denied
    try:
        duration = int(params.get("DurationSeconds", "3600"))
    except ValueError:
        return _error("ValidationError", "DurationSeconds must be an integer")
    if not 900 <= duration <= int(role[3]):
        return _error("ValidationError", f"DurationSeconds must be 900-{role[3]}")

    ctx = provider.iam.context(subject, principal, source_ip=request.client.host
                               if request.client else None,
                               secure=request.url.scheme == "https")
    req = IamRequest(principal.arn, ACTION, role_arn, ctx)
    try:
        trust = parse_policy(role[2], kind="trust", policy_id=f"{ref.name}/trust")
    except PolicyError:  # stored trust policies are validated; refuse if one is not
        return denied
    combined = evaluate(req, principal.identity, resource_policy=trust,
                        boundary=principal.boundary, session=principal.session)
    trust_only = evaluate(req, PolicySet([]), resource_policy=trust)
    identity_only = evaluate(req, principal.identity, boundary=principal.boundary,
                             session=principal.session)
    callers = {principal.arn}
    if subject.session:
        callers.add(principal_arn("role", principal.name, account))
    allowed = (combined.decision != "explicitDeny" and trust_only.allowed
               and (_names_caller(json.loads(role[2]), callers) or identity_only.allowed))
    event = {"roleArn": role_arn, "roleSessionName": session_name,
             "durationSeconds": duration, "policy": session_policy is not None}
    if not allowed:
        await provider.audit.emit("AssumeRole", user_identity=actor, request_parameters=event,
                                  resources=[{"ARN": role_arn}], error_code="AccessDenied",
                                  error_message=bytes(denied.body).decode()[:500])
        return denied

    session = session_arn(ref.name, session_name, account)
    extra: dict[str, Any] = {"principal_arn": session, "act": {"sub": principal.arn}}
    if session_policy is not None:
        extra["session_policy"] = session_policy
    scope = " ".join(sorted(token.scopes))
    issued = provider.tokens.access_token(
        subject=session, client_id=token.client_id or "sts", audience=provider.api_audience,
        scope=scope, ttl=duration, extra=extra)
    expiration = datetime.fromtimestamp(issued.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    await provider.audit.emit("AssumeRole", user_identity=actor, request_parameters=event,
                              response_elements={"assumedRoleUser": session,
                                                 "expiration": expiration},
                              resources=[{"ARN": role_arn}])
    return JSONResponse({
        "Credentials": {"AccessToken": issued.token, "TokenType": "Bearer",
                        "Expiration": expiration},
        "AssumedRoleUser": {"Arn": session, "AssumedRoleId": f"{ref.name}:{session_name}"},
    }, headers={"Cache-Control": "no-store"})
