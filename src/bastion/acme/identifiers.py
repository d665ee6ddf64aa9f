"""ACME identifiers (RFC 8555 §7.1.3, RFC 8738): what an order may name, in canonical form,
and what a CSR asks for (§7.4: exactly the order's identifiers)."""

from __future__ import annotations

import ipaddress
import re

from cryptography import x509

from bastion.acme.errors import Malformed, RejectedIdentifier, UnsupportedIdentifier

MAX_IDENTIFIERS = 100
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)  # fullmatch, linear


def dns_name(value: str) -> str:
    """A lower-case DNS name of LDH labels (RFC 1123), at most one leading ``*.``."""
    name = value.lower().rstrip(".") if isinstance(value, str) else ""
    base = name[2:] if name.startswith("*.") else name
    labels = base.split(".")
    if not base or len(name) > 253 or not all(_LABEL.fullmatch(lb) for lb in labels):
        raise Malformed(f"{str(value)[:100]!r} is not a DNS name")
    if base != name and len(labels) < 2:  # "*.test": every name of a top-level domain
        raise RejectedIdentifier(f"{name!r}: a wildcard must be below a domain, not a TLD")
    return name


def parse_identifiers(value: object) -> list[dict[str, str]]:
    """The order's identifiers (§7.1.3), canonical and without duplicates."""
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_IDENTIFIERS:
        raise Malformed(f"identifiers must be a list of 1 to {MAX_IDENTIFIERS} objects")
    out: list[dict[str, str]] = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("value"), str):
            raise Malformed("an identifier must be an object with type and value")
        kind = item.get("type")
        if kind == "dns":
            canon = {"type": "dns", "value": dns_name(item["value"])}
        elif kind == "ip":  # RFC 8738
            try:
                canon = {"type": "ip", "value": str(ipaddress.ip_address(item["value"]))}
            except ValueError:
                raise Malformed("an ip identifier must be an IP address") from None
        else:
            raise UnsupportedIdentifier(f"identifier type {str(kind)[:20]!r} is not supported")
        if canon not in out:
            out.append(canon)
    return out


def csr_names(csr: x509.CertificateSigningRequest) -> set[tuple[str, str]]:
    """The identifiers a CSR asks for: its subjectAltName DNS names and IP addresses, and
    its common name (§7.4: the CSR names exactly the order's identifiers)."""
    names: set[tuple[str, str]] = set()
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names |= {("dns", str(n).lower()) for n in san.get_values_for_type(x509.DNSName)}
        names |= {("ip", str(n)) for n in san.get_values_for_type(x509.IPAddress)}
    except x509.ExtensionNotFound:
        pass
    for attr in csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME):
        cn = str(attr.value).lower()
        try:
            names.add(("ip", str(ipaddress.ip_address(cn))))
        except ValueError:
            names.add(("dns", cn))
    return names
