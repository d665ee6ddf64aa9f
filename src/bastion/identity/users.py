"""Users and groups: creation, lookup and effective roles (own roles ∪ groups' roles).

A user's name and id never equal a client id (``identity.clients`` refuses the converse): a
token whose ``sub`` equals its ``client_id`` is the client's own, and must not be a user's.
Roles given to users and groups must exist as IAM roles (``iam roles list``).
"""

from __future__ import annotations

import re
import secrets
import time

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.identity.passwords import WeakPassword, check_new_password, hash_password
from bastion.store.models import Client, Group, GroupMember, IamRole, User

USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
ROLE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._/*-]{0,127}")


class IdentityError(ValueError):
    """A request to change identities was refused; the message is safe to show."""


def check_roles(roles: list[str]) -> list[str]:
    for role in roles:
        if not ROLE_RE.fullmatch(role):
            raise IdentityError(f"invalid role name: {role!r}")
    return sorted(set(roles))


async def check_roles_exist(db: AsyncSession, roles: list[str]) -> list[str]:
    """The roles, checked and deduplicated; each must be an existing IAM role."""
    wanted = check_roles(roles)
    if not wanted:
        return wanted
    found = set((await db.scalars(select(IamRole.name).where(IamRole.name.in_(wanted)))).all())
    missing = [r for r in wanted if r not in found]
    if missing:
        raise IdentityError(f"no such role: {', '.join(missing)} (create it with "
                            f"`bastion iam roles create`, or see `bastion iam roles list`)")
    return wanted


async def _new_user_id(db: AsyncSession) -> str:
    while True:  # 96 random bits: a clash with a client id or user id is for the record only
        user_id = secrets.token_hex(12)
        if await db.get(Client, user_id) is None and await db.get(User, user_id) is None:
            return user_id


async def create_user(db: AsyncSession, username: str, password: str, *,
                      roles: list[str] = (), name: str | None = None,  # type: ignore[assignment]
                      email: str | None = None) -> User:
    if not USERNAME_RE.fullmatch(username):
        raise IdentityError("username must be 1-128 characters of letters, digits, . _ @ -")
    if await get_user_by_name(db, username) is not None:
        raise IdentityError(f"user {username!r} already exists")
    if await db.get(Client, username) is not None:
        raise IdentityError(f"{username!r} is a client id; a user cannot have that name")
    roles = await check_roles_exist(db, list(roles))
    try:
        check_new_password(password, username=username)
        pw_hash = hash_password(password)
    except (WeakPassword, ValueError) as exc:
        raise IdentityError(str(exc)) from None
    user = User(id=await _new_user_id(db), username=username, password_hash=pw_hash,
                name=name, email=email, roles=roles, totp_secret=None,
                disabled=False, created_at=int(time.time()))
    db.add(user)
    await db.flush()
    return user


async def get_user_by_name(db: AsyncSession, username: str) -> User | None:
    return await db.scalar(select(User).where(User.username == username))


async def get_user(db: AsyncSession, user_id: str) -> User | None:
    return await db.get(User, user_id)


async def list_users(db: AsyncSession) -> list[User]:
    return list((await db.scalars(select(User).order_by(User.username))).all())


async def effective_roles(db: AsyncSession, user: User) -> set[str]:
    rows = await db.scalars(select(Group.roles).join(GroupMember,
                                                     GroupMember.group_id == Group.id)
                            .where(GroupMember.user_id == user.id))
    roles = set(user.roles)
    for group_roles in rows:
        roles.update(group_roles)
    return roles


async def create_group(db: AsyncSession, name: str, roles: list[str]) -> Group:
    if not USERNAME_RE.fullmatch(name):
        raise IdentityError("invalid group name")
    if await db.scalar(select(Group).where(Group.name == name)) is not None:
        raise IdentityError(f"group {name!r} already exists")
    group = Group(id=secrets.token_hex(12), name=name, roles=await check_roles_exist(db, roles),
                  created_at=int(time.time()))
    db.add(group)
    await db.flush()
    return group


async def add_member(db: AsyncSession, group_name: str, username: str) -> None:
    group = await db.scalar(select(Group).where(Group.name == group_name))
    user = await get_user_by_name(db, username)
    if group is None or user is None:
        raise IdentityError("no such group or user")
    await db.merge(GroupMember(group_id=group.id, user_id=user.id))


async def list_groups(db: AsyncSession) -> list[dict[str, object]]:
    groups = (await db.scalars(select(Group).order_by(Group.name))).all()
    out: list[dict[str, object]] = []
    for g in groups:
        members = (await db.scalars(select(User.username).join(
            GroupMember, GroupMember.user_id == User.id).where(GroupMember.group_id == g.id)
            .order_by(User.username))).all()
        out.append({"id": g.id, "name": g.name, "roles": g.roles, "members": list(members)})
    return out
