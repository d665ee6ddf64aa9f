"""The internal CA in-process, on SQLite and PostgreSQL: what it issues (checked with
cryptography's own path verifier and with `openssl verify`), what it refuses, revocation
through CRL and OCSP, rotation, and that its keys are out of reach of the KMS API."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from bastion.kms.errors import KMSError
from bastion.oauth.provider import Provider
from bastion.pki import PkiError
from bastion.pki.ca import CertificateAuthority
from tests.flows import add_user
from tests.kms.conftest import user_caller

pytestmark = pytest.mark.anyio
NOW = dt.datetime.now(dt.UTC)


async def roots(p: Provider) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates((await p.ca.trust_bundle_pem()).encode())


async def verify_server(p: Provider, issued, name: str) -> None:
    store = Store(await roots(p))
    verifier = PolicyBuilder().store(store).build_server_verifier(x509.DNSName(name))
    verifier.verify(issued.certificate, list(issued.chain))


def openssl_verify(tmp: Path, root_pem: str, chain: list[x509.Certificate],
                   leaf: x509.Certificate, *extra: str) -> subprocess.CompletedProcess[str]:
    (tmp / "root.pem").write_text(root_pem)
    (tmp / "inter.pem").write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM)
                                             for c in chain))
    (tmp / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    return subprocess.run(["openssl", "verify", "-CAfile", str(tmp / "root.pem"),
                           "-untrusted", str(tmp / "inter.pem"), *extra, str(tmp / "leaf.pem")],
                          capture_output=True, text=True, timeout=30)


def csr_for(names: list[str], key=None, *, cn: str | None = None):
    key = key or ec.generate_private_key(ec.SECP256R1())
    b = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else []))
    if names:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                            critical=False)
    return b.sign(key, hashes.SHA256()), key


# --- issuance ------------------------------------------------------------------------------------

async def test_server_certificate_has_the_profile_and_verifies(provider: Provider, tmp_path):
    issued = await provider.ca.issue(dns_names=["App.Test", "app.test"],
                                     ip_addresses=["127.0.0.1", "::1"], requester="test")
    cert = issued.certificate
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["app.test"]  # lower-cased, deduplicated
    assert {str(i) for i in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    issuer_ski = issued.chain[0].extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == issuer_ski.digest and ski.digest
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert any(d.access_location.value.endswith("/pki/ocsp") for d in aia)
    dp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert "/pki/crl/" in dp[0].full_name[0].value
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=29) < life <= dt.timedelta(days=30, minutes=2)
    assert issued.private_key is not None and "PRIVATE KEY" in issued.key_pem()
    await verify_server(provider, issued, "app.test")
    result = openssl_verify(tmp_path, await provider.ca.trust_bundle_pem(),
                            list(issued.chain), cert, "-purpose", "sslserver")
    assert result.returncode == 0, result.stderr
    # a server certificate is not a client certificate
    result = openssl_verify(tmp_path, await provider.ca.trust_bundle_pem(),
                            list(issued.chain), cert, "-purpose", "sslclient")
    assert result.returncode != 0


async def test_workload_certificate_is_an_x509_svid(provider: Provider, tmp_path):
    sid = f"spiffe://{provider.ca.trust_domain}/ns/prod/sa/orders"
    issued = await provider.ca.issue(profile="workload", spiffe_id=sid, requester="test")
    cert = issued.certificate
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [sid]
    assert san.critical  # no subject: the SAN is critical
    assert list(cert.subject) == []
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_encipherment and not ku.key_cert_sign
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert life <= dt.timedelta(hours=24, minutes=2)  # short-lived by default
    result = openssl_verify(tmp_path, await provider.ca.trust_bundle_pem(),
                            list(issued.chain), cert, "-purpose", "sslclient")
    assert result.returncode == 0, result.stderr


async def test_client_profile_and_given_public_key(provider: Provider):
    key = rsa.generate_private_key(65537, 2048)
    issued = await provider.ca.issue(profile="client", dns_names=["svc.internal"],
                                     public_key=key.public_key(), ttl=600, requester="t")
    assert issued.private_key is None
    with pytest.raises(ValueError):
        issued.key_pem()
    assert issued.certificate.public_key().public_numbers() == key.public_key().public_numbers()
    eku = issued.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


@pytest.mark.parametrize(("kwargs", "code"), [
    ({}, "invalidRequest"),  # no name at all
    ({"dns_names": ["evil.example.com"]}, "rejectedIdentifier"),  # outside name constraints
    ({"ip_addresses": ["8.8.8.8"]}, "rejectedIdentifier"),
    ({"dns_names": ["a..test"]}, "invalidRequest"),
    ({"dns_names": ["-a.test"]}, "invalidRequest"),
    ({"dns_names": ["a_b.test"]}, "invalidRequest"),
    ({"dns_names": ["a.test\x00.evil.com"]}, "invalidRequest"),
    ({"dns_names": ["x" * 64 + ".test"]}, "invalidRequest"),
    ({"dns_names": ["*.test"]}, "invalidRequest"),  # a wildcard over a whole TLD
    ({"dns_names": ["*.app.test"], "profile": "client"}, "invalidRequest"),
    ({"dns_names": ["1.2.3.4"]}, "invalidRequest"),  # an IP address is not a DNS name
    ({"ip_addresses": ["not-an-ip"]}, "invalidRequest"),
    ({"spiffe_id": "spiffe://other.domain/x", "profile": "workload"}, "invalidRequest"),
    ({"spiffe_id": "spiffe://bastion.internal/../x", "profile": "workload"},
     "invalidRequest"),
    ({"spiffe_id": "spiffe://bastion.internal/a?b", "profile": "workload"}, "invalidRequest"),
    ({"spiffe_id": "spiffe://bastion.internal/", "profile": "workload"}, "invalidRequest"),
    ({"dns_names": ["w.test"], "profile": "workload"}, "invalidRequest"),  # no SPIFFE ID
    ({"dns_names": ["a.test"], "profile": "root"}, "invalidRequest"),
    ({"dns_names": ["a.test"], "ttl": 10}, "invalidRequest"),
    ({"dns_names": ["a.test"], "ttl": 400 * 86400}, "invalidRequest"),
    ({"dns_names": ["a.test"], "profile": "client", "ttl": 31 * 86400}, "invalidRequest"),
    ({"dns_names": ["a.test"], "common_name": "x" * 65}, "invalidRequest"),
    ({"dns_names": ["a.test"], "common_name": "a\nb"}, "invalidRequest"),
    ({"dns_names": [f"n{i}.test" for i in range(101)]}, "invalidRequest"),
])
async def test_bad_requests_are_refused(provider: Provider, kwargs, code):
    with pytest.raises(PkiError) as caught:
        await provider.ca.issue(requester="t", **kwargs)
    assert caught.value.code == code
    assert await provider.ca.list(include_expired=True) == []


async def test_idn_names_are_issued_as_a_labels(provider: Provider):
    issued = await provider.ca.issue(dns_names=["bücher.test"], requester="t")
    san = issued.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == ["xn--bcher-kva.test"]


async def test_name_constraints_bind_even_a_certificate_forged_with_the_intermediate_key(
        provider: Provider, tmp_path):
    """The intermediate's name constraints are in its certificate: a certificate for a name
    outside them, signed with the intermediate's own key (what an attacker holding it would
    make), fails path validation in OpenSSL and in cryptography."""
    good = await provider.ca.issue(dns_names=["ok.test"], requester="t")
    inter = good.chain[0]
    nc = inter.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical
    ca = provider.ca._intermediates[0]
    key = ec.generate_private_key(ec.SECP256R1())
    forged = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bank.com")]))
              .issuer_name(inter.subject).public_key(key.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(NOW - dt.timedelta(minutes=1))
              .not_valid_after(NOW + dt.timedelta(hours=1))
              .add_extension(x509.SubjectAlternativeName([x509.DNSName("bank.com")]), False)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
              .sign(ca.key, hashes.SHA256()))
    result = openssl_verify(tmp_path, await provider.ca.trust_bundle_pem(), [inter], forged)
    assert result.returncode != 0
    assert "subtree violation" in (result.stdout + result.stderr).lower()
    store = Store(await roots(provider))
    with pytest.raises(VerificationError):
        PolicyBuilder().store(store).build_server_verifier(
            x509.DNSName("bank.com")).verify(forged, [inter])


# --- CSRs ----------------------------------------------------------------------------------------

async def test_csr_issuance_and_allowed_names(provider: Provider):
    csr, key = csr_for(["api.test", "www.api.test"])
    issued = await provider.ca.issue_for_csr(csr, requester="t",
                                             allowed=["api.test", "www.api.test"])
    assert issued.certificate.public_key().public_numbers() == key.public_key().public_numbers()
    await verify_server(provider, issued, "www.api.test")
    # the CN is used when there is no SAN
    csr, _ = csr_for([], cn="cn-only.test")
    issued = await provider.ca.issue_for_csr(csr, requester="t")
    san = issued.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == ["cn-only.test"]


async def test_bad_csrs_are_refused(provider: Provider):
    csr, _ = csr_for(["api.test", "other.test"])
    with pytest.raises(PkiError) as caught:
        await provider.ca.issue_for_csr(csr, requester="t", allowed=["api.test"])
    assert caught.value.code == "rejectedIdentifier"
    # a weak key
    weak = rsa.generate_private_key(65537, 1024)
    csr, _ = csr_for(["api.test"], weak)
    with pytest.raises(PkiError) as caught:
        await provider.ca.issue_for_csr(csr, requester="t")
    assert caught.value.code == "badCSR"
    # a signature that does not verify: another key's signature over the same request
    csr, _ = csr_for(["api.test"])
    other, _ = csr_for(["api.test"])
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    sig = csr.signature
    der[der.rindex(sig):der.rindex(sig) + len(sig)] = other.signature[:len(sig)].ljust(
        len(sig), b"\x00")
    try:
        broken = x509.load_der_x509_csr(bytes(der))
    except ValueError:
        broken = None
    if broken is not None:
        with pytest.raises(PkiError) as caught:
            await provider.ca.issue_for_csr(broken, requester="t")
        assert caught.value.code == "badCSR"
    # SAN types the CA does not issue
    k = ec.generate_private_key(ec.SECP256R1())
    email = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
             .add_extension(x509.SubjectAlternativeName([x509.RFC822Name("a@b.test")]), False)
             .sign(k, hashes.SHA256()))
    with pytest.raises(PkiError) as caught:
        await provider.ca.issue_for_csr(email, requester="t")
    assert caught.value.code == "badCSR"
    assert await provider.ca.list(include_expired=True) == []


# --- revocation, CRL, OCSP -----------------------------------------------------------------------

def ocsp_request(cert: x509.Certificate, issuer: x509.Certificate, *, nonce: bytes | None = None,
                 algorithm: hashes.HashAlgorithm | None = None) -> bytes:
    b = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm or hashes.SHA1())
    if nonce:
        b = b.add_extension(x509.OCSPNonce(nonce), critical=False)
    return b.build().public_bytes(serialization.Encoding.DER)


async def test_revocation_reaches_status_crl_and_ocsp(provider: Provider):
    ca = provider.ca
    issued = await ca.issue(dns_names=["gone.test"], requester="t")
    keep = await ca.issue(dns_names=["kept.test"], requester="t")
    inter = issued.chain[0]
    assert await ca.status(issued.serial) == "good"
    answer = ocsp.load_der_ocsp_response(
        await ca.ocsp_response(ocsp_request(issued.certificate, inter, nonce=b"n" * 16)))
    assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert answer.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"n" * 16
    inter.public_key().verify(answer.signature, answer.tbs_response_bytes,
                              ec.ECDSA(answer.signature_hash_algorithm))
    crl_before = x509.load_der_x509_crl(await ca.crl_der())

    await ca.revoke(issued.certificate.serial_number, "keyCompromise", "t")
    assert await ca.status(issued.serial) == "revoked"
    assert await ca.status(keep.serial) == "good"
    crl = x509.load_der_x509_crl(await ca.crl_der())
    assert crl.is_signature_valid(inter.public_key())
    entry = crl.get_revoked_certificate_by_serial_number(issued.certificate.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == \
        x509.ReasonFlags.key_compromise
    assert crl.get_revoked_certificate_by_serial_number(keep.certificate.serial_number) is None
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number > crl_before.extensions.get_extension_for_class(
        x509.CRLNumber).value.crl_number
    for algorithm in (hashes.SHA1(), hashes.SHA256()):
        answer = ocsp.load_der_ocsp_response(await ca.ocsp_response(
            ocsp_request(issued.certificate, inter, algorithm=algorithm)))
        assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
        assert answer.revocation_reason == x509.ReasonFlags.key_compromise
    with pytest.raises(PkiError) as caught:
        await ca.revoke(issued.serial, "keyCompromise", "t")
    assert caught.value.code == "alreadyRevoked"
    for bad, code in (("ffff", "notFound"), ("xyz", "invalidRequest"), ("0", "invalidRequest"),
                      (-5, "invalidRequest")):
        with pytest.raises(PkiError) as caught:
            await ca.revoke(bad, "unspecified", "t")
        assert caught.value.code == code
    with pytest.raises(PkiError):
        await ca.revoke(keep.serial, "because", "t")


async def test_ocsp_answers_unknown_unauthorized_and_malformed(provider: Provider):
    ca = provider.ca
    issued = await ca.issue(dns_names=["x.test"], requester="t")
    inter = issued.chain[0]
    # a serial this CA never issued, under its own issuer hashes: unknown
    other_key = ec.generate_private_key(ec.SECP256R1())
    stranger = (x509.CertificateBuilder().subject_name(x509.Name([]))
                .issuer_name(inter.subject).public_key(other_key.public_key())
                .serial_number(12345).not_valid_before(NOW)
                .not_valid_after(NOW + dt.timedelta(hours=1))
                .sign(other_key, hashes.SHA256()))
    answer = ocsp.load_der_ocsp_response(await ca.ocsp_response(ocsp_request(stranger, inter)))
    assert answer.certificate_status == ocsp.OCSPCertStatus.UNKNOWN
    # another CA's certificate: we are not its responder
    foreign = ocsp.load_der_ocsp_response(await ca.ocsp_response(
        ocsp_request(stranger, stranger)))
    assert foreign.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED
    for garbage in (b"", b"\x30\x00", b"not der at all", b"\x30" + b"\xff" * 20):
        answer = ocsp.load_der_ocsp_response(await ca.ocsp_response(garbage))
        assert answer.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


async def test_revoked_certificates_leave_the_crl_when_they_expire(provider: Provider):
    ca = provider.ca
    short = await ca.issue(dns_names=["short.test"], ttl=60, requester="t")
    await ca.revoke(short.serial, "superseded", "t")
    crl = x509.load_der_x509_crl(await ca.crl_der())
    assert crl.get_revoked_certificate_by_serial_number(
        short.certificate.serial_number) is not None
    async with provider.fast.transaction() as tx:  # as if its notAfter had passed
        await tx.run("UPDATE pki_certificates SET not_after = 1 WHERE serial = :s",
                     s=short.serial)
    ca._crls.clear()
    crl = x509.load_der_x509_crl(await ca.crl_der())
    assert crl.get_revoked_certificate_by_serial_number(short.certificate.serial_number) is None
    ca._status.clear()
    assert await ca.status(short.serial) == "unknown"


# --- rotation, concurrency, restart ----------------------------------------------------------------

async def test_rotation_keeps_old_certificates_valid_and_answered(provider: Provider, tmp_path):
    ca = provider.ca
    old = await ca.issue(dns_names=["old.test"], requester="t")
    new_inter = await ca.rotate("t")
    assert new_inter.serial_number != old.chain[0].serial_number
    new = await ca.issue(dns_names=["new.test"], requester="t")
    assert new.chain[0].serial_number == new_inter.serial_number
    await verify_server(provider, old, "old.test")
    await verify_server(provider, new, "new.test")
    # the old intermediate still answers OCSP and publishes a CRL for what it issued
    await ca.revoke(old.serial, "superseded", "t")
    answer = ocsp.load_der_ocsp_response(await ca.ocsp_response(
        ocsp_request(old.certificate, old.chain[0])))
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    old_id = next(a.id for a in ca._intermediates if a.cert == old.chain[0])
    crl = x509.load_der_x509_crl(await ca.crl_der(old_id))
    assert crl.get_revoked_certificate_by_serial_number(old.certificate.serial_number)
    assert x509.load_der_x509_crl(await ca.crl_der()).get_revoked_certificate_by_serial_number(
        old.certificate.serial_number) is None
    with pytest.raises(PkiError):
        await ca.crl_der("nope")


async def test_one_root_however_many_start_at_once_and_state_survives_restart(
        provider: Provider):
    others = [CertificateAuthority(provider) for _ in range(4)]
    firsts = await asyncio.gather(*(c.chain_pem() for c in others))
    bundles = {await c.trust_bundle_pem() for c in others}
    assert len(bundles) == 1  # one root, whichever instance won the race
    assert len(set(firsts)) == 1
    fresh = CertificateAuthority(provider)  # a restart: loads, creates nothing
    assert await fresh.trust_bundle_pem() in bundles
    rows = await provider.fast.all("SELECT kind, COUNT(*) FROM pki_authorities GROUP BY kind")
    assert {r[0]: r[1] for r in rows} == {"root": 1, "intermediate": 1}


# --- the CA's keys are out of the KMS API's reach ------------------------------------------------

async def test_nobody_can_sign_with_a_ca_key_through_the_kms(provider: Provider):
    """An IAM user allowed kms:* on everything still cannot sign with, disable, delete or
    re-police a CA key: its key policy denies all but reading (a KMS signature over a
    TBSCertificate would be a certificate from Bastion's CA)."""
    await provider.ca.issue(dns_names=["a.test"], requester="t")
    key_id = provider.ca._intermediates[0].row.key_id
    alice = await add_user(provider, "alice")
    await provider.iam_admin.put_inline("user", "alice", "kms", json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}))
    caller = user_caller(provider, alice, "alice")
    for op, req in (("Sign", {"KeyId": key_id, "Message": base64.b64encode(b"x").decode(),
                              "SigningAlgorithm": "ECDSA_SHA_384"}),
                    ("ScheduleKeyDeletion", {"KeyId": key_id}),
                    ("DisableKey", {"KeyId": key_id}),
                    ("PutKeyPolicy", {"KeyId": key_id, "PolicyName": "default",
                                      "Policy": json.dumps({
                                          "Version": "2012-10-17", "Statement": [{
                                              "Effect": "Allow", "Action": "kms:*",
                                              "Resource": "*",
                                              "Principal": {"AWS": caller.principal_arn}}]})
                                      })):
        with pytest.raises(KMSError) as caught:
            await provider.kms.call(op, req, caller)
        assert caught.value.code == "AccessDeniedException", op
    described = await provider.kms.call("DescribeKey", {"KeyId": key_id}, caller)
    assert described["KeyMetadata"]["KeyUsage"] == "SIGN_VERIFY"


async def test_issuance_and_revocation_are_audited(provider: Provider):
    issued = await provider.ca.issue(dns_names=["audited.test"], requester="arn:x:y")
    await provider.ca.revoke(issued.serial, "superseded", "arn:x:y")
    rows = await provider.fast.all("SELECT event_name, body FROM audit_events ORDER BY seq")
    names = [r[0] for r in rows]
    assert {"CreateCertificateAuthority", "IssueCertificate", "RevokeCertificate"} <= set(names)
    bodies = b"".join(bytes(r[1]) for r in rows)
    assert b"PRIVATE KEY" not in bodies
    assert issued.serial.encode() in bodies
