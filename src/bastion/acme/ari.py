"""ACME Renewal Information (RFC 9773): the certificate identifier and the suggested
renewal window."""

from __future__ import annotations

from cryptography import x509

from bastion.acme.jws import b64encode


def cert_id(cert: x509.Certificate) -> str:
    """RFC 9773 §4.1: base64url(Authority Key Identifier keyIdentifier) "." base64url(the
    DER encoding of the serial number's content octets)."""
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    if aki.key_identifier is None:
        raise ValueError("the certificate's AKI has no keyIdentifier")
    n = cert.serial_number
    # two's-complement, big-endian, minimal: a leading 0x00 when the high bit is set
    serial = n.to_bytes((n.bit_length() + 8) // 8, "big")
    return f"{b64encode(aki.key_identifier)}.{b64encode(serial)}"


def suggested_window(not_before: int, not_after: int, *, revoked: bool,
                     now: int) -> tuple[int, int]:
    """RFC 9773 §4.2: renew in the third quarter... from two thirds of the lifetime to
    three quarters (as Let's Encrypt); a revoked certificate: now (§4.2, "immediately")."""
    if revoked:
        return now - 1, now
    life = not_after - not_before
    return not_before + life * 2 // 3, not_before + life * 3 // 4
