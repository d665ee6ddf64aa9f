"""Client registration rules (identity/clients.py): identifier and scope syntax checked with
``fullmatch`` (a ``^…$`` pattern with ``match`` accepts a trailing newline), and the
authentication method a client is held to."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.identity.clients import ClientInfo, create_client
from bastion.identity.users import IdentityError

pytestmark = pytest.mark.anyio

REDIRECT = "https://app.example/cb"


async def register(provider: Any, **kw: Any) -> ClientInfo:
    async with provider.sessions.begin() as db:
        client, _ = await create_client(db, provider.wrapper, name="app",
                                        redirect_uris=[REDIRECT], **kw)
    info = await provider.client(client.client_id)
    assert info is not None
    return info


@pytest.mark.parametrize("kw", [
    pytest.param({"client_id": "app\n"}, id="client_id-trailing-newline"),
    pytest.param({"client_id": "app\r\n"}, id="client_id-trailing-crlf"),
    pytest.param({"client_id": "app\x00"}, id="client_id-nul"),
    pytest.param({"client_id": ""}, id="client_id-empty-is-generated"),
    pytest.param({"scopes": ["openid\n"]}, id="scope-trailing-newline"),
    pytest.param({"scopes": ["openid", "order:view\n"]}, id="second-scope-trailing-newline"),
    pytest.param({"scopes": ["a b"]}, id="scope-with-space"),
    pytest.param({"scopes": ['a"b']}, id="scope-with-quote"),
    pytest.param({"scopes": [""]}, id="scope-empty"),
])
async def test_registration_refuses_trailing_newline_and_bad_syntax(provider, kw):
    """Issue 8 item 12: ``"app\\n"`` passed ``^[...]{1,128}$`` with ``.match``."""
    if kw.get("client_id") == "":
        info = await register(provider, **kw)  # "" means: generate one
        assert info.client_id
        return
    with pytest.raises(IdentityError):
        await register(provider, **kw)


async def test_provider_lookup_refuses_trailing_newline(provider):
    info = await register(provider, client_id="app")
    assert await provider.client("app") == info
    assert await provider.client("app\n") is None


@pytest.mark.parametrize("kw,methods,pinned", [
    pytest.param({}, {"client_secret_basic", "client_secret_post"}, False,
                 id="no-method-either-secret-method"),
    pytest.param({"auth_method": "client_secret_basic"}, {"client_secret_basic"}, True,
                 id="explicit-basic-pins"),
    pytest.param({"auth_method": "client_secret_post"}, {"client_secret_post"}, True,
                 id="explicit-post-pins"),
    pytest.param({"public": True}, {"none"}, True, id="public-none-only"),
    pytest.param({"jwks": {"keys": []}}, {"private_key_jwt"}, True,
                 id="jwks-private_key_jwt-only"),
])
async def test_accepted_methods(provider, kw, methods, pinned):
    """Issue 8 item 16: without --auth-method a secret client accepts basic and post (its
    registered metadata stays ``client_secret_basic``); an explicit method pins it; public
    and private_key_jwt clients never accept a secret."""
    info = await register(provider, **kw)
    assert info.auth_methods == methods and info.auth_method_pinned is pinned
    if not kw:
        assert info.auth_method == "client_secret_basic"
