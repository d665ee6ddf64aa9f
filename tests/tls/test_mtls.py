"""Mutual TLS with a test CA (a root and a name-constrained intermediate): with
``mtls = required`` every certificate OpenSSL must refuse is refused at the handshake and
never reaches the application (each bad certificate differs from the good one in one
property); ``optional`` serves clients without one; ``off`` does not ask. The verified
certificate reaches the application as the ASGI TLS extension. Python, ``openssl s_client``
and ``curl`` clients."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from bastion.edge.tls import client_certificate
from tests.tls import certs
from tests.tls.harness import Echo, client_context, request, serve_thread, settings

SPIFFE = "spiffe://bastion.internal/ns/orders/sa/api"


class Pki:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.root = certs.authority("Test root")
        self.intermediate = certs.authority("Test intermediate", self.root,
                                            permitted_dns=(".test", "localhost"),
                                            permitted_uri=("bastion.internal",))
        self.bundle = directory / "bundle.pem"
        self.bundle.write_bytes(self.root.cert_pem())
        self.server = certs.server(self.root).write(directory, "server")

    def client(self, name: str, pair: certs.Pair) -> tuple[Path, Path]:
        return pair.write(self.dir / "clients", name)

    def good(self) -> certs.Pair:
        return certs.leaf(self.intermediate, dns=("api.test",), uris=(SPIFFE,), cn="api")


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path)


def serve(pki: Pki, mode: str, app: Echo):
    cert, key = pki.server
    return serve_thread(settings(pki.dir, tls_cert=cert, tls_key=key, mtls=mode,
                                 mtls_trust_bundle=pki.bundle), app)


def ctx_for(pki: Pki, files: tuple[Path, Path] | None) -> ssl.SSLContext:
    if files is None:
        return client_context(pki.bundle)
    return client_context(pki.bundle, cert=files[0], key=files[1])


def bad_certificates(pki: Pki) -> dict[str, certs.Pair]:
    other_root = certs.authority("Another root")
    return {
        "expired": certs.leaf(pki.intermediate, dns=("api.test",), uris=(SPIFFE,),
                              expired=True),
        "wrong-ca": certs.leaf(certs.authority("Another intermediate", other_root),
                               dns=("api.test",), uris=(SPIFFE,)),
        "self-signed": certs.self_signed("api"),
        "server-eku-only": certs.leaf(pki.intermediate, dns=("api.test",), uris=(SPIFFE,),
                                      eku=(certs.SERVER_AUTH,)),
        "outside-dns-constraint": certs.leaf(pki.intermediate, dns=("api.example.com",),
                                             uris=(SPIFFE,)),
        "outside-uri-constraint": certs.leaf(pki.intermediate, dns=("api.test",),
                                             uris=("spiffe://evil.example/api",)),
        "not-yet-valid": certs.leaf(pki.intermediate, dns=("api.test",), uris=(SPIFFE,),
                                    future=True),
        "no-aki-x509-strict": certs.leaf(pki.intermediate, dns=("api.test",), uris=(SPIFFE,),
                                         aki=False),
        "intermediate-not-sent": certs.Pair(pki.good().cert, pki.good().key),
    }


BAD = ["expired", "not-yet-valid", "wrong-ca", "self-signed", "server-eku-only",
       "outside-dns-constraint", "outside-uri-constraint", "no-aki-x509-strict"]


def test_required_serves_a_valid_client_certificate_and_exposes_it(pki):
    app = Echo()
    good = pki.good()
    with serve(pki, "required", app) as (port, _):
        answer = request(port, ctx_for(pki, pki.client("good", good)))
    assert answer.status == 200
    tls = answer.body["tls"]
    assert tls["client_cert_chain"] == [good.cert_pem(chain=False).decode()]
    assert tls["client_cert_name"] == "CN=api" and tls["client_cert_error"] is None
    assert client_certificate(tls["client_cert_chain"][0]).spiffe_id == SPIFFE
    assert client_certificate(tls["client_cert_chain"][0]).serial == good.serial


@pytest.mark.parametrize("name", [*BAD, "none"])
def test_required_refuses_at_the_handshake(pki, name):
    app = Echo()
    files = None if name == "none" else pki.client(name, bad_certificates(pki)[name])
    with serve(pki, "required", app) as (port, _):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            request(port, ctx_for(pki, files))
        # the same server serves the good certificate: the one property made the difference
        assert request(port, ctx_for(pki, pki.client("good", pki.good()))).status == 200
    assert app.requests == 1


def test_a_client_sending_only_its_leaf_is_refused_without_the_intermediate(pki):
    """The trust bundle holds the root only: the client must send its chain."""
    app = Echo()
    files = pki.client("leaf-only", bad_certificates(pki)["intermediate-not-sent"])
    with serve(pki, "required", app) as (port, _):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            request(port, ctx_for(pki, files))
    assert app.requests == 0


@pytest.mark.parametrize("name", BAD)
def test_optional_still_refuses_a_bad_certificate(pki, name):
    app = Echo()
    with serve(pki, "optional", app) as (port, _):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            request(port, ctx_for(pki, pki.client(name, bad_certificates(pki)[name])))
    assert app.requests == 0


def test_optional_serves_clients_without_a_certificate(pki):
    app = Echo()
    good = pki.good()
    with serve(pki, "optional", app) as (port, _):
        anonymous = request(port, ctx_for(pki, None))
        verified = request(port, ctx_for(pki, pki.client("good", good)))
    assert anonymous.status == 200 and anonymous.body["tls"]["client_cert_chain"] == []
    assert anonymous.body["tls"]["client_cert_name"] is None
    assert verified.body["tls"]["client_cert_chain"] == [good.cert_pem(chain=False).decode()]


def test_off_does_not_ask_for_a_certificate(pki):
    app = Echo()
    with serve(pki, "off", app) as (port, _):
        answer = request(port, ctx_for(pki, pki.client("good", pki.good())))
    assert answer.status == 200 and answer.body["tls"]["client_cert_chain"] == []


# --- other clients -----------------------------------------------------------------------------

def s_client(port: int, pki: Pki, files: tuple[Path, Path] | None,
             *extra: str) -> subprocess.CompletedProcess[str]:
    args = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
            "localhost", "-CAfile", str(pki.bundle), "-ign_eof", *extra]
    if files is not None:
        # -cert takes the first certificate of the file; the chain is sent from -cert_chain
        args += ["-cert", str(files[0]), "-key", str(files[1]), "-cert_chain", str(files[0])]
    return subprocess.run(args, input="GET / HTTP/1.1\r\nHost: localhost\r\nConnection: "
                          "close\r\n\r\n", capture_output=True, text=True, timeout=30,
                          check=False)


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_openssl_s_client(pki, version):
    app = Echo()
    with serve(pki, "required", app) as (port, _):
        good = s_client(port, pki, pki.client("good", pki.good()), version)
        assert "HTTP/1.1 200" in good.stdout and "CN=api" in good.stdout, good.stdout
        for name in ("expired", "server-eku-only", "outside-dns-constraint"):
            bad = s_client(port, pki, pki.client(name, bad_certificates(pki)[name]), version)
            assert "HTTP/1.1 200" not in bad.stdout, name
        none = s_client(port, pki, None, version)
        assert "HTTP/1.1 200" not in none.stdout
    assert app.requests == 1


def test_curl_with_and_without_a_client_certificate(pki):
    app = Echo()
    with serve(pki, "required", app) as (port, _):
        url = f"https://localhost:{port}/"
        cert, key = pki.client("good", pki.good())
        ok = subprocess.run(["curl", "-sS", "--cacert", str(pki.bundle), "--cert", str(cert),
                             "--key", str(key), url], capture_output=True, text=True,
                            timeout=30, check=False)
        assert ok.returncode == 0 and '"client_cert_name": "CN=api"' in ok.stdout, ok.stderr
        bad_cert, bad_key = pki.client("wrong-ca", bad_certificates(pki)["wrong-ca"])
        for args in ([], ["--cert", str(bad_cert), "--key", str(bad_key)]):
            r = subprocess.run(["curl", "-sS", "--cacert", str(pki.bundle), *args, url],
                               capture_output=True, text=True, timeout=30, check=False)
            assert r.returncode != 0 and "client_cert" not in r.stdout
    assert app.requests == 1
