"""``bastion groups``: groups whose roles apply to every member. Each change and its audit
record commit in one transaction."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from bastion.cli.common import DataDir, JsonOut, RoleOpt, _emit, _run, _settings, operator

groups_app = typer.Typer(help="Manage groups (their roles apply to every member).",
                         no_args_is_help=True)
GroupArg = Annotated[str, typer.Argument(metavar="GROUP", help="Group name.")]


@groups_app.command("create")
def groups_create(name: GroupArg, role: RoleOpt = None, data_dir: DataDir = None,
                  as_json: JsonOut = False) -> None:
    """Create a group holding roles (each must exist)."""
    from bastion.identity.users import create_group
    from bastion.runtime import record_change

    async def job(p: Any) -> dict[str, Any]:
        async with p.sessions.begin() as db:
            group = await create_group(db, name, role or [])
            await record_change(p, db, "CreateGroup", user_identity=operator(),
                                request_parameters={"groupName": name, "roles": group.roles})
        return {"id": group.id, "name": group.name, "roles": group.roles}

    data = _run(_settings(data_dir=data_dir), job, create=True)
    _emit(as_json, data, f"created group {name} roles {', '.join(data['roles']) or '-'}")


@groups_app.command("add-member")
def groups_add_member(group: GroupArg,
                      username: Annotated[str, typer.Argument(metavar="USERNAME")],
                      data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Add a user to a group."""
    from bastion.identity.users import add_member
    from bastion.runtime import record_change

    async def job(p: Any) -> dict[str, Any]:
        async with p.sessions.begin() as db:
            await add_member(db, group, username)
            await record_change(p, db, "AddUserToGroup", user_identity=operator(),
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
