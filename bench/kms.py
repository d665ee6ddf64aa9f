#!/usr/bin/env python3
"""KMS benchmarks, in one run (issue 11):

(a) ``encrypt-file`` on a 256 MiB file (kms/stream.py, file to file, in-process) against raw
    AES-256-GCM from ``cryptography`` over the same bytes in memory (one call); also the
    whole ``bastion kms encrypt-file`` command (process start and the KMS call included).
(b) Encrypt, Decrypt and GenerateDataKey over HTTP against ``bastion serve`` (TLS, root key
    in a SoftHSM2 token made for this run, an IAM user's access key) and against moto's KMS
    server (``moto_server``, plain HTTP): calls/s, p50/p99 latency and server CPU per call
    (utime+stime of the server process from /proc/<pid>/stat), one call at a time, with a
    light client (botocore's SigV4Auth + httpx; each request signs a unique
    ``amz-sdk-invocation-id``, as Bastion refuses a replayed signature).
(c) Correctness rows, the same requests to both: Encrypt with a disabled key, a 3-day
    deletion window, RotateKeyOnDemand (does a new ciphertext use new material?), a key
    policy that denies Encrypt.

    .venv/bin/python bench/kms.py [--calls 2000] [--mib 256]

Everything goes to a temp dir (removed at the end).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.live import BASTION, free_port, start_live_server  # noqa: E402

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
REGION = "us-east-1"
TICK = os.sysconf("SC_CLK_TCK")
ALLOW_ALL = {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}


# --- (a) files ------------------------------------------------------------------------------
def bench_files(tmp: Path, mib: int, env: dict[str, str], data_dir: Path) -> dict[str, Any]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from bastion.kms.stream import encrypt_stream

    src = tmp / "big.bin"
    with src.open("wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    data = src.read_bytes()
    key = os.urandom(32)
    raw = []
    for _ in range(3):
        t = time.perf_counter()
        AESGCM(key).encrypt(os.urandom(12), data, None)
        raw.append(time.perf_counter() - t)
    del data
    stream, cpu = [], []
    for _ in range(3):
        t, c = time.perf_counter(), time.process_time()
        with src.open("rb") as s, (tmp / "big.bin.bkms").open("wb") as o:
            encrypt_stream(s, o, data_key=key, key_id="arn:bench", wrapped_key=b"w" * 180,
                           context={"bench": "1"})
        stream.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        (tmp / "big.bin.bkms").unlink()
    created = subprocess.run([BASTION, "kms", "create-key", "--json", "--data-dir",
                              str(data_dir)], env=env, capture_output=True, check=True)
    key_id = json.loads(created.stdout)["KeyMetadata"]["KeyId"]
    t = time.perf_counter()
    subprocess.run([BASTION, "kms", "encrypt-file", key_id, str(src), "--data-dir",
                    str(data_dir)], env=env, capture_output=True, check=True)
    cli = time.perf_counter() - t
    src.unlink()
    (tmp / "big.bin.bkms").unlink()
    best_raw, best_stream = min(raw), min(stream)
    return {"mib": mib, "raw_mib_s": mib / best_raw, "stream_mib_s": mib / best_stream,
            "stream_cpu_mib_s": mib / min(cpu), "ratio": best_raw / best_stream,
            "cli_s": cli, "cli_mib_s": mib / cli}


# --- (b) HTTP ---------------------------------------------------------------------------------
class Client:
    """SigV4 (botocore's signer) over httpx: AWS JSON 1.1 requests, one at a time."""

    def __init__(self, url: str, access: str, secret: str, verify: Any) -> None:
        self.url = url
        self.auth = SigV4Auth(Credentials(access, secret), "kms", REGION)
        self.http = httpx.Client(verify=verify, timeout=30)

    def call(self, op: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode()
        req = AWSRequest(method="POST", url=self.url + "/", data=data, headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": f"TrentService.{op}",
            "amz-sdk-invocation-id": str(uuid.uuid4())})  # unique: no replayed signature
        self.auth.add_auth(req)
        r = self.http.post(self.url + "/", content=data, headers=dict(req.headers.items()))
        return r.status_code, (r.json() if r.content else {})

    def ok(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        status, out = self.call(op, body)
        if status != 200:
            raise RuntimeError(f"{op}: {status} {out}")
        return out


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def measure(client: Client, pid: int, op: str, body: Any, calls: int) -> dict[str, float]:
    for _ in range(min(100, calls)):  # warm up (caches, connection)
        client.ok(op, body() if callable(body) else body)
    lat = []
    c0, t0 = cpu_ticks(pid), time.perf_counter()
    for _ in range(calls):
        t = time.perf_counter()
        client.ok(op, body() if callable(body) else body)
        lat.append(time.perf_counter() - t)
    wall, cpu = time.perf_counter() - t0, (cpu_ticks(pid) - c0) / TICK
    lat.sort()
    return {"calls_s": calls / wall, "p50_ms": 1000 * statistics.median(lat),
            "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))],
            "cpu_ms_per_call": 1000 * cpu / calls}


def bench_http(client: Client, pid: int, calls: int) -> dict[str, dict[str, float]]:
    key = client.ok("CreateKey", {})["KeyMetadata"]["KeyId"]
    plain = base64.b64encode(os.urandom(64)).decode()
    blob = client.ok("Encrypt", {"KeyId": key, "Plaintext": plain})["CiphertextBlob"]
    return {
        "Encrypt": measure(client, pid, "Encrypt", {"KeyId": key, "Plaintext": plain}, calls),
        "Decrypt": measure(client, pid, "Decrypt", {"CiphertextBlob": blob}, calls),
        "GenerateDataKey": measure(client, pid, "GenerateDataKey",
                                   {"KeyId": key, "KeySpec": "AES_256"}, calls)}


# --- (c) correctness --------------------------------------------------------------------------
def correctness(client: Client, version_of: Any) -> dict[str, str]:
    out = {}
    plain = base64.b64encode(b"x").decode()
    key = client.ok("CreateKey", {})["KeyMetadata"]["KeyId"]
    client.ok("DisableKey", {"KeyId": key})
    status, body = client.call("Encrypt", {"KeyId": key, "Plaintext": plain})
    out["Encrypt with a disabled key"] = body.get("__type", "").split("#")[-1] \
        if status != 200 else "encrypted (wrong)"
    key = client.ok("CreateKey", {})["KeyMetadata"]["KeyId"]
    status, body = client.call("ScheduleKeyDeletion", {"KeyId": key, "PendingWindowInDays": 3})
    out["ScheduleKeyDeletion, 3-day window"] = body.get("__type", "").split("#")[-1] \
        if status != 200 else "accepted (wrong: 7-30)"
    key = client.ok("CreateKey", {})["KeyMetadata"]["KeyId"]
    before = client.ok("Encrypt", {"KeyId": key, "Plaintext": plain})["CiphertextBlob"]
    status, body = client.call("RotateKeyOnDemand", {"KeyId": key})
    after = client.ok("Encrypt", {"KeyId": key, "Plaintext": plain})["CiphertextBlob"]
    still = client.call("Decrypt", {"CiphertextBlob": before})[0] == 200
    out["RotateKeyOnDemand: new material"] = (
        f"{version_of(before)} -> {version_of(after)}, old blob decrypts: {still}"
        if status == 200 else body.get("__type", "error"))
    arn = client.ok("CreateKey", {})["KeyMetadata"]["Arn"]
    key, parts = arn.rsplit("/", 1)[1], arn.split(":")
    account_root = f"arn:{parts[1]}:iam::{parts[4]}:root"
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": account_root}, "Action": "kms:*",
         "Resource": "*"},
        {"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "kms:Encrypt",
         "Resource": "*"}]}
    client.ok("PutKeyPolicy", {"KeyId": key, "PolicyName": "default",
                               "Policy": json.dumps(policy)})
    status, body = client.call("Encrypt", {"KeyId": key, "Plaintext": plain})
    out["Encrypt denied by the key policy"] = body.get("__type", "").split("#")[-1] \
        if status != 200 else "encrypted (wrong)"
    return out


def bastion_version(blob: str) -> str:
    raw = base64.b64decode(blob)
    return f"v{int.from_bytes(raw[17:21], 'big')}"  # 0x01 | key id (16) | version (u32)


def moto_version(blob: str) -> str:
    return "no version in blob"  # moto: key id | iv | ciphertext, one material per key


def softhsm(base: Path) -> dict[str, str]:
    (base / "tokens").mkdir(parents=True)
    conf = base / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {base / 'tokens'}\nobjectstore.backend = file\n"
                    "log.level = ERROR\n")
    pin = secrets.token_hex(6)
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bench", "--pin",
                    pin, "--so-pin", "so" + pin], env=env, check=True, capture_output=True)
    return {"SOFTHSM2_CONF": str(conf), "BASTION_ROOT_KEEPER": "pkcs11",
            "BASTION_PKCS11_MODULE": MODULE, "BASTION_PKCS11_TOKEN_LABEL": "bench",
            "BASTION_PKCS11_PIN": pin}


def start_moto(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    moto = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    log = (tmp / "moto.log").open("wb")
    proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/moto-api/", timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("moto_server did not start")


def table(rows: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = ["| server | operation | calls/s | p50 ms | p99 ms | server CPU ms/call |",
             "|---|---|---:|---:|---:|---:|"]
    for server, ops in rows.items():
        for op, m in ops.items():
            lines.append(f"| {server} | {op} | {m['calls_s']:.0f} | {m['p50_ms']:.2f} | "
                         f"{m['p99_ms']:.2f} | {m['cpu_ms_per_call']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--mib", type=int, default=256)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-kms-"))
    try:
        hsm = softhsm(tmp / "hsm")
        os.environ["SOFTHSM2_CONF"] = hsm["SOFTHSM2_CONF"]
        gen = start_live_server(tmp / "bastion", env_over=hsm)
        server = next(gen)
        try:
            assert server.process is not None
            files = bench_files(tmp, args.mib, server.env, server.data_dir)
            print(f"(a) encrypt-file {files['mib']} MiB, file to file: "
                  f"{files['stream_mib_s']:.0f} MiB/s ({files['stream_cpu_mib_s']:.0f} MiB/s "
                  f"of CPU) vs raw AES-256-GCM in memory {files['raw_mib_s']:.0f} MiB/s: "
                  f"{100 * files['ratio']:.0f}%; the whole command: {files['cli_s']:.2f} s "
                  f"({files['cli_mib_s']:.0f} MiB/s)", flush=True)
            server.add_user("bench")
            policy = tmp / "allow.json"
            policy.write_text(json.dumps(ALLOW_ALL))
            server.cli("iam", "inline", "put", "user", "bench", "kms", str(policy))
            ak = server.cli("iam", "access-keys", "create", "--user", "bench")
            bastion = Client(server.url, ak["AccessKeyId"], ak["SecretAccessKey"],
                             server.ssl_context())
            moto_proc, moto_url = start_moto(tmp)
            try:
                moto = Client(moto_url, "AKIDBENCHMOTO", "secret", True)
                rows = {"bastion (TLS, SoftHSM2 root)": bench_http(bastion, server.process.pid,
                                                                   args.calls),
                        "moto_server (HTTP)": bench_http(moto, moto_proc.pid, args.calls)}
                print("(b) one call at a time, " + f"{args.calls} calls per row\n" + table(rows))
                checks = {"bastion": correctness(bastion, bastion_version),
                          "moto": correctness(moto, moto_version)}
                print("(c) correctness\n| check | bastion | moto |\n|---|---|---|")
                for name in checks["bastion"]:
                    print(f"| {name} | {checks['bastion'][name]} | {checks['moto'][name]} |")
            finally:
                moto_proc.kill()
                moto_proc.wait()
        finally:
            gen.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
