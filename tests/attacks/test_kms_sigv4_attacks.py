"""Attacks on the AWS KMS wire API of a real ``bastion serve``: SigV4 canonicalisation and
scope confusions, access keys of disabled owners, KMS authorization and state bypasses, and
a database-only attacker rewriting rows. Requests are signed with botocore's SigV4 signer
(the fixtures of ``tests/kms/test_wire_api.py``: a server without key caching)."""

from __future__ import annotations

import base64
import json
import secrets
import sqlite3
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.edge.test_proxy import raw_request
from tests.kms import test_wire_api as wire
from tests.kms.test_wire_api import REGION, _policy_file, aws_error, kms_client, post, signed
from tests.live import LiveServer

# the wire API tests' fixtures: a server without key caching, its access keys
server, keys = wire.server, wire.keys


@pytest.fixture(scope="module")
def kms(server: LiveServer, keys: dict[str, Any]) -> Iterator[Any]:
    """The wire API tests' boto3 client, closed before the server stops: its kept-alive
    connection would hold the server's shutdown (15 s, then a kill)."""
    client = kms_client(server, keys["admin"])
    yield client
    client.close()

pytestmark = pytest.mark.interop
Request = tuple[str, bytes, dict[str, str]]


def sign_raw(server: LiveServer, key: dict[str, Any], body: bytes, *, path: str = "/kms",
             headers: dict[str, str] | None = None, service: str = "kms",
             region: str = REGION, token: str | None = None) -> Request:
    """Signed by botocore over exactly ``headers`` (plus host and x-amz-date)."""
    req = AWSRequest(method="POST", url=server.url + path, data=body, headers=headers or {})
    SigV4Auth(Credentials(key["AccessKeyId"], key["SecretAccessKey"], token), service,
              region).add_auth(req)
    return server.url + path, body, dict(req.headers.items())


def db(server: LiveServer) -> sqlite3.Connection:
    return sqlite3.connect(server.data_dir / "bastion.db", timeout=30)


def code_of(info: pytest.ExceptionInfo[ClientError]) -> str:
    return str(info.value.response["Error"]["Code"])


# --- SigV4 canonicalisation ------------------------------------------------------------------
def test_unsigned_target_is_refused(server: LiveServer, keys: dict[str, Any]) -> None:
    url, body, headers = sign_raw(server, keys["admin"], b"{}")
    headers["X-Amz-Target"] = "TrentService.CreateKey"  # added after signing
    resp = post(server, (url, body, headers))
    status, kind, _ = aws_error(resp)
    assert (status, kind) == (400, "IncompleteSignatureException")


def test_second_target_header_breaks_the_signature(server: LiveServer,
                                                   keys: dict[str, Any]) -> None:
    url, body, headers = signed(server, keys["admin"], "TrentService.GenerateRandom",
                                b'{"NumberOfBytes": 8}', path="/kms")
    pairs = [*headers.items(), ("X-Amz-Target", "TrentService.CreateKey")]
    with server.http() as http:
        resp = http.post(url, content=body, headers=pairs)
    assert aws_error(resp)[:2] == (400, "InvalidSignatureException")


@pytest.mark.parametrize("claimed", ["UNSIGNED-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
                                     "0" * 64])
def test_payload_hash_claims_are_checked(server: LiveServer, keys: dict[str, Any],
                                         claimed: str) -> None:
    resp = post(server, signed(server, keys["admin"], "TrentService.GenerateRandom",
                               b'{"NumberOfBytes": 8}', headers={
                                   "X-Amz-Content-SHA256": claimed}))
    status, kind, _ = aws_error(resp)
    assert status == 400 and kind in ("IncompleteSignatureException",
                                      "InvalidSignatureException")


def test_body_swapped_after_signing(server: LiveServer, keys: dict[str, Any]) -> None:
    url, _, headers = signed(server, keys["admin"], "TrentService.GenerateRandom",
                             b'{"NumberOfBytes": 8}')
    resp = post(server, (url, b'{"NumberOfBytes": 1024}', headers))
    assert aws_error(resp)[:2] == (400, "InvalidSignatureException")


@pytest.mark.parametrize(("service", "region"), [("s3", REGION), ("sts", REGION),
                                                 ("kms", "eu-west-1")])
def test_scope_of_another_service_or_region(server: LiveServer, keys: dict[str, Any],
                                            service: str, region: str) -> None:
    url, body, headers = sign_raw(server, keys["admin"], b"{}", service=service,
                                  region=region, headers={
                                      "X-Amz-Target": "TrentService.ListKeys",
                                      "Content-Type": "application/x-amz-json-1.1"})
    resp = post(server, (url, body, headers))
    if service == "kms":  # no kms_region set: any region is accepted, like a local KMS
        assert resp.status_code == 200
    else:
        assert aws_error(resp)[:2] == (400, "InvalidSignatureException")


@pytest.mark.parametrize("path", ["//kms", "/kms/.", "/./kms", "/x/../kms", "/KMS"])
def test_path_variants_do_not_reach_or_confuse(server: LiveServer, keys: dict[str, Any],
                                              path: str) -> None:
    """Signed for ``/kms``, sent elsewhere: never an accepted KMS call."""
    url, body, headers = signed(server, keys["admin"], "TrentService.GenerateRandom",
                                b'{"NumberOfBytes": 8}', path="/kms")
    lines = [f"POST {path} HTTP/1.1", f"Host: {headers.get('host', url.split('/')[2])}"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() != "host"]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    status, head, payload = raw_request(server, ("\r\n".join(lines) + "\r\n\r\n").encode()
                                        + body)
    assert status in (400, 403, 404), (status, payload[:200])
    assert b"Plaintext" not in payload


def test_credential_date_not_matching_amz_date(server: LiveServer, keys: dict[str, Any]) -> None:
    url, body, headers = signed(server, keys["admin"], "TrentService.ListKeys", b"{}")
    auth = headers["Authorization"]
    date = headers["X-Amz-Date"][:8]
    headers["Authorization"] = auth.replace(f"/{date}/", "/20200101/")
    status, kind, message = aws_error(post(server, (url, body, headers)))
    assert (status, kind) == (400, "InvalidSignatureException")
    assert "Signature=" not in message and keys["admin"]["SecretAccessKey"] not in message


def test_huge_authorization_header(server: LiveServer, keys: dict[str, Any]) -> None:
    url, body, headers = signed(server, keys["admin"], "TrentService.ListKeys", b"{}")
    headers["Authorization"] += ", " + "A" * 6000
    status, kind, _ = aws_error(post(server, (url, body, headers)))
    assert (status, kind) == (400, "IncompleteSignatureException")


def test_session_token_on_a_long_term_key(server: LiveServer, keys: dict[str, Any]) -> None:
    url, body, headers = sign_raw(server, keys["admin"], b"{}", token="forged-token", headers={
        "X-Amz-Target": "TrentService.ListKeys"})
    assert aws_error(post(server, (url, body, headers)))[:2] == (
        400, "UnrecognizedClientException")


def test_replay_is_refused(server: LiveServer, keys: dict[str, Any]) -> None:
    request = signed(server, keys["admin"], "TrentService.GenerateRandom",
                     b'{"NumberOfBytes": 16}')
    assert post(server, request).status_code == 200
    assert aws_error(post(server, request))[:2] == (400, "ThrottlingException")


def test_key_of_a_disabled_user_is_refused(server: LiveServer) -> None:
    server.add_user("soon-disabled")
    server.cli("iam", "inline", "put", "user", "soon-disabled", "kms", _policy_file(
        server, {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}))
    key = server.cli("iam", "access-keys", "create", "--user", "soon-disabled")
    assert post(server, signed(server, key, "TrentService.ListKeys", b"{}")).status_code == 200
    with db(server) as conn:
        conn.execute("UPDATE users SET disabled = 1 WHERE username = 'soon-disabled'")
    resp = post(server, signed(server, key, "TrentService.ListKeys", b'{"Limit": 5}'))
    assert aws_error(resp)[:2] == (400, "UnrecognizedClientException")


# --- KMS authorization -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def scoped(server: LiveServer, kms: Any) -> Iterator[dict[str, Any]]:
    """``key_a`` and ``key_b``; user ``onlyb`` may use only ``key_b``."""
    key_a = kms.create_key()["KeyMetadata"]
    key_b = kms.create_key()["KeyMetadata"]
    server.add_user("onlyb")
    server.cli("iam", "inline", "put", "user", "onlyb", "kms", _policy_file(server, {
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "kms:*", "Resource": key_b["Arn"]}]}))
    key = server.cli("iam", "access-keys", "create", "--user", "onlyb")
    client = kms_client(server, key, retries=1)
    yield {"a": key_a, "b": key_b, "client": client}
    client.close()


def test_ciphertext_of_key_a_not_decrypted_by_a_key_b_caller(kms: Any,
                                                             scoped: dict[str, Any]) -> None:
    blob = kms.encrypt(KeyId=scoped["a"]["KeyId"], Plaintext=b"secret-of-a")["CiphertextBlob"]
    onlyb = scoped["client"]
    with pytest.raises(ClientError) as info:
        onlyb.decrypt(CiphertextBlob=blob)
    assert code_of(info) == "AccessDeniedException"
    assert "secret-of-a" not in str(info.value.response)
    with pytest.raises(ClientError) as info:  # naming B does not help either
        onlyb.decrypt(CiphertextBlob=blob, KeyId=scoped["b"]["KeyId"])
    assert code_of(info) == "IncorrectKeyException"
    with pytest.raises(ClientError) as info:  # nor re-encrypting A's ciphertext to B
        onlyb.re_encrypt(CiphertextBlob=blob, DestinationKeyId=scoped["b"]["KeyId"])
    assert code_of(info) == "AccessDeniedException"


def test_alias_to_a_forbidden_key_does_not_help(kms: Any, scoped: dict[str, Any]) -> None:
    alias = f"alias/lure-{uuid.uuid4().hex[:8]}"
    kms.create_alias(AliasName=alias, TargetKeyId=scoped["a"]["KeyId"])
    with pytest.raises(ClientError) as info:
        scoped["client"].encrypt(KeyId=alias, Plaintext=b"x")
    assert code_of(info) == "AccessDeniedException"


def test_cross_account_arn_is_not_found(kms: Any, scoped: dict[str, Any]) -> None:
    arn = scoped["b"]["Arn"]
    account = arn.split(":")[4]
    other = arn.replace(f":{account}:", ":999999999999:")
    with pytest.raises(ClientError) as info:
        scoped["client"].encrypt(KeyId=other, Plaintext=b"x")
    assert code_of(info) == "NotFoundException"


def test_grant_constraints(server: LiveServer, kms: Any, keys: dict[str, Any]) -> None:
    key = kms.create_key()["KeyMetadata"]
    grantee = kms_client(server, keys["nopol"], retries=1)
    # the principal ARN, from an AccessDenied message
    with pytest.raises(ClientError) as info:
        grantee.encrypt(KeyId=key["KeyId"], Plaintext=b"x")
    message = str(info.value.response["Error"]["Message"])
    arn = message.split("User: ", 1)[1].split(" is not", 1)[0]
    kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=arn, Operations=["Decrypt"],
                     Constraints={"EncryptionContextSubset": {"app": "a"}})
    kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=arn, Operations=["Encrypt"],
                     Constraints={"EncryptionContextEquals": {"app": "a"}})
    ok = grantee.encrypt(KeyId=key["KeyId"], Plaintext=b"p", EncryptionContext={"app": "a"})
    blob = ok["CiphertextBlob"]
    assert grantee.decrypt(CiphertextBlob=blob, EncryptionContext={"app": "a"})[
        "Plaintext"] == b"p"
    for ctx in ({"app": "a", "extra": "1"}, {}, {"App": "a"}):
        with pytest.raises(ClientError) as info:  # Equals: exactly that map
            grantee.encrypt(KeyId=key["KeyId"], Plaintext=b"p", EncryptionContext=ctx)
        assert code_of(info) == "AccessDeniedException"
    wider = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"q",
                        EncryptionContext={"app": "a", "tenant": "t1"})["CiphertextBlob"]
    assert grantee.decrypt(CiphertextBlob=wider, EncryptionContext={
        "app": "a", "tenant": "t1"})["Plaintext"] == b"q"  # Subset: a superset is fine
    other = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"r",
                        EncryptionContext={"app": "b"})["CiphertextBlob"]
    with pytest.raises(ClientError) as info:
        grantee.decrypt(CiphertextBlob=other, EncryptionContext={"app": "b"})
    assert code_of(info) == "AccessDeniedException"
    with pytest.raises(ClientError) as info:  # the grant holds no CreateGrant: no widening
        grantee.create_grant(KeyId=key["KeyId"], GranteePrincipal=arn,
                             Operations=["Decrypt"])
    assert code_of(info) == "AccessDeniedException"


def test_context_canonicalisation_has_no_collisions(kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"p",
                       EncryptionContext={"a": "b=c", "d": ""})["CiphertextBlob"]
    for ctx in ({"a": "b", "c": "d"}, {"a": "b=c,d"}, {"a": "b=cd"}, {"a": "b=c"}):
        with pytest.raises(ClientError) as info:
            kms.decrypt(CiphertextBlob=blob, EncryptionContext=ctx)
        assert code_of(info) == "InvalidCiphertextException"


def test_states_block_use(kms: Any) -> None:
    src = kms.create_key()["KeyMetadata"]["KeyId"]
    dst = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=src, Plaintext=b"p")["CiphertextBlob"]
    kms.disable_key(KeyId=dst)
    with pytest.raises(ClientError) as info:
        kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=dst)
    assert code_of(info) == "DisabledException"
    kms.schedule_key_deletion(KeyId=src, PendingWindowInDays=7)
    with pytest.raises(ClientError) as info:
        kms.decrypt(CiphertextBlob=blob)
    assert code_of(info) == "KMSInvalidStateException"


@pytest.mark.parametrize("count", [0, -1, 1025, 2**70, 1.5, "32", True])
def test_data_key_sizes(server: LiveServer, keys: dict[str, Any], kms: Any, count: Any) -> None:
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    body = json.dumps({"KeyId": key, "NumberOfBytes": count}).encode()
    status, kind, _ = aws_error(post(server, signed(
        server, keys["admin"], "TrentService.GenerateDataKey", body)))
    assert (status, kind) == (400, "ValidationException")


def test_sign_and_verify_abuse(server: LiveServer, keys: dict[str, Any], kms: Any) -> None:
    key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"][
        "KeyId"]
    for digest in (b"short", b"x" * 33, b""):
        body = json.dumps({"KeyId": key, "Message": base64.b64encode(digest).decode(),
                           "MessageType": "DIGEST",
                           "SigningAlgorithm": "ECDSA_SHA_256"}).encode()
        resp = post(server, signed(server, keys["admin"], "TrentService.Sign", body))
        assert aws_error(resp)[:2] == (400, "ValidationException")
    for size in (6145, 20_000, 90_000):  # AWS: a Signature is 1 to 6144 bytes
        sig = base64.b64encode(b"\x30" * size).decode()
        body = json.dumps({"KeyId": key, "Message": base64.b64encode(b"m").decode(),
                           "Signature": sig, "SigningAlgorithm": "ECDSA_SHA_256"}).encode()
        resp = post(server, signed(server, keys["admin"], "TrentService.Verify", body))
        assert aws_error(resp)[:2] == (400, "ValidationException"), (size, resp.text)
    sig = base64.b64encode(b"\x30" * 200_000).decode()  # past kms_api_max_body: the edge
    body = json.dumps({"KeyId": key, "Signature": sig}).encode()
    resp = post(server, signed(server, keys["admin"], "TrentService.Verify", body))
    assert resp.status_code == 413 and sig[:100] not in resp.text
    garbage = base64.b64encode(b"\x30\x81\xff" + b"\x02" * 60).decode()
    body = json.dumps({"KeyId": key, "Message": base64.b64encode(b"m").decode(),
                       "Signature": garbage, "SigningAlgorithm": "ECDSA_SHA_256"}).encode()
    resp = post(server, signed(server, keys["admin"], "TrentService.Verify", body))
    assert aws_error(resp)[:2] == (400, "KMSInvalidSignatureException")


def test_errors_do_not_echo_plaintext(server: LiveServer, keys: dict[str, Any], kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    marker = "TOPSECRET-" + uuid.uuid4().hex
    big = base64.b64encode((marker * 500).encode()).decode()
    body = json.dumps({"KeyId": key, "Plaintext": big}).encode()
    resp = post(server, signed(server, keys["admin"], "TrentService.Encrypt", body))
    assert aws_error(resp)[:2] == (400, "ValidationException")
    assert marker not in resp.text and big[:64] not in resp.text


# --- a database-only attacker ----------------------------------------------------------------
def test_swapped_key_material_does_not_open(kms: Any, server: LiveServer,
                                            keys: dict[str, Any]) -> None:
    a = kms.create_key()["KeyMetadata"]["KeyId"]
    b = kms.create_key()["KeyMetadata"]["KeyId"]
    with db(server) as conn:  # before any use: nothing is cached yet
        ma = conn.execute("SELECT material FROM kms_key_versions WHERE key_id = ?",
                          (a,)).fetchone()[0]
        mb = conn.execute("SELECT material FROM kms_key_versions WHERE key_id = ?",
                          (b,)).fetchone()[0]
        conn.execute("UPDATE kms_key_versions SET material = ? WHERE key_id = ?", (mb, a))
        conn.execute("UPDATE kms_key_versions SET material = ? WHERE key_id = ?", (ma, b))
    for key in (a, b):  # fails closed, without a word about the material
        body = json.dumps({"KeyId": key, "Plaintext": "cA=="}).encode()
        resp = post(server, signed(server, keys["admin"], "TrentService.Encrypt", body))
        assert aws_error(resp)[:2] == (500, "KMSInternalException"), resp.text


def test_access_key_moved_to_another_owner_fails_closed(server: LiveServer,
                                                        keys: dict[str, Any]) -> None:
    server.add_user("mallory")
    key = server.cli("iam", "access-keys", "create", "--user", "mallory")
    denied = post(server, signed(server, key, "TrentService.CreateKey", b"{}"))
    assert aws_error(denied)[:2] == (400, "AccessDeniedException")
    with db(server) as conn:
        admin_owner = conn.execute("SELECT owner_id FROM access_keys WHERE id = ?",
                                   (keys["admin"]["AccessKeyId"],)).fetchone()[0]
        conn.execute("UPDATE access_keys SET owner_id = ? WHERE id = ?",
                     (admin_owner, key["AccessKeyId"]))
    resp = post(server, signed(server, key, "TrentService.CreateKey",
                               b'{"Description": "as admin"}'))
    assert aws_error(resp)[:2] == (400, "UnrecognizedClientException")


# --- temporary credentials, audit, key policy -----------------------------------------------
@pytest.fixture(scope="module")
def sessions(server: LiveServer) -> list[dict[str, Any]]:
    """Two ASIA sessions of one role allowed kms:GenerateRandom."""
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action":
             "sts:AssumeRole", "Principal": {"AWS": "arn:bastion:iam::000000000000:root"}}]}
    server.cli("iam", "roles", "create", "attack-role", "--trust-file",
               _policy_file(server, trust))
    server.cli("iam", "inline", "put", "role", "attack-role", "kms", _policy_file(server, {
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "kms:GenerateRandom", "Resource": "*"}]}))
    return [server.cli("iam", "access-keys", "create", "--role", "attack-role",
                       "--session-name", f"s-{n}", "--duration", "900") for n in range(2)]


def random_call(server: LiveServer, key: dict[str, Any], token: str | None) -> Request:
    body = json.dumps({"NumberOfBytes": 1 + secrets.randbelow(1024)}).encode()
    return sign_raw(server, key, body, token=token, headers={"X-Amz-Target": "TrentService.GenerateRandom",
                                          "Content-Type": "application/x-amz-json-1.1"})


def test_session_token_of_another_session(server: LiveServer,
                                          sessions: list[dict[str, Any]]) -> None:
    one, two = sessions
    assert post(server, random_call(server, one, one["SessionToken"])).status_code == 200
    resp = post(server, random_call(server, one, two["SessionToken"]))
    assert aws_error(resp)[:2] == (400, "UnrecognizedClientException")
    resp = post(server, random_call(server, one, None))
    assert aws_error(resp)[:2] == (400, "UnrecognizedClientException")


def test_session_expiry_edited_in_the_database_fails_closed(
        server: LiveServer, sessions: list[dict[str, Any]]) -> None:
    """A database-only attacker who stretches a session key's life (or cuts it) gets a key
    that no longer unwraps: the expiry is bound into the secret's wrapping. Real expiry
    (ExpiredTokenException) is tested with a moved clock in tests/identity."""
    _, two = sessions
    assert post(server, random_call(server, two, two["SessionToken"])).status_code == 200
    with db(server) as conn:
        conn.execute("UPDATE access_keys SET expires_at = expires_at + 10 * 365 * 86400 "
                     "WHERE id = ?", (two["AccessKeyId"],))
    time.sleep(2.5)  # past access_key_cache_ttl
    resp = post(server, random_call(server, two, two["SessionToken"]))
    assert aws_error(resp)[:2] == (400, "UnrecognizedClientException")


def test_audit_holds_no_plaintext_or_data_key(server: LiveServer, kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    marker = b"PLAINTEXT-" + uuid.uuid4().hex.encode()
    enc = kms.encrypt(KeyId=key, Plaintext=marker)
    dk = kms.generate_data_key(KeyId=key, KeySpec="AES_256")
    dec = kms.decrypt(CiphertextBlob=enc["CiphertextBlob"])
    for out in (enc, dk, dec):
        record = json.dumps(wire._audit(server, out["ResponseMetadata"]["RequestId"]))
        assert marker.decode() not in record
        assert base64.b64encode(marker).decode() not in record
        assert base64.b64encode(dk["Plaintext"]).decode() not in record
        assert dk["Plaintext"].hex() not in record


def test_key_policy_lockout_is_refused(kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    deny_all = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Principal": "*", "Action": "kms:*", "Resource": "*"}]}
    with pytest.raises(ClientError) as info:
        kms.put_key_policy(KeyId=key, PolicyName="default", Policy=json.dumps(deny_all))
    assert code_of(info) == "MalformedPolicyDocumentException"
    kms.describe_key(KeyId=key)  # nothing changed: the old policy still lets us in
    with pytest.raises(ClientError) as info:
        kms.create_key(Policy=json.dumps(deny_all))
    assert code_of(info) == "MalformedPolicyDocumentException"
    # saying so explicitly is the caller's choice, as in AWS
    kms.put_key_policy(KeyId=key, PolicyName="default", Policy=json.dumps(deny_all),
                       BypassPolicyLockoutSafetyCheck=True)
    with pytest.raises(ClientError) as info:
        kms.describe_key(KeyId=key)
    assert code_of(info) == "AccessDeniedException"
