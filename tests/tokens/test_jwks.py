"""JWK sources: key hygiene (RFC 7517), rollover, rate limiting and fetch failures, against a
real HTTP server on 127.0.0.1."""

from __future__ import annotations

import gzip
import json
import logging
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import certifi
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey
from joserfc.util import int_to_base64

from bastion.tokens.errors import InvalidToken
from bastion.tokens.jwks import CallableJWKS, RemoteJWKS, StaticJWKS, parse_jwks
from bastion.tokens.verify import TokenVerifier

from .conftest import AUDIENCE, ISSUER, Kit

pytestmark = pytest.mark.anyio


class JWKSServer:
    """Serves ``body`` at ``/jwks``; counts requests; can lie about or omit lengths."""

    def __init__(self) -> None:
        self.body = b'{"keys": []}'
        self.status = 200
        self.headers: dict[str, str] = {}
        self.send_length = True
        self.hits = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                with outer._lock:
                    outer.hits += 1
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/jwk-set+json")
                for name, value in outer.headers.items():
                    self.send_header(name, value)
                if outer.send_length:
                    self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()  # HTTP/1.0: without a length the body ends at close
                self.wfile.write(outer.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()
        self.running = True

    def serve(self, jwks: dict[str, Any]) -> None:
        self.body = json.dumps(jwks).encode()

    def stop(self) -> None:
        if self.running:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join()
            self.running = False


@pytest.fixture
def server() -> Iterator[JWKSServer]:
    srv = JWKSServer()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def keys() -> dict[str, ECKey]:
    return {kid: ECKey.generate_key("P-256", {"kid": kid, "use": "sig"}) for kid in
            ("k1", "k2")}


def public(*ks: Any) -> dict[str, Any]:
    return {"keys": [k.as_dict(private=False) for k in ks]}


# ---------------------------------------------------------------- key hygiene (parse_jwks)

def _ec(**extra: Any) -> dict[str, Any]:
    return {**ECKey.generate_key("P-256").as_dict(private=False), "kid": "x", **extra}


def _rsa_public_jwk(bits: int) -> dict[str, Any]:
    numbers = rsa.generate_private_key(65537, bits).public_key().public_numbers()
    return {"kty": "RSA", "kid": "x", "n": int_to_base64(numbers.n), "e": int_to_base64(numbers.e)}


IGNORED: list[tuple[str, Any]] = [
    ("private/EC-with-d", lambda: {**ECKey.generate_key("P-256").as_dict(private=True),
                                   "kid": "x"}),
    ("private/RSA-with-d-p-q", lambda: {**RSAKey.generate_key(2048).as_dict(private=True),
                                        "kid": "x"}),
    ("private/OKP-with-d", lambda: {**OKPKey.generate_key("Ed25519").as_dict(private=True),
                                    "kid": "x"}),
    ("private/public-key-plus-stray-d", lambda: _ec(d="AAAA")),
    ("kty/oct-symmetric-secret", lambda: {**OctKey.generate_key(256).as_dict(private=True),
                                          "kid": "x"}),
    ("kty/unknown", lambda: {"kty": "AKP", "kid": "x", "pub": "AAAA"}),
    ("kty/missing", lambda: {k: v for k, v in _ec().items() if k != "kty"}),
    ("use/enc", lambda: _ec(use="enc")),
    ("key_ops/encrypt-only", lambda: _ec(key_ops=["encrypt"])),
    ("key_ops/not-a-list", lambda: _ec(key_ops="verify")),
    ("crv/X25519-is-not-a-signature-curve",
     lambda: {**OKPKey.generate_key("X25519").as_dict(private=False), "kid": "x"}),
    ("crv/secp256k1-not-supported", lambda: {**_ec(), "crv": "secp256k1"}),
    ("rsa/1024-bit-modulus", lambda: _rsa_public_jwk(1024)),
    ("malformed/EC-point-not-on-curve", lambda: {**_ec(), "y": _ec()["y"]}),
    ("malformed/x-not-base64", lambda: _ec(x="!!!")),
    ("malformed/kid-not-string", lambda: _ec(kid=5)),
    ("malformed/not-an-object", lambda: ["kty", "EC"]),
]


@pytest.mark.parametrize("make", [c[1] for c in IGNORED], ids=[c[0] for c in IGNORED])
def test_unusable_jwk_ignored(make: Any, caplog: pytest.LogCaptureFixture) -> None:
    good = ECKey.generate_key("P-256", {"kid": "good"}).as_dict(private=False)
    bad = make()
    with caplog.at_level(logging.WARNING, "bastion.tokens.jwks"):
        keys = parse_jwks({"keys": [bad, good]})
    assert [k.kid for k in keys] == ["good"]
    assert all(not k.is_private for k in keys)
    assert "ignoring JWK" in caplog.text
    for secret in ("d", "k", "p"):  # never log key material
        if isinstance(bad, dict) and isinstance(bad.get(secret), str) and len(bad[secret]) > 8:
            assert bad[secret] not in caplog.text


@pytest.mark.parametrize("jwks", [
    pytest.param([], id="array-not-object"),
    pytest.param({}, id="no-keys-member"),
    pytest.param({"keys": {}}, id="keys-not-array"),
])
def test_not_a_jwk_set(jwks: Any) -> None:
    with pytest.raises(ValueError):
        StaticJWKS(jwks)


def test_usable_key_types_kept() -> None:
    keys = [
        ECKey.generate_key("P-384", {"kid": "a", "use": "sig"}),
        RSAKey.generate_key(2048, {"kid": "b", "key_ops": ["verify"]}),
        OKPKey.generate_key("Ed25519", {"kid": "c", "alg": "EdDSA"}),
    ]
    assert [k.kid for k in parse_jwks(public(*keys))] == ["a", "b", "c"]


# ---------------------------------------------------------------- StaticJWKS

async def test_static_lookup_and_replace(keys: dict[str, ECKey]) -> None:
    src = StaticJWKS(public(keys["k1"]))
    assert (await src.get_key("k1")) == ECKey.import_key(keys["k1"].as_dict(private=False))
    assert await src.get_key(None) is not None  # exactly one key: usable without kid
    assert await src.get_key("k2") is None
    src.replace(public(keys["k1"], keys["k2"]))
    assert await src.get_key("k2") is not None
    assert await src.get_key(None) is None  # two keys: a token must name its key


async def test_static_refuses_private_key(keys: dict[str, ECKey]) -> None:
    src = StaticJWKS({"keys": [keys["k1"].as_dict(private=True)]})
    assert await src.get_key("k1") is None


async def test_static_duplicate_kid_keeps_first(keys: dict[str, ECKey]) -> None:
    other = ECKey.generate_key("P-256", {"kid": "k1"})
    src = StaticJWKS(public(keys["k1"], other))
    key = await src.get_key("k1")
    assert key is not None and key.get("x") == keys["k1"].get("x")


# ---------------------------------------------------------------- CallableJWKS

class Issuer:
    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks: dict[str, Any] | None = jwks
        self.calls = 0

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        if self.jwks is None:
            raise RuntimeError("key ring unavailable")
        return self.jwks


async def test_callable_rollover_removal_and_failure(keys: dict[str, ECKey]) -> None:
    issuer = Issuer(public(keys["k1"]))
    src = CallableJWKS(issuer, min_refresh_interval=0)
    assert await src.get_key("k1") is not None
    issuer.jwks = public(keys["k1"], keys["k2"])
    assert await src.get_key("k2") is not None  # rollover picked up
    issuer.jwks = public(keys["k2"])
    assert await src.get_key("k1") is None  # removal honoured once the cache is stale
    issuer.jwks = None
    assert await src.get_key("k2") is not None  # failure keeps serving cached keys


async def test_callable_rate_limited(keys: dict[str, ECKey]) -> None:
    issuer = Issuer(public(keys["k1"]))
    src = CallableJWKS(issuer, min_refresh_interval=60)
    assert await src.get_key("k1") is not None
    for _ in range(20):
        assert await src.get_key(secrets.token_hex(8)) is None
    assert issuer.calls == 1


# ---------------------------------------------------------------- RemoteJWKS

async def test_remote_fetches_once_and_caches(server: JWKSServer, keys: dict[str, ECKey]) -> None:
    server.serve(public(keys["k1"]))
    src = RemoteJWKS(server.url)
    for _ in range(5):
        assert await src.get_key("k1") is not None
    assert server.hits == 1


async def test_remote_concurrent_cold_fetches_coalesce(
    server: JWKSServer, keys: dict[str, ECKey]
) -> None:
    server.serve(public(keys["k1"]))
    src = RemoteJWKS(server.url)
    results: list[object] = []

    async def lookup() -> None:
        results.append(await src.get_key("k1"))

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(lookup)
    assert len(results) == 20 and all(r is not None for r in results)
    assert server.hits == 1


@pytest.mark.parametrize("interval", [0, 60], ids=["no-rate-limit", "rate-limited"])
async def test_remote_concurrent_unknown_kid_refetches_coalesce(
    server: JWKSServer, keys: dict[str, ECKey], interval: float
) -> None:
    server.serve(public(keys["k1"]))
    src = RemoteJWKS(server.url, min_refresh_interval=interval)
    assert await src.get_key("k1") is not None
    server.serve(public(keys["k1"], keys["k2"]))
    found: list[object] = []

    async def lookup() -> None:
        found.append(await src.get_key("k2"))

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(lookup)
    assert server.hits == (2 if interval == 0 else 1)
    assert all(f is not None for f in found) == (interval == 0)


async def test_remote_kid_rollover(server: JWKSServer, keys: dict[str, ECKey]) -> None:
    server.serve(public(keys["k1"]))
    src = RemoteJWKS(server.url, min_refresh_interval=0)
    assert await src.get_key("k1") is not None
    assert await src.get_key("k2") is None
    server.serve(public(keys["k1"], keys["k2"]))
    assert await src.get_key("k2") is not None
    assert server.hits == 3


async def test_remote_random_kids_do_not_amplify_fetches(
    server: JWKSServer, keys: dict[str, ECKey]
) -> None:
    server.serve(public(keys["k1"]))
    src = RemoteJWKS(server.url, min_refresh_interval=60)
    assert await src.get_key("k1") is not None

    async def probe() -> None:
        assert await src.get_key(secrets.token_urlsafe(12)) is None

    for _ in range(25):
        await probe()
    async with anyio.create_task_group() as tg:
        for _ in range(25):
            tg.start_soon(probe)
    assert server.hits == 1


async def test_remote_ttl_expiry_refetches(server: JWKSServer, keys: dict[str, ECKey]) -> None:
    server.serve(public(keys["k1"]))
    src = RemoteJWKS(server.url, cache_ttl=0, min_refresh_interval=0)
    assert await src.get_key("k1") is not None
    server.serve(public(keys["k2"]))
    assert await src.get_key("k1") is None  # a removed key stops verifying
    assert server.hits == 2


@pytest.mark.parametrize("send_length", [True, False], ids=["content-length", "no-length"])
async def test_remote_oversized_response_refused(
    server: JWKSServer, keys: dict[str, ECKey], send_length: bool
) -> None:
    server.send_length = send_length
    server.serve({**public(keys["k1"]), "padding": "x" * 4096})
    src = RemoteJWKS(server.url, max_bytes=1024)
    assert await src.get_key("k1") is None
    assert server.hits == 1


async def test_remote_private_key_in_set_ignored(
    server: JWKSServer, keys: dict[str, ECKey]
) -> None:
    server.serve({"keys": [keys["k1"].as_dict(private=True), keys["k2"].as_dict(private=False)]})
    src = RemoteJWKS(server.url)
    assert await src.get_key("k1") is None
    key = await src.get_key("k2")
    assert key is not None and not key.is_private


def _break_down(server: JWKSServer) -> None:
    server.stop()


def _break_500(server: JWKSServer) -> None:
    server.status = 500


def _break_json(server: JWKSServer) -> None:
    server.body = b"{not json"


def _break_shape(server: JWKSServer) -> None:
    server.body = b'{"no": "keys"}'


def _break_redirect(server: JWKSServer) -> None:
    server.status, server.headers = 302, {"Location": "http://127.0.0.1:9/evil"}


def _break_gzip(server: JWKSServer) -> None:
    server.body = gzip.compress(server.body)
    server.headers = {"Content-Encoding": "gzip"}


@pytest.mark.parametrize("breakage", [_break_down, _break_500, _break_json, _break_shape,
                                      _break_redirect, _break_gzip],
                         ids=["server-down", "http-500", "invalid-json", "not-a-jwk-set",
                              "redirect-not-followed", "content-coding-refused"])
async def test_remote_failure_keeps_cached_keys(
    server: JWKSServer, keys: dict[str, ECKey], breakage: Any
) -> None:
    server.serve(public(keys["k1"]))
    src = RemoteJWKS(server.url, cache_ttl=0, min_refresh_interval=0)
    assert await src.get_key("k1") is not None
    breakage(server)
    assert await src.get_key("k1") is not None  # stale but served
    assert await src.get_key("k2") is None


@pytest.mark.parametrize("breakage", [_break_500, _break_redirect, _break_gzip],
                         ids=["http-500", "redirect", "content-coding"])
async def test_remote_failure_without_cache_finds_nothing(
    server: JWKSServer, keys: dict[str, ECKey], breakage: Any
) -> None:
    server.serve(public(keys["k1"]))
    breakage(server)
    assert await RemoteJWKS(server.url).get_key("k1") is None


async def test_remote_with_given_client(server: JWKSServer, keys: dict[str, ECKey]) -> None:
    server.serve(public(keys["k1"]))
    async with httpx.AsyncClient() as client:
        src = RemoteJWKS(server.url, client=client)
        assert await src.get_key("k1") is not None
    assert server.hits == 1


@pytest.mark.parametrize("url", ["http://id.example.test/jwks", "ftp://127.0.0.1/jwks",
                                 "http://10.0.0.1/jwks", "/jwks", ""])
def test_remote_url_must_be_https_or_loopback(url: str) -> None:
    with pytest.raises(ValueError):
        RemoteJWKS(url)


@pytest.mark.parametrize("url", ["https://id.example.test/jwks", "http://localhost:8/j",
                                 "http://127.0.0.1:8/j", "http://[::1]:8/j"])
def test_remote_url_accepted(url: str) -> None:
    RemoteJWKS(url)


def test_remote_verify_path_builds_context_without_warning() -> None:
    RemoteJWKS("https://id.example.test/jwks", verify=certifi.where())


@pytest.mark.parametrize("options", [{"max_bytes": 0}, {"cache_ttl": -1},
                                     {"min_refresh_interval": -1}])
def test_remote_invalid_options(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RemoteJWKS("https://id.example.test/jwks", **options)


# ---------------------------------------------------------------- end to end with a verifier

async def test_verifier_follows_remote_key_rollover(server: JWKSServer, kit: Kit) -> None:
    new = ECKey.generate_key("P-256", {"kid": "ec-new", "use": "sig"})
    server.serve(kit.jwks(kit.ec))
    verifier = TokenVerifier(issuer=ISSUER, audience=AUDIENCE,
                             jwks=RemoteJWKS(server.url, min_refresh_interval=0))
    assert (await verifier.verify(kit.forge())).subject == "user-42"
    with pytest.raises(InvalidToken, match="unknown signing key"):
        await verifier.verify(kit.forge(key=new))
    server.serve(kit.jwks(kit.ec, new))
    assert (await verifier.verify(kit.forge(key=new))).subject == "user-42"
