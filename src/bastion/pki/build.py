"""X.509 building blocks of the internal CA, all with ``cryptography``'s builders (no ASN.1
by hand): the root and intermediate certificates, leaf profiles (server, client, workload
X.509-SVID), name checks, CRLs. Pure functions; the CA service (ca.py) keeps state."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bastion.pki.errors import PkiError

PROFILES = ("server", "client", "workload")
MAX_NAMES = 100  # SANs per certificate
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# SPIFFE ID §2.2: path segments of letters, digits, ".", "-" and "_" only (no percent-
# encoding, which would hide "/.." from a relying party that decodes the path)
_SPIFFE_PATH = re.compile(r"^(/[A-Za-z0-9._-]+)+$", re.ASCII)
#: RFC 5280 CRLReason names in the camelCase ACME and the CLI use
REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "cACompromise": x509.ReasonFlags.ca_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "certificateHold": x509.ReasonFlags.certificate_hold,
    "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
    "aACompromise": x509.ReasonFlags.aa_compromise,
}
#: RFC 5280 reason codes (ACME's revokeCert "reason" is the integer code)
REASON_CODES = {0: "unspecified", 1: "keyCompromise", 2: "cACompromise",
                3: "affiliationChanged", 4: "superseded", 5: "cessationOfOperation",
                6: "certificateHold", 9: "privilegeWithdrawn", 10: "aACompromise"}


@dataclass(frozen=True, slots=True)
class Names:
    """The subject alternative names of a leaf, checked and normalised."""

    dns: tuple[str, ...] = ()
    ips: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = ()
    spiffe_id: str | None = None

    def values(self) -> list[str]:
        return [*self.dns, *(str(i) for i in self.ips),
                *([self.spiffe_id] if self.spiffe_id else [])]


def dns_name(value: str, *, wildcard: bool) -> str:
    """A DNS name in its ASCII (A-label) form, lower-case; PkiError otherwise."""
    if not isinstance(value, str) or not value or len(value) > 253:
        raise PkiError("invalidRequest", "a DNS name must be 1 to 253 characters")
    name = value.strip().rstrip(".").lower()
    try:
        name = name.encode("idna").decode("ascii") if not name.isascii() else name
    except UnicodeError:
        raise PkiError("invalidRequest", "a DNS name is not valid IDNA") from None
    labels = name.split(".")
    if labels[0] == "*":
        if not wildcard:
            raise PkiError("invalidRequest", "wildcard names are not allowed here")
        labels = labels[1:]
        if len(labels) < 2:
            raise PkiError("invalidRequest", "a wildcard needs at least two labels after it")
    if not labels or not all(_LABEL.match(label) for label in labels):
        raise PkiError("invalidRequest", f"{value[:80]!r} is not a valid DNS name")
    if labels[-1].isdigit():
        raise PkiError("invalidRequest", f"{value[:80]!r} is not a DNS name (an IP address "
                       "goes in ip_addresses)")
    return name


def ip_address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(str(value).strip())
    except ValueError:
        raise PkiError("invalidRequest", f"{str(value)[:80]!r} is not an IP address") from None


def spiffe_id(value: str, trust_domain: str) -> str:
    """An X.509-SVID SPIFFE ID of ``trust_domain``: spiffe://<td>/<path>, no query,
    fragment, port, user info, dot segments or empty segments."""
    prefix = f"spiffe://{trust_domain}/"
    if not isinstance(value, str) or len(value) > 2048 or not value.startswith(prefix):
        raise PkiError("invalidRequest", f"a SPIFFE ID must start with {prefix}")
    path = value[len(prefix) - 1:]
    if (not _SPIFFE_PATH.match(path) or "?" in path or "#" in path
            or any(seg in (".", "..") for seg in path.split("/")[1:])):
        raise PkiError("invalidRequest", "the SPIFFE ID's path is not valid")
    return value


def names(dns: Sequence[str], ips: Sequence[str], spiffe: str | None, *, profile: str,
          trust_domain: str) -> Names:
    if profile not in PROFILES:
        raise PkiError("invalidRequest", f"profile must be one of {', '.join(PROFILES)}")
    checked = Names(tuple(dict.fromkeys(dns_name(d, wildcard=profile == "server")
                                        for d in dns)),
                    tuple(dict.fromkeys(ip_address(i) for i in ips)),
                    spiffe_id(spiffe, trust_domain) if spiffe else None)
    count = len(checked.dns) + len(checked.ips) + (1 if checked.spiffe_id else 0)
    if count == 0:
        raise PkiError("invalidRequest", "a certificate needs at least one name (DNS, IP "
                       "or SPIFFE ID)")
    if count > MAX_NAMES:
        raise PkiError("invalidRequest", f"at most {MAX_NAMES} names per certificate")
    if profile == "workload" and checked.spiffe_id is None:
        raise PkiError("invalidRequest", "a workload certificate (X.509-SVID) needs a "
                       "SPIFFE ID")
    return checked


def check_public_key(key: Any) -> None:
    """Keys the CA certifies: RSA 2048-8192 (e = 65537), EC P-256/P-384/P-521, Ed25519."""
    if isinstance(key, rsa.RSAPublicKey):
        if not 2048 <= key.key_size <= 8192 or key.public_numbers().e != 65537:
            raise PkiError("badCSR", "RSA keys must be 2048 to 8192 bits with e = 65537")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1 | ec.SECP521R1):
            raise PkiError("badCSR", "EC keys must be on P-256, P-384 or P-521")
    elif not isinstance(key, ed25519.Ed25519PublicKey):
        raise PkiError("badCSR", "the key type is not supported (RSA, ECDSA or Ed25519)")


def _utc(ts: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def _ski(public_key: Any) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public_key)


def ca_name(common_name: str, trust_domain: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bastion"),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, trust_domain[:64]),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])


def root_certificate(key: Any, name: x509.Name, not_before: int,
                     not_after: int) -> x509.Certificate:
    public = key.public_key()
    return (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_utc(not_before)).not_valid_after(_utc(not_after))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(_ski(public), critical=False)
            .sign(key, hashes.SHA384()))


def intermediate_certificate(root_key: Any, root: x509.Certificate, public: Any,
                             name: x509.Name, not_before: int, not_after: int, *,
                             permitted_dns: Sequence[str], permitted_ips: Sequence[str],
                             trust_domain: str, base_url: str,
                             root_id: str) -> x509.Certificate:
    """An online intermediate (pathlen 0) with name constraints: the DNS names, IP ranges
    and the SPIFFE trust domain (URI host) it may certify; nothing else."""
    # RFC 5280 §4.2.1.10: "example.test" permits it and every name below it; a leading dot
    # (what operators often write) is not part of the grammar
    subtrees: list[x509.GeneralName] = [x509.DNSName(d.lstrip(".")) for d in permitted_dns]
    subtrees += [x509.IPAddress(ipaddress.ip_network(n)) for n in permitted_ips]
    subtrees.append(x509.UniformResourceIdentifier(trust_domain))
    return (x509.CertificateBuilder()
            .subject_name(name).issuer_name(root.subject).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_utc(not_before)).not_valid_after(_utc(not_after))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(x509.NameConstraints(permitted_subtrees=subtrees,
                                                excluded_subtrees=None), critical=True)
            .add_extension(_ski(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                root.public_key()), critical=False)  # type: ignore[arg-type]
            .add_extension(_crl_dp(base_url, root_id), critical=False)
            .sign(root_key, hashes.SHA384()))


def _crl_dp(base_url: str, ca_id: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints([x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(f"{base_url}/pki/crl/{ca_id}")],
        relative_name=None, reasons=None, crl_issuer=None)])


def leaf_certificate(issuer_key: Any, issuer: x509.Certificate, issuer_id: str,
                     public: Any, n: Names, *, profile: str, common_name: str | None,
                     not_before: int, not_after: int, base_url: str) -> x509.Certificate:
    """A server, client or workload certificate. Workload certificates follow the
    X.509-SVID rules: one URI SAN (the SPIFFE ID), not a CA, digitalSignature only."""
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in n.dns]
    sans += [x509.IPAddress(i) for i in n.ips]
    if n.spiffe_id:
        sans.append(x509.UniformResourceIdentifier(n.spiffe_id))
    cn = common_name or (n.dns[0] if n.dns else None)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn[:64])] if cn else [])
    ekus = {"server": [ExtendedKeyUsageOID.SERVER_AUTH],
            "client": [ExtendedKeyUsageOID.CLIENT_AUTH],
            "workload": [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]}
    # keyEncipherment only where the key can do RSA key transport (TLS 1.2 RSA kx)
    rsa_kx = isinstance(public, rsa.RSAPublicKey) and profile != "workload"
    aia = x509.AuthorityInformationAccess([
        x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.OCSP,
                               x509.UniformResourceIdentifier(f"{base_url}/pki/ocsp")),
        x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
                               x509.UniformResourceIdentifier(
                                   f"{base_url}/pki/ca/{issuer_id}.crt"))])
    return (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(issuer.subject).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_utc(not_before)).not_valid_after(_utc(not_after))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, rsa_kx, False, False, False, False,
                                         False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(ekus[profile]), critical=False)
            # an empty subject makes the SAN critical (RFC 5280 §4.2.1.6)
            .add_extension(x509.SubjectAlternativeName(sans), critical=not cn)
            .add_extension(_ski(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer.public_key()), critical=False)  # type: ignore[arg-type]
            .add_extension(_crl_dp(base_url, issuer_id), critical=False)
            .add_extension(aia, critical=False)
            .sign(issuer_key, hashes.SHA384()))


def crl(issuer_key: Any, issuer: x509.Certificate, number: int,
        revoked: Sequence[tuple[str, int, str]], this_update: int,
        next_update: int) -> x509.CertificateRevocationList:
    b = (x509.CertificateRevocationListBuilder()
         .issuer_name(issuer.subject)
         .last_update(_utc(this_update)).next_update(_utc(next_update))
         .add_extension(x509.CRLNumber(number), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
             issuer.public_key()), critical=False))  # type: ignore[arg-type]
    for serial, at, reason in revoked:
        entry = (x509.RevokedCertificateBuilder().serial_number(int(serial, 16))
                 .revocation_date(_utc(at)))
        flag = REASONS.get(reason, x509.ReasonFlags.unspecified)
        if flag is not x509.ReasonFlags.unspecified:  # RFC 5280: omit unspecified
            entry = entry.add_extension(x509.CRLReason(flag), critical=False)
        b = b.add_revoked_certificate(entry.build())
    return b.sign(issuer_key, hashes.SHA384())


def csr_names(csr: x509.CertificateSigningRequest) -> tuple[list[str], list[str], str | None]:
    """(dns, ips, spiffe) a CSR asks for: its SAN extension, else its CN as a DNS name."""
    try:
        ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        ext = None
    except ValueError:
        raise PkiError("badCSR", "the CSR's extensions do not parse") from None
    if ext is None:
        cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return ([str(cns[0].value)] if cns else []), [], None
    uris = ext.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) > 1:
        raise PkiError("badCSR", "at most one URI SAN (the SPIFFE ID)")
    other = [g for g in ext if not isinstance(
        g, x509.DNSName | x509.IPAddress | x509.UniformResourceIdentifier)]
    if other:
        raise PkiError("badCSR", "the CSR asks for SAN types the CA does not issue")
    return (list(ext.get_values_for_type(x509.DNSName)),
            [str(i) for i in ext.get_values_for_type(x509.IPAddress)],
            uris[0] if uris else None)
