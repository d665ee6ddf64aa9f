"""Test PKI for the TLS tests: roots, intermediates (with name constraints), server and
client leaves, and the bad ones mTLS must refuse (expired, self-signed, wrong EKU, outside
the name constraints), made with ``cryptography``."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
NOW = dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Pair:
    cert: x509.Certificate
    key: Any
    chain: tuple[x509.Certificate, ...] = ()  # the intermediates above it, issuer first

    @property
    def serial(self) -> str:
        return format(self.cert.serial_number, "x")

    def cert_pem(self, *, chain: bool = True) -> bytes:
        certs = (self.cert, *self.chain) if chain else (self.cert,)
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        """``name.crt`` (with its chain) and ``name.key`` (0600), replaced atomically."""
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / f"{name}.crt", directory / f"{name}.key"
        for path, data, mode in ((key, self.key_pem(), 0o600), (cert, self.cert_pem(), 0o644)):
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_bytes(data)
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        return cert, key


def _key(kind: str) -> Any:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def authority(cn: str, parent: Pair | None = None, *,
              permitted_dns: Sequence[str] = (), permitted_uri: Sequence[str] = ()) -> Pair:
    """A root (no parent) or an intermediate, optionally name-constrained."""
    key = _key("ec")
    issuer_key = parent.key if parent else key
    builder = (x509.CertificateBuilder().subject_name(_name(cn))
               .issuer_name(parent.cert.subject if parent else _name(cn))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW - dt.timedelta(hours=1))
               .not_valid_after(NOW + dt.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                            False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   issuer_key.public_key()), critical=False))
    if permitted_dns or permitted_uri:
        subtrees = [*(x509.DNSName(d) for d in permitted_dns),
                    *(x509.UniformResourceIdentifier(u) for u in permitted_uri)]
        builder = builder.add_extension(x509.NameConstraints(subtrees, None), critical=True)
    cert = builder.sign(issuer_key, hashes.SHA256())
    above = () if parent is None or parent.cert.issuer == parent.cert.subject \
        else (parent.cert, *parent.chain)  # the intermediates above it, never the root
    return Pair(cert, key, above)


def leaf(issuer: Pair, *, dns: Sequence[str] = (), ips: Sequence[str] = (),
         uris: Sequence[str] = (), eku: Sequence[x509.ObjectIdentifier] | None = (CLIENT_AUTH,),
         cn: str = "leaf", key: str = "ec", days: float = 1, expired: bool = False,
         future: bool = False, aki: bool = True) -> Pair:
    """A leaf certificate signed by ``issuer``; its chain is ``issuer`` unless that is a
    root (roots are never sent)."""
    pkey = _key(key)
    start = NOW - dt.timedelta(days=3 if expired else 0, minutes=5)
    if future:
        start = NOW + dt.timedelta(hours=1)
    end = NOW - dt.timedelta(days=1) if expired else NOW + dt.timedelta(days=days)
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer.cert.subject)
               .public_key(pkey.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(True, False, key == "rsa", False, False, False,
                                            False, False, False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(pkey.public_key()),
                              critical=False))
    if aki:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer.key.public_key()), critical=False)
    names: list[x509.GeneralName] = [
        *(x509.DNSName(d) for d in dns),
        *(x509.IPAddress(ipaddress.ip_address(i)) for i in ips),
        *(x509.UniformResourceIdentifier(u) for u in uris)]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    cert = builder.sign(issuer.key, hashes.SHA256())
    self_issued = issuer.cert.issuer == issuer.cert.subject
    return Pair(cert, pkey, () if self_issued else (issuer.cert, *issuer.chain))


def self_signed(cn: str = "self", *, eku: Sequence[x509.ObjectIdentifier] = (CLIENT_AUTH,)
                ) -> Pair:
    key = _key("ec")
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(minutes=5))
            .not_valid_after(NOW + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
            .sign(key, hashes.SHA256()))
    return Pair(cert, key)


def server(issuer: Pair, *, key: str = "ec", days: float = 1) -> Pair:
    return leaf(issuer, dns=("localhost",), ips=("127.0.0.1",), eku=(SERVER_AUTH,),
                cn="localhost", key=key, days=days)
