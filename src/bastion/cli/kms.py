"""``bastion kms``: the KMS as the local operator (who can read the data dir, and so the
root key itself): every command calls ``KMS.call`` with the AWS operation, is audited as a
``LocalOperator``, and prints the AWS response with ``--json``."""

from __future__ import annotations

import base64
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, BinaryIO

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


# --- files of any size: envelope encryption in authenticated chunks (kms/stream.py) ------
InFile = Annotated[Path, typer.Argument(metavar="INPUT", help="The file to read (- for "
                                        "standard input).")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Where to write (- for "
                                             "standard output).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")]
SUFFIX = ".bkms"


def _stdio(path: Path | None) -> bool:
    return path is None or str(path) == "-"


@contextlib.contextmanager
def _progress(label: str, total: int | None) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar on stderr when stderr is a terminal (else nothing)."""
    if not err.is_terminal:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=err,
                  transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _open_in(path: Path) -> BinaryIO:
    if _stdio(path):
        return sys.stdin.buffer
    try:
        return path.open("rb")
    except OSError as exc:
        err.print(f"[red]error:[/red] cannot read {path}: {exc.strerror}")
        raise typer.Exit(1) from None


def _target(infile: Path, out_path: Path | None, as_json: bool, *, decrypting: bool,
            force: bool) -> Path | None:
    """The output path (None: standard output), checked before any key is used."""
    from bastion.kms.stream import StreamError, fresh_target

    if out_path is None:
        if _stdio(infile):
            out_path = Path("-")
        elif not decrypting:
            out_path = infile.with_name(infile.name + SUFFIX)
        elif infile.name.endswith(SUFFIX) and len(infile.name) > len(SUFFIX):
            out_path = infile.with_name(infile.name[:-len(SUFFIX)])
        else:
            err.print(f"[red]error:[/red] {infile} does not end with {SUFFIX}: give --out")
            raise typer.Exit(2)
    if _stdio(out_path):
        if as_json:
            err.print("[red]error:[/red] --json needs --out FILE (standard output carries "
                      "the data)")
            raise typer.Exit(2)
        return None
    try:
        fresh_target(out_path, None if _stdio(infile) else infile, force=force)
    except StreamError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    return out_path


def _done(as_json: bool, summary: dict[str, Any], text: str) -> None:
    if as_json:
        _emit(True, summary, "")
    else:
        err.print(text)


@contextlib.contextmanager
def _streaming(infile: Path) -> Iterator[BinaryIO]:
    """The opened input of encrypt-file/decrypt-file; a stream or write failure is one
    error line and exit status 1; the input is closed (standard input is left open)."""
    from bastion.kms.stream import StreamError

    src = _open_in(infile)
    try:
        yield src
    except StreamError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    except OSError as exc:
        err.print(f"[red]error:[/red] cannot write the output: {exc.strerror}")
        raise typer.Exit(1) from None
    finally:
        if src is not sys.stdin.buffer:
            src.close()


@kms_app.command("encrypt-file")
def encrypt_file(key: KeyArg, infile: InFile, out_path: OutOpt = None,
                 context: ContextOpt = None, force: ForceOpt = False,
                 chunk_size: Annotated[int, typer.Option(
                     "--chunk-size", help="Plaintext bytes per chunk (1 KiB to 16 MiB).")]
                 = 1 << 20,
                 data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Encrypt a file of any size under a fresh data key from KEY (default output:
    INPUT.bkms). The encryption context is bound to the data key and to every chunk."""
    from bastion.kms.stream import MAX_CHUNK, MIN_CHUNK, atomic_output, encrypt_stream

    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        err.print(f"[red]error:[/red] --chunk-size must be {MIN_CHUNK} to {MAX_CHUNK}")
        raise typer.Exit(2)
    target = _target(infile, out_path, as_json, decrypting=False, force=force)
    request: dict[str, Any] = {"KeyId": key, "KeySpec": "AES_256"}
    ctx = _context(context) or {}
    if ctx:
        request["EncryptionContext"] = ctx
    with _streaming(infile) as src:
        total = None if _stdio(infile) else os.fstat(src.fileno()).st_size
        dk = _call(data_dir, [("GenerateDataKey", request)])[0]
        with _progress("encrypting", total) as progress, atomic_output(target) as dst:
            size = encrypt_stream(src, dst, data_key=base64.b64decode(dk["Plaintext"]),
                                  key_id=dk["KeyId"],
                                  wrapped_key=base64.b64decode(dk["CiphertextBlob"]),
                                  context=ctx, chunk_size=chunk_size, progress=progress)
    _done(as_json, {"KeyId": dk["KeyId"], "Bytes": size, "Output": str(target or "-"),
                    "EncryptionContext": ctx},
          f"encrypted {size} bytes under {dk['KeyId']} -> {target or 'stdout'}")


@kms_app.command("decrypt-file")
def decrypt_file(infile: InFile, out_path: OutOpt = None,
                 key: Annotated[str | None, typer.Option(
                     "--key", help="The key the file must be under (IncorrectKeyException "
                     "otherwise).")] = None,
                 context: Annotated[list[str] | None, typer.Option(
                     "--context", metavar="KEY=VALUE", help="A pair the file's encryption "
                     "context must hold (repeatable).")] = None,
                 force: ForceOpt = False, data_dir: DataDir = None,
                 as_json: JsonOut = False) -> None:
    """Decrypt a file from encrypt-file (default output: INPUT without .bkms). The output
    appears only once every chunk verified; on standard output a failure is the exit
    status, and what was printed must be discarded."""
    from bastion.kms.stream import StreamError, atomic_output, decrypt_stream, read_header

    target = _target(infile, out_path, as_json, decrypting=True, force=force)
    expected = _context(context) or {}
    with _streaming(infile) as src:
        total = None if _stdio(infile) else os.fstat(src.fileno()).st_size
        header = read_header(src)
        wrong = sorted(k for k, v in expected.items()
                       if k not in header.context or header.context[k] != v)
        if wrong:
            raise StreamError("the file's encryption context does not hold the expected "
                              f"pairs for {', '.join(map(repr, wrong))}")
        request: dict[str, Any] = {"CiphertextBlob": base64.b64encode(
            header.wrapped_key).decode()}
        if header.context:
            request["EncryptionContext"] = header.context
        if key:
            request["KeyId"] = key
        dk = _call(data_dir, [("Decrypt", request)])[0]
        with _progress("decrypting", total) as progress, atomic_output(target) as dst:
            size = decrypt_stream(src, dst, header, base64.b64decode(dk["Plaintext"]),
                                  progress=progress)
    _done(as_json, {"KeyId": dk["KeyId"], "Bytes": size, "Output": str(target or "-"),
                    "EncryptionContext": header.context},
          f"decrypted {size} bytes under {dk['KeyId']} -> {target or 'stdout'}")


@kms_app.command("migrate-root")
def migrate_root(to: Annotated[str, typer.Option(
                     "--to", help="The root keeper to move to: pkcs11 or file (its settings "
                     "as for `bastion serve`).")],
                 data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Re-wrap every key version under another root keeper (data is not re-encrypted);
    crash-safe: run it again to finish. Then set root_keeper to the new keeper."""
    from bastion.kms.migrate import MigrationError
    from bastion.kms.migrate import migrate_root as run_migration
    from bastion.kms.root import RootUnavailable, RootUnwrapError, open_root_keeper

    if to not in ("pkcs11", "file"):
        err.print("[red]error:[/red] --to takes pkcs11 or file")
        raise typer.Exit(2)
    settings = _settings(data_dir=data_dir)
    who = operator()

    async def job(p: Any) -> Any:
        try:
            target = open_root_keeper(settings.model_copy(update={"root_keeper": to}))
        except RootUnavailable as exc:
            return f"the new root key is unavailable: {exc}"
        try:
            report = await run_migration(p.kms.fast, p.kms.keeper, target, audit=p.kms.audit,
                                         user_identity={**who,
                                                        "accountId": settings.account_id})
        except (MigrationError, RootUnavailable) as exc:
            return str(exc)
        except RootUnwrapError:
            return "some key material does not open under the current root key"
        finally:
            target.close()
        await p.kms.audit.emit(
            "UpdateConfiguration", user_identity={**who, "accountId": settings.account_id},
            request_parameters={"rootKeeper": {"from": report.source, "to": report.target}},
            response_elements={"keyVersions": report.versions, "staged": report.staged,
                               "switched": report.switched, "dropped": report.dropped})
        return report

    result = _run(settings, job)
    if isinstance(result, str):
        err.print(f"[red]error:[/red] {result}")
        raise typer.Exit(1)
    _emit(as_json, {"From": result.source, "To": result.target, "KeyVersions": result.versions,
                    "Rewrapped": result.switched, "DroppedOldWrappings": result.dropped},
          f"{result.versions} key versions now wrapped by the {result.target} root "
          f"({result.switched} re-wrapped); set BASTION_ROOT_KEEPER={result.target} "
          "before starting bastion serve again")
