"""Audit records: CloudTrail-shaped, sanitised and redacted when built, canonical as bytes.

``build_record`` is the only way a record is made, and it cannot fail on its inputs' values
(``redaction.py`` sanitises and redacts every value). ``canonical_bytes`` is RFC 8785 (JCS,
``rfc8785.py``): the bytes that are hashed are the bytes that are stored, and a verifier
written anywhere that parses a record and canonicalises it gets them back. A record is
always one line (control characters are escaped). ``to_ocsf`` (``ocsf.py``) maps a record to
OCSF 1.3.0.

This module re-exports the public names of ``redaction``, ``rfc8785`` and ``ocsf`` that used
to live here.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import ipaddress
import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from bastion.audit.events import event_type
from bastion.audit.ocsf import to_ocsf
from bastion.audit.redaction import (
    MAX_DEPTH,
    MAX_ID_BYTES,
    MAX_ITEMS,
    MAX_KEY_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_NODES,
    MAX_RECORD_BYTES,
    MAX_STRING_BYTES,
    MAX_USER_AGENT_BYTES,
    NOT_SECRET,
    REDACTED,
    SECRET_NAMES,
    SECRET_PARTS,
    _Budget,
    clean_text,
    clean_value,
    is_secret_name,
    scrub_text,
)
from bastion.audit.rfc8785 import canonical_bytes, canonicalize

__all__ = [
    "EVENT_VERSION", "MAX_DEPTH", "MAX_ID_BYTES", "MAX_ITEMS", "MAX_KEY_BYTES",
    "MAX_MESSAGE_BYTES", "MAX_NODES", "MAX_RECORD_BYTES", "MAX_STRING_BYTES",
    "MAX_USER_AGENT_BYTES", "NOT_SECRET", "REDACTED", "SECRET_NAMES", "SECRET_PARTS",
    "build_record", "canonical_bytes", "canonical_json", "canonicalize", "clean_text",
    "clean_value", "is_secret_name", "scrub_text", "to_ocsf",
]

EVENT_VERSION = "1.0"  # version of Bastion's record format (not CloudTrail's)


def _iso_time(seconds: float) -> str:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) \
            or not math.isfinite(seconds) or not 0 <= seconds < 253402300800:
        raise ValueError(f"event_time must be unix seconds in years 1970-9999: {seconds!r}")
    ms = int(round(seconds * 1000))
    when = dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=ms)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@functools.lru_cache(maxsize=4096)  # the same peers come back
def _ip_or_name(source: str) -> str:
    try:
        return str(ipaddress.ip_address(source.strip()))
    except ValueError:
        return clean_text(source, 256)


def _short(value: object, cap: int) -> str | None:
    if value is None:
        return None
    cleaned = clean_value(value, cap=cap)
    return cleaned if isinstance(cleaned, str) else clean_text(canonical_json(cleaned), cap)


def canonical_json(value: object) -> str:
    """RFC 8785 text of a JSON value (the form sizes and digests of parts are taken of)."""
    return canonical_bytes(value).decode("utf-8")


_SHRINK = ("requestParameters", "responseElements", "additionalEventData", "resources")
_IDENTITY_KEYS = ("type", "principalId", "arn", "accountId", "userName", "clientId",
                  "roleArn", "sessionName")


def build_record(event_name: str, *, event_time: float | None = None,
                 user_identity: Mapping[str, Any] | None = None, source_ip: str | None = None,
                 user_agent: str | None = None,
                 request_parameters: Mapping[str, Any] | None = None,
                 response_elements: Mapping[str, Any] | None = None,
                 error_code: str | None = None, error_message: str | None = None,
                 request_id: str | None = None, resources: Sequence[Mapping[str, Any]] = (),
                 additional: Mapping[str, Any] | None = None,
                 event_id: str | None = None,
                 body_out: list[bytes] | None = None) -> dict[str, Any]:
    """A CloudTrail-shaped record for ``event_name`` (ValueError if it is not in the
    catalogue). Every value is sanitised and redacted here; the canonical bytes of the result
    are at most MAX_RECORD_BYTES. As in CloudTrail, optional fields that were not given
    (errorCode, requestParameters, resources...) are absent rather than null. ``body_out``
    receives the record's canonical bytes, already computed here to check its size."""
    et = event_type(event_name)
    if event_time is None:
        event_time = dt.datetime.now(dt.UTC).timestamp()
    budget = _Budget(MAX_NODES)
    ident = clean_value(user_identity, budget=budget, cap=1024) if user_identity is not None \
        else {"type": "Unknown"}
    if not isinstance(ident, dict):
        ident = {"type": "Unknown", "invalid": ident}
    record: dict[str, Any] = {
        "eventVersion": EVENT_VERSION,
        "eventTime": _iso_time(event_time),
        "eventSource": et.source,
        "eventName": et.name,
        "eventType": et.event_type,
        "eventCategory": et.event_category,
        "readOnly": et.read_only,
        "eventID": _short(event_id, MAX_ID_BYTES) or str(uuid.uuid4()),
        "userIdentity": ident,
    }
    optional = {
        "requestID": _short(request_id, MAX_ID_BYTES),
        "sourceIPAddress": _ip_or_name(source_ip) if isinstance(source_ip, str)
        else _short(source_ip, 256),
        "userAgent": _short(user_agent, MAX_USER_AGENT_BYTES),
        "errorCode": _short(error_code, MAX_ID_BYTES),
        "errorMessage": _short(error_message, MAX_MESSAGE_BYTES),
        "requestParameters": _mapping(request_parameters, budget),
        "responseElements": _mapping(response_elements, budget),
        "additionalEventData": _mapping(additional, budget),
        "resources": _resources(resources, budget) or None,
    }
    record.update((k, v) for k, v in optional.items() if v is not None)
    record, body = _fit(record)
    if body_out is not None:
        body_out.append(body)
    return record


def _mapping(value: object, budget: _Budget) -> dict[str, Any] | None:
    if value is None:
        return None
    cleaned = clean_value(value, budget=budget)
    return cleaned if isinstance(cleaned, dict) else {"value": cleaned}


def _resources(value: object, budget: _Budget) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        value = [value]
    cleaned = clean_value(value, budget=budget)
    return cleaned if isinstance(cleaned, list) else [cleaned]


def _fit(record: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """Enforce MAX_RECORD_BYTES: the largest parts give way to a note with their size and
    SHA-256, then identity and free text shrink. Returns the record and its canonical
    bytes."""
    body = canonical_bytes(record)
    if len(body) <= MAX_RECORD_BYTES:
        return record, body
    parts = sorted((f for f in _SHRINK if record.get(f)),
                   key=lambda f: -len(canonical_json(record[f])))
    for name in parts:
        encoded = canonical_bytes(record[name])
        note = {"omitted": f"{name} exceeded the record size cap", "bytes": len(encoded),
                "sha256": hashlib.sha256(encoded).hexdigest()}
        record[name] = [note] if name == "resources" else note
        body = canonical_bytes(record)
        if len(body) <= MAX_RECORD_BYTES:
            return record, body
    ident = record["userIdentity"]
    record["userIdentity"] = {k: _short(ident[k], 256) for k in _IDENTITY_KEYS if k in ident}
    for name, cap in (("errorMessage", 1024), ("userAgent", 512)):
        if record.get(name) is not None:
            record[name] = clean_text(record[name], cap)
    return record, canonical_bytes(record)
