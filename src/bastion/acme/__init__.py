"""ACME (RFC 8555) on Bastion's internal CA: ``AcmeServer`` serves ``/acme/directory`` and
the resources it names (docs/acme.md)."""

from bastion.acme.server import AcmeServer

__all__ = ["AcmeServer"]
