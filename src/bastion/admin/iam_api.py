"""The IAM admin API over HTTP: policies, attachments, roles and simulation, each route
authorized by IAM like any other (the ``admin`` role's ``AdministratorAccess`` allows all;
narrower policies can allow parts, e.g. ``iam:Get*`` for auditors). Every route also needs
the OAuth scope ``bastion:admin`` in the token, whatever the policies say: a token an admin
gave a third-party client for ``openid`` is not an IAM-admin credential. Errors are IAM's
codes in ``{"Error": {"Code", "Message"}}`` (plus ``Findings`` for a malformed document);
every refused request is an audit record (the admin layer writes its own, this module the
ones it refuses first, such as a body that is not JSON).

    GET    /admin/iam/policies                              iam:ListPolicies
    POST   /admin/iam/policies          {name, document, description?}   iam:CreatePolicy
    GET    /admin/iam/policies/{name}                       iam:GetPolicy
    PUT    /admin/iam/policies/{name}   {document}          iam:CreatePolicyVersion
    DELETE /admin/iam/policies/{name}                       iam:DeletePolicy
    GET    /admin/iam/{kind}s/{name}                        iam:Get{Kind}
    POST   /admin/iam/{kind}s/{name}/policies/{policy}      iam:Attach{Kind}Policy
    DELETE /admin/iam/{kind}s/{name}/policies/{policy}      iam:Detach{Kind}Policy
    POST   /admin/iam/simulate  {principal, action, resource, context?}  iam:SimulatePrincipalPolicy
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from bastion.audit.context import current_request
from bastion.audit.events import event_type
from bastion.edge import http
from bastion.edge.authz import MAX_PARAM, ContextHook, Guard, user_identity
from bastion.iam import store as iam_store
from bastion.iam.admin import IamAdmin, IamError
from bastion.iam.authorizer import Authorizer, Subject
from bastion.iam.bootstrap import ADMIN_SCOPE
from bastion.iam.scheme import KINDS, parse_principal_arn, policy_arn, principal_arn, session_arn
from bastion.identity.clients import CLIENT_SQL, client_from_row
from bastion.oauth.families import load_subject
from bastion.store.fast import FastStore

MAX_BODY = 64 * 1024
POLICY_ARN = "arn:bastion:iam::{account}:policy/{name}"
PRINCIPAL_ARN = "arn:bastion:iam::{account}:{kind}/{name}"
Handler = Callable[[Request], Awaitable[Response]]


async def _json(request: Request) -> dict[str, Any]:
    try:
        data = await http.read_json(request, MAX_BODY)
    except http.BodyError as exc:
        raise IamError("InvalidInput", str(exc), status=exc.status) from None
    if not isinstance(data, dict):
        raise IamError("InvalidInput", "body must be a JSON object")
    return data


def _str(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise IamError("InvalidInput", f"{key} must be a non-empty string")
    return value

SIMULATE = "iam:SimulatePrincipalPolicy"


class IamAPI:
    def __init__(self, admin: IamAdmin, iam: Authorizer, fast: FastStore) -> None:
        self.admin = admin
        self.iam = iam
        self.fast = fast

    @staticmethod
    def _actor(request: Request) -> dict[str, Any]:
        state = request.scope["state"]
        return user_identity(state["subject"], state["principal"])

    def _wrap(self, fn: Callable[[Request], Awaitable[Any]], status: int = 200, *,
              event: str = "AccessDenied") -> Handler:
        """``event``: the audit event of a refusal this module makes (the catalogue's name
        for the operation, or the edge's ``AccessDenied`` when it has none)."""
        try:
            event_type(event)
        except ValueError:
            event = "AccessDenied"

        async def endpoint(request: Request) -> Response:
            try:
                result = await fn(request)
            except IamError as exc:
                if not exc.audited:
                    await self.admin.audit.emit(
                        event, user_identity=self._actor(request),
                        request_parameters={"method": request.method,
                                            "path": request.url.path[:512]},
                        error_code=exc.code, error_message=exc.message[:500])
                body = exc.to_dict()
                return JSONResponse({"Error": body}, status_code=exc.status)
            if result is None:
                return Response(status_code=204)
            return JSONResponse(result, status_code=status)

        return endpoint

    def condition_keys(self, kind: str, *, policy: bool = False) -> ContextHook:
        """The condition keys IAM documents for actions on a principal ("Actions, resources,
        and condition keys for AWS Identity and Access Management"): its tags as
        ``iam:ResourceTag/*`` and ``aws:ResourceTag/*``, its permissions boundary as
        ``iam:PermissionsBoundary``, and for ``Attach*``/``Detach*Policy`` the policy as
        ``iam:PolicyARN``. Without them a ``…IfExists`` condition always holds and the
        delegation pattern (``ArnEquals iam:PolicyARN``) always fails."""
        account = self.iam.account

        async def keys(scope: Scope) -> dict[str, Any]:
            params = scope.get("path_params", {})
            name = str(params.get("name", ""))[:MAX_PARAM]
            out: dict[str, Any] = {}
            row = await self.fast.one("SELECT boundary, tags FROM iam_principals WHERE "
                                      "kind = :k AND name = :n", k=kind, n=name)
            if row is not None:
                if row[0]:
                    out["iam:PermissionsBoundary"] = policy_arn(row[0], account)
                tags = iam_store.json_value(row[1]) if row[1] else {}
                for key, value in (tags.items() if isinstance(tags, dict) else ()):
                    out[f"iam:ResourceTag/{key}"] = out[f"aws:ResourceTag/{key}"] = str(value)
            if policy:
                out["iam:PolicyARN"] = policy_arn(str(params.get("policy", ""))[:MAX_PARAM],
                                                  account)
            return out

        return keys

    async def list_policies(self, request: Request) -> Any:
        return {"Policies": await self.admin.list_policies()}

    async def create_policy(self, request: Request) -> Any:
        data = await _json(request)
        description = data.get("description", "")
        if not isinstance(description, str):
            raise IamError("InvalidInput", "description must be a string")
        doc = data.get("document")
        if not isinstance(doc, dict | str):
            raise IamError("InvalidInput", "document must be a policy (object or string)")
        return await self.admin.create_policy(_str(data, "name"), doc,
                                              description=description,
                                              actor=self._actor(request))

    async def get_policy(self, request: Request) -> Any:
        return await self.admin.get_policy(request.path_params["name"])

    async def update_policy(self, request: Request) -> Any:
        data = await _json(request)
        doc = data.get("document")
        if not isinstance(doc, dict | str):
            raise IamError("InvalidInput", "document must be a policy (object or string)")
        return await self.admin.update_policy(request.path_params["name"], doc,
                                              actor=self._actor(request))

    async def delete_policy(self, request: Request) -> Any:
        await self.admin.delete_policy(request.path_params["name"], actor=self._actor(request))

    async def get_principal(self, request: Request) -> Any:
        return await self.admin.principal(request.path_params["kind"],
                                          request.path_params["name"])

    async def attach(self, request: Request) -> Any:
        p = request.path_params
        await self.admin.attach(p["kind"], p["name"], p["policy"], actor=self._actor(request))

    async def detach(self, request: Request) -> Any:
        p = request.path_params
        await self.admin.detach(p["kind"], p["name"], p["policy"], actor=self._actor(request))

    async def simulate(self, request: Request) -> Any:
        data = await _json(request)
        context = data.get("context", {})
        if not isinstance(context, dict):
            raise IamError("InvalidInput", "context must be an object")
        target = _str(data, "principal")
        await self._may_simulate(request, target)
        subject = await stored_subject(self.fast, self.iam.account, target)
        _, decision = await self.iam.decide(subject, _str(data, "action"),
                                            _str(data, "resource"), extra=context)
        return decision.to_dict()

    async def _may_simulate(self, request: Request, target: str) -> None:
        """AWS authorizes ``SimulatePrincipalPolicy`` on the simulated principal
        (``PolicySourceArn``): the edge has checked the account-wide ARN, this checks the
        principal's own, before anything about it (even whether it exists) is read."""
        ref = parse_principal_arn(target, self.iam.account)
        if ref is None:
            raise IamError("InvalidInput",
                           f"not a principal ARN of account {self.iam.account}: {target}")
        arn = (session_arn(ref.name, ref.session, self.iam.account) if ref.session
               else principal_arn(ref.kind, ref.name, self.iam.account))
        state = request.scope.get("state", {})
        info = current_request.get()
        principal, decision = await self.iam.decide(
            state["subject"], SIMULATE, arn, source_ip=info.source_ip if info else None,
            secure=info.secure if info else request.url.scheme == "https")
        if not decision.allowed:
            who = principal.arn if principal is not None else "the caller"
            raise IamError("AccessDenied", f"{who} is not authorized to perform: {SIMULATE} "
                           f"on resource: {arn} because {decision.reason}", status=403)


async def stored_subject(fast: FastStore, account: str, arn: str) -> Subject:
    """The subject a stored principal's credentials would carry, for simulation: a user's
    tokens carry their own and their groups' roles, a client's its registered roles."""
    ref = parse_principal_arn(arn, account)
    if ref is None:
        raise IamError("InvalidInput", f"not a principal ARN of account {account}: {arn}")
    if ref.kind == "user":
        row = await fast.one("SELECT id FROM users WHERE username = :n", n=ref.name)
        user = await load_subject(fast, row[0]) if row is not None else None
        if user is None:
            raise IamError("NoSuchEntity", f"the user {ref.name} does not exist", status=404)
        return Subject("user", user.id, tuple(sorted(user.roles)))
    if ref.kind == "client":
        row = await fast.one(CLIENT_SQL, client_id=ref.name)
        if row is None:
            raise IamError("NoSuchEntity", f"the client {ref.name} does not exist", status=404)
        return Subject("client", ref.name, tuple(sorted(client_from_row(row).roles)),
                       client_id=ref.name)
    return Subject(ref.kind, ref.name, (), ref.session)


def routes(api: IamAPI, guard: Guard) -> list[Route]:
    policy = POLICY_ARN.replace("{name}", "*")

    def route(path: str, fn: Callable[[Request], Awaitable[Any]], method: str, action: str,
              resource: str, status: int = 200, context: ContextHook | None = None) -> Route:
        return Route(path, api._wrap(fn, status, event=action.split(":", 1)[1]),
                     methods=[method],
                     middleware=guard(action, resource, scope=ADMIN_SCOPE, context=context))

    out = [
        route("/admin/iam/policies", api.list_policies, "GET", "iam:ListPolicies", policy),
        route("/admin/iam/policies", api.create_policy, "POST", "iam:CreatePolicy", policy,
              201),
        route("/admin/iam/policies/{name}", api.get_policy, "GET", "iam:GetPolicy",
              POLICY_ARN),
        route("/admin/iam/policies/{name}", api.update_policy, "PUT",
              "iam:CreatePolicyVersion", POLICY_ARN),
        route("/admin/iam/policies/{name}", api.delete_policy, "DELETE", "iam:DeletePolicy",
              POLICY_ARN),
        route("/admin/iam/simulate", api.simulate, "POST", SIMULATE,
              "arn:bastion:iam::{account}:*"),
    ]
    for kind in KINDS:
        title = kind.capitalize()
        arn = PRINCIPAL_ARN.replace("{kind}", kind)

        def with_kind(fn: Callable[[Request], Awaitable[Any]], k: str = kind
                      ) -> Callable[[Request], Awaitable[Any]]:
            async def call(request: Request) -> Any:
                request.path_params["kind"] = k
                return await fn(request)
            return call

        out += [
            route(f"/admin/iam/{kind}s/{{name}}", with_kind(api.get_principal), "GET",
                  f"iam:Get{title}", arn, context=api.condition_keys(kind)),
            route(f"/admin/iam/{kind}s/{{name}}/policies/{{policy}}", with_kind(api.attach),
                  "POST", f"iam:Attach{title}Policy", arn,
                  context=api.condition_keys(kind, policy=True)),
            route(f"/admin/iam/{kind}s/{{name}}/policies/{{policy}}", with_kind(api.detach),
                  "DELETE", f"iam:Detach{title}Policy", arn,
                  context=api.condition_keys(kind, policy=True)),
        ]
    return out
