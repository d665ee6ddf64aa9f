"""Which identifiers an ACME account may order and finalize, in the IAM grammar.

An account is the principal ``arn:bastion:acme:::account/<id>``; ordering is the action
``acme:NewOrder``, finalizing ``acme:Finalize``, each on the resources
``arn:bastion:acme:::identifier/<name>`` (a wildcard name keeps its ``*.``). The policy is
the account's own (given to its external account binding key by ``bastion acme eab create
--policy``), else the default built from ``acme_allowed_identifiers``. No statement that
allows: ``rejectedIdentifier``. The evaluator is :mod:`bastion.iam.evaluate`, unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from cachetools import LRUCache

from bastion.iam import Policy, PolicyError, PolicySet, Request, evaluate, parse_policy

NEW_ORDER = "acme:NewOrder"
FINALIZE = "acme:Finalize"


def account_arn(account_id: str) -> str:
    return f"arn:bastion:acme:::account/{account_id}"


def identifier_arn(name: str) -> str:
    return f"arn:bastion:acme:::identifier/{name}"


def default_document(patterns: Iterable[str]) -> dict[str, Any]:
    """Allow ordering and finalizing the names that match ``patterns`` (IAM wildcards)."""
    resources = [identifier_arn(p) for p in patterns]
    if not resources:
        return {"Version": "2012-10-17", "Statement": []}
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "AcmeAllowedIdentifiers", "Effect": "Allow",
        "Action": [NEW_ORDER, FINALIZE], "Resource": resources}]}


def check(text: str) -> str:
    """An account policy, validated by the IAM engine; ValueError with its findings."""
    try:
        parse_policy(text, policy_id="acme-account")
    except PolicyError as exc:
        raise ValueError("; ".join(f"{f.code}: {f.message}" for f in exc.findings
                                   if f.severity == "ERROR")) from None
    return text


class IdentifierPolicy:
    """Decides (account, action, identifier); compiled policies are cached by text."""

    def __init__(self, allowed: Iterable[str]) -> None:
        self._default = PolicySet([parse_policy(json.dumps(default_document(allowed)),
                                                policy_id="acme-default")]) \
            if list(allowed) else PolicySet()
        self._compiled: LRUCache[str, PolicySet] = LRUCache(maxsize=1024)

    def _set(self, text: str | None) -> PolicySet:
        if text is None:
            return self._default
        hit = self._compiled.get(text)
        if hit is None:
            policy: Policy = parse_policy(text, policy_id="acme-account")
            hit = self._compiled[text] = PolicySet([policy])
        return hit

    def denied(self, account_id: str, policy: str | None, action: str,
               names: Iterable[str]) -> list[str]:
        """The names ``action`` is not allowed on (empty: all allowed)."""
        policies = self._set(policy)
        principal = account_arn(account_id)
        return [n for n in names if not evaluate(
            Request(principal, action, identifier_arn(n)), policies).allowed]
