"""``bastion users``: create, list, enrol TOTP. Each change and its audit record commit in
one transaction."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from bastion.cli.common import DataDir, JsonOut, RoleOpt, _emit, _run, _settings, operator
from bastion.iam.scheme import principal_arn
from bastion.identity.users import IdentityError

users_app = typer.Typer(help="Manage users.", no_args_is_help=True)
NameArg = Annotated[str, typer.Argument(metavar="USERNAME", help="Username.")]


def _resource(p: Any, name: str) -> list[dict[str, str]]:
    return [{"type": "Bastion::IAM::User",
             "ARN": principal_arn("user", name, p.settings.account_id)}]


@users_app.command("create")
def users_create(
    name: NameArg,
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="Read the password from stdin (else one is generated).")
    ] = False,
    role: RoleOpt = None,
    full_name: Annotated[str | None, typer.Option("--full-name", metavar="NAME")] = None,
    email: Annotated[str | None, typer.Option("--email", metavar="EMAIL")] = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Create a user. The password comes from stdin (never from the command line): at least
    12 characters, not the username, not a known breached password. Roles must exist."""
    import secrets

    from bastion.identity.users import create_user
    from bastion.runtime import record_change

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        generated = False
    else:
        password, generated = secrets.token_urlsafe(15), True

    async def job(p: Any) -> dict[str, Any]:
        async with p.sessions.begin() as db:
            user = await create_user(db, name, password, roles=role or [], name=full_name,
                                     email=email)
            await record_change(p, db, "CreateUser", user_identity=operator(),
                                request_parameters={"userName": name, "roles": user.roles},
                                resources=_resource(p, name))
        return {"id": user.id, "username": user.username, "roles": user.roles}

    data = _run(_settings(data_dir=data_dir), job, create=True)
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
def users_totp(name: NameArg, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Enrol (or replace) the user's TOTP second factor; prints the secret and URI once."""
    from bastion.identity import totp
    from bastion.identity.users import get_user_by_name
    from bastion.runtime import record_change

    secret = totp.new_secret()

    async def job(p: Any) -> dict[str, Any]:
        async with p.sessions.begin() as db:
            user = await get_user_by_name(db, name)
            if user is None:
                raise IdentityError(f"no such user: {name}")
            user.totp_secret = p.wrapper.wrap(secret.encode(), "totp")
            await record_change(p, db, "EnableMfa", user_identity=operator(),
                                request_parameters={"userName": name},
                                resources=_resource(p, name))
        return {"username": name, "secret": secret,
                "uri": totp.provisioning_uri(secret, name)}

    data = _run(_settings(data_dir=data_dir), job)
    _emit(as_json, data, f"TOTP enrolled for {name}\nsecret: {data['secret']}\n"
                         f"uri: {data['uri']}")
