"""``bastion iam``: validate and simulate policies; manage policies, attachments, inline
policies, boundaries, tags, roles and resource policies. Every change is audited."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from bastion.cli.common import DataDir, JsonOut, _emit, _run, _settings, err, operator, out

iam_app = typer.Typer(help="Zero-trust IAM: AWS-style JSON policies.", no_args_is_help=True)
policies_app = typer.Typer(help="Managed policies.", no_args_is_help=True)
roles_app = typer.Typer(help="Roles (assumable; tokens carry role names).",
                        no_args_is_help=True)
inline_app = typer.Typer(help="Inline policies of users, groups, roles and clients.",
                         no_args_is_help=True)
iam_app.add_typer(policies_app, name="policies")
iam_app.add_typer(roles_app, name="roles")
iam_app.add_typer(inline_app, name="inline")
access_keys_app = typer.Typer(help="Access keys (AWS SigV4) of users and of clients as "
                              "service accounts.", no_args_is_help=True)
iam_app.add_typer(access_keys_app, name="access-keys")

PolicyKindOpt = Annotated[str, typer.Option(
    "--kind", help="identity | resource | trust | boundary | session")]
KindArg = Annotated[str, typer.Argument(help="user | group | role | client")]
NameArg = Annotated[str, typer.Argument(help="Username, group, role or client id.")]
ContextOpt = Annotated[list[str] | None, typer.Option(
    "--context", help="KEY=VALUE; give a key several times for a multi-valued key.")]


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        err.print(f"[red]error:[/red] cannot read {path}: {exc}")
        raise typer.Exit(2) from None


# --- validate -----------------------------------------------------------------------------
@iam_app.command("validate")
def validate(file: Annotated[Path, typer.Argument(help="Policy JSON file.")],
             kind: PolicyKindOpt = "identity", data_dir: DataDir = None,
             as_json: JsonOut = False) -> None:
    """Check a policy like IAM Access Analyzer's validate-policy. Exit 1 on errors."""
    from bastion.iam import validate_policy

    del data_dir  # accepted like everywhere; validating needs no state

    if kind not in ("identity", "resource", "trust", "boundary", "session"):
        err.print("[red]error:[/red] --kind must be identity, resource, trust, boundary or "
                  "session")
        raise typer.Exit(2)
    findings = validate_policy(_read(file), kind=kind)  # type: ignore[arg-type]
    lines = [f"{f.severity:16} {f.code:28} {f.path}: {f.message}" for f in findings]
    _emit(as_json, {"findings": [f.to_dict() for f in findings]},
          "\n".join(lines) if lines else "no findings")
    if any(f.severity == "ERROR" for f in findings):
        raise typer.Exit(1)


# --- simulate -----------------------------------------------------------------------------
def _context(pairs: list[str] | None) -> dict[str, Any]:
    ctx: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            err.print(f"[red]error:[/red] --context wants KEY=VALUE, got {pair!r}")
            raise typer.Exit(2)
        if key in ctx:
            prev = ctx[key]
            ctx[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            ctx[key] = value
    return ctx


def _clock(ctx: dict[str, Any]) -> None:
    lower = {k.lower() for k in ctx}
    now = time.time()
    if "aws:currenttime" not in lower:
        ctx["aws:CurrentTime"] = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if "aws:epochtime" not in lower:
        ctx["aws:EpochTime"] = str(int(now))


def _show(decision: Any, as_json: bool) -> None:
    data = decision.to_dict()
    lines = [f"decision: {decision.decision}"]
    lines += [f"  {s.effect:5} {s.source:8} {s.policy_id} statement {s.index}"
              + (f" ({s.sid})" if s.sid else "") for s in decision.statements]
    if decision.reason:
        lines.append(f"  {decision.reason}")
    _emit(as_json, data, "\n".join(lines))


@iam_app.command("simulate")
def simulate(
    action: Annotated[str, typer.Option(help="The action, e.g. orders:GetOrder.")],
    resource: Annotated[str, typer.Option(help="The resource ARN.")],
    principal: Annotated[str | None, typer.Option(
        help="A stored principal's ARN (its stored policies are evaluated).")] = None,
    caller_arn: Annotated[str | None, typer.Option(
        help="The caller's ARN when evaluating --policy-file policies.")] = None,
    policy_file: Annotated[list[Path] | None, typer.Option(
        help="Identity policy file (repeatable), like simulate-custom-policy.")] = None,
    resource_policy_file: Annotated[Path | None, typer.Option(
        help="Resource-based policy file.")] = None,
    boundary_file: Annotated[Path | None, typer.Option(
        help="Permissions boundary file.")] = None,
    context: ContextOpt = None,
    data_dir: DataDir = None,
    as_json: JsonOut = False,
) -> None:
    """Evaluate a request: allowed, explicitDeny or implicitDeny, and the deciding
    statements. aws:CurrentTime/aws:EpochTime come from the clock unless given."""
    from bastion.iam import PolicyError, PolicySet, Request, evaluate, parse_policy

    ctx = _context(context)
    if (principal is None) == (caller_arn is None):
        err.print("[red]error:[/red] give exactly one of --principal or --caller-arn")
        raise typer.Exit(2)
    if caller_arn is not None:
        if not policy_file:
            err.print("[red]error:[/red] --caller-arn needs at least one --policy-file")
            raise typer.Exit(2)
        try:
            identity = PolicySet(parse_policy(_read(f), policy_id=f.name) for f in policy_file)
            rp = parse_policy(_read(resource_policy_file), kind="resource",
                              policy_id=resource_policy_file.name) \
                if resource_policy_file else None
            boundary = PolicySet([parse_policy(_read(boundary_file), kind="boundary",
                                               policy_id=boundary_file.name)]) \
                if boundary_file else None
        except PolicyError as exc:
            err.print(f"[red]error:[/red] invalid policy: {exc}")
            raise typer.Exit(2) from None
        _clock(ctx)  # stored principals get the clock keys from the authorizer
        ctx.setdefault("aws:PrincipalArn", caller_arn)
        name = caller_arn.rsplit("/", 1)[-1]
        if ":user/" in caller_arn:
            ctx.setdefault("aws:username", name)
        decision = evaluate(Request(caller_arn, action, resource, ctx), identity,
                            resource_policy=rp, boundary=boundary)
        _show(decision, as_json)
        return
    if policy_file or boundary_file:
        err.print("[red]error:[/red] --policy-file/--boundary-file go with --caller-arn")
        raise typer.Exit(2)
    assert principal is not None
    rp_text = _read(resource_policy_file) if resource_policy_file else None

    async def job(p: Any) -> Any:
        from bastion.admin.iam_api import stored_subject

        subject = await stored_subject(p.fast, p.settings.account_id, principal)
        _, decision = await p.iam.decide(subject, action, resource, source_ip=None,
                                         secure=True, extra=ctx, resource_policy=rp_text)
        return decision

    _show(_run(_settings(data_dir=data_dir), job), as_json)


# --- policies -----------------------------------------------------------------------------
def _policy_text(p: dict[str, Any]) -> str:
    return f"{p['name']:28} v{p['version']:<3} {p['arn']}  {p['description']}"


@policies_app.command("create")
def policies_create(name: Annotated[str, typer.Argument()],
                    file: Annotated[Path, typer.Argument(help="Policy JSON file.")],
                    description: Annotated[str, typer.Option()] = "",
                    data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Create a managed policy (validated first)."""
    text = _read(file)

    async def job(p: Any) -> Any:
        return await p.iam_admin.create_policy(name, text, description=description,
                                               actor=operator())

    res = _run(_settings(data_dir=data_dir), job, create=True)
    _emit(as_json, res, f"created {res['arn']}")


@policies_app.command("update")
def policies_update(name: Annotated[str, typer.Argument()],
                    file: Annotated[Path, typer.Argument(help="Policy JSON file.")],
                    data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Replace a managed policy's document (a new version)."""
    text = _read(file)

    async def job(p: Any) -> Any:
        return await p.iam_admin.update_policy(name, text, actor=operator())

    res = _run(_settings(data_dir=data_dir), job)
    _emit(as_json, res, f"updated {res['arn']} to version {res['version']}")


@policies_app.command("delete")
def policies_delete(name: Annotated[str, typer.Argument()], data_dir: DataDir = None,
                    as_json: JsonOut = False) -> None:
    """Delete a managed policy (refused while attached)."""
    async def job(p: Any) -> None:
        await p.iam_admin.delete_policy(name, actor=operator())

    _run(_settings(data_dir=data_dir), job)
    _emit(as_json, {"deleted": name}, f"deleted {name}")


@policies_app.command("get")
def policies_get(name: Annotated[str, typer.Argument()], data_dir: DataDir = None,
                 as_json: JsonOut = False) -> None:
    """Show a managed policy and its document."""
    async def job(p: Any) -> Any:
        return await p.iam_admin.get_policy(name)

    res = _run(_settings(data_dir=data_dir), job)
    _emit(as_json, res, _policy_text(res) + "\n" + json.dumps(res["document"], indent=2))


@policies_app.command("list")
def policies_list(data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """List managed policies."""
    async def job(p: Any) -> Any:
        return await p.iam_admin.list_policies()

    res = _run(_settings(data_dir=data_dir), job)
    _emit(as_json, res, "\n".join(_policy_text(r) for r in res))


# --- attachments, boundaries, tags --------------------------------------------------------
@iam_app.command("attach")
def attach(kind: KindArg, name: NameArg, policy: Annotated[str, typer.Argument()],
           data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Attach a managed policy to a user, group, role or client."""
    async def job(p: Any) -> None:
        await p.iam_admin.attach(kind, name, policy, actor=operator())

    _run(_settings(data_dir=data_dir), job)
    _emit(as_json, {"attached": policy, "kind": kind, "name": name},
          f"attached {policy} to {kind} {name}")


@iam_app.command("detach")
def detach(kind: KindArg, name: NameArg, policy: Annotated[str, typer.Argument()],
           data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Detach a managed policy."""
    async def job(p: Any) -> None:
        await p.iam_admin.detach(kind, name, policy, actor=operator())

    _run(_settings(data_dir=data_dir), job)
    _emit(as_json, {"detached": policy, "kind": kind, "name": name},
          f"detached {policy} from {kind} {name}")


@iam_app.command("boundary")
def boundary(kind: KindArg, name: NameArg,
             policy: Annotated[str | None, typer.Argument(
                 help="Managed policy to use as the boundary; omit with --clear.")] = None,
             clear: Annotated[bool, typer.Option("--clear", help="Remove the boundary.")] = False,
             data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Set (or --clear) a principal's permissions boundary."""
    if (policy is None) != clear:
        err.print("[red]error:[/red] give a policy, or --clear")
        raise typer.Exit(2)

    async def job(p: Any) -> None:
        await p.iam_admin.set_boundary(kind, name, policy, actor=operator())

    _run(_settings(data_dir=data_dir), job)
    _emit(as_json, {"kind": kind, "name": name, "boundary": policy},
          f"boundary of {kind} {name}: {policy or 'none'}")


@iam_app.command("tag")
def tag(kind: KindArg, name: NameArg,
        tags: Annotated[list[str], typer.Argument(help="KEY=VALUE (replaces all tags).")],
        data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Set a principal's tags (aws:PrincipalTag/KEY in conditions)."""
    pairs = dict(t.partition("=")[::2] for t in tags)

    async def job(p: Any) -> None:
        await p.iam_admin.set_tags(kind, name, pairs, actor=operator())

    _run(_settings(data_dir=data_dir), job)
    _emit(as_json, {"kind": kind, "name": name, "tags": pairs}, f"tagged {kind} {name}")


@iam_app.command("show")
def show(kind: KindArg, name: NameArg, data_dir: DataDir = None,
         as_json: JsonOut = False) -> None:
    """A principal's ARN, attached and inline policies, boundary and tags."""
    async def job(p: Any) -> Any:
        return await p.iam_admin.principal(kind, name)

    res = _run(_settings(data_dir=data_dir), job)
    _emit(as_json, res, "\n".join([
        res["arn"], f"  attached: {', '.join(res['attached_policies']) or '-'}",
        f"  inline:   {', '.join(res['inline_policies']) or '-'}",
        f"  boundary: {res['permissions_boundary'] or '-'}",
        f"  tags:     {res['tags'] or '-'}"]))


@inline_app.command("put")
def inline_put(kind: KindArg, name: NameArg, policy_name: Annotated[str, typer.Argument()],
               file: Annotated[Path, typer.Argument(help="Policy JSON file.")],
               data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Create or replace an inline policy."""
    text = _read(file)

    async def job(p: Any) -> None:
        await p.iam_admin.put_inline(kind, name, policy_name, text, actor=operator())

    _run(_settings(data_dir=data_dir), job)
    _emit(as_json, {"kind": kind, "name": name, "policy": policy_name},
          f"put inline policy {policy_name} on {kind} {name}")


@inline_app.command("delete")
def inline_delete(kind: KindArg, name: NameArg, policy_name: Annotated[str, typer.Argument()],
                  data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Delete an inline policy."""
    async def job(p: Any) -> None:
        await p.iam_admin.delete_inline(kind, name, policy_name, actor=operator())

    _run(_settings(data_dir=data_dir), job)
    _emit(as_json, {"deleted": policy_name}, f"deleted inline policy {policy_name}")


# --- roles --------------------------------------------------------------------------------
@roles_app.command("create")
def roles_create(name: Annotated[str, typer.Argument()],
                 trust_file: Annotated[Path, typer.Option(help="Trust policy JSON file.")],
                 description: Annotated[str, typer.Option()] = "",
                 max_session_duration: Annotated[int, typer.Option()] = 3600,
                 data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Create a role with a trust policy (who may assume it)."""
    text = _read(trust_file)

    async def job(p: Any) -> Any:
        return await p.iam_admin.create_role(name, text, description=description,
                                             max_session_duration=max_session_duration,
                                             actor=operator())

    res = _run(_settings(data_dir=data_dir), job, create=True)
    _emit(as_json, res, f"created {res['arn']}")


@roles_app.command("update-trust")
def roles_update_trust(name: Annotated[str, typer.Argument()],
                       trust_file: Annotated[Path, typer.Option(help="Trust policy file.")],
                       data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Replace a role's trust policy."""
    text = _read(trust_file)

    async def job(p: Any) -> None:
        await p.iam_admin.update_trust(name, text, actor=operator())

    _run(_settings(data_dir=data_dir), job)
    _emit(as_json, {"updated": name}, f"updated the trust policy of {name}")


@roles_app.command("delete")
def roles_delete(name: Annotated[str, typer.Argument()], data_dir: DataDir = None,
                 as_json: JsonOut = False) -> None:
    """Delete a role (refused while it has policies)."""
    async def job(p: Any) -> None:
        await p.iam_admin.delete_role(name, actor=operator())

    _run(_settings(data_dir=data_dir), job)
    _emit(as_json, {"deleted": name}, f"deleted role {name}")


@roles_app.command("list")
def roles_list(data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """List roles."""
    async def job(p: Any) -> Any:
        return await p.iam_admin.list_roles()

    res = _run(_settings(data_dir=data_dir), job)
    _emit(as_json, res, "\n".join(f"{r['name']:20} {r['arn']}  {r['description']}"
                                  for r in res))


@iam_app.command("resource-policy")
def resource_policy(resource_arn: Annotated[str, typer.Argument()],
                    file: Annotated[Path, typer.Argument(help="Policy JSON file.")],
                    data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Set the resource-based policy of a resource."""
    text = _read(file)

    async def job(p: Any) -> None:
        await p.iam_admin.put_resource_policy(resource_arn, text, actor=operator())

    _run(_settings(data_dir=data_dir), job, create=True)
    _emit(as_json, {"resource": resource_arn}, f"set the policy of {resource_arn}")


# --- access keys (identity/access_keys.py) -------------------------------------------------
UserOpt = Annotated[str | None, typer.Option("--user", metavar="NAME", help="A username.")]
ClientOpt = Annotated[str | None, typer.Option("--client", metavar="ID",
                                               help="A client id (a service account).")]
KeyIdArg = Annotated[str, typer.Argument(metavar="ACCESS_KEY_ID")]


def _key_resource(p: Any, row: dict[str, Any]) -> list[dict[str, str]]:
    from bastion.iam.scheme import principal_arn

    name = row["OwnerId"] if row["OwnerKind"] != "user" else row["Owner"]
    return [{"type": "Bastion::IAM::AccessKey", "accessKeyId": row["AccessKeyId"],
             "ARN": principal_arn(row["OwnerKind"], name, p.settings.account_id)}]


@access_keys_app.command("create")
def access_keys_create(
    user: UserOpt = None, client: ClientOpt = None,
    role: Annotated[str | None, typer.Option(
        "--role", metavar="NAME", help="A role: temporary credentials of a session.")] = None,
    session_name: Annotated[str, typer.Option(
        "--session-name", metavar="NAME", help="With --role: the session's name.")] = "cli",
    duration: Annotated[int, typer.Option(
        "--duration", metavar="SECONDS", help="With --role: lifetime (900 to the role's "
        "maximum).")] = 3600,
    policy_file: Annotated[Path | None, typer.Option(
        "--policy-file", help="With --role: a session policy that narrows the role.")] = None,
    data_dir: DataDir = None, as_json: JsonOut = False,
) -> None:
    """Create an access key pair for a user or a client (at most two per owner), or
    temporary credentials (with a session token) for a role session; the secret is printed
    once."""
    from bastion.identity.access_keys import create_access_key, create_session_key
    from bastion.identity.users import IdentityError
    from bastion.runtime import record_change

    policy = _read(policy_file) if policy_file is not None else None

    async def job(p: Any) -> dict[str, Any]:
        async with p.sessions.begin() as db:
            if role is not None:
                if user is not None or client is not None:
                    raise IdentityError("name exactly one owner: --user, --client or --role")
                key = await create_session_key(db, p.wrapper, role, session_name, duration,
                                               policy)
            else:
                key = await create_access_key(db, p.wrapper, user=user, client=client)
            data = key.to_dict()
            params: dict[str, Any] = {"ownerKind": key.owner_kind, "owner": key.owner_name}
            if role is not None:
                params.update(roleSessionName=session_name, durationSeconds=duration)
            await record_change(p, db, "CreateAccessKey", user_identity=operator(),
                                request_parameters=params,
                                response_elements={"accessKeyId": key.access_key_id,
                                                   "status": "Active",
                                                   "expiration": key.expires_at},
                                resources=_key_resource(p, data))
        return data

    data = _run(_settings(data_dir=data_dir), job)
    text = (f"created access key {data['AccessKeyId']} for {data['OwnerKind']} "
            f"{data['Owner']}\nsecret access key (shown once): {data['SecretAccessKey']}")
    if "SessionToken" in data:
        text += f"\nsession token: {data['SessionToken']}\nexpires: {data['Expiration']}"
    _emit(as_json, data, text)


@access_keys_app.command("list")
def access_keys_list(user: UserOpt = None, client: ClientOpt = None,
                     data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """List access keys (all, or one owner's): status, creation and last use."""
    from bastion.identity.access_keys import list_access_keys

    async def job(p: Any) -> list[dict[str, Any]]:
        async with p.sessions() as db:
            return await list_access_keys(db, user=user, client=client)

    rows = _run(_settings(data_dir=data_dir), job)

    def when(ts: int | None) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ts else "-"

    _emit(as_json, rows, "\n".join(
        f"{r['AccessKeyId']}  {r['Status']:8} {r['OwnerKind']:6} {r['Owner']:24} "
        f"created {when(r['CreateDate'])}  last used {when(r['LastUsedDate'])}"
        for r in rows) or "no access keys")


def _set_key_status(key_id: str, status: str, data_dir: Path | None, as_json: bool) -> None:
    from bastion.identity.access_keys import describe, owner_name, set_status
    from bastion.runtime import record_change

    async def job(p: Any) -> dict[str, Any]:
        async with p.sessions.begin() as db:
            row = await set_status(db, key_id, status)
            data = describe(row, await owner_name(db, row))
            await record_change(p, db, "UpdateAccessKey", user_identity=operator(),
                                request_parameters={"accessKeyId": key_id, "status": status},
                                resources=_key_resource(p, data))
        return data

    data = _run(_settings(data_dir=data_dir), job)
    _emit(as_json, data, f"access key {key_id} is {status}")


@access_keys_app.command("deactivate")
def access_keys_deactivate(key_id: KeyIdArg, data_dir: DataDir = None,
                           as_json: JsonOut = False) -> None:
    """Make a key Inactive: its signatures are refused (running servers within
    access_key_cache_ttl seconds)."""
    _set_key_status(key_id, "Inactive", data_dir, as_json)


@access_keys_app.command("activate")
def access_keys_activate(key_id: KeyIdArg, data_dir: DataDir = None,
                         as_json: JsonOut = False) -> None:
    """Make an Inactive key Active again."""
    _set_key_status(key_id, "Active", data_dir, as_json)


@access_keys_app.command("delete")
def access_keys_delete(key_id: KeyIdArg, data_dir: DataDir = None,
                       as_json: JsonOut = False) -> None:
    """Delete a key for good."""
    from bastion.identity.access_keys import delete_access_key, describe, owner_name
    from bastion.runtime import record_change

    async def job(p: Any) -> dict[str, Any]:
        async with p.sessions.begin() as db:
            row = await delete_access_key(db, key_id)
            data = describe(row, await owner_name(db, row))
            await record_change(p, db, "DeleteAccessKey", user_identity=operator(),
                                request_parameters={"accessKeyId": key_id},
                                resources=_key_resource(p, data))
        return {"deleted": key_id}

    _run(_settings(data_dir=data_dir), job)
    _emit(as_json, {"deleted": key_id}, f"deleted access key {key_id}")


__all__ = ["iam_app", "out"]
