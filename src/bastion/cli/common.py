"""Shared plumbing of the ``bastion`` command's sub-commands: options, settings, running a
job on the opened state, output, the operator's audit identity."""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from bastion.audit.trail import AuditUnavailable
from bastion.config import ConfigError, Settings, load_settings
from bastion.iam.admin import IamError
from bastion.identity.users import IdentityError

err = Console(stderr=True)
out = Console(highlight=False, soft_wrap=True)
T = TypeVar("T")

DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", envvar="BASTION_DATA_DIR", metavar="DIR",
    help="Data directory (default: the nearest bastion-data holding state, from the "
         "working directory up).")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON.")]
RoleOpt = Annotated[list[str] | None, typer.Option("--role", metavar="ROLE",
                                                   help="An IAM role (repeatable).")]


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 second``, ``2 seconds``."""
    return f"{count} {word if count == 1 else many or word + 's'}"


def _settings(**kw: Any) -> Settings:
    try:
        return load_settings(**kw)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _run(settings: Settings, job: Callable[[Any], Awaitable[T]], *,
         create: bool = False) -> T:
    """Open the provider (migrating if needed), run ``job(provider)``, close. Only commands
    that write pass ``create=True``: the others refuse a data dir without state instead of
    creating an empty one."""
    from bastion.kms.root import RootUnavailable
    from bastion.runtime import NoState, open_provider

    async def go() -> T:
        provider = await open_provider(settings, create=create)
        try:
            return await job(provider)
        finally:
            await provider.close()

    try:
        return asyncio.run(go())
    except NoState:
        err.print(f"[red]error:[/red] no Bastion data in {settings.data_dir} (nothing was "
                  "created): pass --data-dir or set BASTION_DATA_DIR to the directory "
                  "`bastion serve` uses, or run this from the directory it runs in")
        raise typer.Exit(2) from None
    except RootUnavailable as exc:
        err.print(f"[red]error:[/red] the KMS root key is unavailable: {exc}")
        raise typer.Exit(1) from None
    except IdentityError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    except AuditUnavailable:
        err.print("[red]error:[/red] the audit trail is unavailable: nothing was changed")
        raise typer.Exit(1) from None
    except IamError as exc:
        err.print(f"[red]error:[/red] {exc.code}: {exc.message}")
        for finding in exc.findings:
            err.print(f"  {finding.severity} {finding.code} at {finding.path}: "
                      f"{finding.message}")
        raise typer.Exit(1) from None


def _emit(as_json: bool, data: Any, text: str) -> None:
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        out.print(text)


def operator() -> dict[str, Any]:
    """The audit ``userIdentity`` of whoever runs the CLI: whoever can read the data dir."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    return {"type": "LocalOperator", "principalId": name, "userName": name}
