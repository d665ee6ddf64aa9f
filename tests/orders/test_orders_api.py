"""The Orders API as a resource server: RFC 6750 bearer errors, scope and role enforcement,
ownership, and body validation (never a 500, whatever the body)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from bastion.app import build_app
from tests.conftest import ISSUER
from tests.flows import add_client, add_user, authorize, bearer, exchange

pytestmark = pytest.mark.anyio

VIEW, CREATE = "order:view", "order:create"
TEA = {"item": "tea", "quantity": 2, "unit_price_cents": 350}



def mint(provider: Any, subject: str, *, scope: str = f"{VIEW} {CREATE}",
         roles: tuple[str, ...] = (VIEW, CREATE), ttl: int = 300) -> str:
    return provider.tokens.access_token(subject=subject, client_id="orders-test",
                                        audience=provider.api_audience, scope=scope, ttl=ttl,
                                        roles=roles).token


@pytest.fixture
async def alice(provider: Any) -> str:
    return await add_user(provider, "alice")


@pytest.fixture
async def bob(provider: Any) -> str:
    return await add_user(provider, "bob", roles=(VIEW,))


@pytest.fixture
def alice_token(provider: Any, alice: str) -> str:
    return mint(provider, alice)


async def create(http: httpx.AsyncClient, token: str, body: Any = TEA) -> httpx.Response:
    return await http.post("/orders", json=body, headers=bearer(token))


def assert_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    """RFC 9457: ``application/problem+json`` with type, title and the response's status."""
    assert r.headers["content-type"] == "application/problem+json", r.headers
    body: dict[str, Any] = r.json()
    assert body["type"] == "about:blank" and body["status"] == status and body["title"]
    assert "error" not in body
    return body


# --- RFC 6750: no token, bad tokens ---------------------------------------------------------------

@pytest.mark.parametrize("method,path", [("GET", "/orders"), ("POST", "/orders"),
                                         ("GET", "/orders/abc")])
async def test_no_token_gets_bare_challenge(http, method, path):
    """RFC 6750 §3 / §3.1: a request without credentials gets 401 and a challenge with the
    realm and no error code."""
    r = await http.request(method, path, json=TEA)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="bastion"'
    assert r.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("make", [
    pytest.param(lambda p, u: "not-a-jwt", id="rfc6750-3.1/garbage"),
    pytest.param(lambda p, u: mint(p, u, ttl=-3600), id="rfc6750-3.1/expired"),
    pytest.param(lambda p, u: p.tokens.access_token(
        subject=u, client_id="c", audience="https://elsewhere.example", scope=VIEW, ttl=300,
        roles=[VIEW]).token, id="rfc9068-4/other-audience"),
    pytest.param(lambda p, u: mint(p, u)[:-4] + "AAAA", id="rfc7515/bad-signature"),
])
async def test_invalid_tokens(http, provider, alice, make):
    r = await http.get("/orders", headers=bearer(make(provider, alice)))
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


async def test_token_in_query_refused(http, alice_token):
    """RFC 9700 §4.3.2 / RFC 6750 §5.3: never a token in the URL."""
    r = await http.get("/orders", params={"access_token": alice_token})
    assert r.status_code in (400, 401)
    assert "www-authenticate" in r.headers


# --- scopes and roles ---------------------------------------------------------------------------------

@pytest.mark.parametrize("scope,roles,method,status", [
    pytest.param(VIEW, (VIEW, CREATE), "POST", 403, id="scope/view-only-cannot-create"),
    pytest.param(CREATE, (VIEW, CREATE), "GET", 403, id="scope/create-only-cannot-list"),
    pytest.param("openid", (VIEW, CREATE), "GET", 403, id="scope/no-order-scope"),
    pytest.param(f"{VIEW} {CREATE}", (VIEW,), "POST", 403, id="role/view-role-cannot-create"),
    pytest.param(f"{VIEW} {CREATE}", (CREATE,), "GET", 403, id="role/create-role-cannot-list"),
    pytest.param(f"{VIEW} {CREATE}", (), "GET", 403, id="role/no-roles"),
    pytest.param(f"{VIEW} {CREATE}", (VIEW, CREATE), "POST", 201, id="ok/create"),
    pytest.param(VIEW, (VIEW,), "GET", 200, id="ok/list"),
])
async def test_scope_and_role_enforced(http, provider, alice, scope, roles, method, status):
    """RFC 6750 §3.1 insufficient_scope (403): a token needs both the scope (what the client
    was granted) and the role (what the user may do)."""
    token = mint(provider, alice, scope=scope, roles=roles)
    r = await http.request(method, "/orders", json=TEA, headers=bearer(token))
    assert r.status_code == status, r.text
    if status == 403:
        assert r.json()["error"] == "insufficient_scope"
        assert 'error="insufficient_scope"' in r.headers["www-authenticate"]


async def test_bob_with_view_role_cannot_order_through_the_real_flow(http, provider, bob):
    """Roles come from the user, whatever scope the client obtained: bob consents to
    order:create but holds only the order:view role."""
    client = await add_client(provider)
    result = await authorize(http, client, username="bob")
    tokens = (await exchange(http, client, result)).json()
    assert CREATE in tokens["scope"].split()
    r = await create(http, tokens["access_token"])
    assert r.status_code == 403 and r.json()["error"] == "insufficient_scope"
    assert (await http.get("/orders", headers=bearer(tokens["access_token"]))).status_code == 200


# --- ownership ------------------------------------------------------------------------------------------

async def test_users_see_only_their_own_orders(http, provider, alice, bob, alice_token):
    created = await create(http, alice_token)
    assert created.status_code == 201, created.text
    order = created.json()
    assert order["total_cents"] == 700 and order["status"] == "placed"
    assert created.headers["location"] == f"/orders/{order['id']}"
    mine = await http.get(f"/orders/{order['id']}", headers=bearer(alice_token))
    assert mine.status_code == 200 and mine.json() == order

    bob_token = mint(provider, bob, scope=VIEW, roles=(VIEW,))
    theirs = await http.get(f"/orders/{order['id']}", headers=bearer(bob_token))
    missing = await http.get("/orders/0000000000000000", headers=bearer(bob_token))
    assert theirs.status_code == 404 and missing.status_code == 404
    # indistinguishable (apart from the request id in ``instance``)
    assert {**assert_problem(theirs, 404), "instance": None} == \
        {**assert_problem(missing, 404), "instance": None}
    assert (await http.get("/orders", headers=bearer(bob_token))).json() == {"orders": []}
    service = mint(provider, "orders-test", scope=VIEW, roles=(VIEW,))  # a client's own token
    assert (await http.get("/orders", headers=bearer(service))).json() == {"orders": []}


ACCT = "000000000000"
ROLE = f"arn:bastion:iam::{ACCT}:role/buyer"


def _trust(*names: str) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "sts:AssumeRole",
        "Principal": {"AWS": [f"arn:bastion:iam::{ACCT}:user/{n}" for n in names]}}]}


async def _session(http: httpx.AsyncClient, token: str, name: str = "shared") -> str:
    r = await http.post("/sts", data={"Action": "AssumeRole", "RoleArn": ROLE,
                                      "RoleSessionName": name}, headers=bearer(token))
    assert r.status_code == 200, r.text
    return str(r.json()["Credentials"]["AccessToken"])


@pytest.fixture
async def buyer_role(provider: Any) -> None:
    await provider.iam_admin.create_role("buyer", _trust("alice", "bob"))
    await provider.iam_admin.attach("role", "buyer", "BastionOrdersRead")
    await provider.iam_admin.attach("role", "buyer", "BastionOrdersCreate")


async def test_two_callers_with_the_same_session_name_do_not_share_orders(
        http, provider, alice, bob, buyer_role):
    """Item 7: a role session's sub is its session ARN, the same for every caller who picks
    the same session name; ownership also keys on the caller (``act``)."""
    alice_session = await _session(http, mint(provider, alice))
    order = (await create(http, alice_session)).json()
    bob_session = await _session(http, mint(provider, bob, scope=VIEW, roles=(VIEW,)))
    assert (await http.get("/orders", headers=bearer(bob_session))).json() == {"orders": []}
    assert (await http.get(f"/orders/{order['id']}",
                           headers=bearer(bob_session))).status_code == 404
    # the same caller, a new session of the same name: the same owner
    again = await _session(http, mint(provider, alice))
    listed = await http.get("/orders", headers=bearer(again))
    assert [o["id"] for o in listed.json()["orders"]] == [order["id"]]


async def test_client_id_equal_to_a_user_id_cannot_read_that_users_orders(
        http, provider, alice, alice_token):
    """Item 7: a client_credentials token's sub is the client id; a client registered (before
    registration refused it) with a user's id as client id is still another owner."""
    order = (await create(http, alice_token)).json()
    as_client = provider.tokens.access_token(
        subject=alice, client_id=alice, audience=provider.api_audience, scope=VIEW, ttl=300,
        roles=[VIEW]).token
    assert (await http.get("/orders", headers=bearer(as_client))).json() == {"orders": []}
    assert (await http.get(f"/orders/{order['id']}",
                           headers=bearer(as_client))).status_code == 404


async def test_role_session_token_without_its_caller_is_refused(http, provider, buyer_role):
    """A session token that does not name its caller (``act``) would make every caller of
    that session name one owner: refused (fail closed), and audited."""
    session = f"arn:bastion:sts::{ACCT}:assumed-role/buyer/shared"
    token = provider.tokens.access_token(
        subject=session, client_id="orders-test", audience=provider.api_audience,
        scope=f"{VIEW} {CREATE}", ttl=300, extra={"principal_arn": session}).token
    for r in (await http.get("/orders", headers=bearer(token)), await create(http, token)):
        assert r.status_code == 403
        assert_problem(r, 403)
    await provider.audit.flush()
    records = [json.loads(bytes(r[0])) for r in await provider.fast.all(
        "SELECT body FROM audit_events ORDER BY seq")]
    refused = {r["eventName"] for r in records if r.get("errorCode") == "NoOwner"}
    assert refused == {"ListOrders", "CreateOrder"}


def _subject(kind: str, session: str | None = None) -> Any:
    from bastion.iam.authorizer import Subject

    return Subject(kind, "k", session=session)  # type: ignore[arg-type]


def _principal(arn: str, user_id: str | None = None) -> Any:
    from bastion.iam import PolicySet
    from bastion.iam.authorizer import Principal

    return Principal(arn, "n", user_id, PolicySet([]), None, None, {}, ())


SESSION_ARN = f"arn:bastion:sts::{ACCT}:assumed-role/buyer/shared"
ALICE_ARN = f"arn:bastion:iam::{ACCT}:user/alice"
BOB_ARN = f"arn:bastion:iam::{ACCT}:user/bob"


@pytest.mark.parametrize("kind,session,arn,user_id,claims,expected", [
    pytest.param("user", None, ALICE_ARN, "a1b2", {}, "a1b2", id="user/its-id"),
    pytest.param("client", None, f"arn:bastion:iam::{ACCT}:client/a1b2", None, {},
                 f"arn:bastion:iam::{ACCT}:client/a1b2", id="client/its-arn-not-its-id"),
    pytest.param("role", "shared", SESSION_ARN, None, {"act": {"sub": ALICE_ARN}},
                 f"{SESSION_ARN};act={ALICE_ARN}", id="session/with-caller"),
    pytest.param("role", "shared", SESSION_ARN, None,
                 {"act": {"sub": SESSION_ARN, "act": {"sub": BOB_ARN}}},
                 f"{SESSION_ARN};act={SESSION_ARN};act={BOB_ARN}", id="session/nested-chain"),
    pytest.param("role", "shared", SESSION_ARN, None, {}, None, id="session/no-act"),
    pytest.param("role", "shared", SESSION_ARN, None, {"act": "alice"}, None,
                 id="session/act-not-object"),
    pytest.param("role", "shared", SESSION_ARN, None, {"act": {"sub": 5}}, None,
                 id="session/act-sub-not-string"),
    pytest.param("role", "shared", SESSION_ARN, None, {"act": {"sub": ""}}, None,
                 id="session/act-sub-empty"),
    pytest.param("role", "shared", SESSION_ARN, None, {"act": {"sub": "x;act=y"}}, None,
                 id="session/act-sub-forging-a-chain"),
    pytest.param("role", "shared", SESSION_ARN, None,
                 {"act": {"sub": "a", "act": {"sub": "b", "act": {"sub": "c", "act": {
                     "sub": "d", "act": {"sub": "e"}}}}}}, None, id="session/chain-too-deep"),
    pytest.param("role", "shared", SESSION_ARN, None, {"act": {"sub": "x" * 1100}}, None,
                 id="session/key-too-long"),
])
def test_owner_key(kind, session, arn, user_id, claims, expected):
    from bastion.orders.api import owner_key

    assert owner_key(_subject(kind, session), _principal(arn, user_id), claims) == expected


@pytest.mark.parametrize("order_id", [
    pytest.param("x" * 1000, id="long-id"),
    pytest.param("..%2F..%2Fetc", id="traversal", marks=pytest.mark.waf_off),
    pytest.param("' OR '1'='1", id="sql-quote", marks=pytest.mark.waf_off),
    pytest.param("%FF%FE", id="non-utf8"),
])
async def test_odd_order_ids_are_404(http, alice_token, order_id):
    await create(http, alice_token)
    r = await http.get(f"/orders/{order_id}", headers=bearer(alice_token))
    assert r.status_code == 404, r.text


@pytest.mark.parametrize("order_id", [
    pytest.param("..%2F..%2Fetc%2Fpasswd", id="traversal"),
    pytest.param("' OR '1'='1", id="sql-quote"),
])
async def test_attack_shaped_order_ids_are_refused_by_the_waf(http, alice_token, order_id):
    """With the WAF on (the default), the attack never reaches the handler: a 403 problem
    naming the request id and no rule."""
    r = await http.get(f"/orders/{order_id}", headers=bearer(alice_token))
    assert r.status_code == 403, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["instance"].endswith(r.headers["x-request-id"])
    assert "rule" not in r.text.lower() and "110" not in r.text


@pytest.mark.parametrize("order_id", ["%00", "a%0Ab", "%7F"], ids=["nul", "newline", "del"])
async def test_control_characters_in_order_ids_refused_at_the_edge(http, alice_token, order_id):
    """A name with control characters names nothing: the edge refuses it (403, audited)
    before any policy lookup or SQL sees it."""
    r = await http.get(f"/orders/{order_id}", headers=bearer(alice_token))
    assert r.status_code == 403, r.text
    assert "malformed" in r.json()["error_description"]


# --- body validation --------------------------------------------------------------------------------------

def deep(n: int, open_: str = "[", close: str = "]") -> bytes:
    return (open_ * n + close * n).encode()


def deep_object(n: int) -> bytes:
    return ('{"a":' * n + "1" + "}" * n).encode()


def with_(**over: Any) -> bytes:
    body = {**TEA, **over}
    return json.dumps(body).encode()


def junk(body: bytes, id: str, storable: bool = False) -> Any:
    """A junk body; ``storable``: refusing it is right, and so is storing the value
    faithfully (a 500 never is)."""
    return pytest.param(body, storable, id=id)


JUNK = [
    junk(b"", id="empty"),
    junk(b"{", id="truncated"),
    junk(b"{'item': 'tea'}", id="single-quotes"),
    junk(b"null", id="null"),
    junk(b"[]", id="empty-array"),
    junk(json.dumps([TEA]).encode(), id="array-of-orders"),
    junk(b'"tea"', id="string"),
    junk(b"42", id="number"),
    junk(b"true", id="bool"),
    junk(b"{}", id="empty-object"),
    junk(json.dumps({"item": "tea"}).encode(), id="missing-fields"),
    junk(with_(extra="x"), id="unknown-field"),
    junk(with_(owner="someone-else"), id="owner-injection"),
    junk(with_(id="chosen-id"), id="id-injection"),
    junk(with_(item=""), id="item-empty"),
    junk(with_(item="x" * 201), id="item-too-long"),
    junk(with_(item="x" * 10000), id="item-huge"),
    junk(with_(item=5), id="item-int"),
    junk(with_(item=None), id="item-null"),
    junk(with_(item=["tea"]), id="item-array"),
    junk(with_(item={"name": "tea"}), id="item-object"),
    junk(with_(item="tea\u0000"), id="item-with-nul", storable=True),
    junk(b'{"item": "\\ud800", "quantity": 1, "unit_price_cents": 1}',
                 id="item-lone-surrogate"),
    junk(with_(quantity="2"), id="quantity-string"),
    junk(with_(quantity=2.0), id="quantity-float"),
    junk(with_(quantity=2.5), id="quantity-fraction"),
    junk(with_(quantity=True), id="quantity-bool"),
    junk(with_(quantity=False), id="quantity-bool-false"),
    junk(with_(quantity=0), id="quantity-zero"),
    junk(with_(quantity=-1), id="quantity-negative"),
    junk(with_(quantity=10_001), id="quantity-over-max"),
    junk(with_(quantity=10**30), id="quantity-bigint"),
    junk(b'{"item": "tea", "quantity": 1' + b"0" * 5000 + b', "unit_price_cents": 1}',
                 id="quantity-5000-digits"),
    junk(with_(quantity=None), id="quantity-null"),
    junk(b'{"item": "tea", "quantity": NaN, "unit_price_cents": 1}', id="quantity-nan"),
    junk(b'{"item": "tea", "quantity": 1, "unit_price_cents": Infinity}',
                 id="price-infinity"),
    junk(b'{"item": "tea", "quantity": 1, "unit_price_cents": 1e400}',
                 id="price-overflow-float"),
    junk(with_(unit_price_cents=-1), id="price-negative"),
    junk(with_(unit_price_cents=100_000_001), id="price-over-max"),
    junk(with_(unit_price_cents=2**63), id="price-int64-overflow"),
    junk(with_(unit_price_cents=[1]), id="price-array"),
    junk(deep(8000), id="deep-arrays"),
    junk(deep_object(2500), id="deep-objects"),
    junk(b'{"item": "tea", "item": "coffee", "quantity": 1, "unit_price_cents": 1}',
                 id="duplicate-keys", storable=True),
    junk(b'{"item": "\xff\xfe", "quantity": 1, "unit_price_cents": 1}',
                 id="non-utf8-bytes"),
    junk(b"\x00\x00\x00{", id="binary"),
]


@pytest.mark.parametrize("body,storable", JUNK)
async def test_junk_bodies_never_500(http, alice_token, body, storable):
    """Every malformed body is a 400 or 422 with a JSON error, and nothing is stored."""
    r = await http.post("/orders", content=body, headers={
        **bearer(alice_token), "content-type": "application/json"})
    allowed = (400, 422, 201) if storable else (400, 422)
    assert r.status_code in allowed, (r.status_code, r.text[:300])
    if r.status_code == 201:
        got = await http.get(f"/orders/{r.json()['id']}", headers=bearer(alice_token))
        assert got.status_code == 200 and got.json()["item"] == json.loads(body)["item"]
    else:
        assert_problem(r, r.status_code)
        listed = await http.get("/orders", headers=bearer(alice_token))
        assert listed.json() == {"orders": []}


@pytest.mark.parametrize("ctype", [
    pytest.param(None, id="no-content-type"),
    pytest.param("text/plain", id="text-plain"),
    pytest.param("application/x-www-form-urlencoded", id="form"),
    pytest.param("multipart/form-data; boundary=x", id="multipart",
                 marks=pytest.mark.waf_off),
    pytest.param("application/jsonx", id="json-lookalike"),
    pytest.param("application/json-patch+json", id="json-patch"),
    pytest.param("text/json", id="text-json"),
])
async def test_wrong_content_type_is_415(http, alice_token, ctype):
    headers = bearer(alice_token) | ({"content-type": ctype} if ctype else {})
    r = await http.post("/orders", content=json.dumps(TEA).encode(), headers=headers)
    assert r.status_code == 415, r.text
    assert_problem(r, 415)


@pytest.mark.parametrize("ctype", ["application/json", "application/json; charset=utf-8",
                                   "Application/JSON"])
async def test_json_content_types_accepted(http, alice_token, ctype):
    r = await http.post("/orders", content=json.dumps(TEA).encode(),
                        headers=bearer(alice_token) | {"content-type": ctype})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("body", [
    pytest.param(with_(item="x" * 17_000), id="valid-json-too-large"),
    pytest.param(b" " * 20_000 + json.dumps(TEA).encode(), id="whitespace-padding"),
    pytest.param(b"[" * 1_000_000, id="megabyte"),
])
async def test_oversized_body_is_413(http, alice_token, body):
    r = await http.post("/orders", content=body,
                        headers=bearer(alice_token) | {"content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert_problem(r, 413)


async def test_orders_survive_a_second_instance(http, provider, alice_token):
    """Orders are stored, not kept in memory: another instance on the same database lists
    them."""
    order = (await create(http, alice_token)).json()
    transport = httpx.ASGITransport(app=build_app(provider), client=("127.0.0.1", 50200))
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as other:
        listed = await other.get("/orders", headers=bearer(alice_token))
    assert [o["id"] for o in listed.json()["orders"]] == [order["id"]]
