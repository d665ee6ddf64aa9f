"""The event catalogue: every layer's names are there, consistent, and mapped to a real OCSF
class and activity."""

from __future__ import annotations

import pytest

from bastion.audit.events import (
    CATEGORIES,
    EVENT_TYPES,
    EVENTS,
    OCSF_CATEGORIES,
    OCSF_CLASSES,
    OTHER,
    EventType,
    activity_name,
    event_type,
)

# Every layer, including ones not built yet (CloudTrail scheme: outcomes go in errorCode, so
# LoginFailed is Login + errorCode, ConsentDenied is GrantConsent + errorCode ConsentDenied).
REQUIRED = {
    "idp.bastion": ["Login", "VerifyMfa", "Logout", "GrantConsent", "AccountLocked",
                    "ChangePassword", "EnableMfa", "DisableMfa"],
    "sts.bastion": ["IssueToken", "RefreshToken", "RevokeToken", "IntrospectToken",
                    "RefreshTokenReuseDetected", "CodeReplayDetected", "AssumeRole"],
    "iam.bastion": ["CreateUser", "UpdateUser", "DeleteUser", "CreateGroup", "AddUserToGroup",
                    "RemoveUserFromGroup", "CreateClient", "UpdateClient", "DeleteClient",
                    "CreatePolicy", "DeletePolicy", "CreatePolicyVersion", "AttachUserPolicy",
                    "DetachUserPolicy", "AttachRolePolicy", "AttachGroupPolicy",
                    "PutUserPolicy", "PutRolePolicy", "PutUserPermissionsBoundary",
                    "CreateRole", "DeleteRole", "UpdateAssumeRolePolicy", "PutResourcePolicy"],
    "edge.bastion": ["AccessDenied", "WafBlock", "RateLimitExceeded", "UnderAttackChallenge"],
    "kms.bastion": ["Encrypt", "Decrypt", "GenerateDataKey", "CreateKey",
                    "ScheduleKeyDeletion", "DisableKey"],
    "pki.bastion": ["IssueCertificate", "RevokeCertificate"],
    "admin.bastion": ["RotateSigningKey", "CreateAuditCheckpoint"],
    "orders.bastion": ["ListOrders", "GetOrder", "CreateOrder"],
    "db.bastion": ["SqlStatement"],
}


@pytest.mark.parametrize(("source", "name"),
                         [(s, n) for s, names in REQUIRED.items() for n in names],
                         ids=lambda v: v)
def test_layer_events_exist(source: str, name: str) -> None:
    assert EVENTS[name].source == source


@pytest.mark.parametrize("kind", ["User", "Group", "Role", "Client"])
@pytest.mark.parametrize("verb", ["Attach{}Policy", "Detach{}Policy", "Put{}Policy",
                                  "Delete{}Policy", "Put{}PermissionsBoundary",
                                  "Delete{}PermissionsBoundary", "Tag{}"])
def test_iam_admin_names_for_every_principal_kind(verb: str, kind: str) -> None:
    """The IAM admin API emits f"Attach{Kind}Policy" etc. for every principal kind."""
    assert verb.format(kind) in EVENTS


@pytest.mark.parametrize("et", list(EVENTS.values()), ids=lambda e: e.name)
def test_entry_is_consistent(et: EventType) -> None:
    assert EVENTS[et.name] is et
    assert et.name.isidentifier() and et.name[0].isupper()
    assert et.source.endswith(".bastion")
    assert et.category in CATEGORIES
    assert et.event_type in EVENT_TYPES
    assert 1 <= et.severity_id <= 5
    cls = OCSF_CLASSES[et.ocsf_class_uid]
    assert cls.category_uid == et.ocsf_class_uid // 1000
    assert cls.category_uid in OCSF_CATEGORIES
    assert et.ocsf_activity_id in cls.activities or et.ocsf_activity_id == OTHER
    assert activity_name(et.ocsf_class_uid, et.ocsf_activity_id, et.name)
    if et.name.startswith(("Get", "List", "Describe", "Introspect")):
        assert et.read_only
    if et.name.startswith(("Create", "Delete", "Put", "Attach", "Detach", "Update")):
        assert not et.read_only
    assert et.event_category == ("Data" if et.category == "data" else "Management")


def test_detections_are_findings() -> None:
    for name in ("RefreshTokenReuseDetected", "CodeReplayDetected"):
        et = EVENTS[name]
        assert (et.ocsf_class_uid, et.event_type, et.severity_id) == (2004, "ServiceEvent", 4)


@pytest.mark.parametrize("name", ["LoginFailed", "login", "", "Login ", None, ["Login"]],
                         ids=repr)
def test_unknown_names_are_refused(name: object) -> None:
    with pytest.raises(ValueError):
        event_type(name)  # type: ignore[arg-type]


def test_activity_names() -> None:
    assert activity_name(3002, 1, "Login") == "Logon"
    assert activity_name(6003, OTHER, "Decrypt") == "Decrypt"
    assert activity_name(6003, 0, "X") == "Unknown"
