"""The server's SSLContext over real sockets: TLS 1.3 preferred, 1.2 the minimum, only
ECDHE with AEAD on 1.2, ALPN http/1.1; the ASGI TLS extension's values; file certificates
that cannot serve are refused at start."""

from __future__ import annotations

import ssl
import subprocess

import pytest

from bastion.edge.tls import TlsError, TlsServing, parse_cert_key
from tests.tls import certs
from tests.tls.harness import Echo, client_context, request, serve_thread, settings


@pytest.fixture
def pki(tmp_path):
    root = certs.authority("Test root")
    ca = root.cert_pem()
    (tmp_path / "ca.pem").write_bytes(ca)
    cert, key = certs.server(root).write(tmp_path, "server")
    return tmp_path / "ca.pem", cert, key


@pytest.fixture
def port(tmp_path, pki):
    _, cert, key = pki
    with serve_thread(settings(tmp_path, tls_cert=cert, tls_key=key)) as (port, _):
        yield port


def test_tls13_is_preferred_and_alpn_is_http11(port, pki):
    ctx = client_context(pki[0])
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    answer = request(port, ctx)
    assert answer.status == 200 and answer.version == "TLSv1.3"
    assert answer.alpn == "http/1.1"
    tls = answer.body["tls"]
    assert tls["tls_version"] == 0x0304
    assert tls["cipher_suite"] == {"TLS_AES_256_GCM_SHA384": 0x1302,
                                   "TLS_AES_128_GCM_SHA256": 0x1301,
                                   "TLS_CHACHA20_POLY1305_SHA256": 0x1303}[answer.cipher]
    assert tls["client_cert_chain"] == [] and tls["client_cert_name"] is None
    assert tls["client_cert_error"] is None and tls["server_cert"] is None


@pytest.mark.parametrize("cipher, iana", [
    ("ECDHE-ECDSA-AES128-GCM-SHA256", 0xC02B),
    ("ECDHE-ECDSA-AES256-GCM-SHA384", 0xC02C),
    ("ECDHE-ECDSA-CHACHA20-POLY1305", 0xCCA9),
], ids=["aes128-gcm", "aes256-gcm", "chacha20"])
def test_tls12_with_ecdhe_aead(port, pki, cipher, iana):
    ctx = client_context(pki[0])
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(cipher)
    answer = request(port, ctx)
    assert answer.status == 200 and answer.version == "TLSv1.2" and answer.cipher == cipher
    assert answer.body["tls"]["tls_version"] == 0x0303
    assert answer.body["tls"]["cipher_suite"] == iana


@pytest.mark.parametrize("cipher", [
    "ECDHE-ECDSA-AES128-SHA",  # CBC, SHA-1 MAC
    "ECDHE-ECDSA-AES128-SHA256",  # CBC
    "AES128-GCM-SHA256",  # RSA key exchange: no forward secrecy
    "DHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-NULL-SHA",  # no encryption
], ids=["cbc-sha1", "cbc-sha256", "static-rsa", "dhe", "null"])
def test_weak_tls12_ciphers_are_refused(port, pki, cipher):
    ctx = client_context(pki[0])
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(cipher + ":@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, ConnectionError)):  # asyncio closes without an alert
        request(port, ctx)


@pytest.mark.parametrize("flag", ["-tls1", "-tls1_1"])
def test_tls_before_12_is_refused(port, flag):
    """OpenSSL's own client, at security level 0 so that it offers the old versions."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", flag,
                        "-cipher", "ALL:@SECLEVEL=0"], input="", capture_output=True,
                       text=True, timeout=30, check=False)
    assert r.returncode != 0
    assert "no peer certificate available" in r.stdout, r.stdout + r.stderr


def test_curl_sees_tls13_and_http11(port, pki):
    r = subprocess.run(["curl", "-sS", "--cacert", str(pki[0]), "-w", "%{http_version}",
                        "-o", "/dev/null", f"https://localhost:{port}/"], capture_output=True,
                       text=True, timeout=30, check=False)
    assert r.returncode == 0 and r.stdout == "1.1", r.stderr


def test_plain_http_on_the_tls_port_gets_no_answer(port):
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        data = b""
        try:
            while chunk := sock.recv(4096):
                data += chunk
        except ConnectionResetError:
            pass
    assert b"HTTP/1.1 200" not in data


# --- certificates that cannot serve ------------------------------------------------------------

def _files(name: str) -> tuple[bytes | None, bytes | None]:
    root = certs.authority("Test root")
    good, other = certs.server(root), certs.server(root)
    expired = certs.leaf(root, dns=("localhost",), eku=(certs.SERVER_AUTH,), expired=True)
    return {
        "missing": (None, None),
        "garbage-cert": (b"not a certificate\n", good.key_pem()),
        "garbage-key": (good.cert_pem(), b"-----BEGIN PRIVATE KEY-----\nAAAA\n"
                                        b"-----END PRIVATE KEY-----\n"),
        "key-mismatch": (good.cert_pem(), other.key_pem()),
        "expired": (expired.cert_pem(), expired.key_pem()),
    }[name]


@pytest.mark.parametrize("name, message", [
    ("missing", "cannot read"), ("garbage-cert", "no PEM certificate"),
    ("garbage-key", "no unencrypted PEM private key"), ("key-mismatch", "does not match"),
    ("expired", "expired on"),
])
def test_unusable_files_are_refused_at_start(tmp_path, name, message):
    cert_pem, key_pem = _files(name)
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    if cert_pem is not None and key_pem is not None:
        cert.write_bytes(cert_pem)
        key.write_bytes(key_pem)
    serving = TlsServing(Echo(), settings(tmp_path, tls_cert=cert, tls_key=key))
    with pytest.raises(TlsError, match=message):
        serving.prepare()


def test_encrypted_keys_and_small_rsa_keys_are_refused():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    root = certs.authority("Test root")
    good = certs.server(root)
    encrypted = good.key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"pw"))
    with pytest.raises(TlsError, match="unencrypted"):
        parse_cert_key(good.cert_pem(), encrypted)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    small_pem = small.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    with pytest.raises(TlsError, match="1024 bits"):
        parse_cert_key(good.cert_pem(), small_pem)


def test_mtls_trust_bundle_that_cannot_load_is_refused(tmp_path, pki):
    _, cert, key = pki
    bad = tmp_path / "bundle.pem"
    bad.write_text("nothing here\n")
    for bundle in (bad, tmp_path / "absent.pem"):
        serving = TlsServing(Echo(), settings(tmp_path, tls_cert=cert, tls_key=key,
                                              mtls="required", mtls_trust_bundle=bundle))
        with pytest.raises(TlsError, match="mtls_trust_bundle"):
            serving.prepare()
