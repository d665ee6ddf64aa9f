"""SQLAlchemy 2 models. Times are integer Unix seconds (UTC); secrets are stored only as
hashes (codes, refresh tokens, sessions, client secrets) or wrapped by the key-encryption key
(private keys, TOTP seeds). Schema changes go through Alembic (``store/migrations``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# 64-bit on PostgreSQL; on SQLite an INTEGER PRIMARY KEY is the rowid itself (no extra index)
Seq = BigInteger().with_variant(Integer, "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON}


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    name: Mapped[str | None] = mapped_column(String(256))
    email: Mapped[str | None] = mapped_column(String(256))
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    totp_secret: Mapped[bytes | None] = mapped_column(LargeBinary)  # wrapped by the KEK
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[int] = mapped_column(Integer)


class Group(Base):
    __tablename__ = "groups"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[int] = mapped_column(Integer)


class GroupMember(Base):
    __tablename__ = "group_members"
    group_id: Mapped[str] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"),
                                          primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True)


class Client(Base):
    __tablename__ = "clients"
    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    secret_hash: Mapped[str | None] = mapped_column(String(128))  # keyed SHA-256, hex
    auth_method: Mapped[str] = mapped_column(String(32))
    # False: registered without a method, either secret method is accepted (migration 0004)
    auth_method_pinned: Mapped[bool] = mapped_column(Boolean, default=True,
                                                     server_default=true())
    redirect_uris: Mapped[list[str]] = mapped_column(JSON, default=list)
    post_logout_redirect_uris: Mapped[list[str]] = mapped_column(JSON, default=list)
    grant_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)  # for client_credentials
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # for private_key_jwt
    created_at: Mapped[int] = mapped_column(Integer)
    # RFC 8705 §2.1.2: the one name a tls_client_auth client's certificate must carry,
    # {"san_uri": "spiffe://..."} (or subject_dn, san_dns, san_ip, san_email); migration 0009
    tls_client_auth: Mapped[dict[str, str] | None] = mapped_column(JSON)


class SigningKey(Base):
    __tablename__ = "signing_keys"
    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))  # next | active | retired
    private_key: Mapped[bytes] = mapped_column(LargeBinary)  # wrapped by the KEK
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(Integer)
    activated_at: Mapped[int | None] = mapped_column(Integer)
    retired_at: Mapped[int | None] = mapped_column(Integer)
    expires_at: Mapped[int | None] = mapped_column(Integer)  # drop from JWKS after this


class Session(Base):
    __tablename__ = "sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    sid: Mapped[str] = mapped_column(String(64), unique=True)  # public id (ID token "sid")
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    auth_time: Mapped[int] = mapped_column(Integer)
    amr: Mapped[list[str]] = mapped_column(JSON, default=list)
    expires_at: Mapped[int] = mapped_column(Integer, index=True)


class Consent(Base):
    __tablename__ = "consents"
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id", ondelete="CASCADE"),
                                           primary_key=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    granted_at: Mapped[int] = mapped_column(Integer)


class AuthorizationCode(Base):
    __tablename__ = "authorization_codes"
    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(64))
    sid: Mapped[str | None] = mapped_column(String(64))
    redirect_uri: Mapped[str] = mapped_column(String(2048))
    scope: Mapped[str] = mapped_column(String(1024))
    nonce: Mapped[str | None] = mapped_column(String(512))
    code_challenge: Mapped[str | None] = mapped_column(String(128))
    auth_time: Mapped[int] = mapped_column(Integer)
    amr: Mapped[list[str]] = mapped_column(JSON, default=list)
    expires_at: Mapped[int] = mapped_column(Integer, index=True)
    consumed_at: Mapped[int | None] = mapped_column(Integer)
    # what redeeming it issued, revoked if the code is replayed (RFC 6749 §4.1.2)
    family_id: Mapped[str | None] = mapped_column(String(64))


class TokenFamily(Base):
    """One grant: the tokens descending from one code (or one session's refresh chain)."""

    __tablename__ = "token_families"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str | None] = mapped_column(String(64))
    sid: Mapped[str | None] = mapped_column(String(64), index=True)
    scope: Mapped[str] = mapped_column(String(1024))
    auth_time: Mapped[int | None] = mapped_column(Integer)
    amr: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[int] = mapped_column(Integer, index=True)
    revoked_at: Mapped[int | None] = mapped_column(Integer)
    # RFC 8705 §4: a public client's refresh tokens, bound to its certificate (migration 0011)
    cnf_x5t: Mapped[str | None] = mapped_column(String(64))


class RefreshToken(Base):
    __tablename__ = "refresh_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[str] = mapped_column(ForeignKey("token_families.id", ondelete="CASCADE"),
                                           index=True)
    created_at: Mapped[int] = mapped_column(Integer)
    rotated_at: Mapped[int | None] = mapped_column(Integer)  # set when exchanged


class IssuedAccessToken(Base):
    """jti of access tokens issued inside a family, so revoking the family denies them."""

    __tablename__ = "issued_access_tokens"
    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[str] = mapped_column(ForeignKey("token_families.id", ondelete="CASCADE"),
                                           index=True)
    expires_at: Mapped[int] = mapped_column(Integer, index=True)


class RevokedToken(Base):
    """The jti denylist: revoked access tokens, kept until they would have expired."""

    __tablename__ = "revoked_tokens"
    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[int] = mapped_column(Integer, index=True)
    revoked_at: Mapped[int] = mapped_column(Integer, index=True)


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # user id, client ARN, or "<session arn>;act=<caller arn>" (orders.api.owner_key)
    owner: Mapped[str] = mapped_column(String(1024), index=True)
    item: Mapped[str] = mapped_column(String(200))
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price_cents: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[int] = mapped_column(Integer)
    # item, shipping_address, note as one envelope (bastion.orders.sealing); NULL: a row
    # from before sealing, whose item is in clear until its owner next reads it
    sealed: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


Index("ix_families_user", TokenFamily.user_id)


# --- IAM ------------------------------------------------------------------------------------
class IamPolicy(Base):
    """A managed policy: a named JSON document in the IAM grammar, validated at write time."""

    __tablename__ = "iam_policies"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    description: Mapped[str] = mapped_column(String(1000), default="")
    document: Mapped[str] = mapped_column(Text)  # the JSON text as given
    version: Mapped[int] = mapped_column(Integer, default=1)  # bumped on every update
    created_at: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[int] = mapped_column(Integer)


class IamRole(Base):
    __tablename__ = "iam_roles"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    description: Mapped[str] = mapped_column(String(1000), default="")
    trust_policy: Mapped[str] = mapped_column(Text)  # who may AssumeRole (JSON)
    max_session_duration: Mapped[int] = mapped_column(Integer, default=3600)
    created_at: Mapped[int] = mapped_column(Integer)


class IamPrincipal(Base):
    """Per-principal IAM settings: permission boundary and tags (``aws:PrincipalTag/*``).
    ``kind`` is user | group | role | client; ``name`` the user/group/role name or client id."""

    __tablename__ = "iam_principals"
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    boundary: Mapped[str | None] = mapped_column(
        ForeignKey("iam_policies.name", ondelete="RESTRICT"))
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class IamAttachment(Base):
    """A managed policy attached to a principal."""

    __tablename__ = "iam_attachments"
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    policy: Mapped[str] = mapped_column(ForeignKey("iam_policies.name", ondelete="RESTRICT"),
                                        primary_key=True, index=True)
    attached_at: Mapped[int] = mapped_column(Integer)


class IamInlinePolicy(Base):
    __tablename__ = "iam_inline_policies"
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    policy_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    document: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[int] = mapped_column(Integer)


class IamResourcePolicy(Base):
    """A resource-based policy (``Principal``/``NotPrincipal``) on a resource ARN."""

    __tablename__ = "iam_resource_policies"
    resource_arn: Mapped[str] = mapped_column(String(512), primary_key=True)
    document: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[int] = mapped_column(Integer)


class IamGeneration(Base):
    """One row; bumped by every IAM change so that every instance drops its compiled cache."""

    __tablename__ = "iam_generation"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(Integer)


# --- audit trail ----------------------------------------------------------------------------
class AuditEvent(Base):
    """One record of the append-only trail. ``body`` is the canonical JSON that is hashed;
    ``hash`` = SHA-256(0x00 || previous hash || body), the RFC 9162 leaf hash of the entry.
    The other columns are copies of body fields, for search only (verify never trusts them)."""

    __tablename__ = "audit_events"
    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=False)
    event_time: Mapped[int] = mapped_column(BigInteger, index=True)  # unix milliseconds
    event_name: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str | None] = mapped_column(String(512), index=True)
    resource: Mapped[str | None] = mapped_column(String(512))
    outcome: Mapped[str] = mapped_column(String(16))  # success | failure
    request_id: Mapped[str | None] = mapped_column(String(64), index=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    hash: Mapped[bytes] = mapped_column(LargeBinary)


class AuditCheckpoint(Base):
    """A signed tree head over the first ``tree_size`` records, chained to the previous one."""

    __tablename__ = "audit_checkpoints"
    tree_size: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=False)
    document: Mapped[str] = mapped_column(Text)  # the checkpoint as JSON (signed)
    created_at: Mapped[int] = mapped_column(Integer)


class AuditSigningKey(Base):
    __tablename__ = "audit_signing_keys"
    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    private_key: Mapped[bytes] = mapped_column(LargeBinary)  # wrapped by the KEK
    public_key: Mapped[bytes] = mapped_column(LargeBinary)  # raw Ed25519
    status: Mapped[str] = mapped_column(String(16))  # active | retired
    created_at: Mapped[int] = mapped_column(Integer)


class AuditArchive(Base):
    """A segment of the trail moved out to a file by retention. Records it covers may be
    deleted (the append-only triggers allow nothing else); the file stays verifiable. The row
    is append-only and signed by the audit notary key (``audit/archive.py``): verify trusts
    it only when the signature verifies. Rows written before migration 0003 have no
    signature and are trusted only when their segment file verifies."""

    __tablename__ = "audit_archives"
    last_seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=False)
    first_seq: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[bytes] = mapped_column(LargeBinary)
    path: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(String(64))  # of the archive file
    frontier: Mapped[str] = mapped_column(Text)  # JSON hex list: Merkle compact range at last_seq
    created_at: Mapped[int] = mapped_column(Integer)
    start_prev: Mapped[bytes | None] = mapped_column(LargeBinary)  # hash before first_seq
    checkpoints: Mapped[str | None] = mapped_column(Text)  # JSON [[tree_size, cp hash hex]]
    key_id: Mapped[str | None] = mapped_column(String(128))  # the notary key that signed
    signature: Mapped[bytes | None] = mapped_column(LargeBinary)  # Ed25519 over the statement


# --- KMS ------------------------------------------------------------------------------------
class KmsKey(Base):
    """A KMS key (``kms/service.py``). ``state``: Enabled | Disabled | PendingDeletion.
    Its material lives in ``kms_key_versions``, wrapped by the root keeper."""

    __tablename__ = "kms_keys"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # a UUID
    spec: Mapped[str] = mapped_column(String(32))
    usage: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(24))
    description: Mapped[str] = mapped_column(Text, default="")
    policy: Mapped[str] = mapped_column(Text)  # the key policy (IAM grammar), JSON text
    created_at: Mapped[int] = mapped_column(BigInteger)  # Unix milliseconds
    deletion_at: Mapped[int | None] = mapped_column(BigInteger)  # Unix ms, when pending
    pending_days: Mapped[int | None] = mapped_column(Integer)
    rotation_period: Mapped[int | None] = mapped_column(Integer)  # days; None: rotation off
    next_rotation_at: Mapped[int | None] = mapped_column(BigInteger)  # Unix ms
    current_version: Mapped[int] = mapped_column(Integer)


class KmsKeyVersion(Base):
    """One version of a key's material: new encryptions use the newest, every version keeps
    decrypting until the key is deleted. ``material`` is wrapped by ``keeper``."""

    __tablename__ = "kms_key_versions"
    key_id: Mapped[str] = mapped_column(ForeignKey("kms_keys.id", ondelete="CASCADE"),
                                        primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    keeper: Mapped[str] = mapped_column(String(16))  # file | pkcs11
    material: Mapped[bytes] = mapped_column(LargeBinary)
    public_key: Mapped[bytes | None] = mapped_column(LargeBinary)  # DER SPKI (asymmetric)
    rotation_type: Mapped[str | None] = mapped_column(String(16))  # AUTOMATIC | ON_DEMAND
    created_at: Mapped[int] = mapped_column(BigInteger)  # Unix ms


class KmsAlias(Base):
    __tablename__ = "kms_aliases"
    name: Mapped[str] = mapped_column(String(256), primary_key=True)  # alias/...
    key_id: Mapped[str] = mapped_column(ForeignKey("kms_keys.id", ondelete="CASCADE"),
                                        index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class KmsTag(Base):
    __tablename__ = "kms_tags"
    key_id: Mapped[str] = mapped_column(ForeignKey("kms_keys.id", ondelete="CASCADE"),
                                        primary_key=True)
    tag_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    tag_value: Mapped[str] = mapped_column(String(256))


# --- access keys (SigV4) --------------------------------------------------------------------
class AccessKey(Base):
    """An IAM access key pair. ``owner_kind`` is user | client | role; ``owner_id`` the user
    id, client id or role name. The secret is wrapped by the KEK (SigV4 needs it for the
    HMAC); temporary keys (ASIA, role sessions) carry ``expires_at`` and the SHA-256 of their
    session token, with the session's details in ``session``."""

    __tablename__ = "access_keys"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)  # the AccessKeyId
    owner_kind: Mapped[str] = mapped_column(String(16))
    owner_id: Mapped[str] = mapped_column(String(128))
    secret: Mapped[bytes] = mapped_column(LargeBinary)  # wrapped by the KEK
    status: Mapped[str] = mapped_column(String(16))  # Active | Inactive
    created_at: Mapped[int] = mapped_column(Integer)
    last_used_at: Mapped[int | None] = mapped_column(Integer)
    last_used_service: Mapped[str | None] = mapped_column(String(64))
    last_used_region: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[int | None] = mapped_column(Integer, index=True)
    session_token_hash: Mapped[str | None] = mapped_column(String(64))  # hex SHA-256
    session: Mapped[dict[str, Any] | None] = mapped_column(JSON)


Index("ix_access_keys_owner", AccessKey.owner_kind, AccessKey.owner_id)


class KmsGrant(Base):
    """A grant (AWS KMS "Grants in AWS KMS"): lets ``grantee`` run ``operations`` (a JSON
    list) on the key, optionally only with an encryption context that equals or contains
    ``constraints`` (JSON ``{"EncryptionContextEquals"|"EncryptionContextSubset": {...}}``)."""

    __tablename__ = "kms_grants"
    grant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("kms_keys.id", ondelete="CASCADE"),
                                        index=True)
    name: Mapped[str | None] = mapped_column(String(256))
    grantee: Mapped[str] = mapped_column(String(256))
    retiring: Mapped[str | None] = mapped_column(String(256))
    operations: Mapped[str] = mapped_column(Text)
    constraints: Mapped[str | None] = mapped_column(Text)
    issuer: Mapped[str] = mapped_column(String(256))  # the principal that created it
    created_at: Mapped[int] = mapped_column(BigInteger)


class KmsRootWrapping(Base):
    """Key material wrapped by another root keeper than the one in ``kms_key_versions``:
    during ``bastion kms migrate-root`` the new wrappings are staged here, and after the
    switch the old ones wait here until dropped, so either root decrypts everything at any
    point of a crash (kms/migrate.py)."""

    __tablename__ = "kms_root_wrappings"
    key_id: Mapped[str] = mapped_column(ForeignKey("kms_keys.id", ondelete="CASCADE"),
                                        primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    keeper: Mapped[str] = mapped_column(String(16), primary_key=True)  # file | pkcs11
    material: Mapped[bytes] = mapped_column(LargeBinary)


# --- the internal CA (pki/, migration 0008): authorities' keys are KMS keys (key_id) ---
class PkiAuthority(Base):
    """A root or intermediate CA: its certificate (PEM) and the KMS key holding its private
    key; ``generation`` counts rotations per kind; ``crl_number`` the last CRL's number."""

    __tablename__ = "pki_authorities"
    __table_args__ = (UniqueConstraint("kind", "generation",
                                       name="uq_pki_authorities_kind_generation"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # root | intermediate
    generation: Mapped[int] = mapped_column(Integer)
    parent_id: Mapped[str | None] = mapped_column(String(32))
    key_id: Mapped[str] = mapped_column(String(64))
    certificate: Mapped[str] = mapped_column(Text)
    not_before: Mapped[int] = mapped_column(BigInteger)
    not_after: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    crl_number: Mapped[int] = mapped_column(BigInteger)
    base_url: Mapped[str] = mapped_column(String(2048))  # where its CRL and OCSP are served


class PkiCertificate(Base):
    """A certificate the CA issued (serial in lower-case hex); revocation in place."""

    __tablename__ = "pki_certificates"
    __table_args__ = (Index("ix_pki_certificates_ca_revoked", "ca_id", "revoked_at"),
                      Index("ix_pki_certificates_not_after", "not_after"))
    serial: Mapped[str] = mapped_column(String(64), primary_key=True)
    ca_id: Mapped[str] = mapped_column(String(32))
    profile: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(255))
    names: Mapped[str] = mapped_column(Text)  # JSON list of the SAN values
    spiffe_id: Mapped[str | None] = mapped_column(String(2048))
    not_before: Mapped[int] = mapped_column(BigInteger)
    not_after: Mapped[int] = mapped_column(BigInteger)
    certificate: Mapped[str] = mapped_column(Text)
    requester: Mapped[str] = mapped_column(String(512))
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)
    revocation_reason: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[int] = mapped_column(BigInteger)


# --- ACME (acme/, migration 0009): orders and authorizations keep their details as JSON in
# ``body``; the columns are what is looked up or swept ---
class AcmeAccount(Base):
    """An ACME account (RFC 8555 §7.1.2): its key as a JWK, found by RFC 7638 thumbprint;
    ``policy`` an IAM policy of the identifiers it may order (acme/policy.py)."""

    __tablename__ = "acme_accounts"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    thumbprint: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    jwk: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # valid | deactivated | revoked
    contact: Mapped[str] = mapped_column(Text)  # JSON list
    eab_kid: Mapped[str | None] = mapped_column(String(64))
    policy: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)


class AcmeOrder(Base):
    __tablename__ = "acme_orders"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[int] = mapped_column(BigInteger)
    body: Mapped[str] = mapped_column(Text)


class AcmeAuthz(Base):
    __tablename__ = "acme_authzs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(32))
    order_id: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[int] = mapped_column(BigInteger)
    body: Mapped[str] = mapped_column(Text)


class AcmeCertificate(Base):
    """A certificate issued through ACME; ``cert_id`` its RFC 9773 identifier."""

    __tablename__ = "acme_certificates"
    serial: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(32))
    order_id: Mapped[str] = mapped_column(String(32))
    cert_id: Mapped[str] = mapped_column(String(255), index=True)
    chain: Mapped[str] = mapped_column(Text)
    not_before: Mapped[int] = mapped_column(BigInteger)
    not_after: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)


class AcmeEabKey(Base):
    """An external account binding key (§7.3.4): the HMAC key wrapped by the KEK, the
    identifier policy its account gets, the account that used it (once)."""

    __tablename__ = "acme_eab_keys"
    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    mac_key: Mapped[bytes] = mapped_column(LargeBinary)
    policy: Mapped[str | None] = mapped_column(Text)
    account_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[int] = mapped_column(BigInteger)
