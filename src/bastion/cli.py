"""The ``bastion`` command. Every command takes ``--data-dir`` (or ``BASTION_DATA_DIR``),
works while a server runs on the same data, and prints JSON with ``--json``."""

from __future__ import annotations

import ipaddress
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from bastion.cli_audit import audit_app
from bastion.cli_common import DataDir, JsonOut, _emit, _run, _settings, err, operator, out
from bastion.cli_iam import iam_app
from bastion.iam.scheme import principal_arn
from bastion.identity.users import IdentityError

app = typer.Typer(help="Bastion: self-hosted identity provider and API security layers.",
                  no_args_is_help=True, add_completion=False)
users_app = typer.Typer(help="Manage users.", no_args_is_help=True)
clients_app = typer.Typer(help="Manage OAuth clients.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage token signing keys.", no_args_is_help=True)
groups_app = typer.Typer(help="Manage groups (their roles apply to every member).",
                         no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(clients_app, name="clients")
app.add_typer(keys_app, name="keys")
app.add_typer(groups_app, name="groups")
app.add_typer(iam_app, name="iam")
app.add_typer(audit_app, name="audit")

def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- serve ------------------------------------------------------------------------------------
@app.command()
def serve(
    data_dir: DataDir = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    issuer: Annotated[str | None, typer.Option(envvar="BASTION_ISSUER",
                                               help="Issuer URL (default: address served).")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate chain.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key.")] = None,
    demo: Annotated[bool, typer.Option(help="Seed the Orders example and print how to use it.")] = False,
    dev: Annotated[bool, typer.Option(help="Allow plain HTTP on loopback.")] = False,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
) -> None:
    """Run the identity provider and the Orders API."""
    import uvicorn

    from bastion.app import BastionServer
    from bastion.demo import instructions, seed
    from bastion.runtime import ensure_admin

    settings = _settings(data_dir=data_dir, host=host, port=port, issuer=issuer,
                         tls_cert=tls_cert, tls_key=tls_key, dev=dev or None)
    if not settings.tls:
        if not settings.dev:
            err.print("[red]error:[/red] serving needs TLS: pass --tls-cert and --tls-key, "
                      "or --dev for plain HTTP on loopback")
            raise typer.Exit(2)
        if not _is_loopback(settings.host):
            err.print("[red]error:[/red] --dev serves plain HTTP on loopback addresses only")
            raise typer.Exit(2)

    async def prepare(provider: Any) -> tuple[str | None, str | None]:
        password = await ensure_admin(provider)
        text = None
        if demo:
            creds = await seed(provider)
            text = instructions(provider, creds, insecure=settings.tls)
        return password, text

    admin_password, demo_text = _run(settings, prepare)
    if admin_password:
        err.print(f"[bold]Admin account created.[/bold] username: admin  password: "
                  f"{admin_password}\n(shown once; set BASTION_ADMIN_PASSWORD to choose it)")
    if demo_text:
        out.print(demo_text)
    err.print(f"Bastion issuer {settings.effective_issuer}  data {settings.data_dir}  "
              f"database {'postgresql' if 'postgres' in settings.effective_database_url else 'sqlite'}")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.run(BastionServer(settings, demo=demo), host=settings.host, port=settings.port,
                ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
                ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
                log_level=log_level, access_log=False, lifespan="on",
                server_header=False, proxy_headers=False)


# --- users ------------------------------------------------------------------------------------
@users_app.command("create")
def users_create(
    name: Annotated[str, typer.Argument(help="Username.")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin",
                                                 help="Read the password from stdin.")] = False,
    role: Annotated[list[str] | None, typer.Option("--role", help="Role (repeatable).")] = None,
    full_name: Annotated[str | None, typer.Option("--full-name")] = None,
    email: Annotated[str | None, typer.Option("--email")] = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Create a user. The password comes from stdin (never from the command line)."""
    import secrets

    from bastion.identity.users import create_user

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        generated = False
    else:
        password, generated = secrets.token_urlsafe(15), True

    async def job(p: Any) -> dict[str, Any]:
        async with p.sessions.begin() as db:
            user = await create_user(db, name, password, roles=role or [], name=full_name,
                                     email=email)
        await p.audit.emit("CreateUser", user_identity=operator(),
                           request_parameters={"userName": name, "roles": role or []},
                           resources=[{"ARN": principal_arn("user", name, p.settings.account_id)}])
        return {"id": user.id, "username": user.username, "roles": user.roles}

    data = _run(_settings(data_dir=data_dir), job)
    if generated:
        data["password"] = password
    _emit(as_json, data, f"created user {data['username']} (id {data['id']}) roles "
                         f"{', '.join(data['roles']) or '-'}" +
          (f"\npassword (shown once): {password}" if generated else ""))


@users_app.command("list")
def users_list(data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """List users."""
    from bastion.identity.users import list_users

    async def job(p: Any) -> list[dict[str, Any]]:
        async with p.sessions() as db:
            return [{"id": u.id, "username": u.username, "roles": u.roles,
                     "mfa": u.totp_secret is not None, "disabled": u.disabled}
                    for u in await list_users(db)]

    rows = _run(_settings(data_dir=data_dir), job)
    _emit(as_json, rows, "\n".join(f"{r['username']:20} {r['id']}  roles "
                                   f"{','.join(r['roles']) or '-'}  mfa {r['mfa']}"
                                   for r in rows) or "no users")


@users_app.command("totp")
def users_totp(name: Annotated[str, typer.Argument(help="Username.")],
               data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Enrol (or replace) the user's TOTP second factor; prints the secret and URI once."""
    from bastion.identity import totp
    from bastion.identity.users import get_user_by_name

    secret = totp.new_secret()

    async def job(p: Any) -> dict[str, Any]:
        async with p.sessions.begin() as db:
            user = await get_user_by_name(db, name)
            if user is None:
                raise IdentityError(f"no such user: {name}")
            user.totp_secret = p.wrapper.wrap(secret.encode(), "totp")
        await p.audit.emit("EnableMfa", user_identity=operator(),
                           request_parameters={"userName": name})
        return {"username": name, "secret": secret,
                "uri": totp.provisioning_uri(secret, name)}

    data = _run(_settings(data_dir=data_dir), job)
    _emit(as_json, data, f"TOTP enrolled for {name}\nsecret: {data['secret']}\n"
                         f"uri: {data['uri']}")


# --- groups -----------------------------------------------------------------------------------
@groups_app.command("create")
def groups_create(name: Annotated[str, typer.Argument(help="Group name.")],
                  role: Annotated[list[str] | None, typer.Option("--role")] = None,
                  data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Create a group holding roles."""
    from bastion.identity.users import create_group

    async def job(p: Any) -> dict[str, Any]:
        async with p.sessions.begin() as db:
            group = await create_group(db, name, role or [])
        await p.audit.emit("CreateGroup", user_identity=operator(),
                           request_parameters={"groupName": name, "roles": role or []})
        return {"id": group.id, "name": group.name, "roles": group.roles}

    data = _run(_settings(data_dir=data_dir), job)
    _emit(as_json, data, f"created group {name} roles {', '.join(data['roles']) or '-'}")


@groups_app.command("add-member")
def groups_add_member(group: Annotated[str, typer.Argument()],
                      username: Annotated[str, typer.Argument()],
                      data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Add a user to a group."""
    from bastion.identity.users import add_member

    async def job(p: Any) -> dict[str, Any]:
        async with p.sessions.begin() as db:
            await add_member(db, group, username)
        await p.audit.emit("AddUserToGroup", user_identity=operator(),
                           request_parameters={"groupName": group, "userName": username})
        return {"group": group, "username": username}

    data = _run(_settings(data_dir=data_dir), job)
    _emit(as_json, data, f"added {username} to {group}")


@groups_app.command("list")
def groups_list(data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """List groups with their roles and members."""
    from bastion.identity.users import list_groups

    async def job(p: Any) -> list[dict[str, Any]]:
        async with p.sessions() as db:
            return await list_groups(db)

    rows = _run(_settings(data_dir=data_dir), job)
    _emit(as_json, rows, "\n".join(f"{r['name']:20} roles {','.join(r['roles']) or '-'}  "
                                   f"members {','.join(r['members']) or '-'}" for r in rows)
          or "no groups")


# --- clients ----------------------------------------------------------------------------------
@clients_app.command("create")
def clients_create(
    name: Annotated[str, typer.Option("--name", help="Display name.")],
    redirect_uri: Annotated[list[str] | None, typer.Option("--redirect-uri")] = None,
    public: Annotated[bool, typer.Option("--public", help="Public client (PKCE, no secret).")] = False,
    scope: Annotated[list[str] | None, typer.Option("--scope")] = None,
    grant_type: Annotated[list[str] | None, typer.Option("--grant-type")] = None,
    role: Annotated[list[str] | None, typer.Option("--role", help="Roles for client_credentials tokens.")] = None,
    post_logout_redirect_uri: Annotated[list[str] | None, typer.Option("--post-logout-redirect-uri")] = None,
    jwks_file: Annotated[Path | None, typer.Option("--jwks-file", help="Public JWKS for private_key_jwt.")] = None,
    client_id: Annotated[str | None, typer.Option("--client-id", help="Choose the client_id.")] = None,
    auth_method: Annotated[str | None, typer.Option(
        "--auth-method", help="token_endpoint_auth_method: client_secret_basic (default), "
        "client_secret_post, private_key_jwt (with --jwks-file) or none (with --public).")] = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Register a client; prints client_id and, once, client_secret."""
    from bastion.identity.clients import create_client

    jwks = None
    if jwks_file is not None:
        try:
            jwks = json.loads(jwks_file.read_text())
        except (OSError, ValueError) as exc:
            err.print(f"[red]error:[/red] cannot read JWKS: {exc}")
            raise typer.Exit(1) from None
        if any("d" in k for k in jwks.get("keys", [])):
            err.print("[red]error:[/red] the JWKS contains a private key; register public keys only")
            raise typer.Exit(1)

    async def job(p: Any) -> dict[str, Any]:
        async with p.sessions.begin() as db:
            client, secret = await create_client(
                db, p.wrapper, name=name, redirect_uris=redirect_uri or [], public=public,
                scopes=scope, grant_types=grant_type, roles=role, jwks=jwks,
                post_logout_redirect_uris=post_logout_redirect_uri, client_id=client_id,
                auth_method=auth_method)
        await p.audit.emit("CreateClient", user_identity=operator(), request_parameters={
            "clientId": client.client_id, "name": name, "authMethod": client.auth_method,
            "grantTypes": client.grant_types, "scopes": client.scopes, "roles": role})
        data = {"client_id": client.client_id, "name": client.name,
                "token_endpoint_auth_method": client.auth_method,
                "redirect_uris": client.redirect_uris, "grant_types": client.grant_types,
                "scopes": client.scopes}
        if secret:
            data["client_secret"] = secret
        return data

    data = _run(_settings(data_dir=data_dir), job)
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


# --- keys -------------------------------------------------------------------------------------
@keys_app.command("rotate")
def keys_rotate(data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Promote the published next key to signing, retire the current one, publish a new next."""
    from bastion.tokens import keys

    settings = _settings(data_dir=data_dir)

    async def job(p: Any) -> dict[str, Any]:
        async with p.sessions.begin() as db:
            kid = await keys.rotate(db, p.wrapper, settings.signing_alg, settings.max_jwt_ttl)
        await p.audit.emit("RotateSigningKey", user_identity=operator(),
                           response_elements={"activeKid": kid})
        return {"active_kid": kid}

    data = _run(settings, job)
    _emit(as_json, data, f"now signing with {data['active_kid']}; running servers pick it up "
                         f"within {settings.key_refresh_interval:g}s")


@keys_app.command("list")
def keys_list(data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """List signing keys and their state."""
    from bastion.tokens import keys

    async def job(p: Any) -> list[dict[str, Any]]:
        async with p.sessions() as db:
            return [{"kid": k.kid, "alg": k.alg, "status": k.status, "created_at": k.created_at,
                     "activated_at": k.activated_at, "retired_at": k.retired_at,
                     "expires_at": k.expires_at} for k in await keys.list_keys(db)]

    rows = _run(_settings(data_dir=data_dir), job)
    _emit(as_json, rows, "\n".join(f"{r['kid']:18} {r['alg']:6} {r['status']}" for r in rows))


def main() -> None:
    app()
