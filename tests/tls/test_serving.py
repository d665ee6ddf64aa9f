"""``TlsServing`` in front of Bastion's app with the real internal CA: a server certificate
issued at startup (kept on restart, renewed at a fraction of its life and hot-reloaded),
mTLS against the CA's own roots, a revoked client certificate refused with 401 per request,
the verified SPIFFE ID as IAM's ``bastion:MtlsSpiffeId``, the expiry gauge in the app's
metrics."""

from __future__ import annotations

import asyncio
import json
import ssl
import stat
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bastion.app import build_app
from bastion.edge.tls import (
    InternalCertificate,
    RevocationCheck,
    TlsReloader,
    TlsServing,
    server_context,
    server_names,
)
from bastion.pki import PkiError
from tests.tls.harness import serve_task, settings

pytestmark = pytest.mark.anyio
ACCT = "000000000000"
SPIFFE_A = "spiffe://bastion.internal/ns/shop/sa/a"
SPIFFE_B = "spiffe://bastion.internal/ns/shop/sa/b"


def write(directory: Path, name: str, cert_pem: str, key_pem: str) -> tuple[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    cert.write_text(cert_pem)
    key.write_text(key_pem)
    return str(cert), str(key)


async def write_issued(provider: Any, directory: Path, name: str,
                       **kw: Any) -> tuple[str, str, str]:
    issued = await provider.ca.issue(requester="test", **kw)
    return (*write(directory, name, issued.pem_chain(), issued.key_pem()), issued.serial)


async def client(provider: Any, files: tuple[str, str, str] | None) -> httpx.AsyncClient:
    ctx = ssl.create_default_context(cadata=await provider.ca.trust_bundle_pem())
    if files is not None:
        ctx.load_cert_chain(files[0], files[1])
    return httpx.AsyncClient(verify=ctx, timeout=10)


def mint(provider: Any, subject: str) -> dict[str, str]:
    token = provider.tokens.access_token(subject=subject, client_id="orders-test",
                                         audience=provider.api_audience,
                                         scope="order:view order:create", ttl=300,
                                         roles=()).token
    return {"authorization": f"Bearer {token}"}


def peer_serial(response: httpx.Response) -> str:
    stream = response.extensions["network_stream"]
    der = stream.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return format(x509.load_der_x509_certificate(der).serial_number, "x")


async def test_internal_ca_certificate_mtls_revocation_and_spiffe_iam(provider, alice,
                                                                      tmp_path):
    s = settings(tmp_path, mtls="required", mtls_revocation_cache_ttl=0)
    app = build_app(provider)
    serving = TlsServing(app, s, provider=lambda: provider, metrics=lambda: app.state.metrics)
    serving.prepare()
    a = await write_issued(provider, tmp_path / "clients", "a", profile="client",
                           spiffe_id=SPIFFE_A)
    b_issued = await provider.ca.issue(profile="client", spiffe_id=SPIFFE_B, requester="t")
    b = (*write(tmp_path / "clients", "b", b_issued.pem_chain(), b_issued.key_pem()),
         b_issued.serial)
    server_profile = await write_issued(provider, tmp_path / "clients", "srv",
                                        profile="server", dns_names=["svc.test"])
    await provider.iam_admin.put_inline("user", "alice", "OnlyWorkloadA", json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "orders:ListOrders",
            "Resource": f"arn:bastion:orders::{ACCT}:order/*",
            "Condition": {"StringEquals": {"bastion:MtlsSpiffeId": SPIFFE_A}}}]}))
    headers = mint(provider, alice)
    async with serve_task(serving, s) as port:
        url = f"https://localhost:{port}"
        tls_dir = tmp_path / "data" / "tls"
        assert stat.S_IMODE((tls_dir / "server.key").stat().st_mode) == 0o600
        assert stat.S_IMODE(tls_dir.stat().st_mode) == 0o700
        assert (tls_dir / "ca.pem").read_text() == await provider.ca.trust_bundle_pem()
        async with await client(provider, a) as http:
            r = await http.get(url + "/orders", headers=headers)
            assert r.status_code == 200, r.text
            served = x509.load_pem_x509_certificate((tls_dir / "server.crt").read_bytes())
            assert peer_serial(r) == format(served.serial_number, "x")
            assert await provider.ca.status(peer_serial(r)) == "good"
        async with await client(provider, b) as http:
            r = await http.get(url + "/orders", headers=headers)
            assert r.status_code == 403 and "OnlyWorkloadA" not in r.text
        # the leaf alone: the server trusts the intermediate as well as the roots
        leaf = b_issued.certificate.public_bytes(serialization.Encoding.PEM).decode()
        leaf_only = write(tmp_path / "clients", "b-leaf", leaf, b_issued.key_pem())
        async with await client(provider, (*leaf_only, b_issued.serial)) as http:
            assert (await http.get(url + "/healthz")).status_code == 200
        for files in (None, server_profile):  # no certificate; serverAuth only
            async with await client(provider, files) as http:
                with pytest.raises(httpx.TransportError):
                    await http.get(url + "/healthz")
        async with await client(provider, a) as http:
            assert (await http.get(url + "/healthz")).status_code == 200  # kept alive
            await provider.ca.revoke(a[2], "keyCompromise", requester="test")
            r = await http.get(url + "/healthz")  # the same connection: refused now
            assert r.status_code == 401
            assert r.headers["content-type"] == "application/problem+json"
            assert "revoked" in r.json()["detail"]
        metrics = app.state.metrics.registry
        expiry = metrics.get_sample_value("bastion_tls_certificate_expiry_timestamp_seconds",
                                          {"source": "internal_ca"})
        assert expiry == served.not_valid_after_utc.timestamp()
        assert metrics.get_sample_value("bastion_edge_refusals_total",
                                        {"layer": "authn", "reason": "client_cert_revoked"}) \
            == 1
    await provider.audit.flush()
    rows = await provider.fast.all("SELECT body FROM audit_events WHERE event_name = "
                                   "'Authenticate' ORDER BY seq")
    [record] = [json.loads(bytes(r[0])) for r in rows]
    assert record["errorCode"] == "certificate_revoked"
    assert record["userIdentity"]["principalId"] == a[2]
    assert record["userIdentity"]["spiffeId"] == SPIFFE_A
    assert record["sourceIPAddress"] == "127.0.0.1"


async def test_server_certificate_is_kept_reissued_and_renewed(provider, tmp_path):
    dns, ips = server_names("localhost,127.0.0.1,::1", "https://id.test:8443")
    assert dns == ("localhost", "id.test") and ips == ("127.0.0.1", "::1")
    directory = tmp_path / "tls"
    first = InternalCertificate(provider.ca, directory, dns, ips)
    await first.ensure()
    serial = x509.load_pem_x509_certificate(first.cert.read_bytes()).serial_number
    again = InternalCertificate(provider.ca, directory, dns, ips)
    await again.ensure()  # a restart keeps a certificate that is still fit
    assert x509.load_pem_x509_certificate(first.cert.read_bytes()).serial_number == serial
    other = InternalCertificate(provider.ca, directory, ("localhost",), ())
    await other.ensure()  # other names: a new one
    second = x509.load_pem_x509_certificate(first.cert.read_bytes())
    assert second.serial_number != serial
    await provider.ca.revoke(format(second.serial_number, "x"), requester="test")
    await other.ensure()  # revoked: a new one
    third = x509.load_pem_x509_certificate(first.cert.read_bytes())
    assert third.serial_number != second.serial_number

    # renewal, at the fraction of the certificate's life that is two seconds from now
    short = InternalCertificate(provider.ca, directory, ("localhost",), ())
    await short.issue()
    leaf = x509.load_pem_x509_certificate(short.cert.read_bytes())
    start = leaf.not_valid_before_utc.timestamp()
    short.renew_at = (time.time() + 2 - start) / (leaf.not_valid_after_utc.timestamp() - start)
    reloader = TlsReloader(server_context(), short.cert, short.key, source="internal_ca")
    before = reloader.load().serial
    task = asyncio.create_task(short.run(reloader))
    try:
        deadline = time.monotonic() + 20
        while reloader.reloads == 0:
            assert time.monotonic() < deadline, "not renewed"
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert reloader.current is not None and reloader.current.serial != before
    assert await provider.ca.status(reloader.current.serial) == "good"


class _CaDown:
    """A CA whose database is unreachable (the gate's fail-closed path)."""

    async def status(self, serial: int | str) -> str:
        raise PkiError("unavailable", "the CA's store cannot be read")


async def test_revocation_check_caches_and_fails_closed(provider, tmp_path):
    issued = await provider.ca.issue(profile="client", spiffe_id=SPIFFE_A, requester="test")
    check = RevocationCheck(provider.ca, ttl=30, strict=True)
    assert await check.refusal(issued.serial) is None
    await provider.ca.revoke(issued.serial, requester="test")
    assert await check.refusal(issued.serial) is None  # cached for ttl seconds
    strict = RevocationCheck(provider.ca, ttl=0, strict=True)
    assert await strict.refusal(issued.serial) == "revoked"
    assert await strict.refusal("abc123") == "unknown"
    # with a trust bundle of other CAs, the internal CA cannot know their serials
    assert await RevocationCheck(provider.ca, ttl=0, strict=False).refusal("abc123") is None
    down = RevocationCheck(_CaDown(), ttl=0, strict=True)  # type: ignore[arg-type]
    with pytest.raises(PkiError):
        await down.refusal(issued.serial)
