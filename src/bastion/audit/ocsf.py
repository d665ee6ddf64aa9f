"""OCSF 1.3.0 export of audit records (https://schema.ocsf.io/1.3.0/): ``to_ocsf`` maps a
record to an event of its catalogue class (``events.py``); docs/audit.md gives the mapping."""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from bastion.audit.events import (
    EVENTS,
    HTTP_ACTIVITIES,
    OCSF_CATEGORIES,
    OCSF_CLASSES,
    OCSF_VERSION,
    OTHER,
    SQL_ACTIVITIES,
    EventType,
    activity_name,
)

# OCSF user type_id: 1 User, 2 Admin, 3 System; the userIdentity types records carry too
_USER_TYPES = {"User": 1, "IAMUser": 1, "Admin": 2, "LocalOperator": 2, "System": 3,
               "Bastion": 3}
_STATUS = {1: "Success", 2: "Failure"}
_SEVERITY = {0: "Unknown", 1: "Informational", 2: "Low", 3: "Medium", 4: "High",
             5: "Critical", 6: "Fatal"}
_TARGET_KEYS = ("userName", "roleName", "clientName", "clientId", "groupName")


@functools.lru_cache(maxsize=1)
def _product_version() -> str | None:
    try:
        return metadata.version("bastion")
    except metadata.PackageNotFoundError:
        return None


def _get(record: Mapping[str, Any], key: str) -> Any:
    try:
        return record.get(key)
    except Exception:
        return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _ms(event_time: object) -> int:
    if not isinstance(event_time, str):
        return 0
    try:
        when = dt.datetime.fromisoformat(event_time.replace("Z", "+00:00"))
    except ValueError:
        return 0
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(round(when.timestamp() * 1000))


def _user(ident: Mapping[str, Any]) -> dict[str, Any]:
    kind = _text(ident.get("type")) or "Unknown"
    user: dict[str, Any] = {"type": kind, "type_id": _USER_TYPES.get(kind, 99 if kind !=
                                                                     "Unknown" else 0)}
    name = _text(ident.get("userName")) or _text(ident.get("clientId")) \
        or _text(ident.get("sessionName"))
    uid = _text(ident.get("principalId")) or _text(ident.get("arn"))
    if name:
        user["name"] = name
    if uid:
        user["uid"] = uid
    if _text(ident.get("arn")) and ident.get("arn") != uid:
        user["uid_alt"] = ident["arn"]
    if _text(ident.get("accountId")):
        user["account"] = {"uid": ident["accountId"], "type_id": 99, "type": "Bastion"}
    return user


def _activity(et: EventType | None, record: Mapping[str, Any]) -> int:
    if et is None:
        return OTHER
    params = _dict(_get(record, "requestParameters"))
    if et.ocsf_class_uid == 6005:
        command = _text(params.get("command")) or _text(params.get("class")) or ""
        return SQL_ACTIVITIES.get(command.upper(), et.ocsf_activity_id)
    if et.ocsf_class_uid == 4002:
        method = _text(params.get("method")) or _text(params.get("httpMethod")) or ""
        return HTTP_ACTIVITIES.get(method.upper(), et.ocsf_activity_id)
    return et.ocsf_activity_id


def _resource_list(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    resources = _get(record, "resources")
    for res in resources if isinstance(resources, list) else []:
        res = _dict(res)
        item = {k: v for k, v in (("uid", _text(res.get("ARN"))),
                                  ("type", _text(res.get("type")))) if v}
        if item:
            out.append(item)
    return out


def to_ocsf(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record as an OCSF 1.3.0 event of its catalogue class. Never raises on a record
    read back from storage; an unknown eventName maps to API Activity / Other."""
    name = _text(_get(record, "eventName")) or "Unknown"
    et = EVENTS.get(name)
    class_uid = et.ocsf_class_uid if et else 6003
    cls = OCSF_CLASSES[class_uid]
    activity_id = _activity(et, record)
    error_code = _text(_get(record, "errorCode"))
    status_id = 2 if error_code else 1
    severity_id = et.severity_id if et else 1
    if error_code and severity_id < 2:
        severity_id = 2
    ident = _dict(_get(record, "userIdentity"))
    params = _dict(_get(record, "requestParameters"))
    request_id = _text(_get(record, "requestID"))
    event_id = _text(_get(record, "eventID"))
    source = _text(_get(record, "eventSource")) or "unknown"
    actor_user = _user(ident)
    act_name = activity_name(class_uid, activity_id, name)
    product: dict[str, Any] = {"name": "Bastion", "vendor_name": "Bastion"}
    if _product_version():
        product["version"] = _product_version()
    metadata_: dict[str, Any] = {"version": OCSF_VERSION, "product": product,
                                 "log_name": "audit", "event_code": name,
                                 "profiles": ["cloud"]}
    if event_id:
        metadata_["uid"] = event_id
    if request_id:
        metadata_["correlation_uid"] = request_id
    if _text(_get(record, "eventTime")):
        metadata_["original_time"] = record["eventTime"]
    api: dict[str, Any] = {"operation": name, "service": {"name": source}}
    if request_id:
        api["request"] = {"uid": request_id}
    if error_code:
        api["response"] = {"error": error_code}
        if _text(_get(record, "errorMessage")):
            api["response"]["error_message"] = record["errorMessage"]
    event: dict[str, Any] = {
        "class_uid": class_uid, "class_name": cls.name,
        "category_uid": cls.category_uid, "category_name": OCSF_CATEGORIES[cls.category_uid],
        "activity_id": activity_id, "activity_name": act_name,
        "type_uid": class_uid * 100 + activity_id, "type_name": f"{cls.name}: {act_name}",
        "time": _ms(_get(record, "eventTime")),
        "severity_id": severity_id, "severity": _SEVERITY[severity_id],
        "status_id": status_id, "status": _STATUS[status_id],
        "message": f"{name} failed: {error_code}" if error_code else f"{name} succeeded",
        "metadata": metadata_, "cloud": {"provider": "Bastion"}, "api": api,
        "actor": {"user": actor_user},
    }
    if error_code:
        event["status_code"] = error_code
        if _text(_get(record, "errorMessage")):
            event["status_detail"] = record["errorMessage"]
    if ident.get("type") == "Client" and _text(ident.get("clientId")):
        event["actor"]["app_uid"] = ident["clientId"]
    src = _text(_get(record, "sourceIPAddress"))
    if src:
        try:
            event["src_endpoint"] = {"ip": str(ipaddress.ip_address(src))}
        except ValueError:
            event["src_endpoint"] = {"svc_name": src}
    http: dict[str, Any] = {}
    if _text(_get(record, "userAgent")):
        http["user_agent"] = record["userAgent"]
    if request_id:
        http["uid"] = request_id
    for key in ("method", "httpMethod"):
        if _text(params.get(key)):
            http["http_method"] = params[key].upper()
    path = _text(params.get("path")) or _text(params.get("url"))
    if path:
        http["url"] = {"path": path} if path.startswith("/") else {"url_string": path}
    if http:
        event["http_request"] = http
    resources = _resource_list(record)
    if resources:
        event["resources"] = resources
    _class_specific(event, class_uid, name, record, ident, params, resources)
    event["unmapped"] = {k: record[k] for k in (
        "eventVersion", "eventType", "eventCategory", "readOnly", "userIdentity",
        "sourceIPAddress", "requestParameters", "responseElements", "additionalEventData",
        "resources") if _get(record, k) not in (None, [], {})}
    return event


def _target_user(ident: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    for key in _TARGET_KEYS:
        if _text(params.get(key)):
            kind = "Role" if key == "roleName" else "Client" if key.startswith("client") \
                else "User"
            return {"name": params[key], "type": kind, "type_id": _USER_TYPES.get(kind, 99)}
    return _user(ident)


def _class_specific(event: dict[str, Any], class_uid: int, name: str,
                    record: Mapping[str, Any], ident: Mapping[str, Any],
                    params: Mapping[str, Any], resources: list[dict[str, Any]]) -> None:
    """Attributes each class requires (OCSF 1.3.0)."""
    if class_uid == 3002:  # Authentication: user (required), service
        event["user"] = _user(ident)
        event["service"] = {"name": event["api"]["service"]["name"]}
        if name == "VerifyMfa":
            event["is_mfa"] = True
    elif class_uid == 3001:  # Account Change: the target user or role (required)
        event["user"] = _target_user(ident, params)
        if _text(params.get("policyArn")) or _text(params.get("policyName")):
            event["policy"] = {"uid": params.get("policyArn") or params.get("policyName"),
                               "name": params.get("policyName") or params.get("policyArn")}
    elif class_uid == 3003:  # Authorize Session: user (required), privileges
        event["user"] = _user(ident)
        if _text(params.get("roleArn")):
            event["privileges"] = [params["roleArn"]]
        elif _text(params.get("scope")):
            event["privileges"] = params["scope"].split()
    elif class_uid == 3004:  # Entity Management: entity (required)
        entity: dict[str, Any] = {"type": name.removeprefix("Create").removeprefix("Delete")}
        for key in ("policyName", "groupName", "clientId", "clientName", "userName",
                    "roleName", "resourceArn"):
            if _text(params.get(key)):
                entity["name"] = params[key]
                break
        if resources:
            entity["uid"] = resources[0].get("uid")
        if "name" not in entity and "uid" not in entity:
            entity["name"] = name
        event["entity"] = entity
    elif class_uid == 3006:  # Group Management: group (required)
        event["group"] = {k: v for k, v in (("name", _text(params.get("groupName"))),
                                            ("uid", resources[0].get("uid") if resources
                                             else None)) if v} or {"name": "unknown"}
        if _text(params.get("userName")):
            event["user"] = {"name": params["userName"], "type": "User", "type_id": 1}
        if _text(params.get("policyArn")) or _text(params.get("policyName")):
            event["privileges"] = [params.get("policyArn") or params.get("policyName")]
    elif class_uid == 4002:  # HTTP Activity at the edge: what the control did
        if name == "WafMatch":  # detect mode: seen and let through
            event["action_id"], event["action"] = 1, "Allowed"
            event["disposition_id"], event["disposition"] = 15, "Detected"
        else:
            event["action_id"], event["action"] = 2, "Denied"
            event["disposition_id"], event["disposition"] = (99, "Challenge") \
                if name == "UnderAttackChallenge" else (2, "Blocked")
        event.setdefault("http_request", {})
    elif class_uid == 6004:  # Web Resource Access Activity: http_request, web_resources
        event.setdefault("http_request", {})
        event["web_resources"] = [{"uid": r["uid"], **({"type": r["type"]} if "type" in r
                                                       else {})}
                                  for r in resources if "uid" in r] or [{"name": "unknown"}]
    elif class_uid == 6005:  # Datastore Activity: database (at least one of database/table)
        event["database"] = {"name": _text(params.get("database")) or "bastion",
                             "type_id": 1, "type": "Relational"}
        event["type_id"], event["type"] = 1, "Database"
        statement = _text(params.get("statement"))
        if statement:
            event["query_info"] = {"query_string": statement}
    elif class_uid == 2004:  # Detection Finding: finding_info (required); status is the
        # finding's (1 New), not the outcome
        event["finding_info"] = {"uid": event["metadata"].get("uid") or name, "title": name,
                                 "types": [name]}
        if _text(_get(record, "errorMessage")):
            event["finding_info"]["desc"] = record["errorMessage"]
        event["status_id"], event["status"] = 1, "New"
