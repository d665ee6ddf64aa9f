"""External account binding keys (RFC 8555 §7.3.4), made by the operator: a key id and a
256-bit HMAC key, shown once; stored wrapped by the KEK with the identifier policy the
account bound to it will have (``acme/policy.py``). Each key binds one account."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from bastion.acme import policy as acme_policy
from bastion.acme.jws import b64encode
from bastion.acme.store import AcmeStore

EAB_AAD = "acme-eab"  # the wrapping's purpose (additional data)
EAB_EVENT = "CreateAcmeExternalAccountKey"


@dataclass(frozen=True)
class EabKey:
    kid: str
    hmac_key: str  # base64url, as certbot's --eab-hmac-key and lego's --eab.hmac take it


async def create_eab_key(provider: Any, *, policy: str | None = None,
                         operator: dict[str, Any] | None = None) -> EabKey:
    """A new key; ``policy`` (IAM JSON) is checked first (ValueError with its findings)."""
    if policy is not None:
        acme_policy.check(policy)
    kid = "eab-" + secrets.token_urlsafe(12)
    mac = secrets.token_bytes(32)
    while b64encode(mac).startswith("-"):  # "--eab-hmac-key -x..." reads as an option
        mac = secrets.token_bytes(32)
    store = AcmeStore(provider.fast)
    async with provider.fast.transaction() as tx:
        await store.insert_eab(tx, kid, provider.wrapper.wrap(mac, EAB_AAD), policy)
        await provider.audit.record_in(
            tx, EAB_EVENT, user_identity=operator or {"type": "Bastion"},
            request_parameters={"externalAccountKeyId": kid, "policy": policy is not None})
    return EabKey(kid, b64encode(mac))
