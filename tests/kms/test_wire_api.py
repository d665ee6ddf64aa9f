"""The AWS KMS wire API of a real ``bastion serve``, driven by boto3, the AWS CLI and raw
requests signed with botocore's SigV4 signer: every operation, the error paths, and the
SigV4 refusals (each audited)."""

from __future__ import annotations

import base64
import datetime
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.auth
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from bastion.kms.api import parse_body
from bastion.kms.errors import KMSError
from tests.live import BASTION, LiveServer, start_live_server

pytestmark = pytest.mark.interop
REGION = "us-east-1"
AWS = str(Path(sys.executable).parent / "aws")
ALLOW_ALL = {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # no key caching: a deactivation applies to the next request
    yield from start_live_server(tmp_path_factory.mktemp("kms-wire"),
                                 env_over={"BASTION_ACCESS_KEY_CACHE_TTL": "0"})


def _policy_file(server: LiveServer, doc: dict[str, Any]) -> str:
    path = server.data_dir.parent / f"policy-{uuid.uuid4().hex}.json"
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.fixture(scope="module")
def keys(server: LiveServer) -> dict[str, dict[str, Any]]:
    """Access keys: ``admin`` (a user allowed kms:*), ``nopol`` (a user with no policy),
    ``svc`` (a client as a service account, allowed kms:*)."""
    server.add_user("kmsadmin")
    server.add_user("nopol")
    server.cli("iam", "inline", "put", "user", "kmsadmin", "kms", _policy_file(server, ALLOW_ALL))
    client = server.add_client("svc", [], "--grant-type", "client_credentials")
    server.cli("iam", "inline", "put", "client", client["client_id"], "kms",
               _policy_file(server, ALLOW_ALL))
    return {"admin": server.cli("iam", "access-keys", "create", "--user", "kmsadmin"),
            "nopol": server.cli("iam", "access-keys", "create", "--user", "nopol"),
            "svc": server.cli("iam", "access-keys", "create", "--client", client["client_id"])}


def kms_client(server: LiveServer, key: dict[str, Any], *, endpoint: str = "",
               retries: int = 5) -> Any:
    return boto3.client("kms", endpoint_url=server.url + endpoint, region_name=REGION,
                        aws_access_key_id=key["AccessKeyId"],
                        aws_secret_access_key=key["SecretAccessKey"],
                        verify=str(server.ca_file),
                        config=Config(retries={"mode": "standard", "max_attempts": retries}))


@pytest.fixture(scope="module")
def kms(server: LiveServer, keys: dict[str, dict[str, Any]]) -> Any:
    return kms_client(server, keys["admin"])


def code(info: pytest.ExceptionInfo[ClientError]) -> str:
    return str(info.value.response["Error"]["Code"])


def new_key(kms: Any, **kw: Any) -> str:
    return str(kms.create_key(**kw)["KeyMetadata"]["KeyId"])


# --- every operation through boto3 ------------------------------------------------------------
def test_key_management(kms: Any) -> None:
    meta = kms.create_key(Description="app key", Tags=[{"TagKey": "team", "TagValue": "a"}])[
        "KeyMetadata"]
    key = meta["KeyId"]
    assert meta["KeyState"] == "Enabled" and meta["KeySpec"] == "SYMMETRIC_DEFAULT"
    assert kms.describe_key(KeyId=meta["Arn"])["KeyMetadata"]["Description"] == "app key"
    assert key in [k["KeyId"] for k in kms.list_keys(Limit=1000)["Keys"]]
    kms.update_key_description(KeyId=key, Description="renamed")
    alias = f"alias/app-{uuid.uuid4().hex[:8]}"
    kms.create_alias(AliasName=alias, TargetKeyId=key)
    assert kms.describe_key(KeyId=alias)["KeyMetadata"]["Description"] == "renamed"
    assert alias in [a["AliasName"] for a in kms.list_aliases(KeyId=key)["Aliases"]]
    other = new_key(kms)
    kms.update_alias(AliasName=alias, TargetKeyId=other)
    assert kms.describe_key(KeyId=alias)["KeyMetadata"]["KeyId"] == other
    with pytest.raises(ClientError) as info:
        kms.create_alias(AliasName=alias, TargetKeyId=key)
    assert code(info) == "AlreadyExistsException"
    kms.delete_alias(AliasName=alias)
    with pytest.raises(ClientError) as info:
        kms.describe_key(KeyId=alias)
    assert code(info) == "NotFoundException"
    kms.tag_resource(KeyId=key, Tags=[{"TagKey": "env", "TagValue": "prod"}])
    tags = {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=key)["Tags"]}
    assert tags == {"team": "a", "env": "prod"}
    kms.untag_resource(KeyId=key, TagKeys=["team"])
    assert [t["TagKey"] for t in kms.list_resource_tags(KeyId=key)["Tags"]] == ["env"]
    assert kms.list_key_policies(KeyId=key)["PolicyNames"] == ["default"]
    policy = json.loads(kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"])
    assert policy["Statement"][0]["Action"] == "kms:*"
    kms.put_key_policy(KeyId=key, PolicyName="default", Policy=json.dumps(policy))
    with pytest.raises(ClientError) as info:
        kms.put_key_policy(KeyId=key, PolicyName="default", Policy="{not json")
    assert code(info) == "MalformedPolicyDocumentException"


def test_key_states(kms: Any) -> None:
    key = new_key(kms)
    kms.disable_key(KeyId=key)
    with pytest.raises(ClientError) as info:
        kms.encrypt(KeyId=key, Plaintext=b"x")
    assert code(info) == "DisabledException"
    kms.enable_key(KeyId=key)
    with pytest.raises(ClientError) as info:
        kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=3)
    assert code(info) == "ValidationException"
    out = kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    assert out["KeyState"] == "PendingDeletion" and out["PendingWindowInDays"] == 7
    with pytest.raises(ClientError) as info:
        kms.encrypt(KeyId=key, Plaintext=b"x")
    assert code(info) == "KMSInvalidStateException"
    kms.cancel_key_deletion(KeyId=key)
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Disabled"
    kms.enable_key(KeyId=key)
    assert kms.encrypt(KeyId=key, Plaintext=b"x")["KeyId"].endswith(key)


def test_encrypt_decrypt_reencrypt(kms: Any) -> None:
    key, other = new_key(kms), new_key(kms)
    ctx = {"purpose": "test", "tenant": "t1"}
    blob = kms.encrypt(KeyId=key, Plaintext=b"secret data", EncryptionContext=ctx)[
        "CiphertextBlob"]
    out = kms.decrypt(CiphertextBlob=blob, EncryptionContext=ctx)
    assert out["Plaintext"] == b"secret data" and out["KeyId"].endswith(key)
    for bad_ctx in ({}, {"purpose": "test"}, {**ctx, "tenant": "t2"}):
        with pytest.raises(ClientError) as info:
            kms.decrypt(CiphertextBlob=blob, EncryptionContext=bad_ctx)
        assert code(info) == "InvalidCiphertextException"
    flipped = bytearray(blob)
    flipped[len(flipped) // 2] ^= 1
    for bad in (bytes(flipped), blob[:-1], blob[: len(blob) // 2]):
        with pytest.raises(ClientError) as info:
            kms.decrypt(CiphertextBlob=bad, EncryptionContext=ctx)
        assert code(info) == "InvalidCiphertextException"
    with pytest.raises(ClientError) as info:
        kms.decrypt(CiphertextBlob=blob, EncryptionContext=ctx, KeyId=other)
    assert code(info) == "IncorrectKeyException"
    moved = kms.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext=ctx,
                           DestinationKeyId=other, DestinationEncryptionContext={"n": "1"})
    assert moved["SourceKeyId"].endswith(key) and moved["KeyId"].endswith(other)
    assert kms.decrypt(CiphertextBlob=moved["CiphertextBlob"],
                       EncryptionContext={"n": "1"})["Plaintext"] == b"secret data"
    with pytest.raises(ClientError) as info:
        kms.encrypt(KeyId=key, Plaintext=b"x" * 4097)
    assert code(info) == "ValidationException"
    with pytest.raises(ClientError) as info:
        kms.encrypt(KeyId=str(uuid.uuid4()), Plaintext=b"x")
    assert code(info) == "NotFoundException"


def test_data_keys_and_random(kms: Any) -> None:
    key = new_key(kms)
    dk = kms.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext={"f": "1"})
    assert len(dk["Plaintext"]) == 32
    assert kms.decrypt(CiphertextBlob=dk["CiphertextBlob"],
                       EncryptionContext={"f": "1"})["Plaintext"] == dk["Plaintext"]
    assert len(kms.generate_data_key(KeyId=key, NumberOfBytes=64)["Plaintext"]) == 64
    blind = kms.generate_data_key_without_plaintext(KeyId=key, KeySpec="AES_128")
    assert "Plaintext" not in blind
    assert len(kms.decrypt(CiphertextBlob=blind["CiphertextBlob"])["Plaintext"]) == 16
    pair = kms.generate_data_key_pair(KeyId=key, KeyPairSpec="ECC_NIST_P256")
    assert pair["PublicKey"] and pair["PrivateKeyPlaintext"]
    assert kms.decrypt(CiphertextBlob=pair["PrivateKeyCiphertextBlob"])[
        "Plaintext"] == pair["PrivateKeyPlaintext"]
    blind_pair = kms.generate_data_key_pair_without_plaintext(KeyId=key,
                                                               KeyPairSpec="RSA_2048")
    assert "PrivateKeyPlaintext" not in blind_pair and blind_pair["PublicKey"]
    randoms = {kms.generate_random(NumberOfBytes=32)["Plaintext"] for _ in range(3)}
    assert len(randoms) == 3 and all(len(r) == 32 for r in randoms)
    with pytest.raises(ClientError) as info:
        kms.generate_random(NumberOfBytes=1025)
    assert code(info) == "ValidationException"


def test_sign_verify_and_public_key(kms: Any) -> None:
    key = new_key(kms, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    sig = kms.sign(KeyId=key, Message=b"document", SigningAlgorithm="ECDSA_SHA_256")
    assert kms.verify(KeyId=key, Message=b"document", Signature=sig["Signature"],
                      SigningAlgorithm="ECDSA_SHA_256")["SignatureValid"] is True
    with pytest.raises(ClientError) as info:
        kms.verify(KeyId=key, Message=b"documenT", Signature=sig["Signature"],
                   SigningAlgorithm="ECDSA_SHA_256")
    assert code(info) == "KMSInvalidSignatureException"
    pub = kms.get_public_key(KeyId=key)
    assert pub["KeySpec"] == "ECC_NIST_P256" and pub["PublicKey"][:1] == b"\x30"
    with pytest.raises(ClientError) as info:
        kms.encrypt(KeyId=key, Plaintext=b"x")
    assert code(info) == "InvalidKeyUsageException"


def test_mac(kms: Any) -> None:
    key = new_key(kms, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
    mac = kms.generate_mac(KeyId=key, Message=b"m", MacAlgorithm="HMAC_SHA_256")["Mac"]
    assert kms.verify_mac(KeyId=key, Message=b"m", Mac=mac,
                          MacAlgorithm="HMAC_SHA_256")["MacValid"] is True
    with pytest.raises(ClientError) as info:
        kms.verify_mac(KeyId=key, Message=b"n", Mac=mac, MacAlgorithm="HMAC_SHA_256")
    assert code(info) == "KMSInvalidMacException"


def test_rotation(kms: Any) -> None:
    key = new_key(kms)
    old = kms.encrypt(KeyId=key, Plaintext=b"before")["CiphertextBlob"]
    kms.enable_key_rotation(KeyId=key, RotationPeriodInDays=90)
    status = kms.get_key_rotation_status(KeyId=key)
    assert status["KeyRotationEnabled"] is True and status["RotationPeriodInDays"] == 90
    kms.rotate_key_on_demand(KeyId=key)
    assert len(kms.list_key_rotations(KeyId=key)["Rotations"]) == 1
    assert kms.decrypt(CiphertextBlob=old)["Plaintext"] == b"before"
    new = kms.encrypt(KeyId=key, Plaintext=b"after")["CiphertextBlob"]
    assert new != old and kms.decrypt(CiphertextBlob=new)["Plaintext"] == b"after"
    kms.disable_key_rotation(KeyId=key)
    assert kms.get_key_rotation_status(KeyId=key)["KeyRotationEnabled"] is False


def test_user_without_policy_is_denied(server: LiveServer, keys: dict[str, Any],
                                       kms: Any) -> None:
    key = new_key(kms)
    blob = kms.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
    nopol = kms_client(server, keys["nopol"])
    for call in (lambda: nopol.create_key(), lambda: nopol.encrypt(KeyId=key, Plaintext=b"x"),
                 lambda: nopol.decrypt(CiphertextBlob=blob),
                 lambda: nopol.describe_key(KeyId=key)):
        with pytest.raises(ClientError) as info:
            call()
        assert code(info) == "AccessDeniedException"
        assert ":user/nopol" in info.value.response["Error"]["Message"]


def test_grants(server: LiveServer, keys: dict[str, Any], kms: Any) -> None:
    """A grant lets the user without a policy use the key, within its constraints; the
    retiring principal (the admin) can list and retire it; a revoked grant allows nothing."""
    nopol = kms_client(server, keys["nopol"])
    nopol_arn = "arn:bastion:iam::000000000000:user/nopol"
    admin_arn = "arn:bastion:iam::000000000000:user/kmsadmin"
    key = new_key(kms)
    ctx = {"tenant": "acme"}
    grant = kms.create_grant(KeyId=key, GranteePrincipal=nopol_arn,
                             RetiringPrincipal=admin_arn, Operations=["Encrypt", "Decrypt"],
                             Constraints={"EncryptionContextSubset": ctx}, Name="wire")
    blob = nopol.encrypt(KeyId=key, Plaintext=b"granted", EncryptionContext=ctx)[
        "CiphertextBlob"]
    assert nopol.decrypt(CiphertextBlob=blob, EncryptionContext=ctx)["Plaintext"] == b"granted"
    with pytest.raises(ClientError) as info:
        nopol.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext={"tenant": "evil"})
    assert code(info) == "AccessDeniedException"
    listed = kms.list_grants(KeyId=key)["Grants"]
    assert [(g["GrantId"], g["GranteePrincipal"]) for g in listed] == [
        (grant["GrantId"], nopol_arn)]
    assert grant["GrantId"] in [g["GrantId"] for g in kms.list_retirable_grants(
        RetiringPrincipal=admin_arn)["Grants"]]
    kms.retire_grant(KeyId=key, GrantId=grant["GrantId"])
    with pytest.raises(ClientError) as info:
        nopol.encrypt(KeyId=key, Plaintext=b"y", EncryptionContext=ctx)
    assert code(info) == "AccessDeniedException"
    second = kms.create_grant(KeyId=key, GranteePrincipal=nopol_arn, Operations=["Encrypt"])
    assert nopol.encrypt(KeyId=key, Plaintext=b"z")["CiphertextBlob"]
    kms.revoke_grant(KeyId=key, GrantId=second["GrantId"])
    with pytest.raises(ClientError) as info:
        nopol.encrypt(KeyId=key, Plaintext=b"w")
    assert code(info) == "AccessDeniedException"
    assert kms.list_grants(KeyId=key)["Grants"] == []


def test_every_operation_is_one_the_sdk_knows(kms: Any) -> None:
    """The service's operation names are AWS's (botocore's KMS model has each)."""
    from bastion.kms.service import OPERATIONS

    assert set(OPERATIONS) <= set(kms.meta.service_model.operation_names)


def test_client_as_service_account(server: LiveServer, keys: dict[str, Any]) -> None:
    svc = kms_client(server, keys["svc"], endpoint="/kms")  # and the /kms endpoint
    key = new_key(svc)
    blob = svc.encrypt(KeyId=key, Plaintext=b"from a service")["CiphertextBlob"]
    assert svc.decrypt(CiphertextBlob=blob)["Plaintext"] == b"from a service"


def test_role_session_temporary_credentials(server: LiveServer, kms: Any) -> None:
    """ASIA credentials with a session token: the role's policies, narrowed by a session
    policy; the token is required and must be the session's."""
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action":
             "sts:AssumeRole", "Principal": {"AWS": "arn:bastion:iam::000000000000:root"}}]}
    server.cli("iam", "roles", "create", "kms-worker", "--trust-file",
               _policy_file(server, trust))
    server.cli("iam", "inline", "put", "role", "kms-worker", "kms",
               _policy_file(server, ALLOW_ALL))
    only_random = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "kms:GenerateRandom", "Resource": "*"}]}
    creds = server.cli("iam", "access-keys", "create", "--role", "kms-worker",
                       "--session-name", "batch-1", "--duration", "900",
                       "--policy-file", _policy_file(server, only_random))
    assert creds["AccessKeyId"].startswith("ASIA") and creds["SessionToken"]
    assert creds["Expiration"] - creds["CreateDate"] == 900
    session = boto3.client("kms", endpoint_url=server.url, region_name=REGION,
                           aws_access_key_id=creds["AccessKeyId"],
                           aws_secret_access_key=creds["SecretAccessKey"],
                           aws_session_token=creds["SessionToken"],
                           verify=str(server.ca_file))
    assert len(session.generate_random(NumberOfBytes=12)["Plaintext"]) == 12
    key = new_key(kms)
    with pytest.raises(ClientError) as info:
        session.encrypt(KeyId=key, Plaintext=b"x")  # the session policy does not allow it
    assert code(info) == "AccessDeniedException"
    assert "assumed-role/kms-worker/batch-1" in info.value.response["Error"]["Message"]
    for token in (None, creds["SessionToken"][:-4] + "AAAA"):
        other = boto3.client("kms", endpoint_url=server.url, region_name=REGION,
                             aws_access_key_id=creds["AccessKeyId"],
                             aws_secret_access_key=creds["SecretAccessKey"],
                             aws_session_token=token, verify=str(server.ca_file),
                             config=Config(retries={"max_attempts": 1}))
        with pytest.raises(ClientError) as info:
            other.generate_random(NumberOfBytes=13)
        assert code(info) == "UnrecognizedClientException"


def test_identical_calls_in_one_second_succeed_through_sdk_retries(kms: Any) -> None:
    """Identical requests in one second share a signature; the replay refusal is one SDKs
    retry, re-signed, so the application never sees it."""
    key = new_key(kms)
    for _ in range(4):
        assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyId"] == key


# --- the AWS CLI ---------------------------------------------------------------------------------
def test_aws_cli(server: LiveServer, keys: dict[str, Any], tmp_path: Path) -> None:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": keys["admin"]["AccessKeyId"],
           "AWS_SECRET_ACCESS_KEY": keys["admin"]["SecretAccessKey"],
           "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}

    def aws(*args: str) -> dict[str, Any]:
        out = subprocess.run([AWS, "kms", *args, "--endpoint-url", server.url, "--ca-bundle",
                              str(server.ca_file), "--output", "json"], env=env,
                             capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout) if out.stdout.strip() else {}

    key = aws("create-key", "--description", "from the aws cli")["KeyMetadata"]["KeyId"]
    (tmp_path / "plain.txt").write_bytes(b"hello from the CLI")
    enc = aws("encrypt", "--key-id", key, "--plaintext", f"fileb://{tmp_path / 'plain.txt'}",
              "--encryption-context", "app=cli")
    (tmp_path / "blob").write_bytes(base64.b64decode(enc["CiphertextBlob"]))
    dec = aws("decrypt", "--ciphertext-blob", f"fileb://{tmp_path / 'blob'}",
              "--encryption-context", "app=cli")
    assert base64.b64decode(dec["Plaintext"]) == b"hello from the CLI"
    assert aws("describe-key", "--key-id", key)["KeyMetadata"]["Description"] == \
        "from the aws cli"
    bad = subprocess.run([AWS, "kms", "decrypt", "--ciphertext-blob",
                          f"fileb://{tmp_path / 'blob'}", "--endpoint-url", server.url,
                          "--ca-bundle", str(server.ca_file)], env=env, capture_output=True,
                         text=True, timeout=60, check=False)
    assert bad.returncode != 0 and "InvalidCiphertextException" in bad.stderr


# --- the wire, byte by byte ------------------------------------------------------------------------
def signed(server: LiveServer, key: dict[str, Any], target: str | None, body: bytes,
           *, path: str = "/", secret: str | None = None,
           headers: dict[str, str] | None = None) -> tuple[str, bytes, dict[str, str]]:
    """A request signed with botocore's SigV4Auth: (url, body, headers)."""
    hdrs = {"Content-Type": "application/x-amz-json-1.1"}
    if target is not None:
        hdrs["X-Amz-Target"] = target
    hdrs.update(headers or {})
    req = AWSRequest(method="POST", url=server.url + path, data=body, headers=hdrs)
    SigV4Auth(Credentials(key["AccessKeyId"], secret or key["SecretAccessKey"]), "kms",
              REGION).add_auth(req)
    return server.url + path, body, dict(req.headers.items())


def post(server: LiveServer, request: tuple[str, bytes, dict[str, str]]) -> httpx.Response:
    url, body, headers = request
    with server.http() as http:
        return http.post(url, content=body, headers=headers)


def aws_error(resp: httpx.Response) -> tuple[int, str, str]:
    assert resp.headers["content-type"] == "application/x-amz-json-1.1"
    assert resp.headers["x-amzn-requestid"] == resp.headers["x-request-id"]
    data = resp.json()
    assert set(data) == {"__type", "message"}
    return resp.status_code, data["__type"], data["message"]


@pytest.mark.parametrize(("body", "error"), [
    (b"{not json", "SerializationException"),
    (b'{"KeyId": "a", "KeyId": "b"}', "SerializationException"),
    (b"[1, 2]", "SerializationException"),
    (b'"text"', "SerializationException"),
    (b'{"NumberOfBytes": NaN}', "SerializationException"),
    (b'{"a":' * 20000 + b"1" + b"}" * 20000, "SerializationException"),
    (b"\xff\xfe", "SerializationException"),
    (b'{"NumberOfBytes": "many"}', "ValidationException"),
], ids=["syntax", "duplicate-member", "array", "string", "nan", "deep", "not-utf8",
        "wrong-type"])
def test_malformed_bodies(server: LiveServer, keys: dict[str, Any], body: bytes,
                          error: str) -> None:
    resp = post(server, signed(server, keys["admin"], "TrentService.GenerateRandom", body))
    status, name, _ = aws_error(resp)
    assert (status, name) == (400, error)


@pytest.mark.parametrize("target", ["TrentService.NoSuchOperation", "TrentService.",
                                    "OtherService.Encrypt", "TrentService.Encrypt.X"])
def test_unknown_operations(server: LiveServer, keys: dict[str, Any], target: str) -> None:
    resp = post(server, signed(server, keys["admin"], target, b"{}"))
    assert aws_error(resp)[:2] == (400, "UnknownOperationException")


def test_kms_path_without_target(server: LiveServer, keys: dict[str, Any]) -> None:
    resp = post(server, signed(server, keys["admin"], None, b"{}", path="/kms"))
    assert aws_error(resp)[:2] == (400, "UnknownOperationException")


def test_root_without_target_is_not_kms(server: LiveServer) -> None:
    with server.http() as http:
        resp = http.post("/", content=b"{}")
    assert resp.status_code in (404, 405) and "x-amzn-requestid" not in resp.headers


def test_oversized_body(server: LiveServer, keys: dict[str, Any]) -> None:
    """Past kms_api_max_body (128 KiB) nothing reaches the KMS: 413 (from the wire API, or
    from the edge's WAF before it when its inspection limit is lower)."""
    body = json.dumps({"KeyId": "x", "Plaintext": "A" * 200_000}).encode()
    resp = post(server, signed(server, keys["admin"], "TrentService.Encrypt", body))
    assert resp.status_code == 413


@pytest.mark.anyio
async def test_body_cap_of_the_wire_api(tmp_path: Path) -> None:
    """The wire API's own cap, declared or streamed, in AWS's shape (in process, without the
    edge's WAF in front)."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware

    from bastion.edge.request import RequestContext
    from bastion.kms.api import KmsAPI
    from bastion.runtime import open_provider
    from tests.conftest import make_settings

    p = await open_provider(make_settings(tmp_path, None, kms_api_max_body=4096))
    try:
        app = Starlette(routes=KmsAPI(p).routes(), middleware=[Middleware(RequestContext)])
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://kms.test") as http:
            headers = {"X-Amz-Target": "TrentService.Encrypt"}

            async def streamed() -> Any:
                for chunk in (b"{", b" " * 3000, b" " * 3000, b"}"):
                    yield chunk

            for content in (b"{" + b" " * 5000 + b"}", streamed()):  # declared, streamed
                resp = await http.post("/", content=content, headers=headers)
                assert aws_error(resp)[:2] == (413, "ValidationException")
            resp = await http.post("/", content=b"{}", headers=headers)
            assert aws_error(resp)[:2] == (400, "MissingAuthenticationTokenException")
            resp = await http.post("/", content=b"{}")  # no target: not the KMS
            assert resp.status_code in (404, 405)
    finally:
        await p.close()


def test_wrong_content_type(server: LiveServer, keys: dict[str, Any]) -> None:
    resp = post(server, signed(server, keys["admin"], "TrentService.ListKeys", b"{}",
                               headers={"Content-Type": "text/plain"}))
    assert aws_error(resp)[:2] == (400, "SerializationException")


def _audit(server: LiveServer, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        out = subprocess.run([BASTION, "audit", "search",
                              "--request-id", request_id, "--data-dir", str(server.data_dir)],
                             capture_output=True, text=True, env=server.env, check=False)
        lines = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        if lines or time.monotonic() > deadline:
            assert lines, out.stderr
            return lines[0]
        time.sleep(0.2)


def test_sigv4_refusals_are_aws_errors_and_audited(server: LiveServer,
                                                   keys: dict[str, Any]) -> None:
    admin = keys["admin"]
    cases = {
        "wrong-secret": (signed(server, admin, "TrentService.ListKeys", b"{}",
                                secret="x" * 40), "InvalidSignatureException"),
        "unknown-key": (signed(server, {"AccessKeyId": "AKIAAAAAAAAAAAAAAAAA",
                                        "SecretAccessKey": "x" * 40},
                               "TrentService.ListKeys", b"{}"), "UnrecognizedClientException"),
    }
    url, body, headers = signed(server, admin, "TrentService.ListKeys", b"{}")
    cases["no-authorization"] = ((url, body, {k: v for k, v in headers.items()
                                              if k != "Authorization"}),
                                 "MissingAuthenticationTokenException")
    cases["tampered-body"] = ((url, b'{"Limit": 1}', headers), "InvalidSignatureException")
    cases["malformed"] = ((url, body, {**headers, "Authorization": "AWS4-HMAC-SHA256 x"}),
                          "IncompleteSignatureException")
    for name, (request, error) in cases.items():
        resp = post(server, request)
        status, got, message = aws_error(resp)
        assert (status, got) == (400, error), name
        assert admin["SecretAccessKey"] not in message
        record = _audit(server, resp.headers["x-request-id"])
        assert record["eventName"] == "Authenticate" and record["errorCode"] == error, name
        assert admin["SecretAccessKey"] not in json.dumps(record)
        if name == "wrong-secret":
            assert record["userIdentity"]["accessKeyId"] == admin["AccessKeyId"]


def test_replayed_signature_is_refused(server: LiveServer, keys: dict[str, Any]) -> None:
    request = signed(server, keys["admin"], "TrentService.GenerateRandom",
                     b'{"NumberOfBytes": 16}')
    first = post(server, request)
    assert first.status_code == 200 and len(base64.b64decode(first.json()["Plaintext"])) == 16
    again = post(server, request)
    status, name, message = aws_error(again)
    assert (status, name) == (400, "ThrottlingException") and "already used" in message
    assert _audit(server, again.headers["x-request-id"])["additionalEventData"][
        "reason"] == "ReplayedSignature"


@pytest.mark.parametrize("minutes", [-6, 6])
def test_skewed_client_clock(server: LiveServer, keys: dict[str, Any], minutes: int,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    real = botocore.auth.get_current_datetime
    monkeypatch.setattr(botocore.auth, "get_current_datetime",
                        lambda: real() + datetime.timedelta(minutes=minutes))
    kms = kms_client(server, keys["admin"], retries=1)
    with pytest.raises(ClientError) as info:
        kms.list_keys()
    assert code(info) == "InvalidSignatureException"
    word = "expired" if minutes < 0 else "not yet current"
    assert f"Signature {word}" in info.value.response["Error"]["Message"]


def test_deactivated_and_deleted_keys(server: LiveServer, kms: Any) -> None:
    server.add_user("rotating")
    server.cli("iam", "inline", "put", "user", "rotating", "kms", _policy_file(server, ALLOW_ALL))
    key = server.cli("iam", "access-keys", "create", "--user", "rotating")
    client = kms_client(server, key, retries=1)
    assert client.generate_random(NumberOfBytes=8)["Plaintext"]
    server.cli("iam", "access-keys", "deactivate", key["AccessKeyId"])
    with pytest.raises(ClientError) as info:
        client.generate_random(NumberOfBytes=9)
    assert code(info) == "UnrecognizedClientException"
    server.cli("iam", "access-keys", "activate", key["AccessKeyId"])
    assert client.generate_random(NumberOfBytes=10)["Plaintext"]
    listed = server.cli("iam", "access-keys", "list", "--user", "rotating")
    assert listed[0]["LastUsedService"] == "kms" and listed[0]["LastUsedDate"]
    server.cli("iam", "access-keys", "delete", key["AccessKeyId"])
    with pytest.raises(ClientError) as info:
        client.generate_random(NumberOfBytes=11)
    assert code(info) == "UnrecognizedClientException"


# --- the parser on its own -------------------------------------------------------------------
@pytest.mark.parametrize(("body", "parsed"), [(b"", {}), (b"  ", {}), (b"{}", {}),
                                             (b'{"a": [1, {"b": null}]}',
                                              {"a": [1, {"b": None}]})])
def test_parse_body_accepts(body: bytes, parsed: dict[str, Any]) -> None:
    assert parse_body(body) == parsed


@pytest.mark.parametrize("body", [b"{", b"[]", b"1", b'{"a": Infinity}', b'{"a":1,"a":1}',
                                  b'{"a":' * 5000 + b"1" + b"}" * 5000, b"\xff"])
def test_parse_body_refuses(body: bytes) -> None:
    with pytest.raises(KMSError) as info:
        parse_body(body)
    assert info.value.code == "SerializationException"
