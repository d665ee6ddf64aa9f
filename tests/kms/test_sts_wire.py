"""STS ``AssumeRole`` on the AWS wire (iam/sts_wire.py): boto3's STS client signed with a
user's access key against a real ``bastion serve``; the temporary credentials then work for
boto3's KMS client (``aws_session_token``) and expire. Bad inputs get AWS's error shape
(``ErrorResponse/Error/Code``) and codes; the trust policy decides, through Bastion IAM."""

from __future__ import annotations

import asyncio
import datetime
import json
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from bastion.app import build_app
from bastion.iam.sts_wire import StsQueryRoute, parse_form
from bastion.kms.api import AmzTargetRoute
from bastion.runtime import open_provider
from tests.conftest import make_settings
from tests.edge.uvicorn_thread import served
from tests.kms.test_wire_api import ALLOW_ALL
from tests.live import BASTION, LiveServer, start_live_server

pytestmark = pytest.mark.interop
REGION = "us-east-1"
ACCOUNT = "000000000000"
NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"


def role_arn(name: str) -> str:
    return f"arn:bastion:iam::{ACCOUNT}:role/{name}"


def trust(*principals: str) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"AWS": list(principals)}}]}


def setup_iam(cli: Any, data: Path) -> dict[str, dict[str, Any]]:
    """Users ``assumer`` (trusted by role ``kms-app``) and ``outsider`` (trusted by
    nothing); role ``kms-app`` (kms:*), role ``chained`` (trusts ``kms-app``'s sessions),
    role ``locked`` (trusts only ``outsider``... of another account)."""
    def policy(doc: dict[str, Any]) -> str:
        path = data.parent / f"policy-{uuid.uuid4().hex}.json"
        path.write_text(json.dumps(doc))
        return str(path)

    for user in ("assumer", "outsider"):
        cli("users", "create", user, "--password-stdin", "--email", f"{user}@example.com",
            stdin="correct horse battery staple\n")
    cli("iam", "roles", "create", "kms-app", "--trust-file",
        policy(trust(f"arn:bastion:iam::{ACCOUNT}:user/assumer")))
    cli("iam", "inline", "put", "role", "kms-app", "kms", policy(ALLOW_ALL))
    cli("iam", "roles", "create", "chained", "--trust-file", policy(trust(role_arn("kms-app"))),
        "--max-session-duration", "7200")
    cli("iam", "inline", "put", "role", "chained", "kms", policy(ALLOW_ALL))
    cli("iam", "roles", "create", "locked", "--trust-file",
        policy(trust("arn:bastion:iam::111111111111:root")))
    return {"assumer": cli("iam", "access-keys", "create", "--user", "assumer"),
            "outsider": cli("iam", "access-keys", "create", "--user", "outsider")}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from start_live_server(tmp_path_factory.mktemp("sts-wire"),
                                 env_over={"BASTION_ACCESS_KEY_CACHE_TTL": "0"})


@pytest.fixture(scope="module")
def keys(server: LiveServer) -> dict[str, dict[str, Any]]:
    def cli(*args: str, stdin: str | None = None) -> Any:
        return server.cli(*args, stdin=stdin)

    return setup_iam(cli, server.data_dir)


def client(service: str, url: str, key: dict[str, Any], ca: Path | None = None, *,
           token: str | None = None, validate: bool = True) -> Any:
    return boto3.client(service, endpoint_url=url, region_name=REGION,
                        aws_access_key_id=key["AccessKeyId"],
                        aws_secret_access_key=key["SecretAccessKey"],
                        aws_session_token=token, verify=str(ca) if ca else False,
                        config=Config(retries={"max_attempts": 1},
                                      parameter_validation=validate))


def sts(server: LiveServer, key: dict[str, Any], *, path: str = "/sts",
        validate: bool = True) -> Any:
    return client("sts", server.url + path, key, server.ca_file, validate=validate)


def session_kms(server: LiveServer, creds: dict[str, Any]) -> Any:
    return client("kms", server.url, {"AccessKeyId": creds["AccessKeyId"],
                                      "SecretAccessKey": creds["SecretAccessKey"]},
                  server.ca_file, token=creds["SessionToken"])


def audit(server: LiveServer, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        out = subprocess.run([BASTION, "audit", "search", "--request-id", request_id,
                              "--data-dir", str(server.data_dir)], capture_output=True,
                             text=True, env=server.env, check=False)
        found = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, (found, out.stderr)
            return found[0]
        time.sleep(0.2)


def error(info: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    resp = info.value.response
    return resp["ResponseMetadata"]["HTTPStatusCode"], resp["Error"]["Code"]


# --- the flow ------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/sts", "/sts/"], ids=["sts", "sts-slash"])
def test_assume_role_then_kms_with_the_session(server: LiveServer,
                                               keys: dict[str, Any], path: str) -> None:
    user = keys["assumer"]
    before = datetime.datetime.now(datetime.UTC)
    out = sts(server, user, path=path).assume_role(RoleArn=role_arn("kms-app"),
                                                   RoleSessionName="batch-1",
                                                   DurationSeconds=900)
    creds, who = out["Credentials"], out["AssumedRoleUser"]
    assert creds["AccessKeyId"].startswith("ASIA") and len(creds["SecretAccessKey"]) == 40
    assert creds["SessionToken"]
    lifetime = (creds["Expiration"] - before).total_seconds()
    assert 895 <= lifetime <= 905
    assert who == {"Arn": f"arn:bastion:sts::{ACCOUNT}:assumed-role/kms-app/batch-1",
                   "AssumedRoleId": "kms-app:batch-1"}
    record = audit(server, out["ResponseMetadata"]["RequestId"])
    assert record["eventName"] == "AssumeRole" and "errorCode" not in record
    assert record["userIdentity"]["accessKeyId"] == user["AccessKeyId"]
    assert record["responseElements"]["accessKeyId"] == creds["AccessKeyId"]
    text = json.dumps(record)
    for secret in (creds["SecretAccessKey"], creds["SessionToken"], user["SecretAccessKey"]):
        assert secret not in text

    kms = session_kms(server, creds)
    key = kms.create_key(Description="made by a role session")["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"session data")
    assert kms.decrypt(CiphertextBlob=blob["CiphertextBlob"])["Plaintext"] == b"session data"
    used = audit(server, blob["ResponseMetadata"]["RequestId"])
    assert used["userIdentity"]["accessKeyId"] == creds["AccessKeyId"]
    assert used["userIdentity"]["type"] == "AssumedRole"
    assert used["userIdentity"]["arn"] == who["Arn"]


def test_session_policy_narrows_the_role(server: LiveServer, keys: dict[str, Any]) -> None:
    only_random = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "kms:GenerateRandom", "Resource": "*"}]})
    out = sts(server, keys["assumer"]).assume_role(
        RoleArn=role_arn("kms-app"), RoleSessionName="narrow", Policy=only_random)
    kms = session_kms(server, out["Credentials"])
    assert len(kms.generate_random(NumberOfBytes=8)["Plaintext"]) == 8
    with pytest.raises(ClientError) as info:
        kms.create_key()
    assert error(info) == (400, "AccessDeniedException")


def test_role_chaining(server: LiveServer, keys: dict[str, Any]) -> None:
    """A session assumes a role that trusts its role; the chained session lasts at most an
    hour and never longer than its parent."""
    parent = sts(server, keys["assumer"]).assume_role(
        RoleArn=role_arn("kms-app"), RoleSessionName="parent", DurationSeconds=1800)["Credentials"]
    as_session = client("sts", server.url + "/sts", parent, server.ca_file,
                        token=parent["SessionToken"])
    with pytest.raises(ClientError) as info:
        as_session.assume_role(RoleArn=role_arn("chained"), RoleSessionName="child",
                               DurationSeconds=7200)  # the role allows it; chaining does not
    assert error(info) == (400, "ValidationError")
    child = as_session.assume_role(RoleArn=role_arn("chained"), RoleSessionName="child",
                                   DurationSeconds=3600)["Credentials"]
    assert child["Expiration"] <= parent["Expiration"]
    assert session_kms(server, child).generate_random(NumberOfBytes=4)["Plaintext"]


# --- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("who", "kwargs", "status", "code"), [
    ("assumer", {"RoleArn": role_arn("no-such-role")}, 403, "AccessDenied"),
    ("outsider", {"RoleArn": role_arn("kms-app")}, 403, "AccessDenied"),
    ("assumer", {"RoleArn": role_arn("locked")}, 403, "AccessDenied"),
    ("assumer", {"RoleArn": role_arn("kms-app"), "DurationSeconds": 7200}, 400,
     "ValidationError"),
    ("assumer", {"RoleArn": role_arn("kms-app"), "DurationSeconds": 60}, 400,
     "ValidationError"),
    ("assumer", {"RoleArn": "arn:aws:iam::123456789012:role/kms-app"}, 400, "ValidationError"),
    ("assumer", {"RoleArn": role_arn("kms-app"), "RoleSessionName": "bad name!"}, 400,
     "ValidationError"),
    ("assumer", {"RoleArn": role_arn("kms-app"), "Policy": '{"Version": "2012-10-17"'}, 400,
     "MalformedPolicyDocument"),
], ids=["unknown-role", "trust-denies-user", "trust-denies-everyone", "duration-above-max",
        "duration-below-min", "foreign-arn", "bad-session-name", "bad-session-policy"])
def test_refusals(server: LiveServer, keys: dict[str, Any], who: str, kwargs: dict[str, Any],
                  status: int, code: str) -> None:
    args = {"RoleSessionName": "session", **kwargs}
    with pytest.raises(ClientError) as info:
        sts(server, keys[who], validate=False).assume_role(**args)
    assert error(info) == (status, code)
    record = audit(server, info.value.response["ResponseMetadata"]["RequestId"])
    assert record["eventName"] == "AssumeRole" and record["errorCode"] == code
    assert record["userIdentity"]["accessKeyId"] == keys[who]["AccessKeyId"]
    assert keys[who]["SecretAccessKey"] not in json.dumps(record)


def signed_form(server: LiveServer, key: dict[str, Any], form: str, *,
                secret: str | None = None, path: str = "/sts") -> httpx.Response:
    body = form.encode()
    req = AWSRequest(method="POST", url=server.url + path, data=body, headers={
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    SigV4Auth(Credentials(key["AccessKeyId"], secret or key["SecretAccessKey"]), "sts",
              REGION).add_auth(req)
    with server.http() as http:
        return http.post(path, content=body, headers=dict(req.headers.items()))


def error_xml(resp: httpx.Response) -> tuple[int, str, str]:
    """(status, Error/Code, Error/Type) of an AWS query-protocol error."""
    root = ET.fromstring(resp.content)
    assert root.tag == f"{NS}ErrorResponse"
    err = root.find(f"{NS}Error")
    assert err is not None and root.findtext(f"{NS}RequestId") == resp.headers["x-request-id"]
    return resp.status_code, err.findtext(f"{NS}Code") or "", err.findtext(f"{NS}Type") or ""


@pytest.mark.parametrize(("form", "secret", "expected"), [
    (f"Action=AssumeRole&Version=2011-06-15&RoleArn={role_arn('nope')}&RoleSessionName=x1",
     None, (403, "AccessDenied", "Sender")),
    ("Action=GetSessionToken&Version=2011-06-15", None, (400, "InvalidAction", "Sender")),
    (f"Action=AssumeRole&Version=2010-01-01&RoleArn={role_arn('kms-app')}&RoleSessionName=x",
     None, (400, "InvalidAction", "Sender")),
    ("Action=AssumeRole&Action=AssumeRole&Version=2011-06-15", None,
     (400, "ValidationError", "Sender")),
    ("Action=AssumeRole&Version=2011-06-15&%ZZ", None, (400, "ValidationError", "Sender")),
    (f"Action=AssumeRole&Version=2011-06-15&RoleArn={role_arn('kms-app')}&RoleSessionName=x1",
     "x" * 40, (403, "SignatureDoesNotMatch", "Sender")),
], ids=["unknown-role", "other-action", "other-version", "repeated", "malformed-form",
        "bad-signature"])
def test_error_shape_on_the_wire(server: LiveServer, keys: dict[str, Any], form: str,
                                 secret: str | None, expected: tuple[int, str, str]) -> None:
    resp = signed_form(server, keys["assumer"], form, secret=secret)
    assert resp.headers["content-type"] == "text/xml"
    assert error_xml(resp) == expected


def test_unknown_access_key(server: LiveServer) -> None:
    ghost = {"AccessKeyId": "AKIAGHOSTGHOSTGHOSTG", "SecretAccessKey": "g" * 40}
    with pytest.raises(ClientError) as info:
        sts(server, ghost).assume_role(RoleArn=role_arn("kms-app"), RoleSessionName="g1")
    assert error(info) == (403, "InvalidClientTokenId")
    record = audit(server, info.value.response["ResponseMetadata"]["RequestId"])
    assert record["userIdentity"] == {"type": "Unknown", "accessKeyId": ghost["AccessKeyId"]}
    assert record["errorCode"] == "InvalidClientTokenId"


def test_root_is_not_sts(server: LiveServer, keys: dict[str, Any]) -> None:
    """STS is served at /sts only (where the edge's sts rate limit applies)."""
    form = (f"Action=AssumeRole&Version=2011-06-15&RoleArn={role_arn('kms-app')}"
            "&RoleSessionName=root")
    resp = signed_form(server, keys["assumer"], form, path="/")
    assert resp.status_code in (404, 405) and b"AssumeRole" not in resp.content


def test_bearer_sts_is_still_served(server: LiveServer) -> None:
    """Without a SigV4 signature, POST /sts is the bearer-token endpoint (oauth/sts.py)."""
    with server.http() as http:
        resp = http.post("/sts", data={"Action": "AssumeRole"})
    assert resp.status_code == 401 and "xml" not in resp.headers.get("content-type", "")


@pytest.mark.parametrize(("body", "parsed"), [
    (b"Action=AssumeRole&Version=2011-06-15", {"Action": "AssumeRole",
                                                "Version": "2011-06-15"}),
    (b"Policy=%7B%22a%22%3A1%7D&X=", {"Policy": '{"a":1}', "X": ""}),
])
def test_parse_form_accepts(body: bytes, parsed: dict[str, str]) -> None:
    assert parse_form(body) == parsed


@pytest.mark.parametrize("body", [b"a=1&a=2", b"\xff=1", b"noequals", b"&".join(
    b"k%d=v" % i for i in range(40)), b"a=%FF"])
def test_parse_form_refuses(body: bytes) -> None:
    from bastion.oauth.sts import StsError

    with pytest.raises(StsError) as info:
        parse_form(body)
    assert info.value.code == "ValidationError"


# --- expiry (the server's clock moved, in process: the same app over real HTTP) ---------------
@pytest.mark.anyio
async def test_temporary_credentials_expire(tmp_path: Path) -> None:
    data = tmp_path / "data"

    def cli(*args: str, stdin: str | None = None) -> Any:
        out = subprocess.run([BASTION, *args, "--data-dir", str(data), "--json"], input=stdin,
                             capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    keys = await asyncio.to_thread(setup_iam, cli, data)
    p = await open_provider(make_settings(tmp_path, None, access_key_cache_ttl=0))
    try:
        app = build_app(p)
        verifiers = [r.app.verifier for r in app.routes
                     if isinstance(r, AmzTargetRoute | StsQueryRoute)]
        assert len(verifiers) == 3  # /kms, / (KMS) and the STS route
        async with served(app) as url:
            sts_client = client("sts", url + "/sts", keys["assumer"])
            out = await asyncio.to_thread(lambda: sts_client.assume_role(
                RoleArn=role_arn("kms-app"), RoleSessionName="short", DurationSeconds=900))
            creds = out["Credentials"]
            kms = client("kms", url, creds, token=creds["SessionToken"])
            assert (await asyncio.to_thread(kms.generate_random, NumberOfBytes=4))["Plaintext"]
            ahead = time.time() + 901  # the session's end has passed on the server
            for v in verifiers:
                v.clock = lambda: ahead
            with pytest.raises(ClientError) as info:
                await asyncio.to_thread(kms.generate_random, NumberOfBytes=5)
            assert error(info) == (400, "ExpiredTokenException")
            chained = client("sts", url + "/sts", creds, token=creds["SessionToken"])
            with pytest.raises(ClientError) as info:
                await asyncio.to_thread(lambda: chained.assume_role(
                    RoleArn=role_arn("chained"), RoleSessionName="late"))
            assert error(info) == (400, "ExpiredToken")
        await p.audit.flush()
        rows = await p.fast.all("SELECT body FROM audit_events WHERE outcome = 'failure' "
                                "ORDER BY seq")
        refused = [json.loads(bytes(r[0])) for r in rows]
        assert [(r["eventName"], r["errorCode"]) for r in refused] == [
            ("Authenticate", "ExpiredTokenException"), ("AssumeRole", "ExpiredToken")]
        for record in refused:  # the expired key is named; its secret and token are not
            assert record["userIdentity"]["accessKeyId"] == creds["AccessKeyId"]
            text = json.dumps(record)
            assert creds["SecretAccessKey"] not in text and creds["SessionToken"] not in text
    finally:
        await p.close()
