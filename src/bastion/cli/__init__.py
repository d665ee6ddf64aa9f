"""The ``bastion`` command, one module per command group. Every command takes
``--data-dir`` (or ``BASTION_DATA_DIR``), works while a server runs on the same data, and
prints JSON with ``--json``."""

from __future__ import annotations

import typer

from bastion.cli.acme import acme_app
from bastion.cli.audit import audit_app
from bastion.cli.clients import clients_app
from bastion.cli.groups import groups_app
from bastion.cli.iam import iam_app
from bastion.cli.keys import keys_app
from bastion.cli.kms import kms_app
from bastion.cli.pki import ca_app, pki_app
from bastion.cli.serve import serve
from bastion.cli.users import users_app
from bastion.cli.waf import waf_app

# plain help (click's): typer's rich panels print every flag with a "<bool>" value
app = typer.Typer(help="Bastion: self-hosted identity provider and API security layers.",
                  no_args_is_help=True, add_completion=False, rich_markup_mode=None)
app.command()(serve)
app.add_typer(users_app, name="users")
app.add_typer(clients_app, name="clients")
app.add_typer(keys_app, name="keys")
app.add_typer(groups_app, name="groups")
app.add_typer(iam_app, name="iam")
app.add_typer(audit_app, name="audit")
app.add_typer(kms_app, name="kms")
app.add_typer(waf_app, name="waf")
app.add_typer(acme_app, name="acme")
app.add_typer(pki_app, name="pki")
app.add_typer(ca_app, name="ca")


def main() -> None:
    app()
