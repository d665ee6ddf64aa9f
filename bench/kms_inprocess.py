#!/usr/bin/env python3
"""KMS Encrypt through ``KMS.call`` in-process (no HTTP, no SigV4): calls/s and CPU µs per
call, with the root key in a real SoftHSM2 token (made for this run in a temp dir) or in the
file keeper. Each call is what the wire layer will run: field validation, key lookup,
authorization (``--as user``: key policy + identity policies through the IAM engine;
``--as operator``: none), AES-256-GCM under the cached key version, and the durable audit
record. Concurrency C: that many calls in flight (audit records commit in groups).

    .venv/bin/python bench/kms_inprocess.py                       # softhsm, user, C=64
    .venv/bin/python bench/kms_inprocess.py --keeper file --as operator --calls 20000

SQLite in a temp dir; nothing is written elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODULE = "/usr/lib/softhsm/libsofthsm2.so"


def softhsm(base: Path) -> tuple[str, str]:
    (base / "tokens").mkdir()
    conf = base / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {base / 'tokens'}\nobjectstore.backend = file\n"
                    "log.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    pin = secrets.token_hex(6)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bench", "--pin",
                    pin, "--so-pin", pin + "so"], check=True, capture_output=True)
    return "bench", pin


async def main(args: argparse.Namespace) -> None:
    from tests.flows import add_user

    from bastion.config import Settings
    from bastion.iam.authorizer import Subject
    from bastion.kms.service import Caller
    from bastion.runtime import open_provider

    base = Path(tempfile.mkdtemp(prefix="kms-bench-"))
    over: dict[str, object] = {}
    if args.keeper == "softhsm":
        label, pin = softhsm(base)
        over = {"root_keeper": "pkcs11", "pkcs11_module": MODULE,
                "pkcs11_token_label": label, "pkcs11_pin": pin}
    settings = Settings(data_dir=base / "data", issuer="http://bench.test", dev=True,
                        database_url=f"sqlite+aiosqlite:///{base / 'b.db'}", **over)
    p = await open_provider(settings)
    try:
        admin = Caller("local-operator:bench", settings.account_id, operator=True)
        key = (await p.kms.call("CreateKey", {}, admin))["KeyMetadata"]["KeyId"]
        caller = admin
        if args.caller == "user":
            uid = await add_user(p, "bench")
            await p.iam_admin.put_inline("user", "bench", "kms", {
                "Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow", "Action": ["kms:Encrypt", "kms:Decrypt"],
                    "Resource": f"arn:bastion:kms::{settings.account_id}:key/*"}]})
            caller = Caller(f"arn:bastion:iam::{settings.account_id}:user/bench",
                            settings.account_id, subject=Subject("user", uid),
                            source_ip="127.0.0.1")
        plaintext = base64.b64encode(os.urandom(args.size)).decode()
        request = {"KeyId": key, "Plaintext": plaintext,
                   "EncryptionContext": {"tenant": "bench"}}
        for _ in range(200):  # warm caches
            await p.kms.call("Encrypt", request, caller)

        async def worker(n: int) -> None:
            for _ in range(n):
                await p.kms.call("Encrypt", request, caller)

        per = args.calls // args.concurrency
        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(per) for _ in range(args.concurrency)))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        total = per * args.concurrency
        print(f"Encrypt keeper={args.keeper} as={args.caller} C={args.concurrency} "
              f"{args.size}-byte plaintext: {total / wall:,.0f} calls/s, "
              f"{cpu / total * 1e6:.0f} µs CPU per call ({total} calls)")
    finally:
        await p.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keeper", choices=["softhsm", "file"], default="softhsm")
    parser.add_argument("--as", dest="caller", choices=["user", "operator"], default="user")
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    asyncio.run(main(parser.parse_args()))
