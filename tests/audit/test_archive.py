"""Retention: archived segments verify on their own, the live trail still verifies after
them, and tampering with a segment is found."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bastion.audit.archive import archive, verify_segment

pytestmark = pytest.mark.anyio


async def fill(provider: Any, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        await provider.audit.emit("GetOrder", request_parameters={"orderId": f"o{i}"})


async def test_archive_then_verify_everything(provider, tmp_path):
    await fill(provider, 40)
    seg = await archive(provider.fast, provider.notary, tmp_path / "arch", upto_seq=30)
    assert seg is not None and (seg.first_seq, seg.last_seq, seg.records) == (1, 30, 30)
    left = await provider.fast.one("SELECT MIN(seq) AS a, COUNT(*) AS n FROM audit_events")
    assert left[0] == 31
    keys = await provider.notary.public_keys()
    assert verify_segment(seg.path, keys).ok
    await fill(provider, 10, start=40)
    await provider.notary.checkpoint()
    report = await provider.notary.verify()
    assert report.ok, report.to_dict()
    assert report.checkpoints_verified >= 1
    second = await archive(provider.fast, provider.notary, tmp_path / "arch", upto_seq=10**9)
    assert second is not None and second.first_seq == 31
    assert verify_segment(second.path, keys).ok
    assert (await provider.notary.verify()).ok


async def test_nothing_past_the_newest_checkpoint(provider, tmp_path):
    await fill(provider, 5)
    seg = await archive(provider.fast, provider.notary, tmp_path, upto_seq=10**9)
    assert seg is not None  # archiving signs a checkpoint first
    assert await archive(provider.fast, provider.notary, tmp_path, upto_seq=10**9) is None


def _rewrite(path: Path, fn: Any) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(fn(lines)) + "\n")


@pytest.mark.parametrize("attack,kind", [
    ("edit", "modified"), ("drop", "deleted"), ("cut", "truncated")])
async def test_tampered_segment_is_found(provider, tmp_path, attack, kind):
    await fill(provider, 30)
    seg = await archive(provider.fast, provider.notary, tmp_path, upto_seq=10**9)
    assert seg is not None

    def edit(lines: list[str]) -> list[str]:
        item = json.loads(lines[5])
        item["body"] = item["body"].replace("o", "0", 1)
        lines[5] = json.dumps(item)
        return lines

    fn = {"edit": edit, "drop": lambda ls: ls[:5] + ls[6:], "cut": lambda ls: ls[:-4]}[attack]
    _rewrite(seg.path, fn)
    report = verify_segment(seg.path, await provider.notary.public_keys())
    assert not report.ok
    assert report.faults[0].kind == kind


async def test_unarchived_rows_cannot_be_deleted(provider):
    await fill(provider, 3)
    with pytest.raises(Exception, match="append-only"):
        async with provider.fast.transaction() as tx:
            await tx.run("DELETE FROM audit_events WHERE seq = 1")
    with pytest.raises(Exception, match="append-only"):
        async with provider.fast.transaction() as tx:
            await tx.run("UPDATE audit_events SET outcome = 'x' WHERE seq = 1")
