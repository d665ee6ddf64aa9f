"""``bastion kms``: the KMS as the local operator (who can read the data dir, and so the
root key itself): every command calls ``KMS.call`` with the AWS operation, is audited as a
``LocalOperator``, and prints the AWS response with ``--json``."""

from __future__ import annotations

import base64
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from bastion.cli.common import DataDir, JsonOut, _emit, _run, _settings, err, operator

kms_app = typer.Typer(help="Manage KMS keys and use them (AWS KMS semantics).",
                      no_args_is_help=True)
alias_app = typer.Typer(help="Key aliases (alias/...).", no_args_is_help=True)
kms_app.add_typer(alias_app, name="alias")

KeyArg = Annotated[str, typer.Argument(metavar="KEY", help="Key ID, key ARN, alias name "
                                       "(alias/...) or alias ARN.")]
ContextOpt = Annotated[list[str] | None, typer.Option(
    "--context", metavar="KEY=VALUE", help="Encryption context pair (repeatable).")]


def _call(data_dir: Path | None, calls: list[tuple[str, dict[str, Any]]], *,
          create: bool = False) -> list[dict[str, Any]]:
    """Run operations in order as the local operator; KMS errors exit 1 with AWS's name."""
    from bastion.kms.errors import KMSError
    from bastion.kms.root import RootUnavailable
    from bastion.kms.service import Caller

    settings = _settings(data_dir=data_dir)
    who = operator()

    async def job(p: Any) -> list[dict[str, Any]] | KMSError:
        caller = Caller(f"local-operator:{who['userName']}", settings.account_id,
                        operator=True, user_agent="bastion-cli")
        out = []
        try:
            for operation, request in calls:
                out.append(await p.kms.call(operation, request, caller))
        except KMSError as exc:
            return exc
        return out

    try:
        result = _run(settings, job, create=create)
    except RootUnavailable as exc:  # fail closed, with the keeper's reason (no secret in it)
        err.print(f"[red]error:[/red] the KMS root key is unavailable: {exc}")
        raise typer.Exit(1) from None
    if isinstance(result, list):
        return result
    err.print(f"[red]error:[/red] {result.code}: {result.message}")
    raise typer.Exit(1)


def _date(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _context(pairs: list[str] | None) -> dict[str, str] | None:
    if not pairs:
        return None
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            err.print(f"[red]error:[/red] --context takes KEY=VALUE, not {pair!r}")
            raise typer.Exit(2)
        out[key] = value
    return out


def _read(value: str | None, path: Path | None, what: str) -> bytes:
    if (value is None) == (path is None):
        err.print(f"[red]error:[/red] give the {what} or --in FILE (one of them)")
        raise typer.Exit(2)
    if path is not None:
        return sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    assert value is not None
    return value.encode()


@kms_app.command("create-key")
def create_key(data_dir: DataDir = None, as_json: JsonOut = False,
               spec: Annotated[str, typer.Option("--spec", help="SYMMETRIC_DEFAULT, RSA_2048, "
                                                 "ECC_NIST_P256, HMAC_256, ...")]
               = "SYMMETRIC_DEFAULT",
               usage: Annotated[str | None, typer.Option(
                   "--usage", help="ENCRYPT_DECRYPT, SIGN_VERIFY or GENERATE_VERIFY_MAC "
                   "(default: what the spec allows first)")] = None,
               description: Annotated[str, typer.Option("--description")] = "",
               policy: Annotated[Path | None, typer.Option(
                   "--policy", help="Key policy JSON file (default: delegate to IAM).")]
               = None,
               alias: Annotated[str | None, typer.Option("--alias",
                                                         help="Also create alias/NAME.")]
               = None) -> None:
    """Create a KMS key."""
    from bastion.kms.crypto import KEY_SPECS

    request: dict[str, Any] = {"KeySpec": spec, "Description": description}
    request["KeyUsage"] = usage or KEY_SPECS.get(spec, ("ENCRYPT_DECRYPT",))[0]
    if policy is not None:
        request["Policy"] = policy.read_text()
    created = _call(data_dir, [("CreateKey", request)], create=True)[0]
    meta = created["KeyMetadata"]
    if alias:
        name = alias if alias.startswith("alias/") else f"alias/{alias}"
        _call(data_dir, [("CreateAlias", {"AliasName": name, "TargetKeyId": meta["KeyId"]})])
    _emit(as_json, created, f"created {meta['KeyId']} ({meta['KeySpec']}, "
                            f"{meta['KeyUsage']})\n{meta['Arn']}")


@kms_app.command("list-keys")
def list_keys(data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """List keys with their state, spec and aliases."""
    keys: list[dict[str, Any]] = []
    marker = None
    while True:
        request: dict[str, Any] = {"Limit": 1000}
        if marker:
            request["Marker"] = marker
        page = _call(data_dir, [("ListKeys", request)])[0]
        keys += page["Keys"]
        marker = page.get("NextMarker")
        if not page.get("Truncated"):
            break
    described = _call(data_dir, [("DescribeKey", {"KeyId": k["KeyId"]}) for k in keys]) \
        if keys else []
    aliases = _call(data_dir, [("ListAliases", {"Limit": 100})])[0]["Aliases"]
    by_key: dict[str, list[str]] = {}
    for a in aliases:
        by_key.setdefault(a["TargetKeyId"], []).append(a["AliasName"])
    rows = [{**d["KeyMetadata"], "Aliases": by_key.get(d["KeyMetadata"]["KeyId"], [])}
            for d in described]
    _emit(as_json, rows, "\n".join(
        f"{r['KeyId']}  {r['KeyState']:15} {r['KeySpec']:17} {' '.join(r['Aliases'])}"
        for r in rows) or "no keys")


@kms_app.command("describe")
def describe(key: KeyArg, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Show a key: metadata, rotation settings, versions and their dates."""
    meta = _call(data_dir, [("DescribeKey", {"KeyId": key})])[0]["KeyMetadata"]
    data: dict[str, Any] = {"KeyMetadata": meta}
    if meta["KeySpec"] == "SYMMETRIC_DEFAULT":
        status, rotations = _call(data_dir, [
            ("GetKeyRotationStatus", {"KeyId": meta["KeyId"]}),
            ("ListKeyRotations", {"KeyId": meta["KeyId"]})])
        data["Rotation"] = status
        data["Rotations"] = rotations["Rotations"]
    lines = [f"{k}: {v}" for k, v in meta.items() if k not in ("CreationDate", "DeletionDate")]
    lines.append(f"CreationDate: {_date(meta['CreationDate'])}")
    if "DeletionDate" in meta:
        lines.append(f"DeletionDate: {_date(meta['DeletionDate'])}")
    if "Rotation" in data:
        rot = data["Rotation"]
        every = (f"every {rot['RotationPeriodInDays']} days, next "
                 f"{_date(rot['NextRotationDate'])}")
        lines.append(f"Rotation: {every if rot['KeyRotationEnabled'] else 'off'}")
        lines.append(f"Versions: {1 + len(data['Rotations'])}")
        lines += [f"  rotated {_date(r['RotationDate'])} ({r['RotationType']})"
                  for r in data["Rotations"]]
    _emit(as_json, data, "\n".join(lines))


@kms_app.command("encrypt")
def encrypt(key: KeyArg, plaintext: Annotated[str | None, typer.Argument(
                help="Text to encrypt (or --in FILE).")] = None,
            infile: Annotated[Path | None, typer.Option("--in", help="Read the plaintext "
                                                        "from FILE (- for stdin).")] = None,
            context: ContextOpt = None, data_dir: DataDir = None,
            as_json: JsonOut = False) -> None:
    """Encrypt up to 4 KiB; prints the ciphertext blob in base64."""
    request: dict[str, Any] = {"KeyId": key, "Plaintext": base64.b64encode(
        _read(plaintext, infile, "plaintext")).decode()}
    if (ctx := _context(context)) is not None:
        request["EncryptionContext"] = ctx
    out = _call(data_dir, [("Encrypt", request)])[0]
    _emit(as_json, out, out["CiphertextBlob"])


@kms_app.command("decrypt")
def decrypt(ciphertext: Annotated[str | None, typer.Argument(
                help="The base64 ciphertext blob (or --in FILE).")] = None,
            infile: Annotated[Path | None, typer.Option("--in", help="Read the base64 blob "
                                                        "from FILE (- for stdin).")] = None,
            key: Annotated[str | None, typer.Option("--key", help="The key it must be "
                                                    "(IncorrectKeyException otherwise).")]
            = None,
            context: ContextOpt = None, data_dir: DataDir = None,
            as_json: JsonOut = False) -> None:
    """Decrypt a ciphertext blob; prints the plaintext (base64 with --json)."""
    blob = _read(ciphertext, infile, "ciphertext").strip().decode(errors="replace")
    request: dict[str, Any] = {"CiphertextBlob": blob}
    if key:
        request["KeyId"] = key
    if (ctx := _context(context)) is not None:
        request["EncryptionContext"] = ctx
    out = _call(data_dir, [("Decrypt", request)])[0]
    if as_json:
        _emit(True, out, "")
    else:
        sys.stdout.buffer.write(base64.b64decode(out["Plaintext"]))
        sys.stdout.flush()


@kms_app.command("rotate")
def rotate(key: KeyArg, data_dir: DataDir = None, as_json: JsonOut = False,
           enable: Annotated[int | None, typer.Option(
               "--enable", metavar="DAYS", help="Instead: rotate automatically every DAYS "
               "(90-2560).")] = None,
           disable: Annotated[bool, typer.Option("--disable", help="Instead: stop automatic "
                                                 "rotation.")] = False) -> None:
    """Rotate a symmetric key now (new version; old versions keep decrypting)."""
    if enable is not None and disable:
        err.print("[red]error:[/red] --enable and --disable exclude each other")
        raise typer.Exit(2)
    if enable is not None:
        calls = [("EnableKeyRotation", {"KeyId": key, "RotationPeriodInDays": enable})]
    elif disable:
        calls = [("DisableKeyRotation", {"KeyId": key})]
    else:
        calls = [("RotateKeyOnDemand", {"KeyId": key})]
    out = _call(data_dir, calls)[0]
    what = "rotated" if not (enable or disable) else "rotation settings changed"
    _emit(as_json, out, f"{key}: {what}")


@kms_app.command("schedule-deletion")
def schedule_deletion(key: KeyArg, data_dir: DataDir = None, as_json: JsonOut = False,
                      days: Annotated[int, typer.Option("--days", help="Waiting period, 7-30 "
                                                        "days.")] = 30) -> None:
    """Schedule a key's deletion (it can be cancelled until then)."""
    out = _call(data_dir, [("ScheduleKeyDeletion", {"KeyId": key,
                                                    "PendingWindowInDays": days})])[0]
    _emit(as_json, out, f"{out['KeyId']} will be deleted at {_date(out['DeletionDate'])}")


@kms_app.command("cancel-deletion")
def cancel_deletion(key: KeyArg, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Cancel a scheduled deletion (the key comes back Disabled)."""
    out = _call(data_dir, [("CancelKeyDeletion", {"KeyId": key})])[0]
    _emit(as_json, out, f"{out['KeyId']}: deletion cancelled; the key is Disabled")


@kms_app.command("enable")
def enable(key: KeyArg, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Enable a key."""
    _emit(as_json, _call(data_dir, [("EnableKey", {"KeyId": key})])[0], f"{key}: enabled")


@kms_app.command("disable")
def disable(key: KeyArg, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Disable a key (cryptographic operations fail with DisabledException)."""
    _emit(as_json, _call(data_dir, [("DisableKey", {"KeyId": key})])[0], f"{key}: disabled")


def _alias(name: str) -> str:
    return name if name.startswith("alias/") else f"alias/{name}"


@alias_app.command("create")
def alias_create(name: str, key: KeyArg, data_dir: DataDir = None,
                 as_json: JsonOut = False) -> None:
    """Create alias NAME (alias/ prefix optional) for KEY."""
    out = _call(data_dir, [("CreateAlias", {"AliasName": _alias(name), "TargetKeyId": key})])
    _emit(as_json, out[0], f"{_alias(name)} -> {key}")


@alias_app.command("update")
def alias_update(name: str, key: KeyArg, data_dir: DataDir = None,
                 as_json: JsonOut = False) -> None:
    """Point alias NAME at another KEY."""
    out = _call(data_dir, [("UpdateAlias", {"AliasName": _alias(name), "TargetKeyId": key})])
    _emit(as_json, out[0], f"{_alias(name)} -> {key}")


@alias_app.command("delete")
def alias_delete(name: str, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Delete alias NAME (the key stays)."""
    out = _call(data_dir, [("DeleteAlias", {"AliasName": _alias(name)})])
    _emit(as_json, out[0], f"{_alias(name)} deleted")


@alias_app.command("list")
def alias_list(data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """List aliases."""
    out = _call(data_dir, [("ListAliases", {"Limit": 100})])[0]
    _emit(as_json, out["Aliases"], "\n".join(f"{a['AliasName']} -> {a['TargetKeyId']}"
                                             for a in out["Aliases"]) or "no aliases")
