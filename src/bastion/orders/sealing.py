"""The Orders service's encryption at rest: an order's sensitive fields (``item``,
``shipping_address``, ``note``: what someone bought and where it goes) are stored only in
``orders.sealed``, an envelope (:mod:`bastion.kms.envelope`) under a data key of the KMS key
``alias/bastion/orders`` (created on first use, under a key policy that lets no principal
use it through the KMS API). Quantities, prices, status and times stay in clear columns.

Data keys are cached (:class:`~bastion.kms.envelope.CachingMaterials`) per account: their
KMS encryption context is ``{"bastion:service": "orders", "bastion:account": <account>}``.
Each value binds, as associated data, that context plus the order's owner and id, so a
sealed value copied to another order, or to another owner's row, does not open."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bastion.kms.envelope import (
    Bounds,
    CachingMaterials,
    EnvelopeError,
    open_sealed,
    seal,
    service_key,
    service_key_policy,
)

if TYPE_CHECKING:
    from bastion.config import Settings
    from bastion.kms.service import KMS

ALIAS = "alias/bastion/orders"
SENSITIVE = ("item", "shipping_address", "note")
#: data keys: reused for at most 5 minutes, 10,000 orders and 16 MiB of sealed fields (the
#: defaults of the ``orders_data_key_*`` settings)
DEFAULT_BOUNDS = Bounds(max_age=300.0, max_messages=10_000, max_bytes=16 * 2**20,
                        capacity=1000)
Fields = dict[str, str | None]


def bounds(settings: Settings) -> Bounds:
    """The data-key cache's bounds the ``orders_data_key_*`` settings give."""
    return Bounds(max_age=settings.orders_data_key_max_age,
                  max_messages=settings.orders_data_key_max_messages,
                  max_bytes=settings.orders_data_key_max_bytes,
                  capacity=settings.orders_data_key_cache_size)


class OrderSealer:
    """Seals and opens orders' sensitive fields (one per server: its cache is shared)."""

    def __init__(self, kms: KMS, account: str, bounds: Bounds = DEFAULT_BOUNDS, *,
                 clock: Callable[[], float] | None = None) -> None:
        from bastion.kms.core import Caller

        self.kms = kms
        self.account = account
        self.bounds = bounds
        self._clock = clock
        self.caller = Caller("bastion:orders", account, operator=True,
                             via_service="orders.bastion", user_agent="bastion-orders")
        self.key_context = {"bastion:service": "orders", "bastion:account": account}
        self._materials: CachingMaterials | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, kms: KMS, settings: Settings) -> OrderSealer:
        """The server's sealer: its account and cache bounds from ``settings``."""
        return cls(kms, settings.account_id, bounds(settings))

    async def materials(self) -> CachingMaterials:
        """The caching materials manager, over the Orders KMS key (made on first use)."""
        if self._materials is not None:
            return self._materials
        async with self._lock:
            if self._materials is None:
                key_id = await service_key(
                    self.kms, self.caller, ALIAS,
                    description="Bastion Orders: data keys of orders' sensitive fields",
                    policy=service_key_policy(self.account, "bastion-orders-key"),
                    tag=("bastion:service", "orders"))
                kw: dict[str, Any] = {} if self._clock is None else {"clock": self._clock}
                self._materials = CachingMaterials(self.kms, key_id, self.caller,
                                                   self.bounds, **kw)
            return self._materials

    @staticmethod
    def row_context(owner: str, order_id: str) -> dict[str, str]:
        return {"bastion:order": order_id, "bastion:owner": owner}

    async def seal(self, owner: str, order_id: str, fields: Fields) -> bytes:
        body = json.dumps({k: fields.get(k) for k in SENSITIVE}, separators=(",", ":"),
                          sort_keys=True, ensure_ascii=False).encode()
        return await seal(await self.materials(), body, self.key_context,
                          self.row_context(owner, order_id))

    async def open(self, owner: str, order_id: str, blob: bytes) -> Fields:
        """The sealed fields (``EnvelopeError`` for a value that does not open here, or
        whose content is not what :meth:`seal` wrote)."""
        body = await open_sealed(await self.materials(), blob, self.key_context,
                                 self.row_context(owner, order_id))
        try:
            doc = json.loads(body)
        except ValueError:
            raise EnvelopeError("the value does not open") from None
        if not isinstance(doc, dict) or set(doc) != set(SENSITIVE) or not all(
                v is None or isinstance(v, str) for v in doc.values()) or not doc["item"]:
            raise EnvelopeError("the value does not open")
        return {k: doc[k] for k in SENSITIVE}
