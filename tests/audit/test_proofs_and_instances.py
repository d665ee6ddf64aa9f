"""Inclusion and consistency proofs on request, and one verifiable sequence when several
instances share one PostgreSQL database."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from typing import Any

import pytest

from bastion.audit import merkle
from bastion.audit.checkpoint import Checkpoint
from tests.conftest import make_settings
from tests.live import BASTION

pytestmark = pytest.mark.anyio


def cli(settings: Any, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"BASTION_DATABASE_URL": settings.effective_database_url, "PATH": "/usr/bin:/bin"}
    return subprocess.run([BASTION, "audit", *args, "--data-dir", str(settings.data_dir)],
                          capture_output=True, text=True, timeout=60, env=env, check=False)


async def fill(provider: Any, n: int) -> None:
    for i in range(n):
        await provider.audit.emit("GetOrder", request_parameters={"orderId": f"o{i}"})


async def test_inclusion_and_consistency_proofs_verify(provider):
    await fill(provider, 20)
    await provider.notary.checkpoint()
    old = (await provider.notary.checkpoints())[-1]
    await fill(provider, 17)
    await provider.notary.checkpoint()
    r = cli(provider.settings, "prove", "--seq", "5")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    cp = Checkpoint.from_json(data["checkpoint"])
    proof = [bytes.fromhex(h) for h in data["inclusion_proof"]]
    assert merkle.verify_inclusion(4, cp.tree_size, bytes.fromhex(data["leaf_hash"]), proof,
                                   cp.root_hash)
    r = cli(provider.settings, "prove", "--old-size", str(old.tree_size))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    proof = [bytes.fromhex(h) for h in data["consistency_proof"]]
    assert merkle.verify_consistency(old.tree_size, cp.tree_size, old.root_hash, cp.root_hash,
                                     proof)
    assert cli(provider.settings, "prove", "--seq", "99999").returncode == 2
    assert cli(provider.settings, "prove", "--old-size", "3").returncode == 2


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_instances_sharing_postgres_extend_one_chain(provider, tmp_path, pg_url):
    """Two instances (separate processes' worth of state: own pools, own trails) append
    concurrently; the result is one gap-free chain that verifies."""
    from bastion.runtime import open_provider

    settings = make_settings(tmp_path / "other", pg_url)
    settings.data_dir.mkdir(parents=True)
    # instances of one deployment share the key-encryption key (README: scaling out)
    shutil.copy(provider.settings.data_dir / "kek.key", settings.data_dir / "kek.key")
    other = await open_provider(settings)
    try:
        async def burst(p: Any, tag: str) -> None:
            await asyncio.gather(*(p.audit.emit("GetOrder", request_parameters={
                "orderId": f"{tag}{i}"}) for i in range(300)))

        await asyncio.gather(burst(provider, "a"), burst(other, "b"), burst(provider, "c"),
                             burst(other, "d"))
        await provider.notary.checkpoint()
        await other.notary.checkpoint()  # the other instance signs over the same sequence
    finally:
        await other.close()
    report = await provider.notary.verify()
    assert report.ok, report.to_dict()
    assert report.checkpoints_verified >= 1
    rows = await provider.fast.all("SELECT seq FROM audit_events ORDER BY seq")
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
