"""Users and groups: password rules, roles that exist, and no user and client sharing a
name or id (a token whose sub equals its client_id is the client's own)."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.identity.clients import create_client
from bastion.identity.users import IdentityError, create_group, create_user
from tests.flows import PASSWORD, add_client, add_user

pytestmark = pytest.mark.anyio


async def new_user(provider: Any, name: str, password: str = PASSWORD, **kw: Any) -> Any:
    async with provider.sessions.begin() as db:
        return await create_user(db, name, password, **kw)


async def new_client(provider: Any, client_id: str) -> Any:
    async with provider.sessions.begin() as db:
        return await create_client(db, provider.wrapper, name="x", redirect_uris=[],
                                   grant_types=["client_credentials"], client_id=client_id)


@pytest.mark.parametrize("password,fragment", [
    pytest.param("abc", "at least 12", id="3-characters"),
    pytest.param("qwerty123456", "breached", id="breached"),
    pytest.param("Dave-Dave-Dave", "username", id="username-as-password"),
])
async def test_create_user_refuses_weak_password(provider, password, fragment):
    name = "dave-dave-dave" if fragment == "username" else "dave"
    with pytest.raises(IdentityError, match=fragment):
        await new_user(provider, name, password)


@pytest.mark.parametrize("roles", [
    pytest.param(["order:veiw"], id="typo"),
    pytest.param(["order:view", "superuser"], id="one-of-two-missing"),
    pytest.param(["arn:bastion:iam::000000000000:role/admin"], id="an-arn-not-a-name"),
])
async def test_create_user_refuses_role_that_does_not_exist(provider, roles):
    with pytest.raises(IdentityError, match="no such role"):
        await new_user(provider, "dave", roles=roles)
    with pytest.raises(IdentityError, match="no such role"):
        async with provider.sessions.begin() as db:
            await create_group(db, "buyers", roles)


async def test_user_named_like_a_client_id_refused(provider):
    client = await add_client(provider, client_id="svc-1")
    with pytest.raises(IdentityError, match="client id"):
        await new_user(provider, client.client_id)


@pytest.mark.parametrize("which", ["user-id", "username"])
async def test_client_id_equal_to_a_user_id_or_name_refused(provider, which):
    """Item 7: a client registered with a user's id as client_id would, with a
    client_credentials token (sub = client_id), be taken for that user."""
    user_id = await add_user(provider, "alice")
    with pytest.raises(IdentityError, match="names a user"):
        await new_client(provider, user_id if which == "user-id" else "alice")


async def test_good_user_created_with_existing_roles(provider):
    user = await new_user(provider, "dave", "a perfectly fine passphrase",
                          roles=["order:view", "order:view"])
    assert user.roles == ["order:view"] and len(user.id) == 24


@pytest.mark.parametrize("name", [
    pytest.param("alice\n", id="trailing-newline"),
    pytest.param("ａlice", id="full-width-letter"),
    pytest.param("alice\x00", id="nul"),
    pytest.param("", id="empty"),
])
async def test_username_with_trailing_newline_or_lookalike_refused(provider, name):
    """``^…$`` with ``.match`` accepted ``"alice\\n"``: names are matched whole, ASCII only."""
    with pytest.raises(IdentityError, match="username must be"):
        await new_user(provider, name)


@pytest.mark.parametrize("role", ["order:view\n", "ｏrder:view"])
async def test_role_name_with_trailing_newline_or_lookalike_refused(provider, role):
    with pytest.raises(IdentityError, match="invalid role name"):
        await new_user(provider, "erin", roles=[role])
