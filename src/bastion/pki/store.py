"""The internal CA's state on the fast store: authorities (root and intermediates, whose
private keys are KMS keys named by ``key_id``) and the certificates they issued. Times are
Unix seconds; serials are lower-case hex without leading zeros."""

from __future__ import annotations

import json
from dataclasses import dataclass

from bastion.store.fast import Reader, Row, Tx

_AUTH_COLUMNS = ("id, kind, generation, parent_id, key_id, certificate, not_before, not_after, "
                 "created_at, crl_number, base_url")
_CERT_COLUMNS = ("serial, ca_id, profile, subject, names, spiffe_id, not_before, not_after, "
                 "certificate, requester, revoked_at, revocation_reason, created_at")


@dataclass(frozen=True, slots=True)
class AuthorityRow:
    id: str
    kind: str  # root | intermediate
    generation: int
    parent_id: str | None
    key_id: str
    certificate: str  # PEM
    not_before: int
    not_after: int
    created_at: int
    crl_number: int
    base_url: str  # the server's URL: CRL distribution point, OCSP, caIssuers


@dataclass(frozen=True, slots=True)
class CertificateRow:
    serial: str
    ca_id: str
    profile: str
    subject: str
    names: tuple[str, ...]
    spiffe_id: str | None
    not_before: int
    not_after: int
    certificate: str  # PEM
    requester: str
    revoked_at: int | None
    revocation_reason: str | None
    created_at: int

    def as_dict(self) -> dict[str, object]:
        """The JSON shape of ``bastion pki list --json`` and the HTTP API (no PEM)."""
        return {"serial": self.serial, "caId": self.ca_id, "profile": self.profile,
                "subject": self.subject, "names": list(self.names),
                "spiffeId": self.spiffe_id, "notBefore": self.not_before,
                "notAfter": self.not_after, "requester": self.requester,
                "revokedAt": self.revoked_at, "revocationReason": self.revocation_reason,
                "status": "revoked" if self.revoked_at is not None else "valid"}


def _authority(row: Row) -> AuthorityRow:
    return AuthorityRow(str(row[0]), row[1], int(row[2]), row[3], row[4], row[5], int(row[6]),
                        int(row[7]), int(row[8]), int(row[9]), str(row[10]))


def _certificate(row: Row) -> CertificateRow:
    return CertificateRow(str(row[0]), row[1], row[2], row[3], tuple(json.loads(row[4])),
                          row[5], int(row[6]), int(row[7]), row[8], row[9],
                          None if row[10] is None else int(row[10]), row[11], int(row[12]))


async def authorities(db: Reader) -> list[AuthorityRow]:
    """Every authority, newest generation first within each kind."""
    rows = await db.all(f"SELECT {_AUTH_COLUMNS} FROM pki_authorities "  # noqa: S608
                        "ORDER BY kind, generation DESC")
    return [_authority(r) for r in rows]


async def insert_authority(tx: Tx, a: AuthorityRow) -> None:
    await tx.run(f"INSERT INTO pki_authorities ({_AUTH_COLUMNS}) VALUES (:id, :kind, "  # noqa: S608
                 ":generation, :parent_id, :key_id, :certificate, :not_before, :not_after, "
                 ":created_at, :crl_number, :base_url)", id=a.id, kind=a.kind,
                 generation=a.generation, parent_id=a.parent_id, key_id=a.key_id,
                 certificate=a.certificate,
                 not_before=a.not_before, not_after=a.not_after, created_at=a.created_at,
                 crl_number=a.crl_number, base_url=a.base_url)


async def publish_at(tx: Tx, url: str) -> int:
    return await tx.run("UPDATE pki_authorities SET base_url = :url WHERE base_url <> :url",
                        url=url)


async def next_crl_number(tx: Tx, ca_id: str) -> int:
    await tx.run("UPDATE pki_authorities SET crl_number = crl_number + 1 WHERE id = :id",
                 id=ca_id)
    row = await tx.one("SELECT crl_number FROM pki_authorities WHERE id = :id", id=ca_id)
    return int(row[0]) if row is not None else 1


async def insert_certificate(tx: Tx, c: CertificateRow) -> None:
    await tx.run(f"INSERT INTO pki_certificates ({_CERT_COLUMNS}) VALUES (:serial, :ca_id, "  # noqa: S608
                 ":profile, :subject, :names, :spiffe_id, :not_before, :not_after, "
                 ":certificate, :requester, NULL, NULL, :created_at)", serial=c.serial,
                 ca_id=c.ca_id, profile=c.profile, subject=c.subject,
                 names=json.dumps(list(c.names)), spiffe_id=c.spiffe_id,
                 not_before=c.not_before, not_after=c.not_after, certificate=c.certificate,
                 requester=c.requester, created_at=c.created_at)


async def certificate(db: Reader, serial: str) -> CertificateRow | None:
    row = await db.one(f"SELECT {_CERT_COLUMNS} FROM pki_certificates "  # noqa: S608
                       "WHERE serial = :serial", serial=serial)
    return None if row is None else _certificate(row)


async def revoke(tx: Tx, serial: str, at: int, reason: str) -> int:
    """Mark revoked; 0 when there is no such certificate or it is already revoked."""
    return await tx.run("UPDATE pki_certificates SET revoked_at = :at, revocation_reason = "
                        ":reason WHERE serial = :serial AND revoked_at IS NULL", at=at,
                        reason=reason, serial=serial)


async def revoked(db: Reader, ca_id: str, now: int) -> list[tuple[str, int, str]]:
    """(serial, revoked_at, reason) of the authority's revoked certificates that have not
    expired (an expired certificate leaves the CRL, RFC 5280 §3.3)."""
    rows = await db.all("SELECT serial, revoked_at, revocation_reason FROM pki_certificates "
                        "WHERE ca_id = :ca AND revoked_at IS NOT NULL AND not_after > :now "
                        "ORDER BY serial", ca=ca_id, now=now)
    return [(str(r[0]), int(r[1]), str(r[2])) for r in rows]


async def listing(db: Reader, *, include_expired: bool, now: int, limit: int,
                  profile: str | None = None) -> list[CertificateRow]:
    where = ["1 = 1"] if include_expired else ["not_after > :now"]
    params: dict[str, object] = {"now": now, "limit": limit}
    if profile is not None:
        where.append("profile = :profile")
        params["profile"] = profile
    rows = await db.all(f"SELECT {_CERT_COLUMNS} FROM pki_certificates WHERE "  # noqa: S608
                        f"{' AND '.join(where)} ORDER BY created_at DESC, serial LIMIT :limit",
                        **params)
    return [_certificate(r) for r in rows]
