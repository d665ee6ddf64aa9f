"""Bastion's internal PKI: the CA (``provider.ca``), its HTTP publication (CRL, OCSP, CA
certificates) and the certificate API. docs/pki.md."""

from bastion.pki.ca import CertificateAuthority, Issued
from bastion.pki.errors import PkiError

__all__ = ["CertificateAuthority", "Issued", "PkiError"]
