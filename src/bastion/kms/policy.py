"""Key policies and how they combine with identity policies (AWS KMS Developer Guide,
"Key policies in AWS KMS" and "Determining access to an AWS KMS key").

A key policy is a resource-based policy in the IAM grammar (validated by the IAM engine,
32 KiB at most). Every key has one, and it is the primary control: "Unless the key policy
explicitly allows it, you cannot use IAM policies to allow access to a KMS key." So:

- a key policy statement that names the caller (user, role session, client) allows on its
  own;
- one that names the account (``arn:...:iam::<account>:root``, the default key policy)
  only *delegates* to IAM: the caller's identity policies must allow too;
- an explicit Deny anywhere wins; with no key policy allow, the answer is AccessDenied
  whatever the identity policies say.

These are exactly the role trust-policy semantics of :mod:`bastion.iam.evaluate`, so the key
policy is compiled as a resource policy (``Resource`` allowed) and evaluated with kind
``trust``. Permission boundaries and session policies limit it as they limit any
identity-based allow.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from cachetools import LRUCache

from bastion.iam import Policy, PolicyError, parse_policy
from bastion.iam.scheme import PARTITION
from bastion.kms.errors import MalformedPolicyDocumentException

MAX_POLICY_BYTES = 32768  # AWS: a key policy is at most 32 KiB
POLICY_NAME = "default"  # the only key policy name (GetKeyPolicy/PutKeyPolicy)


def default_policy(account: str) -> str:
    """AWS's default key policy: the account's identity policies decide."""
    return json.dumps({
        "Version": "2012-10-17", "Id": "key-default-1",
        "Statement": [{"Sid": "Enable IAM User Permissions", "Effect": "Allow",
                       "Principal": {"AWS": f"arn:{PARTITION}:iam::{account}:root"},
                       "Action": "kms:*", "Resource": "*"}]}, indent=2)


def _compile(text: str, resource: str) -> Policy:
    policy = parse_policy(text, kind="resource", policy_id=f"{resource}/key-policy",
                          max_size=MAX_POLICY_BYTES)
    return dataclasses.replace(policy, kind="trust")  # KMS: the key policy must allow


def check(text: str) -> str:
    """A key policy given in a request, validated; ``MalformedPolicyDocumentException``
    with the IAM findings otherwise."""
    if len(text.encode()) > MAX_POLICY_BYTES:
        raise MalformedPolicyDocumentException("the key policy is longer than 32 KiB")
    try:
        _compile(text, "check")
    except PolicyError as exc:
        found = "; ".join(f"{f.code} at {f.path or 'policy'}: {f.message}"
                          for f in exc.findings if f.severity == "ERROR")
        raise MalformedPolicyDocumentException(f"the key policy is not valid: {found}") \
            from None
    return text


class PolicyCache:
    """Compiled key policies, by (text, key ARN); a ``Policy`` is immutable."""

    def __init__(self, size: int = 10_000) -> None:
        self._cache: LRUCache[tuple[str, str], Policy] = LRUCache(maxsize=size)

    def get(self, text: str, resource: str) -> Policy:
        hit = self._cache.get((text, resource))
        if hit is None:
            hit = self._cache[(text, resource)] = _compile(text, resource)
        return hit


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2)
