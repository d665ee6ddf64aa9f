"""The catalogue of audit event names, each with its CloudTrail-style source and its OCSF class.

Naming follows CloudTrail: ``eventName`` is the action (a verb and an object, as the API names
it: ``CreateUser``, ``AssumeRole``, ``Login``), and the outcome is not part of the name: a
failed or refused action is the same event with ``errorCode`` set (``Login`` with
``InvalidCredentials`` or ``Throttled``; ``GrantConsent`` with ``ConsentDenied``). Events that
report something the service noticed rather than an action somebody asked for are named for
what was noticed (``RefreshTokenReuseDetected``) and have ``eventType`` ``ServiceEvent``.

OCSF classes target OCSF 1.3.0 (https://schema.ocsf.io/1.3.0/), using only classes and
activities that exist there; ``docs/audit.md`` has the table and the reasons.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

OCSF_VERSION = "1.3.0"

CATEGORIES = ("authentication", "token", "iam", "data", "edge", "kms", "pki", "admin")
EVENT_TYPES = ("ApiCall", "ServiceEvent", "SignIn")


@dataclass(frozen=True)
class OcsfClass:
    uid: int
    name: str
    category_uid: int
    activities: Mapping[int, str]  # besides 0 Unknown and 99 Other, which every class has


OCSF_CATEGORIES: Mapping[int, str] = MappingProxyType({
    2: "Findings", 3: "Identity & Access Management", 4: "Network Activity",
    6: "Application Activity"})

_CRUD = {1: "Create", 2: "Read", 3: "Update", 4: "Delete"}
OCSF_CLASSES: Mapping[int, OcsfClass] = MappingProxyType({c.uid: c for c in (
    OcsfClass(2004, "Detection Finding", 2, {1: "Create", 2: "Update", 3: "Close"}),
    OcsfClass(3001, "Account Change", 3, {
        1: "Create", 2: "Enable", 3: "Password Change", 4: "Password Reset", 5: "Disable",
        6: "Delete", 7: "Attach Policy", 8: "Detach Policy", 9: "Lock",
        10: "MFA Factor Enable", 11: "MFA Factor Disable"}),
    OcsfClass(3002, "Authentication", 3, {
        1: "Logon", 2: "Logoff", 3: "Authentication Ticket", 4: "Service Ticket Request",
        5: "Service Ticket Renew"}),
    OcsfClass(3003, "Authorize Session", 3, {1: "Assign Privileges", 2: "Assign Groups"}),
    OcsfClass(3004, "Entity Management", 3, _CRUD),
    OcsfClass(3006, "Group Management", 3, {
        1: "Assign Privileges", 2: "Revoke Privileges", 3: "Add User", 4: "Remove User"}),
    OcsfClass(4002, "HTTP Activity", 4, {
        1: "Connect", 2: "Delete", 3: "Get", 4: "Head", 5: "Options", 6: "Post", 7: "Put",
        8: "Trace"}),
    OcsfClass(6003, "API Activity", 6, _CRUD),
    OcsfClass(6004, "Web Resource Access Activity", 6, {
        1: "Access Grant", 2: "Access Deny", 3: "Access Revoke", 4: "Access Error"}),
    OcsfClass(6005, "Datastore Activity", 6, {
        1: "Read", 2: "Update", 3: "Connect", 4: "Query", 5: "Write", 6: "Create",
        7: "Delete", 8: "List", 9: "Encrypt", 10: "Decrypt"}),
)})
OTHER = 99  # OCSF: the activity is named by ``activity_name`` (here the event name)


def activity_name(class_uid: int, activity_id: int, event_name: str) -> str:
    if activity_id == 0:
        return "Unknown"
    if activity_id == OTHER:
        return event_name
    return OCSF_CLASSES[class_uid].activities[activity_id]


@dataclass(frozen=True)
class EventType:
    name: str  # CloudTrail eventName
    source: str  # CloudTrail eventSource
    read_only: bool
    ocsf_class_uid: int
    ocsf_activity_id: int  # the default; HTTP and SQL events refine it per record
    category: str  # one of CATEGORIES
    event_type: str = "ApiCall"  # CloudTrail eventType: ApiCall | ServiceEvent | SignIn
    severity_id: int = 1  # OCSF severity when it succeeds: 1 Informational .. 5 Critical

    @property
    def event_category(self) -> str:
        """CloudTrail eventCategory: data-plane events are ``Data``, the rest ``Management``."""
        return "Data" if self.category == "data" else "Management"


_events: dict[str, EventType] = {}


def _add(source: str, category: str, cls: int, *specs: tuple[str, int], read_only: bool = False,
         event_type: str = "ApiCall", severity_id: int = 1) -> None:
    for name, activity in specs:
        if name in _events:
            raise ValueError(f"duplicate event name {name}")
        _events[name] = EventType(name, f"{source}.bastion", read_only, cls, activity, category,
                                  event_type, severity_id)


# Identity provider: sign-in and the user's own credentials.
_add("idp", "authentication", 3002, ("Login", 1), ("VerifyMfa", 1), event_type="SignIn")
_add("idp", "authentication", 3002, ("Logout", 2), event_type="SignIn")
_add("idp", "authentication", 3001, ("AccountLocked", 9), event_type="ServiceEvent",
     severity_id=3)
_add("idp", "authentication", 3001, ("ChangePassword", 3), ("ResetPassword", 4),
     ("EnableMfa", 10), ("DisableMfa", 11), ("UnlockUser", 2))
_add("idp", "authentication", 3003, ("GrantConsent", 1))
_add("idp", "authentication", 6003, ("RevokeConsent", 4))
_add("idp", "token", 6003, ("Authorize", 1))
_add("idp", "token", 6003, ("GetUserInfo", 2), read_only=True)

# Token service: OAuth token endpoint, revocation, introspection, role sessions.
_add("sts", "token", 6003, ("IssueToken", 1), ("RefreshToken", 1), ("RevokeToken", 4))
_add("sts", "token", 6003, ("IntrospectToken", 2), read_only=True)
_add("sts", "token", 2004, ("RefreshTokenReuseDetected", 1), ("CodeReplayDetected", 1),
     event_type="ServiceEvent", severity_id=4)
_add("sts", "iam", 3003, ("AssumeRole", 1))

# IAM: users, groups, roles, clients, policies. Events for every principal kind, as the
# admin API names them (Attach{Kind}Policy, Put{Kind}PermissionsBoundary, Tag{Kind}...).
_add("iam", "iam", 3001, ("CreateUser", 1), ("UpdateUser", OTHER), ("DeleteUser", 6),
     ("EnableUser", 2), ("DisableUser", 5), ("CreateRole", 1), ("UpdateRole", OTHER),
     ("DeleteRole", 6), ("UpdateAssumeRolePolicy", 7))
_add("iam", "iam", 3004, ("CreateGroup", 1), ("UpdateGroup", 3), ("DeleteGroup", 4),
     ("CreateClient", 1), ("UpdateClient", 3), ("DeleteClient", 4), ("RotateClientSecret", 3),
     ("CreatePolicy", 1), ("DeletePolicy", 4), ("CreatePolicyVersion", 3),
     ("DeletePolicyVersion", 3), ("SetDefaultPolicyVersion", 3), ("PutResourcePolicy", 3),
     ("DeleteResourcePolicy", 3))
_add("iam", "iam", 3004, ("GetUser", 2), ("ListUsers", 2), ("GetRole", 2), ("ListRoles", 2),
     ("GetPolicy", 2), ("ListPolicies", 2), read_only=True)
_add("iam", "iam", 3006, ("AddUserToGroup", 3), ("RemoveUserFromGroup", 4))
# access keys (identity/access_keys.py): CloudTrail's names; UpdateAccessKey (de)activates
_add("iam", "iam", 3001, ("CreateAccessKey", 1), ("UpdateAccessKey", OTHER),
     ("DeleteAccessKey", 6))
for _kind in ("User", "Role", "Client"):  # principals: OCSF Account Change
    _add("iam", "iam", 3001, (f"Attach{_kind}Policy", 7), (f"Detach{_kind}Policy", 8),
         (f"Put{_kind}Policy", 7), (f"Delete{_kind}Policy", 8),
         (f"Put{_kind}PermissionsBoundary", 7), (f"Delete{_kind}PermissionsBoundary", 8))
    _add("iam", "iam", 3004, (f"Tag{_kind}", 3))
_add("iam", "iam", 3006, ("AttachGroupPolicy", 1), ("DetachGroupPolicy", 2),
     ("PutGroupPolicy", 1), ("DeleteGroupPolicy", 2), ("PutGroupPermissionsBoundary", 1),
     ("DeleteGroupPermissionsBoundary", 2))
_add("iam", "iam", 3004, ("TagGroup", 3))

# Edge: authorization denials, WAF, rate limits, the under-attack challenge.
_add("edge", "edge", 6004, ("AccessDenied", 2), event_type="ServiceEvent", severity_id=2)
_add("edge", "edge", 3002, ("Authenticate", 1), event_type="ServiceEvent", severity_id=2)
_add("edge", "edge", 4002, ("WafBlock", OTHER), event_type="ServiceEvent", severity_id=3)
# a request the WAF would refuse, passed in detect mode (edge/waf/middleware.py)
_add("edge", "edge", 4002, ("WafMatch", OTHER), event_type="ServiceEvent", severity_id=2)
_add("edge", "edge", 4002, ("RateLimitExceeded", OTHER), ("UnderAttackChallenge", OTHER),
     event_type="ServiceEvent", severity_id=2)
# a request the reverse proxy forwarded after IAM allowed it (edge/proxy.py)
_add("edge", "edge", 6004, ("ProxyRequest", 1))
_add("edge", "edge", 4002, ("LoadShed", OTHER), ("ConnectionRefused", OTHER),
     event_type="ServiceEvent", severity_id=2)  # flood protection (edge/counters.py)

# KMS: key management changes keys; cryptographic operations read them (CloudTrail marks
# Encrypt/Decrypt/GenerateDataKey read-only too).
_add("kms", "kms", 6003, ("CreateKey", 1), ("EnableKey", 3), ("DisableKey", 3),
     ("CancelKeyDeletion", 3), ("RotateKeyOnDemand", 3), ("CreateAlias", 1),
     ("DeleteAlias", 4))
_add("kms", "kms", 6003, ("ScheduleKeyDeletion", 3), severity_id=2)
_add("kms", "kms", 6003, ("DescribeKey", 2), ("ListKeys", 2), ("GetPublicKey", 2),
     ("GenerateDataKey", 1), ("GenerateDataKeyWithoutPlaintext", 1), ("Encrypt", OTHER),
     ("Decrypt", OTHER), ("ReEncrypt", OTHER), ("Sign", OTHER), ("Verify", OTHER),
     read_only=True)
_add("kms", "kms", 6003, ("UpdateKeyDescription", 3), ("PutKeyPolicy", 3), ("UpdateAlias", 3),
     ("TagResource", 3), ("UntagResource", 3), ("EnableKeyRotation", 3),
     ("DisableKeyRotation", 3))
_add("kms", "kms", 6003, ("GetKeyPolicy", 2), ("ListKeyPolicies", 2), ("ListAliases", 2),
     ("ListResourceTags", 2), ("GetKeyRotationStatus", 2), ("ListKeyRotations", 2),
     ("GenerateDataKeyPair", 1), ("GenerateDataKeyPairWithoutPlaintext", 1),
     ("GenerateRandom", OTHER), ("GenerateMac", OTHER), ("VerifyMac", OTHER), read_only=True)
_add("kms", "kms", 6003, ("CreateGrant", 1), ("RetireGrant", 4), ("RevokeGrant", 4))
_add("kms", "kms", 6003, ("ListGrants", 2), ("ListRetirableGrants", 2), read_only=True)
# what KMS housekeeping does on its own (a deletion completing, an automatic rotation)
_add("kms", "kms", 6003, ("DeleteKey", 4), severity_id=2, event_type="ServiceEvent")
_add("kms", "kms", 6003, ("RotateKey", 3), event_type="ServiceEvent")
# a signed KMS request naming no operation the KMS has (kms/api.py); the root key moving to
# another keeper (kms/migrate.py: at its start and its end, or with errorCode when it fails)
_add("kms", "kms", 6003, ("UnknownOperation", OTHER), severity_id=2)
_add("kms", "kms", 6003, ("MigrateRoot", 3), severity_id=3)
# Bastion's own secrets still wrapped by the KEK moved under alias/bastion/secrets, once, at
# start (kms/secrets.py: counts per table, never a secret)
_add("kms", "kms", 6003, ("RewrapLegacySecrets", 3), event_type="ServiceEvent", severity_id=2)

# PKI.
_add("pki", "pki", 6003, ("CreateCertificateAuthority", 1), ("IssueCertificate", 1),
     ("RevokeCertificate", 3))
_add("pki", "pki", 6003, ("GetCertificate", 2), read_only=True)

# ACME (acme/): accounts, orders, challenge validations, issuance and revocation through
# RFC 8555; refusals (a rejected identifier, a bad CSR, a JWS that does not verify) are the
# same events with errorCode set to the ACME error type.
_add("acme", "pki", 3001, ("CreateAcmeAccount", 1), ("UpdateAcmeAccount", OTHER),
     ("DeactivateAcmeAccount", 5), ("ChangeAcmeAccountKey", 3),
     ("CreateAcmeExternalAccountKey", 1))
_add("acme", "pki", 6003, ("CreateAcmeOrder", 1), ("ValidateAcmeChallenge", 3),
     ("FinalizeAcmeOrder", 1), ("RevokeAcmeCertificate", 3), ("DeactivateAcmeAuthorization", 3))
_add("acme", "pki", 3002, ("AcmeAuthenticate", 1), event_type="ServiceEvent", severity_id=2)

# Administration of Bastion itself, including its audit trail.
_add("admin", "admin", 6003, ("RotateSigningKey", 3), ("UpdateConfiguration", 3),
     ("ArchiveAuditLog", 3))
_add("admin", "admin", 6003, ("CreateAuditCheckpoint", 1), event_type="ServiceEvent")
_add("admin", "admin", 6003, ("VerifyAuditLog", 2), ("ExportAuditLog", 2), read_only=True)

# Orders (the sample resource API) and pgaudit-like statements under it.
_add("orders", "data", 6003, ("ListOrders", 2), ("GetOrder", 2), read_only=True)
_add("orders", "data", 6003, ("CreateOrder", 1))
_add("db", "data", 6005, ("SqlStatement", 4))

EVENTS: Mapping[str, EventType] = MappingProxyType(_events)

# errorCode values the services use for outcomes that are part of an event, not a failure of
# the service (CloudTrail puts them in errorCode too).
INVALID_CREDENTIALS = "InvalidCredentials"
THROTTLED = "Throttled"
INVALID_MFA_CODE = "InvalidMfaCode"
CONSENT_DENIED = "ConsentDenied"
ACCESS_DENIED = "AccessDenied"

# SQL command (pgaudit's "command") -> OCSF Datastore Activity; HTTP method -> HTTP Activity.
SQL_ACTIVITIES: Mapping[str, int] = MappingProxyType({
    "SELECT": 4, "INSERT": 6, "UPDATE": 2, "DELETE": 7, "TRUNCATE": 7, "COPY": 1,
    "MERGE": 5, "CONNECT": 3})
HTTP_ACTIVITIES: Mapping[str, int] = MappingProxyType({
    "CONNECT": 1, "DELETE": 2, "GET": 3, "HEAD": 4, "OPTIONS": 5, "POST": 6, "PUT": 7,
    "TRACE": 8})


def event_type(name: str) -> EventType:
    """The catalogue entry for ``name``; ValueError for a name not in the catalogue."""
    try:
        return EVENTS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown audit event name: {name!r}") from None
