"""Attacks on the internal CA from outside (docs/pki.md): the HTTP publication endpoints fed
malformed OCSP requests and path tricks, the IAM-guarded certificate API addressed with
serial numbers in non-canonical forms, SPIFFE IDs and CSRs crafted to slip a name past the
checks, and someone holding the database file without the KMS keys.

Each test passes when the CA refuses the attack. Two attacks succeeded when first written and
are fixed (kept here): a serial in upper case, with leading zeros or colons reached the same
certificate under another IAM resource ARN, so a Deny on ``certificate/<serial>`` did not
apply; a percent-encoded SPIFFE path (``%2e%2e``) passed the dot-segment check.
"""

from __future__ import annotations

import base64
import glob
import json
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from bastion.pki import PkiError
from tests.attacks.test_iam_escalation import mint
from tests.flows import bearer

pytestmark = [pytest.mark.anyio,
              pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]
V = "2012-10-17"
TD = "bastion.internal"
OCSP_TYPE = {"Content-Type": "application/ocsp-request"}


def csr_pem(*sans: x509.GeneralName, cn: str | None = None) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else []))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


async def pki_user(provider: Any, alice: str, *deny: dict[str, Any]) -> dict[str, str]:
    await provider.iam_admin.put_inline("user", "alice", "Pki", {"Version": V, "Statement": [
        {"Effect": "Allow", "Action": ["bastion:IssueCertificate", "bastion:GetCertificate",
                                       "bastion:RevokeCertificate"],
         "Resource": ["arn:bastion:pki::*:certificate/*", "arn:bastion:pki::*:name/*"]},
        *deny]})
    return bearer(mint(provider, alice))


# --- the certificate API: one certificate, one ARN ------------------------------------------

async def test_non_canonical_serial_cannot_dodge_a_deny_on_the_certificate(provider, http,
                                                                          alice):
    """A Deny on certificate/<serial> holds however the serial is spelled in the path: the
    CA normalises "ABC", "0abc", "ab:c" to the same certificate, so the API takes only the
    canonical form (the one the ARN is built from)."""
    issued = await provider.ca.issue(dns_names=["victim.test"], requester="test")
    serial = issued.serial
    h = await pki_user(provider, alice, {
        "Effect": "Deny", "Action": ["bastion:RevokeCertificate", "bastion:GetCertificate"],
        "Resource": f"arn:bastion:pki::*:certificate/{serial}"})
    variants = [serial.upper(), "0" + serial, "00" + serial,
                ":".join(serial[i:i + 2] for i in range(0, len(serial), 2)),
                "0x" + serial, " " + serial]
    assert (await http.get(f"/pki/certificates/{serial}", headers=h)).status_code == 403
    for v in variants:
        got = await http.get(f"/pki/certificates/{v}", headers=h)
        assert got.status_code in (400, 403, 404), (v, got.text)
        r = await http.post(f"/pki/certificates/{v}/revoke", json={}, headers=h)
        assert r.status_code in (400, 403, 404), (v, r.text)
    assert await provider.ca.status(serial) == "good"


async def test_canonical_serial_still_works_for_the_allowed(provider, http, alice):
    issued = await provider.ca.issue(dns_names=["ok.test"], requester="test")
    h = await pki_user(provider, alice)
    assert (await http.get(f"/pki/certificates/{issued.serial}", headers=h)).status_code == 200
    r = await http.post(f"/pki/certificates/{issued.serial}/revoke", json={}, headers=h)
    assert r.status_code == 204
    assert await provider.ca.status(issued.serial) == "revoked"


@pytest.mark.parametrize("body", [
    {"csr": csr_pem(x509.DNSName("a.test"), x509.RFC822Name("root@a.test"))},
    {"csr": csr_pem(x509.UniformResourceIdentifier(f"spiffe://{TD}/a"),
                    x509.UniformResourceIdentifier(f"spiffe://{TD}/admin")),
     "profile": "workload"},
    {"csr": csr_pem(x509.UniformResourceIdentifier("https://evil.example/x"))},
    {"csr": csr_pem(x509.DNSName("evil.example.com"))},
    {"csr": csr_pem(x509.DNSName("a.test"), x509.IPAddress(
        __import__("ipaddress").ip_address("8.8.8.8")))},
    {"csr": csr_pem(cn="evil.example.com")},
    {"csr": csr_pem(x509.DNSName("*.test"))},
    {"csr": csr_pem(x509.DNSName("*.a.test")), "profile": "client"},
    {"csr": csr_pem(x509.DNSName("a.test")), "profile": "workload"},
    {"csr": csr_pem(x509.DNSName("a.test")), "ttl": 10**9},
    {"csr": csr_pem(x509.DNSName("a.test")), "ttl": True},
    {"csr": csr_pem(x509.DNSName("a.test")), "profile": ["server"]},
    {"csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----"},
    {"csr": "x" * 70000},
], ids=["email-san", "two-uri-sans", "non-spiffe-uri", "outside-name-constraints",
        "public-ip", "cn-only-outside", "wildcard-tld", "wildcard-client", "workload-no-id",
        "ttl-huge", "ttl-bool", "profile-list", "csr-garbage", "csr-huge"])
async def test_crafted_csrs_are_refused_by_the_api(provider, http, alice, body):
    h = await pki_user(provider, alice)
    r = await http.post("/pki/certificates", json=body, headers=h)
    assert r.status_code in (400, 403, 413), r.text
    assert await provider.ca.list() == []


async def test_deeply_nested_json_body_is_a_400_not_a_crash(provider, http, alice):
    h = await pki_user(provider, alice)
    deep = b"[" * 50000 + b"]" * 50000
    r = await http.post("/pki/certificates", content=deep[:60000], headers={
        **h, "Content-Type": "application/json"})
    assert r.status_code in (400, 413), r.text


# --- SPIFFE IDs -----------------------------------------------------------------------------

@pytest.mark.parametrize("sid", [
    f"SPIFFE://{TD}/a", "spiffe://BASTION.INTERNAL/a", f"spiffe://{TD}/%2e%2e/admin",
    f"spiffe://{TD}/ns/%2E/admin", f"spiffe://{TD}/a%2Fb", f"spiffe://{TD}/../admin",
    f"spiffe://{TD}/a/./b", f"spiffe://{TD}//admin", f"spiffe://{TD}/a/", f"spiffe://{TD}/",
    f"spiffe://{TD}:443/a", f"spiffe://user@{TD}/a", f"spiffe://{TD}/a?x=1",
    f"spiffe://{TD}/a#frag", f"spiffe://{TD}.evil/a", f"spiffe://{TD}/a;b=c",
    f"spiffe://{TD}/a:b", f"spiffe://{TD}/caf\u00e9", f"spiffe://{TD}/a\x00b",
    f"spiffe://{TD}/a b", f"spiffe://{TD}/" + "a" * 2100,
], ids=["upper-scheme", "upper-trust-domain", "pct-dotdot", "pct-dot", "pct-slash",
        "dotdot", "dot", "empty-segment", "trailing-slash", "no-path", "port", "userinfo",
        "query", "fragment", "other-domain-suffix", "semicolon", "colon", "non-ascii", "nul",
        "space", "too-long"])
async def test_spiffe_id_tricks_are_refused(provider, sid):
    with pytest.raises(PkiError):
        await provider.ca.issue(profile="workload", spiffe_id=sid, requester="test")
    csr = x509.load_pem_x509_csr(csr_pem(x509.UniformResourceIdentifier(sid)).encode()) \
        if sid.isascii() and "\x00" not in sid else None
    if csr is not None:
        with pytest.raises(PkiError):
            await provider.ca.issue_for_csr(csr, profile="workload", requester="test")


async def test_allowed_names_compare_spiffe_ids_case_sensitively(provider):
    """A requester allowed spiffe://td/ns/Admin may not get spiffe://td/ns/admin (SPIFFE
    paths are case-sensitive)."""
    csr = x509.load_pem_x509_csr(csr_pem(x509.UniformResourceIdentifier(
        f"spiffe://{TD}/ns/admin")).encode())
    with pytest.raises(PkiError) as caught:
        await provider.ca.issue_for_csr(csr, profile="workload", requester="test",
                                        allowed=[f"spiffe://{TD}/ns/Admin"])
    assert caught.value.code == "rejectedIdentifier"


@pytest.mark.parametrize("asked, allowed", [
    ("OTHER.test", ["a.test"]), ("a.test.", ["b.test"]), ("xn--bcher-kva.test", ["bucher.test"]),
    ("*.a.test", ["a.test"]), ("a.test", ["*.a.test"])],
    ids=["case", "trailing-dot", "idn", "wildcard-for-apex", "apex-for-wildcard"])
async def test_allowed_names_are_not_widened_by_case_dots_idn_or_wildcards(provider, asked,
                                                                          allowed):
    csr = x509.load_pem_x509_csr(csr_pem(x509.DNSName(asked)).encode())
    with pytest.raises(PkiError) as caught:
        await provider.ca.issue_for_csr(csr, requester="test", allowed=allowed)
    assert caught.value.code == "rejectedIdentifier"


# --- publication: OCSP, CRL, paths ----------------------------------------------------------

def _status(der: bytes) -> ocsp.OCSPResponseStatus:
    return ocsp.load_der_ocsp_response(der).response_status


@pytest.mark.parametrize("body", [
    b"", b"\x30", b"\x30\x80\x00\x00", b"\x30\x82\xff\xff" + b"\x00" * 100,
    b"\x30" * 4000 + b"\x00" * 4000, b"not der at all", b"\x04\x00",
], ids=["empty", "one-byte", "indefinite", "length-past-end", "nested-sequences", "text",
        "octet-string"])
async def test_malformed_ocsp_post_is_malformed_request(provider, http, body):
    r = await http.post("/pki/ocsp", content=body, headers=OCSP_TYPE)
    assert r.status_code == 200, r.text
    assert _status(r.content) == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


@pytest.mark.parametrize("path", [
    "/pki/ocsp/%%%", "/pki/ocsp/AAAA", "/pki/ocsp/" + "A" * 17000, "/pki/ocsp/..%2f..%2fetc",
    "/pki/ocsp/MA==/extra/segments", "/pki/ocsp/%00",
], ids=["percent-garbage", "tiny-b64", "too-long", "dot-dot", "segments", "nul"])
async def test_malformed_ocsp_get_never_crashes(provider, http, path):
    r = await http.get(path)
    assert r.status_code in (200, 400, 403, 404, 414), r.text
    if r.status_code == 200:
        assert _status(r.content) == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


async def test_ocsp_wrong_content_type_and_oversize(provider, http):
    r = await http.post("/pki/ocsp", content=b"\x30\x00",
                        headers={"Content-Type": "application/json"})
    assert r.status_code == 415
    r = await http.post("/pki/ocsp", content=b"\x30" * 9000, headers=OCSP_TYPE)
    assert r.status_code == 413


@pytest.mark.parametrize("serial", [2 ** 159, 2 ** 400, 1], ids=["big", "huge", "one"])
async def test_ocsp_for_serials_the_ca_never_issued_is_unknown(provider, http, serial):
    issued = await provider.ca.issue(dns_names=["probe.test"], requester="test")
    probe = ocsp.OCSPRequestBuilder().add_certificate(issued.certificate, issued.chain[0],
                                                      hashes.SHA256()).build()
    req = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        probe.issuer_name_hash, probe.issuer_key_hash, serial, hashes.SHA256()).build()
    r = await http.post("/pki/ocsp", content=req.public_bytes(serialization.Encoding.DER),
                        headers=OCSP_TYPE)
    assert r.status_code == 200
    resp = ocsp.load_der_ocsp_response(r.content)
    if resp.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL:
        assert resp.certificate_status == ocsp.OCSPCertStatus.UNKNOWN
    else:
        assert resp.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


async def test_ocsp_for_a_certificate_under_another_issuer_hash_is_unauthorized(provider,
                                                                                 http):
    """A real serial asked about under a foreign issuer (same subject name, other key): the
    responder does not vouch for what it did not issue."""
    issued = await provider.ca.issue(dns_names=["o.test"], requester="test")
    inter = issued.chain[0]
    fake_key = ec.generate_private_key(ec.SECP384R1())
    import datetime as dt
    now = dt.datetime.now(dt.UTC)
    fake = (x509.CertificateBuilder().subject_name(inter.subject).issuer_name(inter.subject)
            .public_key(fake_key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1)).sign(fake_key, hashes.SHA256()))
    req = ocsp.OCSPRequestBuilder().add_certificate(issued.certificate, fake,
                                                    hashes.SHA1()).build()
    r = await http.post("/pki/ocsp", content=req.public_bytes(serialization.Encoding.DER),
                        headers=OCSP_TYPE)
    assert _status(r.content) == ocsp.OCSPResponseStatus.UNAUTHORIZED
    # the real request over GET, base64 with "/" and "+" kept in the path, verifies
    good = ocsp.OCSPRequestBuilder().add_certificate(issued.certificate, inter,
                                                     hashes.SHA1()).build()
    text = base64.b64encode(good.public_bytes(serialization.Encoding.DER)).decode()
    r = await http.get("/pki/ocsp/" + text)
    resp = ocsp.load_der_ocsp_response(r.content)
    assert resp.certificate_status == ocsp.OCSPCertStatus.GOOD
    inter.public_key().verify(resp.signature, resp.tbs_response_bytes,
                              ec.ECDSA(resp.signature_hash_algorithm))


@pytest.mark.parametrize("path", [
    "/pki/crl/nope", "/pki/crl/..%2F..%2Fetc%2Fpasswd", "/pki/ca/nope.crt",
    "/pki/ca/..%2f..%2fdata.crt", "/pki/crl/" + "a" * 5000, "/pki/ca/%00.crt",
    "/pki/certificates/%2e%2e/revoke",
], ids=["unknown-crl", "crl-traversal", "unknown-ca", "ca-traversal", "long-id", "nul",
        "encoded-dotdot-into-api"])
async def test_publication_path_tricks(provider, http, path):
    r = await http.get(path)
    assert r.status_code in (400, 401, 403, 404, 405), r.text
    assert b"PRIVATE KEY" not in r.content


async def test_crl_of_the_root_lists_no_leaf_and_is_signed(provider, http):
    issued = await provider.ca.issue(dns_names=["crl.test"], requester="test")
    await provider.ca.revoke(issued.serial, "keyCompromise", requester="test")
    root_id = provider.ca._roots[0].id  # noqa: SLF001 - the id the CRL DP names
    r = await http.get(f"/pki/crl/{root_id}")
    crl = x509.load_der_x509_crl(r.content)
    assert len(list(crl)) == 0 and crl.is_signature_valid(provider.ca._roots[0].cert
                                                          .public_key())
    r = await http.get("/pki/crl")
    crl = x509.load_der_x509_crl(r.content)
    assert crl.get_revoked_certificate_by_serial_number(issued.certificate.serial_number)


# --- someone holding the database file ------------------------------------------------------

def _read_all(directory: str) -> tuple[list[str], bytes]:
    """Every file under ``directory`` but the published certificates, concatenated."""
    files = [f for f in glob.glob(directory + "/**/*", recursive=True)
             if not f.endswith((".crt", ".pem"))]
    blob = b""
    for f in files:
        try:
            with open(f, "rb") as fh:
                blob += fh.read()
        except (IsADirectoryError, PermissionError):
            continue
    return files, blob


async def test_database_file_holds_no_ca_private_key(provider, settings):
    """The CA keys are KMS keys wrapped by the root keeper: the database file (and its WAL)
    holds neither their PEM/DER nor their raw private scalars."""
    await provider.ca.issue(dns_names=["db.test"], requester="test")
    keys = [a.key for a in (*provider.ca._roots, *provider.ca._intermediates)]  # noqa: SLF001
    secrets = []
    for k in keys:
        secrets.append(k.private_numbers().private_value.to_bytes(48, "big"))
        secrets.append(k.private_bytes(serialization.Encoding.DER,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    files, blob = _read_all(str(settings.data_dir.parent))  # the database and data_dir
    assert any(f.endswith("bastion.db") for f in files), files
    for s in secrets:
        assert s not in blob
    assert b"PRIVATE KEY" not in blob
    rows = await provider.fast.all("SELECT * FROM pki_authorities")
    assert rows and "PRIVATE" not in json.dumps([list(map(str, r)) for r in rows])


# --- what bastion:IssueCertificate lets a workload become ----------------------------------

async def test_a_workload_allowed_to_issue_cannot_become_another_workload(provider, http,
                                                                          alice):
    """orders-svc, given the documented policy (issue on certificate/* and on its own name
    only), asks for inventory's X.509-SVID, for a server certificate naming Bastion's own
    host, and for its own SVID with an extra name: refused (403, audited); its own SVID
    alone is issued."""
    own = f"spiffe://{TD}/ns/demo/sa/orders"
    await provider.iam_admin.put_inline("user", "alice", "Pki", {"Version": V, "Statement": [
        {"Effect": "Allow", "Action": "bastion:IssueCertificate",
         "Resource": ["arn:bastion:pki::*:certificate/*", f"arn:bastion:pki::*:name/{own}"]}]})
    h = bearer(mint(provider, alice))
    mine = await http.post("/pki/certificates", headers=h, json={
        "csr": csr_pem(x509.UniformResourceIdentifier(own)), "profile": "workload"})
    assert mine.status_code == 201, mine.text
    both = await http.post("/pki/certificates", headers=h, json={
        "csr": csr_pem(x509.UniformResourceIdentifier(own), x509.DNSName("localhost")),
        "profile": "workload"})
    assert both.status_code == 403 and both.json()["error"] == "rejectedIdentifier"
    other = await http.post("/pki/certificates", headers=h, json={
        "csr": csr_pem(x509.UniformResourceIdentifier(f"spiffe://{TD}/ns/demo/sa/inventory")),
        "profile": "workload"})
    server = await http.post("/pki/certificates", headers=h, json={
        "csr": csr_pem(x509.DNSName("localhost"))})
    assert other.status_code == 403 and server.status_code == 403, \
        (other.status_code, server.status_code)
