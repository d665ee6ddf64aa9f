"""STS ``AssumeRole`` on AWS's own wire: the query protocol, signed with SigV4 by an access
key, answering XML, so that AWS SDKs (``boto3.client("sts").assume_role``) and the AWS CLI
get temporary credentials of a Bastion role.

The protocol (AWS STS API Reference, "AssumeRole" and "Common Parameters"; Smithy's
``awsQuery``)::

    POST /sts  (the SDK's endpoint_url is https://<bastion>/sts)
    Content-Type: application/x-www-form-urlencoded; charset=utf-8
    Authorization: AWS4-HMAC-SHA256 Credential=AKIA…/…/<region>/sts/aws4_request, …
    Action=AssumeRole&Version=2011-06-15&RoleArn=…&RoleSessionName=…
        [&DurationSeconds=900..role max][&Policy=<session policy JSON>]

The answer is ``AssumeRoleResponse/AssumeRoleResult`` with ``Credentials`` (``AccessKeyId``
``ASIA…``, ``SecretAccessKey``, ``SessionToken``, ``Expiration``) and ``AssumedRoleUser``
(``Arn``, ``AssumedRoleId``); errors are ``ErrorResponse/Error/{Type, Code, Message}`` with
AWS STS's codes: ``AccessDenied`` (403: the trust policy does not allow the caller, or the
role does not exist; AWS does not say which), ``ValidationError``, ``InvalidAction``,
``MalformedPolicyDocument``, ``PackedPolicyTooLarge``, and the SigV4 refusals under their
query-protocol names (``SignatureDoesNotMatch``, ``InvalidClientTokenId``, ``ExpiredToken``,
``IncompleteSignature``, ``MissingAuthenticationToken``).

The decision is the bearer ``/sts`` endpoint's (``oauth/sts.py``): one evaluation with the
role's trust policy as the resource policy and the caller's identity policies, boundary and
session policy. The caller is the access key's owner (a user, a client, or a role session
for role chaining). The credentials are an ``ASIA`` access key of the role session
(``identity/access_keys.create_session_key``: the session token is stored only hashed), so
they work on every SigV4 API (``kms``) and stop working at ``Expiration``
(``ExpiredTokenException``). A chained session lasts at most an hour (as in AWS) and never
outlives the session that made it (stricter than AWS).
Every answer is an ``AssumeRole`` audit record naming the caller's access key id, with the
new key's id but never its secret or token; refusals before authentication go through the
refusal budget (``kms/refusals.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from starlette.requests import Request
from starlette.routing import BaseRoute, Match
from starlette.types import Receive, Scope, Send

from bastion.audit.trail import AuditUnavailable
from bastion.edge.authz import user_identity
from bastion.edge.sigv4 import INVALID_TOKEN, SigV4Error, UnrecognizedClient
from bastion.iam.authorizer import Principal, Subject
from bastion.iam.scheme import SESSION_NAME_RE, parse_principal_arn, principal_arn, session_arn
from bastion.iam.store import ROLE_SQL
from bastion.identity.access_keys import MIN_SESSION, AccessKeyRecord, create_session_key
from bastion.identity.users import IdentityError
from bastion.kms.api import SigV4Plumbing
from bastion.oauth import sts
from bastion.oauth.provider import Provider
from bastion.oauth.sts import StsError

log = logging.getLogger("bastion.sts")
VERSION = "2011-06-15"
NAMESPACE = f"https://sts.amazonaws.com/doc/{VERSION}/"
FORM_TYPE = "application/x-www-form-urlencoded"
XML_TYPE = b"text/xml"
MAX_FIELDS = 32
CHAINED_MAX = 3600  # AWS: a session made by a role session lasts at most one hour
#: the AWS JSON names edge/sigv4.py uses -> the query protocol's (and their HTTP status)
QUERY_ERRORS = {
    "MissingAuthenticationTokenException": ("MissingAuthenticationToken", 403),
    "IncompleteSignatureException": ("IncompleteSignature", 400),
    "UnrecognizedClientException": ("InvalidClientTokenId", 403),
    "InvalidSignatureException": ("SignatureDoesNotMatch", 403),
    "ExpiredTokenException": ("ExpiredToken", 400),
    "ThrottlingException": ("Throttling", 400),
}


def _xml(tag: str, value: object) -> str:
    return f"<{tag}>{escape(str(value))}</{tag}>"


def error_body(code: str, message: str, request_id: str, status: int) -> bytes:
    """AWS query-protocol error XML (``Sender`` for 4xx, ``Receiver`` for 5xx)."""
    kind = "Receiver" if status >= 500 else "Sender"
    return (f'<ErrorResponse xmlns="{NAMESPACE}"><Error>{_xml("Type", kind)}'
            f'{_xml("Code", code)}{_xml("Message", message)}</Error>'
            f'{_xml("RequestId", request_id)}</ErrorResponse>').encode()


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_form(body: bytes) -> dict[str, str]:
    """The query parameters: UTF-8, strictly parsed, each name once."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True,
                          max_num_fields=MAX_FIELDS, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise StsError("ValidationError", "the request body is not a well-formed "
                       "application/x-www-form-urlencoded form") from None
    out: dict[str, str] = {}
    for name, value in pairs:
        if name in out:
            raise StsError("ValidationError", f"parameter {name[:64]!r} is repeated")
        out[name] = value
    return out


class StsWireAPI:
    """The ASGI endpoint (``routes()`` places it before the bearer ``/sts`` route)."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.max_body = provider.settings.max_body_bytes
        self.keys, self.verifier, self.owners, self.refusals = SigV4Plumbing.build(
            provider, service="sts")

    def routes(self) -> list[BaseRoute]:
        return [StsQueryRoute(self)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.setdefault("state", {})
        request_id = str(state.get("request_id") or "")
        try:
            status, body = 200, await self._handle(scope, receive, state, request_id)
        except StsError as exc:
            status, body = exc.status, error_body(exc.code, exc.message, request_id,
                                                  exc.status)
        except SigV4Error as exc:
            code, status = QUERY_ERRORS.get(exc.code, ("InvalidClientTokenId", 403))
            body = error_body(code, exc.message, request_id, status)
        except AuditUnavailable:
            raise  # the edge answers 503: a decision that cannot be recorded is not given
        except Exception:
            log.exception("STS wire API: request %s failed", request_id)
            status = 500
            body = error_body("InternalFailure", "An internal error occurred.", request_id,
                              500)
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", XML_TYPE), (b"content-length", str(len(body)).encode()),
            (b"x-amzn-requestid", request_id.encode()), (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": body})

    async def _read(self, scope: Scope, receive: Receive) -> bytes:
        too_large = StsError("RequestEntityTooLarge", "request body too large", 413)
        declared = _header(scope["headers"], b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            raise too_large
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _handle(self, scope: Scope, receive: Receive, state: dict[str, Any],
                      request_id: str) -> bytes:
        headers: Sequence[tuple[bytes, bytes]] = scope["headers"]
        raw = await self._read(scope, receive)
        try:
            verified = await self.verifier.verify(
                scope["method"], scope.get("raw_path") or scope["path"].encode(),
                scope.get("query_string", b""), headers, raw)
            record = verified.key
            subject = await self.owners.subject(record)
            principal = await self.provider.iam.principal(subject) if subject else None
            if subject is None or principal is None:
                raise UnrecognizedClient(INVALID_TOKEN, record.id)
        except SigV4Error as exc:
            ident: dict[str, Any] = {"type": "Unknown"}
            if exc.access_key_id:
                ident["accessKeyId"] = exc.access_key_id[:128]
            await self.refusals.refused(
                "AssumeRole", state.get("client_ip"), QUERY_ERRORS.get(
                    exc.code, ("InvalidClientTokenId", 403))[0],
                user_identity=ident, error_message=exc.message,
                additional={"scheme": "AWS4-HMAC-SHA256", "service": "sts",
                            "reason": type(exc).__name__})
            raise
        try:
            await self.keys.touch(record, verified.service, verified.region)
        except Exception:  # bookkeeping: never fails the call
            log.warning("could not record the last use of access key %s", record.id,
                        exc_info=True)
        actor = {**user_identity(subject, principal), "accessKeyId": record.id}
        call: dict[str, Any] = {"params": {}, "role_arn": None}
        try:
            return await self._assume_role(scope, headers, raw, request_id, subject,
                                           principal, record, actor, call)
        except StsError as exc:
            await self.provider.audit.emit(
                "AssumeRole", user_identity=actor, request_parameters=call["params"] or None,
                resources=[{"ARN": call["role_arn"]}] if call["role_arn"] else (),
                error_code=exc.code, error_message=(exc.audit or exc.message)[:500])
            raise

    async def _assume_role(self, scope: Scope, headers: Sequence[tuple[bytes, bytes]],
                           raw: bytes, request_id: str, subject: Subject,
                           principal: Principal, record: AccessKeyRecord,
                           actor: dict[str, Any], call: dict[str, Any]) -> bytes:
        provider, account = self.provider, self.provider.settings.account_id
        ctype = _header(headers, b"content-type")
        if ctype is None or ctype.split(";")[0].strip().lower() != FORM_TYPE:
            raise StsError("ValidationError", f"Content-Type must be {FORM_TYPE}")
        params = parse_form(raw)
        role_arn, session_name = params.get("RoleArn", ""), params.get("RoleSessionName", "")
        call["params"] = {"action": params.get("Action", "")[:64],
                          "roleArn": role_arn[:256], "roleSessionName": session_name[:64]}
        if params.get("Action") != "AssumeRole" or params.get("Version") != VERSION:
            raise StsError("InvalidAction", "Could not find operation "
                           f"{params.get('Action', '')[:64]} for version "
                           f"{params.get('Version', '')[:16]}")
        ref = parse_principal_arn(role_arn, account)
        if ref is None or ref.kind != "role" or ref.session:
            raise StsError("ValidationError", "RoleArn must be a role ARN of this account")
        role_arn = principal_arn("role", ref.name, account)
        call["role_arn"] = role_arn
        if not SESSION_NAME_RE.fullmatch(session_name):
            raise StsError("ValidationError",
                           "RoleSessionName must be 2-64 of [A-Za-z0-9_+=,.@-]")
        session_policy = sts.session_policy(params.get("Policy"))
        call["params"]["policy"] = session_policy is not None

        def denied(why: str) -> StsError:
            message = (f"User: {principal.arn} is not authorized to perform: "
                       f"sts:AssumeRole on resource: {role_arn}")
            return StsError("AccessDenied", message, 403, audit=f"{message} because {why}")

        role = await provider.fast.one(ROLE_SQL, name=ref.name)
        if role is None:
            raise denied("no such role")
        role_max = int(role[3])
        chained = record.owner_kind == "role"
        duration = sts.duration(params.get("DurationSeconds"),
                                min(role_max, CHAINED_MAX) if chained else role_max)
        call["params"]["durationSeconds"] = duration
        decision = sts.decide(provider, Request(scope), subject, principal, role_arn,
                              ref.name, role[2])
        if not decision.allowed:
            raise denied(decision.reason)
        if chained and record.expires_at is not None:
            # a chained session never outlives its parent, so no descendant outlasts a
            # session once it ends (stricter than AWS, which allows an hour from each hop)
            left = int(record.expires_at - time.time())
            if left < MIN_SESSION:
                raise StsError("ValidationError", "the calling session expires in less "
                               f"than {MIN_SESSION} seconds: it cannot start another")
            duration = min(duration, left)
        try:
            async with provider.sessions.begin() as db:
                key = await create_session_key(db, provider.wrapper, ref.name, session_name,
                                               duration, session_policy)
        except IdentityError as exc:  # the role vanished between the read and the write
            raise denied(str(exc)) from None
        if key.session_token is None or key.expires_at is None:  # pragma: no cover
            raise StsError("InternalFailure", "An internal error occurred.", 500)
        session = session_arn(ref.name, session_name, account)
        expiration = _iso(key.expires_at)
        await provider.audit.emit(
            "AssumeRole", user_identity=actor, request_parameters=call["params"],
            # CloudTrail nests these under "credentials", a key the trail's redaction
            # blanks whole: the id and expiry are kept flat (never the secret or token)
            response_elements={"accessKeyId": key.access_key_id, "expiration": expiration,
                               "assumedRoleUser": {"arn": session,
                                                   "assumedRoleId":
                                                       f"{ref.name}:{session_name}"}},
            resources=[{"ARN": role_arn, "type": "AWS::IAM::Role", "accountId": account}])
        result = (
            "<AssumeRoleResult><AssumedRoleUser>"
            f"{_xml('Arn', session)}{_xml('AssumedRoleId', f'{ref.name}:{session_name}')}"
            "</AssumedRoleUser><Credentials>"
            f"{_xml('AccessKeyId', key.access_key_id)}"
            f"{_xml('SecretAccessKey', key.secret_access_key)}"
            f"{_xml('SessionToken', key.session_token)}{_xml('Expiration', expiration)}"
            "</Credentials>"
            + (_xml("PackedPolicySize", min(100, len(session_policy) * 100 // 2048))
               if session_policy else "")
            + "</AssumeRoleResult>")
        return (f'<AssumeRoleResponse xmlns="{NAMESPACE}">{result}<ResponseMetadata>'
                f'{_xml("RequestId", request_id)}</ResponseMetadata>'
                "</AssumeRoleResponse>").encode()


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1").strip()
    return None


def _sigv4_signed(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    value = _header(headers, b"authorization")
    return value is not None and value.startswith("AWS4-HMAC-SHA256 ")


class StsQueryRoute(BaseRoute):
    """``POST /sts`` (and ``/sts/``) signed with SigV4. Other requests fall through: a
    bearer-token ``POST /sts`` reaches ``oauth/sts.py``. Not ``/``: the edge's ``sts`` rate
    limit covers ``/sts``, and the root stays the KMS's."""

    def __init__(self, app: StsWireAPI) -> None:
        self.app = app

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if (scope["type"] != "http" or scope["method"] != "POST"
                or scope["path"] not in ("/sts", "/sts/") or not _sigv4_signed(scope["headers"])):
            return Match.NONE, {}
        return Match.FULL, {}

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        from starlette.routing import NoMatchFound

        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


__all__ = ["StsQueryRoute", "StsWireAPI", "error_body", "parse_form"]
