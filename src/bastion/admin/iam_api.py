"""The IAM admin API over HTTP: policies, attachments, roles and simulation, each route
authorized by IAM like any other (the ``admin`` role's ``AdministratorAccess`` allows all;
narrower policies can allow parts, e.g. ``iam:Get*`` for auditors). Errors are IAM's codes
in ``{"Error": {"Code", "Message"}}`` (plus ``Findings`` for a malformed document).

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

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bastion.edge.authz import Guard, user_identity
from bastion.iam.admin import IamAdmin, IamError
from bastion.iam.authorizer import Authorizer, Subject
from bastion.iam.scheme import KINDS, parse_principal_arn
from bastion.identity.clients import CLIENT_SQL, client_from_row
from bastion.oauth.families import load_subject
from bastion.store.fast import FastStore

MAX_BODY = 64 * 1024
POLICY_ARN = "arn:bastion:iam::{account}:policy/{name}"
PRINCIPAL_ARN = "arn:bastion:iam::{account}:{kind}/{name}"
Handler = Callable[[Request], Awaitable[Response]]


async def _json(request: Request) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise IamError("InvalidInput", "send application/json", status=415)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise IamError("InvalidInput", "body too large", status=413)
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise IamError("InvalidInput", "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise IamError("InvalidInput", "body must be a JSON object")
    return data


def _str(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise IamError("InvalidInput", f"{key} must be a non-empty string")
    return value


class IamAPI:
    def __init__(self, admin: IamAdmin, iam: Authorizer, fast: FastStore) -> None:
        self.admin = admin
        self.iam = iam
        self.fast = fast

    @staticmethod
    def _actor(request: Request) -> dict[str, Any]:
        state = request.scope["state"]
        return user_identity(state["subject"], state["principal"])

    def _wrap(self, fn: Callable[[Request], Awaitable[Any]], status: int = 200) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                result = await fn(request)
            except IamError as exc:
                body = exc.to_dict()
                return JSONResponse({"Error": body}, status_code=exc.status)
            if result is None:
                return Response(status_code=204)
            return JSONResponse(result, status_code=status)

        return endpoint

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
        subject = await stored_subject(self.fast, self.iam.account, _str(data, "principal"))
        _, decision = await self.iam.decide(subject, _str(data, "action"),
                                            _str(data, "resource"), extra=context)
        return decision.to_dict()


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
    out = [
        Route("/admin/iam/policies", api._wrap(api.list_policies), methods=["GET"],
              middleware=guard("iam:ListPolicies", policy)),
        Route("/admin/iam/policies", api._wrap(api.create_policy, 201), methods=["POST"],
              middleware=guard("iam:CreatePolicy", policy)),
        Route("/admin/iam/policies/{name}", api._wrap(api.get_policy), methods=["GET"],
              middleware=guard("iam:GetPolicy", POLICY_ARN)),
        Route("/admin/iam/policies/{name}", api._wrap(api.update_policy), methods=["PUT"],
              middleware=guard("iam:CreatePolicyVersion", POLICY_ARN)),
        Route("/admin/iam/policies/{name}", api._wrap(api.delete_policy), methods=["DELETE"],
              middleware=guard("iam:DeletePolicy", POLICY_ARN)),
        Route("/admin/iam/simulate", api._wrap(api.simulate), methods=["POST"],
              middleware=guard("iam:SimulatePrincipalPolicy", "arn:bastion:iam::{account}:*")),
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
            Route(f"/admin/iam/{kind}s/{{name}}", api._wrap(with_kind(api.get_principal)),
                  methods=["GET"], middleware=guard(f"iam:Get{title}", arn)),
            Route(f"/admin/iam/{kind}s/{{name}}/policies/{{policy}}",
                  api._wrap(with_kind(api.attach)), methods=["POST"],
                  middleware=guard(f"iam:Attach{title}Policy", arn)),
            Route(f"/admin/iam/{kind}s/{{name}}/policies/{{policy}}",
                  api._wrap(with_kind(api.detach)), methods=["DELETE"],
                  middleware=guard(f"iam:Detach{title}Policy", arn)),
        ]
    return out
