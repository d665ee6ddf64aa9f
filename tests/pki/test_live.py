"""The CA on a real `bastion serve`: the CLI (`bastion pki`, `bastion ca`), publication read by
curl and checked by openssl (chain, CRL, OCSP), and the IAM-protected certificate API."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from tests.live import BASTION, LiveServer, start_live_server


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from start_live_server(tmp_path_factory.mktemp("pki"))


def run(*args: str, cwd: Path | None = None, check: bool = True,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(list(args), capture_output=True, text=True, timeout=60, cwd=cwd,
                         env=env)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {out.stdout}\n{out.stderr}")
    return out


def curl(live: LiveServer, path: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run("curl", "-sS", "--fail", "--cacert", str(live.ca_file), *args, live.url + path)


def issue(live: LiveServer, tmp: Path, *args: str) -> dict:
    out = run(BASTION, "pki", "issue", *args, "--data-dir", str(live.data_dir), "--json",
              cwd=tmp, env=live.env)
    return json.loads(out.stdout)


def split_chain(path: Path) -> tuple[Path, Path]:
    certs = x509.load_pem_x509_certificates(path.read_bytes())
    leaf, inter = path.with_suffix(".leaf.pem"), path.with_suffix(".inter.pem")
    leaf.write_bytes(certs[0].public_bytes(serialization.Encoding.PEM))
    inter.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs[1:]))
    return leaf, inter


def test_cli_issue_files_and_openssl_verify(live: LiveServer, tmp_path: Path):
    data = issue(live, tmp_path, "svc.test", "--ip", "127.0.0.1", "--out", "svc")
    crt, key = tmp_path / "svc.crt", tmp_path / "svc.key"
    assert data["certificate"] == "svc.crt" and data["key"] == "svc.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert "PRIVATE KEY" not in json.dumps(data)
    root = tmp_path / "root.pem"
    curl(live, "/pki/ca.crt", "-o", str(root))
    exported = run(BASTION, "ca", "export", "--data-dir", str(live.data_dir), env=live.env)
    assert exported.stdout == root.read_text()
    leaf, inter = split_chain(crt)
    run("openssl", "verify", "-CAfile", str(root), "-untrusted", str(inter), "-purpose",
        "sslserver", str(leaf))
    # the key in the file is the certificate's
    cert = x509.load_pem_x509_certificate(leaf.read_bytes())
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    assert private.public_key().public_numbers() == cert.public_key().public_numbers()
    # renew: same names, new key and serial, files replaced
    out = run(BASTION, "pki", "renew", str(crt), "--revoke-old", "--data-dir",
              str(live.data_dir), "--json", env=live.env)
    renewed = json.loads(out.stdout)
    assert renewed["serial"] != data["serial"]
    new = x509.load_pem_x509_certificates(crt.read_bytes())[0]
    assert new.extensions.get_extension_for_class(x509.SubjectAlternativeName) == \
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    listed = json.loads(run(BASTION, "pki", "list", "--all", "--json", "--data-dir",
                            str(live.data_dir), env=live.env).stdout)
    status = {c["serial"]: c["status"] for c in listed}
    assert status[data["serial"]] == "revoked" and status[renewed["serial"]] == "valid"


def test_cli_refusals_are_clear(live: LiveServer, tmp_path: Path):
    for args, needle in ((["evil.example.com"], "rejectedIdentifier"),
                         (["a.test", "--ttl", "soon"], "--ttl"),
                         (["a.test", "--profile", "root"], "invalidRequest"),
                         ([], "name at least one")):
        out = run(BASTION, "pki", "issue", *args, "--data-dir", str(live.data_dir), cwd=tmp_path,
                  env=live.env, check=False)
        assert out.returncode != 0
        assert needle in out.stderr and "Traceback" not in out.stderr
    out = run(BASTION, "pki", "revoke", "abc123", "--data-dir", str(live.data_dir),
              env=live.env, check=False)
    assert out.returncode == 1 and "notFound" in out.stderr
    assert not list(tmp_path.iterdir())  # nothing written on a refusal


def test_revocation_seen_by_openssl_through_crl_and_ocsp(live: LiveServer, tmp_path: Path):
    issue(live, tmp_path, "revoked.test", "--out", "r")
    leaf, inter = split_chain(tmp_path / "r.crt")
    root = tmp_path / "root.pem"
    curl(live, "/pki/ca.crt", "-o", str(root))
    serial = format(x509.load_pem_x509_certificate(leaf.read_bytes()).serial_number, "x")

    def ocsp_status() -> str:
        req, resp = tmp_path / "req.der", tmp_path / "resp.der"
        run("openssl", "ocsp", "-issuer", str(inter), "-cert", str(leaf), "-reqout", str(req))
        curl(live, "/pki/ocsp", "-H", "Content-Type: application/ocsp-request",
             "--data-binary", f"@{req}", "-o", str(resp))
        out = run("openssl", "ocsp", "-respin", str(resp), "-reqin", str(req), "-issuer",
                  str(inter), "-cert", str(leaf), "-CAfile", str(root), "-verify_other",
                  str(inter), "-no_nonce")  # -no_nonce: check the request's, add none
        assert "Response verify OK" in out.stderr + out.stdout
        return out.stdout

    assert f"{leaf}: good" in ocsp_status()
    run(BASTION, "pki", "revoke", serial, "--reason", "keyCompromise", "--data-dir",
        str(live.data_dir), env=live.env)
    assert f"{leaf}: revoked" in ocsp_status()
    crl = tmp_path / "crl.der"
    # the CRL distribution point in the certificate is where curl finds it
    dp = x509.load_pem_x509_certificate(leaf.read_bytes()).extensions.get_extension_for_class(
        x509.CRLDistributionPoints).value[0].full_name[0].value
    assert dp.startswith(live.url + "/pki/crl/")
    curl(live, dp[len(live.url):], "-o", str(crl))
    crl_pem = tmp_path / "crl.pem"
    run("openssl", "crl", "-inform", "DER", "-in", str(crl), "-out", str(crl_pem))
    out = run("openssl", "verify", "-crl_check", "-CRLfile", str(crl_pem), "-CAfile", str(root),
              "-untrusted", str(inter), str(leaf), check=False)
    assert out.returncode != 0 and "revoked" in out.stdout + out.stderr
    # OCSP by GET (RFC 6960 Appendix A.1), base64 of the DER request, URL-encoded
    import base64
    from urllib.parse import quote

    der = ocsp.OCSPRequestBuilder().add_certificate(
        x509.load_pem_x509_certificate(leaf.read_bytes()),
        x509.load_pem_x509_certificate(inter.read_bytes()), hashes.SHA1()).build() \
        .public_bytes(serialization.Encoding.DER)
    with live.http() as http:
        r = http.get("/pki/ocsp/" + quote(base64.b64encode(der).decode(), safe=""))
    assert r.headers["content-type"] == "application/ocsp-response"
    assert ocsp.load_der_ocsp_response(r.content).certificate_status == \
        ocsp.OCSPCertStatus.REVOKED


def test_publication_bad_inputs(live: LiveServer):
    with live.http() as http:
        assert http.get("/pki/ca/deadbeef.crt").status_code == 404
        assert http.get("/pki/crl/deadbeef").status_code == 404
        wrong_type = http.post("/pki/ocsp", content=b"\x30\x00",
                               headers={"Content-Type": "text/plain"})
        assert wrong_type.status_code == 415
        for body in (b"", b"\x30\x03\x02\x01\x01", b"A" * 5000):
            r = http.post("/pki/ocsp", content=body,
                          headers={"Content-Type": "application/ocsp-request"})
            assert r.status_code == 200
            assert ocsp.load_der_ocsp_response(r.content).response_status == \
                ocsp.OCSPResponseStatus.MALFORMED_REQUEST
        big = http.post("/pki/ocsp", content=b"\x30" * 20000,
                        headers={"Content-Type": "application/ocsp-request"})
        assert big.status_code == 413
        r = http.get("/pki/ocsp/%%%not-base64")
        assert r.status_code in (200, 400, 403)  # malformed (or the WAF's), never a 500
        chain = http.get("/pki/chain")
        assert chain.status_code == 200 and "BEGIN CERTIFICATE" in chain.text


def _token(live: LiveServer, name: str, policy: dict | None, tmp: Path) -> str:
    client = live.add_client(name, [], "--grant-type", "client_credentials", "--scope",
                             "order:view")
    if policy is not None:
        doc = tmp / f"{name}.json"
        doc.write_text(json.dumps(policy))
        live.cli("iam", "policies", "create", f"{name}-pki", str(doc))
        live.cli("iam", "attach", "client", client["client_id"], f"{name}-pki")
    with live.http() as http:
        r = http.post("/token", data={"grant_type": "client_credentials",
                                      "scope": "order:view"},
                      auth=(client["client_id"], client["client_secret"]))
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def _csr(*names: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).add_extension(
        x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
    ).sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def test_certificate_api_is_guarded_by_iam(live: LiveServer, tmp_path: Path):
    issuer = _token(live, "pki-issuer", {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": ["bastion:IssueCertificate", "bastion:GetCertificate",
                                      "bastion:RevokeCertificate"],
        "Resource": ["arn:bastion:pki::*:certificate/*", "arn:bastion:pki::*:name/*"]}]},
        tmp_path)
    nobody = _token(live, "pki-nobody", None, tmp_path)
    body = {"csr": _csr("api-issued.test")}
    with live.http() as http:
        anonymous = http.post("/pki/certificates", json=body)
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        denied = http.post("/pki/certificates", json=body,
                           headers={"Authorization": f"Bearer {nobody}"})
        assert denied.status_code == 403
        auth = {"Authorization": f"Bearer {issuer}"}
        r = http.post("/pki/certificates", json=body, headers=auth)
        assert r.status_code == 201, r.text
        made = r.json()
        cert = x509.load_pem_x509_certificate(made["certificate"].encode())
        assert format(cert.serial_number, "x") == made["serial"]
        assert "key" not in json.dumps(made).lower().replace("public", "")
        got = http.get(f"/pki/certificates/{made['serial']}", headers=auth)
        assert got.status_code == 200 and got.json()["status"] == "valid"
        for bad, code in (({"csr": "not a csr"}, "badCSR"), ({}, "invalidRequest"),
                          ({"csr": _csr("evil.example.com")}, "rejectedIdentifier"),
                          ({"csr": _csr("a.test"), "ttl": "long"}, "invalidRequest"),
                          ({"csr": _csr("a.test"), "profile": "ca"}, "invalidRequest")):
            r = http.post("/pki/certificates", json=bad, headers=auth)
            assert r.status_code in (400, 403) and r.json()["error"] == code, r.text
        r = http.post("/pki/certificates", content=b"{not json", headers={
            **auth, "Content-Type": "application/json"})
        assert r.status_code == 400
        denied = http.post(f"/pki/certificates/{made['serial']}/revoke", json={},
                           headers={"Authorization": f"Bearer {nobody}"})
        assert denied.status_code == 403
        r = http.post(f"/pki/certificates/{made['serial']}/revoke",
                      json={"reason": "superseded"}, headers=auth)
        assert r.status_code == 204
        again = http.post(f"/pki/certificates/{made['serial']}/revoke", json={}, headers=auth)
        assert again.status_code == 409 and again.json()["error"] == "alreadyRevoked"
        missing = http.get("/pki/certificates/abcdef", headers=auth)
        assert missing.status_code == 404
        assert http.get("/pki/certificates/zz", headers=auth).status_code == 400
