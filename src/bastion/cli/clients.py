"""``bastion clients``: register and list OAuth clients. A registration and its audit record
commit in one transaction; the secret is printed once and never recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from bastion.cli.common import DataDir, JsonOut, RoleOpt, _emit, _run, _settings, err, operator

clients_app = typer.Typer(help="Manage OAuth clients.", no_args_is_help=True)
Many = list[str] | None


@clients_app.command("create")
def clients_create(
    name: Annotated[str, typer.Option("--name", metavar="NAME", help="Display name.")],
    redirect_uri: Annotated[Many, typer.Option("--redirect-uri", metavar="URI")] = None,
    public: Annotated[bool, typer.Option("--public",
                                         help="Public client (PKCE, no secret).")] = False,
    scope: Annotated[Many, typer.Option("--scope", metavar="SCOPE")] = None,
    grant_type: Annotated[Many, typer.Option("--grant-type", metavar="GRANT")] = None,
    role: RoleOpt = None,
    post_logout_redirect_uri: Annotated[Many, typer.Option("--post-logout-redirect-uri",
                                                           metavar="URI")] = None,
    jwks_file: Annotated[Path | None, typer.Option(
        "--jwks-file", metavar="FILE", help="Public JWKS for private_key_jwt.")] = None,
    client_id: Annotated[str | None, typer.Option(
        "--client-id", metavar="ID",
        help="Choose the client_id (not a user's name or id).")] = None,
    auth_method: Annotated[str | None, typer.Option(
        "--auth-method", metavar="METHOD",
        help="token_endpoint_auth_method: client_secret_basic (default), "
        "client_secret_post, private_key_jwt (with --jwks-file) or none (with --public).")
    ] = None,
    tls_client_auth: Annotated[str | None, typer.Option(
        "--tls-client-auth", metavar="KIND=NAME",
        help="RFC 8705 mutual-TLS client authentication: the one name the client's "
        "certificate carries, as san_uri=spiffe://..., san_dns=..., san_ip=..., "
        "san_email=... or subject_dn=CN=... (implies --auth-method tls_client_auth).")
    ] = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Register a client; prints client_id and, once, client_secret. Roles (for
    client_credentials tokens) must exist."""
    from bastion.identity.clients import create_client
    from bastion.identity.users import check_roles_exist
    from bastion.runtime import record_change

    jwks = None
    if jwks_file is not None:
        try:
            jwks = json.loads(jwks_file.read_text())
        except (OSError, ValueError) as exc:
            err.print(f"[red]error:[/red] cannot read JWKS: {exc}")
            raise typer.Exit(1) from None
        if not isinstance(jwks, dict) or any(
                not isinstance(k, dict) or "d" in k for k in jwks.get("keys", [])):
            err.print("[red]error:[/red] the JWKS must hold public keys only")
            raise typer.Exit(1)

    tls_meta = None
    if tls_client_auth is not None:
        kind, sep, value = tls_client_auth.partition("=")
        if not sep:
            err.print("[red]error:[/red] --tls-client-auth takes KIND=NAME, e.g. "
                      "san_uri=spiffe://bastion.internal/ns/prod/sa/orders")
            raise typer.Exit(1)
        tls_meta = {kind.strip().removeprefix("tls_client_auth_"): value}
        auth_method = auth_method or "tls_client_auth"

    async def job(p: Any) -> dict[str, Any]:
        async with p.sessions.begin() as db:
            roles = await check_roles_exist(db, role or [])
            client, secret = await create_client(
                db, p.wrapper, name=name, redirect_uris=redirect_uri or [], public=public,
                scopes=scope, grant_types=grant_type, roles=roles, jwks=jwks,
                post_logout_redirect_uris=post_logout_redirect_uri, client_id=client_id,
                auth_method=auth_method, tls_client_auth=tls_meta)
            await record_change(p, db, "CreateClient", user_identity=operator(),
                                request_parameters={
                                    "clientId": client.client_id, "name": name,
                                    "authMethod": client.auth_method,
                                    "grantTypes": client.grant_types, "scopes": client.scopes,
                                    "roles": roles})
        data = {"client_id": client.client_id, "name": client.name,
                "token_endpoint_auth_method": client.auth_method,
                "redirect_uris": client.redirect_uris, "grant_types": client.grant_types,
                "scopes": client.scopes}
        if client.tls_client_auth:
            (kind, value), = client.tls_client_auth.items()
            data[f"tls_client_auth_{kind}"] = value
        if secret:
            data["client_secret"] = secret
        return data

    data = _run(_settings(data_dir=data_dir), job, create=True)
    text = f"client_id: {data['client_id']}"
    if "client_secret" in data:
        text += f"\nclient_secret (shown once): {data['client_secret']}"
    _emit(as_json, data, text)


@clients_app.command("list")
def clients_list(data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """List clients (never their secrets)."""
    from bastion.identity.clients import list_clients

    async def job(p: Any) -> list[dict[str, Any]]:
        async with p.sessions() as db:
            return [{"client_id": c.client_id, "name": c.name,
                     "token_endpoint_auth_method": c.auth_method,
                     "redirect_uris": c.redirect_uris, "grant_types": c.grant_types,
                     "scopes": c.scopes} for c in await list_clients(db)]

    rows = _run(_settings(data_dir=data_dir), job)
    _emit(as_json, rows, "\n".join(f"{r['client_id']:24} {r['token_endpoint_auth_method']:20} "
                                   f"{r['name']}" for r in rows) or "no clients")
