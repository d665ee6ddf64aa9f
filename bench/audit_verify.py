"""Audit chain verification speed: ``verify_chain`` against a bare SHA-256 chaining loop.

Builds N records in memory (canonical bodies of ~400 bytes made by ``build_record``, each
with its own eventID and time), chains them, signs a checkpoint every ``--every`` records,
then times:

- plain: ``prev = sha256(b"\\x00" + prev + body).digest()`` over the same bytes (the floor:
  one hash per record, nothing checked);
- verify: ``verify_chain`` with every checkpoint (links, seq, last hashes, Merkle roots and
  signatures);
- verify, no checkpoints: links and seq only.

Run: ``.venv/bin/python bench/audit_verify.py`` (``--records 100000`` for a quick look).
The goal is verify >= 50% of the plain loop's records/s.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from bastion.audit.chain import GENESIS, link, verify_chain  # noqa: E402
from bastion.audit.checkpoint import Checkpoint, checkpoint_hash, sign_checkpoint  # noqa: E402
from bastion.audit.merkle import CompactRange  # noqa: E402
from bastion.audit.record import build_record, canonical_bytes  # noqa: E402

Row = tuple[int, bytes, bytes]


def bodies(n: int) -> list[bytes]:
    """n distinct canonical bodies: a few real records, with eventID and time varied."""
    templates = []
    for i in range(16):
        record = build_record(
            ("GetOrder", "ListOrders", "CreateOrder", "AccessDenied")[i % 4],
            event_time=1_700_000_000.0, event_id="00000000-0000-4000-8000-000000000000",
            request_id=f"{i:016x}", source_ip="203.0.113.7",
            user_agent="python-httpx/0.27.0",
            user_identity={"type": "User", "userName": f"user{i}", "principalId": f"u-{i:06d}"},
            request_parameters={"orderId": f"ord-{i:06d}", "limit": 50})
        templates.append(canonical_bytes(record))
    out = []
    for i in range(n):
        body = templates[i % 16]
        body = body.replace(b"00000000-0000-4000-8000-000000000000",
                            f"{i:08x}-0000-4000-8000-{i:012x}".encode())
        out.append(body.replace(b"2023-11-14T22:13:20.000Z",
                                time.strftime("%Y-%m-%dT%H:%M:%S.000Z",
                                              time.gmtime(1_700_000_000 + i)).encode()))
    return out


def chain(bs: list[bytes]) -> list[Row]:
    rows, prev = [], GENESIS
    for seq, body in enumerate(bs, 1):
        prev = link(prev, body)
        rows.append((seq, body, prev))
    return rows


def checkpoints(rows: list[Row], every: int, key: Ed25519PrivateKey) -> list[Checkpoint]:
    out, rng, previous = [], CompactRange(), GENESIS
    for seq, _body, h in rows:
        rng.append(h)
        if seq % every == 0:
            cp = sign_checkpoint(key, "bench", seq, rng.root(), h, seq, previous)
            out.append(cp)
            previous = checkpoint_hash(cp)
    return out


def plain(rows: list[Row]) -> bytes:
    sha = hashlib.sha256
    prev = GENESIS
    for _seq, body, _h in rows:
        prev = sha(b"\x00" + prev + body).digest()
    return prev


def plain_primed(rows: list[Row]) -> bytes:
    """The same chain with the faster idiom verify_chain uses (a primed context copied)."""
    fresh = hashlib.sha256(b"\x00").copy
    prev = GENESIS
    for _seq, body, _h in rows:
        ctx = fresh()
        ctx.update(prev)
        ctx.update(body)
        prev = ctx.digest()
    return prev


def interleaved(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Best time of each, runs interleaved so background load hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: min(ts) for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--every", type=int, default=10_000, help="checkpoint interval")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (best kept)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    rows = chain(bodies(args.records))
    key = Ed25519PrivateKey.generate()
    cps = checkpoints(rows, args.every, key)
    keys = {"bench": key.public_key()}
    sizes = [len(b) for _s, b, _h in rows]
    print(f"built {len(rows):,} records (body bytes: mean {statistics.mean(sizes):.0f}, "
          f"min {min(sizes)}, max {max(sizes)}) and {len(cps)} checkpoints "
          f"in {time.perf_counter() - t0:.1f} s")

    assert plain(rows) == rows[-1][2]
    report = verify_chain(rows, checkpoints=cps, public_keys=keys)
    assert report.ok and report.checkpoints_verified == len(cps), report.to_dict()

    assert plain_primed(rows) == rows[-1][2]
    t = interleaved({
        "plain": lambda: plain(rows),
        "primed": lambda: plain_primed(rows),
        "verify": lambda: verify_chain(rows, checkpoints=cps, public_keys=keys),
        "bare": lambda: verify_chain(rows),
    }, args.repeat)
    n = len(rows)
    print(f"plain loop: sha256(b'\\x00' + prev + body) {n / t['plain']:>11,.0f} records/s "
          f"({t['plain']:.3f} s)")
    print(f"plain loop, primed context copied        {n / t['primed']:>11,.0f} records/s "
          f"({t['primed']:.3f} s)")
    print(f"verify_chain + {len(cps):>4} checkpoints        {n / t['verify']:>11,.0f} records/s "
          f"({t['verify']:.3f} s)  {t['plain'] / t['verify']:.0%} of plain, "
          f"{t['primed'] / t['verify']:.0%} of primed")
    print(f"verify_chain, no checkpoints             {n / t['bare']:>11,.0f} records/s "
          f"({t['bare']:.3f} s)  {t['plain'] / t['bare']:.0%} of plain, "
          f"{t['primed'] / t['bare']:.0%} of primed")


if __name__ == "__main__":
    main()
