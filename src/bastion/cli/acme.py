"""``bastion acme``: the ACME server's operator commands (docs/acme.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from bastion.cli.common import DataDir, JsonOut, _emit, _run, _settings, err, operator

acme_app = typer.Typer(help="The ACME server (RFC 8555) on the internal CA.",
                       no_args_is_help=True)
eab_app = typer.Typer(help="External account binding keys.", no_args_is_help=True)
acme_app.add_typer(eab_app, name="eab")


@eab_app.command("create")
def eab_create(
    policy: Annotated[Path | None, typer.Option(
        "--policy", metavar="FILE", help="IAM policy (JSON) of the identifiers the bound "
        "account may order: acme:NewOrder / acme:Finalize on "
        "arn:bastion:acme:::identifier/<name>. Default: acme_allowed_identifiers.")] = None,
    data_dir: DataDir = None, as_json: JsonOut = False,
) -> None:
    """Make an EAB key id and HMAC key (shown once) for certbot's --eab-kid/--eab-hmac-key."""
    from bastion.acme.eab import create_eab_key

    text = policy.read_text() if policy is not None else None
    settings = _settings(data_dir=data_dir)
    who = operator()

    async def job(p: Any) -> Any:
        try:
            return await create_eab_key(p, policy=text, operator=who)
        except ValueError as exc:
            return str(exc)

    result = _run(settings, job, create=True)
    if isinstance(result, str):
        err.print(f"[red]error:[/red] the policy is not valid: {result}")
        raise typer.Exit(1)
    _emit(as_json, {"kid": result.kid, "hmac_key": result.hmac_key},
          f"kid:      {result.kid}\nhmac key: {result.hmac_key}\n"
          "(the HMAC key is not shown again)")
