"""The internal certificate authority (``provider.ca``): a root and an online intermediate
whose private keys are KMS keys (ECC P-384, wrapped by the KMS root keeper, so the HSM
guards them with the ``pkcs11`` keeper), created on first use; leaf certificates for
servers, clients and workloads (SPIFFE X.509-SVIDs); revocation, CRLs and OCSP.

The CA's KMS keys carry a key policy that denies every KMS operation but reading their
metadata and public key: nobody can ask the KMS API to sign with a CA key (a signature
over a TBSCertificate would be a certificate). Only this module, in-process, uses them.

Every issuance, revocation and new authority is recorded in the audit trail in the same
transaction as the change (no certificate exists that the trail does not name)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from bastion.audit.trail import AuditUnavailable
from bastion.pki import build
from bastion.pki import store as db
from bastion.pki.errors import PkiError

if TYPE_CHECKING:
    from bastion.oauth.provider import Provider

log = logging.getLogger("bastion.pki")
STATUS_TTL = 2.0  # seconds a serial's status is cached (revocations here clear it at once)
CRL_TTL = 60.0  # seconds a built CRL is served before it is rebuilt (revocations: at once,
# whichever process made them)
CRL_VALIDITY = 86400  # nextUpdate - thisUpdate
OCSP_VALIDITY = 3600
SKEW = 60  # notBefore is back-dated this much for clients whose clocks run behind
MAX_TTL = {"server": 398 * 86400, "client": 30 * 86400, "workload": 30 * 86400}


@dataclass(frozen=True)
class Issued:
    """A certificate the CA just issued, with the chain a TLS peer sends and, when the CA
    made the key pair, its private key."""

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    private_key: Any = None

    @property
    def serial(self) -> str:
        return format(self.certificate.serial_number, "x")

    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    def pem_chain(self) -> str:
        return "".join(c.public_bytes(serialization.Encoding.PEM).decode()
                       for c in (self.certificate, *self.chain))

    def key_pem(self) -> str:
        if self.private_key is None:
            raise ValueError("the CA did not make this certificate's key")
        return str(self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode())


@dataclass(frozen=True)
class _Authority:
    row: db.AuthorityRow
    cert: x509.Certificate
    key: Any  # the private key, unwrapped from the KMS (kept in memory like the KMS cache)

    @property
    def id(self) -> str:
        return self.row.id


def normalise_serial(serial: int | str) -> str:
    if isinstance(serial, int):
        if serial <= 0:
            raise PkiError("invalidRequest", "a serial number is a positive integer")
        return format(serial, "x")
    text = str(serial).strip().lower().replace(":", "")
    if text.startswith("0x"):
        text = text[2:]
    if not text or len(text) > 64 or any(c not in "0123456789abcdef" for c in text):
        raise PkiError("invalidRequest", "a serial number is hexadecimal")
    text = text.lstrip("0")
    if not text:
        raise PkiError("invalidRequest", "a serial number is a positive integer")
    return text


def _identity(requester: str) -> dict[str, Any]:
    if requester.startswith("local-operator:"):
        return {"type": "LocalOperator", "principalId": requester}
    if requester.startswith("bastion:"):
        return {"type": "BastionService", "invokedBy": requester}
    return {"type": "BastionPrincipal", "arn": requester}


def _ca_key_policy(account: str) -> str:
    read = ["kms:DescribeKey", "kms:GetPublicKey", "kms:ListResourceTags",
            "kms:GetKeyPolicy", "kms:ListKeyPolicies", "kms:GetKeyRotationStatus"]
    return json.dumps({"Version": "2012-10-17", "Id": "bastion-pki-ca-key", "Statement": [
        {"Sid": "OnlyBastionPkiSignsWithThisKey", "Effect": "Deny", "Principal": "*",
         "NotAction": read, "Resource": "*"},
        {"Sid": "ReadMetadataThroughIam", "Effect": "Allow",
         "Principal": {"AWS": f"arn:bastion:iam::{account}:root"}, "Action": read,
         "Resource": "*"}]})


class CertificateAuthority:
    def __init__(self, provider: Provider) -> None:
        self.p = provider
        s = provider.settings
        self.settings = s
        self.fast = provider.fast
        self.trust_domain = s.pki_trust_domain
        self._lock = asyncio.Lock()
        self._roots: list[_Authority] = []
        self._intermediates: list[_Authority] = []  # newest first
        self._status: dict[str, tuple[float, str]] = {}
        # authority id -> (rebuilt after, the revocations it lists, DER)
        self._crls: dict[str, tuple[float, list[tuple[str, int, str]], bytes]] = {}
        host = urlsplit(provider.issuer_url).hostname or "localhost"
        dns = [d.strip() for d in s.pki_permitted_dns.split(",") if d.strip()]
        self.permitted_ips = [ipaddress.ip_network(n.strip(), strict=False)
                              for n in s.pki_permitted_ips.split(",") if n.strip()]
        try:
            ip = ipaddress.ip_address(host)
            if not any(ip in n for n in self.permitted_ips):
                self.permitted_ips.append(ipaddress.ip_network(host))
        except ValueError:
            dns.append(host.lower())
        self.permitted_dns = list(dict.fromkeys(d.lstrip(".").lower() for d in dns))

    async def publish_at(self, url: str) -> None:
        """Where the CA's CRLs, OCSP responder and certificates are served from now on
        (``bastion serve`` calls it with its issuer URL at start; the CLI, which does not
        know the server's address, then writes certificates that point at it)."""
        async with self.fast.transaction() as tx:
            changed = await db.publish_at(tx, url)
        if changed:
            log.info("the CA's publication URL is now %s", url)
            async with self._lock:
                await self._load()

    # --- authorities --------------------------------------------------------------------
    async def ensure(self) -> _Authority:
        """The current intermediate, creating the root and an intermediate on first use
        and a new intermediate when the current one cannot cover a server certificate's
        default lifetime any more."""
        now = int(time.time())
        current = self._intermediates[0] if self._intermediates else None
        if current is not None and current.row.not_after - now > self.settings.pki_server_ttl:
            return current
        async with self._lock:
            await self._load()
            current = self._intermediates[0] if self._intermediates else None
            if current is not None and \
                    current.row.not_after - now > self.settings.pki_server_ttl:
                return current
            if not self._roots or self._roots[0].row.not_after - now < \
                    self.settings.pki_intermediate_days * 86400:
                if self._roots:
                    log.warning("the root CA expires in under %d days: creating a new one; "
                                "distribute the new trust bundle (bastion ca export)",
                                self.settings.pki_intermediate_days)
                await self._create_root("bastion:pki")
            await self._create_intermediate("bastion:pki")
            return self._intermediates[0]

    async def rotate(self, requester: str) -> x509.Certificate:
        """A new intermediate; the old ones keep answering CRL and OCSP for what they
        issued and stay in the chain bundle until they expire (``bastion ca rotate``)."""
        await self.ensure()
        async with self._lock:
            await self._create_intermediate(requester)
            return self._intermediates[0].cert

    def _by_id(self, ca_id: str) -> _Authority | None:
        """The root or intermediate ``ca_id`` among those loaded."""
        return next((a for a in (*self._roots, *self._intermediates) if a.id == ca_id), None)

    async def _load(self) -> None:
        rows = await db.authorities(self.fast)
        known = {a.id: a for a in (*self._roots, *self._intermediates)}
        roots: list[_Authority] = []
        inters: list[_Authority] = []
        for row in rows:
            old = known.get(row.id)
            a = _Authority(row, old.cert, old.key) if old is not None else _Authority(
                row, x509.load_pem_x509_certificate(row.certificate.encode()),
                await self._private_key(row.key_id))
            (roots if row.kind == "root" else inters).append(a)
        self._roots, self._intermediates = roots, inters

    async def _private_key(self, key_id: str) -> Any:
        kms = self.p.kms
        rec = await kms.key(key_id)
        if rec is None:
            raise PkiError("unavailable", "a CA key is missing from the KMS")
        try:
            material = await kms.material(rec, rec.current_version)
        except Exception as exc:  # KMSInternalException: the root keeper is unavailable
            log.error("a CA key could not be unwrapped (%s)", type(exc).__name__)
            raise PkiError("unavailable", "the CA key is unavailable") from None
        return material.private

    async def _create_key(self, description: str) -> tuple[str, Any]:
        from bastion.kms.core import Caller

        caller = Caller("bastion:pki", self.settings.account_id, operator=True,
                        user_agent="bastion-pki")
        out = await self.p.kms.call("CreateKey", {
            "KeySpec": "ECC_NIST_P384", "KeyUsage": "SIGN_VERIFY", "Description": description,
            "Policy": _ca_key_policy(self.settings.account_id),
            "BypassPolicyLockoutSafetyCheck": True,
            "Tags": [{"TagKey": "bastion:pki", "TagValue": "ca"}]}, caller)
        key_id = out["KeyMetadata"]["KeyId"]
        return key_id, await self._private_key(key_id)

    async def _create_root(self, requester: str) -> None:
        generation = (self._roots[0].row.generation + 1) if self._roots else 1
        key_id, key = await self._create_key(f"Bastion internal root CA #{generation}")
        now = int(time.time())
        aid = uuid.uuid4().hex
        name = build.ca_name(f"Bastion Root CA {aid[:8]}", self.trust_domain)
        cert = build.root_certificate(key, name, now - SKEW,
                                      now + self.settings.pki_root_days * 86400)
        await self._insert(_Authority(self._row(aid, "root", generation, None, key_id, cert,
                                                now), cert, key), requester)

    async def _create_intermediate(self, requester: str) -> None:
        root = self._roots[0]
        generation = (self._intermediates[0].row.generation + 1) if self._intermediates else 1
        key_id, key = await self._create_key(f"Bastion online intermediate CA #{generation}")
        now = int(time.time())
        aid = uuid.uuid4().hex
        not_after = min(now + self.settings.pki_intermediate_days * 86400,
                        root.row.not_after)
        cert = build.intermediate_certificate(
            root.key, root.cert, key.public_key(),
            build.ca_name(f"Bastion Intermediate CA {aid[:8]}", self.trust_domain),
            now - SKEW, not_after, permitted_dns=self.permitted_dns,
            permitted_ips=[str(n) for n in self.permitted_ips],
            trust_domain=self.trust_domain, base_url=root.row.base_url, root_id=root.id)
        await self._insert(_Authority(self._row(aid, "intermediate", generation, root.id,
                                                key_id, cert, now), cert, key), requester)

    def _row(self, aid: str, kind: str, generation: int, parent: str | None, key_id: str,
             cert: x509.Certificate, now: int) -> db.AuthorityRow:
        return db.AuthorityRow(
            aid, kind, generation, parent, key_id,
            cert.public_bytes(serialization.Encoding.PEM).decode(),
            int(cert.not_valid_before_utc.timestamp()),
            int(cert.not_valid_after_utc.timestamp()), now, 0, self.p.issuer_url)

    async def _insert(self, a: _Authority, requester: str) -> None:
        try:
            async with self.fast.transaction() as tx:
                await db.insert_authority(tx, a.row)
                await self.p.audit.record_in(
                    tx, "CreateCertificateAuthority", user_identity=_identity(requester),
                    request_parameters={"kind": a.row.kind, "generation": a.row.generation},
                    response_elements={"caId": a.id, "kmsKeyId": a.row.key_id,
                                       "subject": a.cert.subject.rfc4514_string(),
                                       "notAfter": a.row.not_after},
                    resources=[{"type": "Bastion::PKI::CertificateAuthority",
                                "ARN": self._ca_arn(a.id)}])
        except AuditUnavailable:
            raise PkiError("unavailable", "the audit trail is unavailable") from None
        except PkiError:
            raise
        except Exception:
            # another process created this generation first (unique kind, generation)
            log.info("a %s CA generation %d exists already; loading it", a.row.kind,
                     a.row.generation)
        await self._load()

    def _ca_arn(self, ca_id: str) -> str:
        return f"arn:bastion:pki::{self.settings.account_id}:ca/{ca_id}"

    # --- issuance ----------------------------------------------------------------------------
    def _check_constraints(self, n: build.Names) -> None:
        """Refuse what the intermediate's name constraints would make clients reject."""
        for d in n.dns:
            bare = d[2:] if d.startswith("*.") else d
            if not any(bare == p or bare.endswith("." + p) for p in self.permitted_dns):
                raise PkiError("rejectedIdentifier", f"{d} is outside the CA's permitted "
                               "names (pki_permitted_dns)")
        for ip in n.ips:
            if not any(ip in net for net in self.permitted_ips):
                raise PkiError("rejectedIdentifier", f"{ip} is outside the CA's permitted "
                               "IP ranges (pki_permitted_ips)")

    async def issue(self, *, profile: str = "server", dns_names: Sequence[str] = (),
                    ip_addresses: Sequence[str] = (), spiffe_id: str | None = None,
                    common_name: str | None = None, public_key: Any = None,
                    ttl: int | None = None, requester: str) -> Issued:
        n = build.names(dns_names, ip_addresses, spiffe_id, profile=profile,
                        trust_domain=self.trust_domain)
        self._check_constraints(n)
        private = None
        if public_key is None:
            private = ec.generate_private_key(ec.SECP256R1())
            public_key = private.public_key()
        build.check_public_key(public_key)
        if common_name is not None and (not isinstance(common_name, str)
                                        or not 0 < len(common_name) <= 64
                                        or not common_name.isprintable()):
            raise PkiError("invalidRequest", "a common name is 1 to 64 printable characters")
        issued = await self._sign(n, public_key, profile, common_name, ttl, requester)
        return Issued(issued.certificate, issued.chain, private)

    async def issue_for_csr(self, csr: x509.CertificateSigningRequest, *,
                            profile: str = "server", ttl: int | None = None, requester: str,
                            allowed: Sequence[str] | None = None) -> Issued:
        if not csr.is_signature_valid:
            raise PkiError("badCSR", "the CSR's signature does not verify")
        try:
            public = csr.public_key()
        except (ValueError, TypeError):
            raise PkiError("badCSR", "the CSR's public key does not parse") from None
        build.check_public_key(public)
        dns, ips, spiffe = build.csr_names(csr)
        n = build.names(dns, ips, spiffe, profile=profile, trust_domain=self.trust_domain)
        if allowed is not None:
            # DNS names compare case-insensitively (n.dns is lower-case already); a SPIFFE
            # ID's path is case-sensitive, so it must be allowed exactly
            permitted = {a.lower().rstrip(".") for a in allowed
                         if not a.startswith("spiffe://")}
            permitted_ids = {a for a in allowed if a.startswith("spiffe://")}
            outside = [v for v in [*n.dns, *(str(i) for i in n.ips)] if v not in permitted]
            if n.spiffe_id is not None and n.spiffe_id not in permitted_ids:
                outside.append(n.spiffe_id)
            if outside:
                raise PkiError("rejectedIdentifier", f"the CSR asks for {outside[0]}, "
                               "which this requester may not have")
        self._check_constraints(n)
        return await self._sign(n, public, profile, None, ttl, requester)

    async def _sign(self, n: build.Names, public: Any, profile: str, cn: str | None,
                    ttl: int | None, requester: str) -> Issued:
        default = self.settings.pki_server_ttl if profile == "server" \
            else self.settings.pki_workload_ttl
        life = default if ttl is None else ttl
        if not isinstance(life, int) or isinstance(life, bool) or \
                not 60 <= life <= MAX_TTL[profile]:
            raise PkiError("invalidRequest", f"ttl must be 60 to {MAX_TTL[profile]} seconds "
                           f"for {profile} certificates")
        ca = await self.ensure()
        now = int(time.time())
        not_after = min(now + life, ca.row.not_after)
        cert = build.leaf_certificate(ca.key, ca.cert, ca.id, public, n, profile=profile,
                                      common_name=cn, not_before=now - SKEW,
                                      not_after=not_after, base_url=ca.row.base_url)
        serial = format(cert.serial_number, "x")
        row = db.CertificateRow(
            serial, ca.id, profile, cert.subject.rfc4514_string()[:255], tuple(n.values()),
            n.spiffe_id, now - SKEW, not_after,
            cert.public_bytes(serialization.Encoding.PEM).decode(), requester[:512], None,
            None, now)
        try:
            async with self.fast.transaction() as tx:
                await db.insert_certificate(tx, row)
                await self.p.audit.record_in(
                    tx, "IssueCertificate", user_identity=_identity(requester),
                    request_parameters={"profile": profile, "names": list(n.values())[:20],
                                        "ttl": life},
                    response_elements={"serialNumber": serial, "notAfter": not_after,
                                       "caId": ca.id},
                    resources=[{"type": "Bastion::PKI::Certificate",
                                "ARN": f"{self._ca_arn(ca.id)}/certificate/{serial}"}])
        except AuditUnavailable:
            raise PkiError("unavailable", "the audit trail is unavailable") from None
        return Issued(cert, (ca.cert,))

    # --- revocation ------------------------------------------------------------------------
    async def revoke(self, serial: int | str, reason: str = "unspecified",
                     requester: str = "") -> None:
        s = normalise_serial(serial)
        if reason not in build.REASONS:
            raise PkiError("invalidRequest", f"reason must be one of "
                           f"{', '.join(build.REASONS)}")
        now = int(time.time())
        try:
            async with self.fast.transaction() as tx:
                changed = await db.revoke(tx, s, now, reason)
                if changed:
                    row = await db.certificate(tx, s)
                    await self.p.audit.record_in(
                        tx, "RevokeCertificate", user_identity=_identity(requester),
                        request_parameters={"serialNumber": s, "reason": reason},
                        resources=[{"type": "Bastion::PKI::Certificate",
                                    "ARN": f"{self._ca_arn(row.ca_id if row else '-')}"
                                           f"/certificate/{s}"}])
        except AuditUnavailable:
            raise PkiError("unavailable", "the audit trail is unavailable") from None
        if not changed:
            row = await db.certificate(self.fast, s)
            raise PkiError("notFound" if row is None else "alreadyRevoked",
                           "no certificate with this serial number" if row is None
                           else "the certificate is already revoked")
        self._status.pop(s, None)
        self._crls.clear()

    async def status(self, serial: int | str) -> str:
        """"good", "revoked" or "unknown" (not issued here, or expired)."""
        s = normalise_serial(serial)
        now = time.monotonic()
        hit = self._status.get(s)
        if hit is not None and hit[0] > now:
            return hit[1]
        row = await db.certificate(self.fast, s)
        answer = ("unknown" if row is None or row.not_after < time.time()
                  else "revoked" if row.revoked_at is not None else "good")
        if len(self._status) > 50_000:
            self._status.clear()
        self._status[s] = (now + STATUS_TTL, answer)
        return answer

    async def get(self, serial: int | str) -> db.CertificateRow:
        row = await db.certificate(self.fast, normalise_serial(serial))
        if row is None:
            raise PkiError("notFound", "no certificate with this serial number")
        return row

    async def list(self, *, include_expired: bool = False, profile: str | None = None,
                   limit: int = 1000) -> list[db.CertificateRow]:
        return await db.listing(self.fast, include_expired=include_expired,
                                now=int(time.time()), limit=limit, profile=profile)

    # --- publication --------------------------------------------------------------------------
    async def trust_bundle_pem(self) -> str:
        await self.ensure()
        now = time.time()
        return "".join(a.row.certificate for a in self._roots if a.row.not_after > now)

    async def chain_pem(self) -> str:
        return (await self.ensure()).row.certificate

    async def authority(self, ca_id: str) -> x509.Certificate | None:
        await self.ensure()
        a = self._by_id(ca_id)
        return a.cert if a is not None else None

    async def crl_der(self, ca_id: str | None = None) -> bytes:
        """The CRL of ``ca_id`` (default: the current intermediate), DER. A root's CRL
        lists no intermediates (rotation retires them by expiry, not revocation)."""
        current = await self.ensure()
        ca = current if ca_id is None else self._by_id(ca_id)
        if ca is None:
            raise PkiError("notFound", "no such certificate authority")
        now = int(time.time())
        # read every time: a revocation made by another process (a worker of the same
        # server, another instance, the CLI) is in the very next CRL
        revoked = [] if ca.row.kind == "root" else await db.revoked(self.fast, ca.id, now)
        hit = self._crls.get(ca.id)
        if hit is not None and hit[0] > time.monotonic() and hit[1] == revoked:
            return hit[2]
        async with self.fast.transaction() as tx:
            number = await db.next_crl_number(tx, ca.id)
        der = build.crl(ca.key, ca.cert, number, revoked, now, now + CRL_VALIDITY) \
            .public_bytes(serialization.Encoding.DER)
        self._crls[ca.id] = (time.monotonic() + CRL_TTL, revoked, der)
        return der

    async def ocsp_response(self, request_der: bytes) -> bytes:
        """An RFC 6960 response to one DER OCSPRequest, signed by the issuing CA itself."""
        try:
            req = ocsp.load_der_ocsp_request(request_der)
            serial = req.serial_number
            algorithm = req.hash_algorithm
            name_hash, key_hash = req.issuer_name_hash, req.issuer_key_hash
        except Exception:  # noqa: BLE001 - malformed, or several certificates in one request
            return ocsp.OCSPResponseBuilder.build_unsuccessful(
                ocsp.OCSPResponseStatus.MALFORMED_REQUEST).public_bytes(
                serialization.Encoding.DER)
        await self.ensure()
        issuer = next((a for a in self._intermediates
                       if _issuer_hashes(a.cert, algorithm) == (name_hash, key_hash)), None)
        if issuer is None:
            return ocsp.OCSPResponseBuilder.build_unsuccessful(
                ocsp.OCSPResponseStatus.UNAUTHORIZED).public_bytes(serialization.Encoding.DER)
        row = await db.certificate(self.fast, format(serial, "x"))
        now = int(time.time())
        if row is None or row.ca_id != issuer.id:
            status, rev_at, reason = ocsp.OCSPCertStatus.UNKNOWN, None, None
        elif row.revoked_at is not None:
            status = ocsp.OCSPCertStatus.REVOKED
            rev_at = dt.datetime.fromtimestamp(row.revoked_at, dt.UTC)
            flag = build.REASONS.get(row.revocation_reason or "unspecified")
            reason = None if flag is x509.ReasonFlags.unspecified else flag
        else:
            status, rev_at, reason = ocsp.OCSPCertStatus.GOOD, None, None
        this = dt.datetime.fromtimestamp(now, dt.UTC)
        builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
            issuer_name_hash=name_hash, issuer_key_hash=key_hash, serial_number=serial,
            algorithm=algorithm, cert_status=status, this_update=this,
            next_update=this + dt.timedelta(seconds=OCSP_VALIDITY),
            revocation_time=rev_at, revocation_reason=reason,
        ).responder_id(ocsp.OCSPResponderEncoding.HASH, issuer.cert)
        for ext in req.extensions:
            if isinstance(ext.value, x509.OCSPNonce):
                builder = builder.add_extension(ext.value, critical=False)
        return builder.sign(issuer.key, hashes.SHA384()).public_bytes(
            serialization.Encoding.DER)


def _issuer_hashes(issuer: x509.Certificate,
                   algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes] | None:
    """(issuerNameHash, issuerKeyHash) of ``issuer`` under ``algorithm`` (RFC 6960 §4.1.1):
    the hash of its subject's DER, and the key hash from cryptography's own CertID builder
    (given ``issuer`` as both arguments, it hashes the issuer's key bits)."""
    if not isinstance(algorithm, hashes.SHA1 | hashes.SHA224 | hashes.SHA256 | hashes.SHA384
                      | hashes.SHA512):
        return None
    req = ocsp.OCSPRequestBuilder().add_certificate(issuer, issuer, algorithm).build()
    h = hashes.Hash(algorithm)
    h.update(issuer.subject.public_bytes())
    return h.finalize(), req.issuer_key_hash
