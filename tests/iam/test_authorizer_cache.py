"""The authorizer's caches are bounded LRUs: flooding them with distinct ARNs or subjects
evicts the least recently used entries only (issue 8 item 12)."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.iam import authorizer as authz
from bastion.iam.authorizer import Authorizer, Subject

pytestmark = pytest.mark.anyio

ACCT = "000000000000"
HOT = f"arn:bastion:orders::{ACCT}:order/hot"
DOC = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": "*", "Action": "orders:GetOrder", "Resource": HOT}]}


async def test_many_distinct_arns_do_not_flush_the_resource_policy_cache(
        provider: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(authz, "RESOURCE_POLICIES_CACHED", 32)
    await provider.iam_admin.put_resource_policy(HOT, DOC)
    iam = Authorizer(provider.fast, ACCT, cache_ttl=60)
    assert await iam.stored_resource_policy(HOT) is not None
    for i in range(200):  # an attacker's distinct order ids
        await iam.stored_resource_policy(f"arn:bastion:orders::{ACCT}:order/{i}")
        if i % 8 == 0:
            await iam.stored_resource_policy(HOT)  # the hot entry stays in use
        assert len(iam._stored_resource_policies) <= 32
    assert HOT in iam._stored_resource_policies


async def test_many_distinct_subjects_keep_the_principal_cache_bounded(
        provider: Any, alice: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(authz, "PRINCIPALS_CACHED", 16)
    iam = Authorizer(provider.fast, ACCT, cache_ttl=60)
    hot = Subject("user", alice)
    assert await iam.principal(hot) is not None
    for i in range(100):
        await iam.principal(Subject("user", f"ghost-{i}"))
        if i % 4 == 0:
            await iam.principal(hot)
        assert len(iam._cache) <= 16
    assert hot in iam._cache
