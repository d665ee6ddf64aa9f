"""``bastion serve``: the identity provider, the Orders API and the IAM admin API."""

from __future__ import annotations

import errno
import logging
import socket
from pathlib import Path
from typing import Annotated, Any

import typer

from bastion.cli.common import DataDir, _run, _settings, err, out
from bastion.edge.http import is_loopback_host
from bastion.workers import Worker


def port_in_use(host: str, port: int) -> bool:
    """Whether ``host:port`` cannot be bound (another server holds it). Checked before any
    state is touched; binding as uvicorn does (``SO_REUSEADDR``), so a port left in
    TIME_WAIT by a stopped server is free."""
    if port == 0:
        return False
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False  # uvicorn reports an unknown host itself
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def serve(
    data_dir: DataDir = None,
    host: Annotated[str | None, typer.Option(metavar="ADDRESS",
                                             help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(metavar="PORT",
                                             help="Port to listen on.")] = None,
    issuer: Annotated[str | None, typer.Option(
        envvar="BASTION_ISSUER", metavar="URL",
        help="Issuer URL (default: the address served).")] = None,
    tls_cert: Annotated[Path | None, typer.Option(metavar="FILE",
                                                  help="PEM certificate chain.")] = None,
    tls_key: Annotated[Path | None, typer.Option(metavar="FILE",
                                                 help="PEM private key.")] = None,
    demo: Annotated[bool, typer.Option(
        "--demo", help="Seed the Orders example (once) and print how to use it.")] = False,
    dev: Annotated[bool, typer.Option("--dev", help="Plain HTTP on loopback (without "
                                                    "--tls-cert).")] = False,
    workers: Annotated[int | None, typer.Option(
        min=0, max=64, metavar="N", help="Worker processes on one socket (default and 0: "
        "one per core; with --dev: 1).")] = None,
    log_level: Annotated[str, typer.Option(metavar="LEVEL", help="Log level.")] = "info",
) -> None:
    """Run the identity provider and the Orders API, over TLS: --tls-cert/--tls-key (hot
    reloaded), else a certificate from the internal CA."""
    from bastion.demo import instructions, seed
    from bastion.edge.tls import TlsError
    from bastion.runtime import ensure_admin
    from bastion.workers import build_served, worker_count

    settings = _settings(data_dir=data_dir, host=host, port=port, issuer=issuer,
                         tls_cert=tls_cert, tls_key=tls_key, dev=dev or None, workers=workers)
    if not settings.https and not is_loopback_host(settings.host):
        err.print("[red]error:[/red] --dev serves plain HTTP on loopback addresses only")
        raise typer.Exit(2)
    count = worker_count(settings.workers, dev=settings.dev)
    try:  # TLS (edge/tls.py): tls_cert/tls_key, else a certificate from the internal CA
        served, tls = build_served(settings, demo=demo, worker=Worker(0, count))
    except TlsError as exc:
        err.print(f"[red]error:[/red] TLS: {exc}")
        raise typer.Exit(2) from None
    # before any state is touched: a second server on the same data must not re-seed, rotate
    # or migrate anything under the running one
    if port_in_use(settings.host, settings.port):
        err.print(f"[red]error:[/red] {settings.host}:{settings.port} is already in use (is "
                  "Bastion already running? stop it first, or pass --port); nothing was "
                  "changed")
        raise typer.Exit(1)

    async def prepare(provider: Any) -> tuple[str | None, str | None]:
        password = await ensure_admin(provider)
        # once, before any worker starts: the CA and the server certificate
        await provider.ca.ensure()
        await provider.ca.publish_at(provider.issuer_url)
        if tls is not None:
            await tls.ensure_certificate(provider)
        text = None
        if demo:
            creds = await seed(provider)
            text = instructions(provider, creds, insecure=settings.https)
        return password, text

    admin_password, demo_text = _run(settings, prepare, create=True)
    if admin_password:
        err.print(f"[bold]Admin account created.[/bold] username: admin  password: "
                  f"{admin_password}\n(shown once; set BASTION_ADMIN_PASSWORD to choose it)")
    if demo_text:
        out.print(demo_text)
    database = "postgresql" if "postgres" in settings.effective_database_url else "sqlite"
    err.print(f"Bastion issuer {settings.effective_issuer}  data {settings.data_dir}  "
              f"database {database}")
    if tls is not None and not settings.tls:
        err.print(f"TLS certificate from the internal CA in {tls.tls_dir} (renewed "
                  "automatically). Clients trust it with the CA's bundle: "
                  f"`bastion ca export --out bastion-ca.pem` (a copy: {tls.tls_dir}/ca.pem)")
    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if count == 1:
        import uvicorn

        from bastion.workers import uvicorn_config

        # flood protection at the server layer: the guarded HTTP protocol (edge/server.py)
        server = uvicorn.Server(uvicorn_config(served, settings, tls, log_level,
                                               host=settings.host, port=settings.port))
        server.run()
        if not server.started:
            raise typer.Exit(3)  # the lifespan startup failed (logged), as uvicorn.run
        return
    _serve_workers(settings, demo=demo, count=count, log_level=log_level)


def _serve_workers(settings: Any, *, demo: bool, count: int, log_level: str) -> None:
    """``count`` worker processes on one socket, supervised (``bastion.workers``)."""
    from bastion.workers import Supervisor, bind, reset_run_dir

    reset_run_dir(settings.data_dir)
    try:  # held, not listening, while the workers run: the port stays ours
        sock = bind(settings.host, settings.port, backlog=None)
    except OSError as exc:
        err.print(f"[red]error:[/red] cannot listen on {settings.host}:{settings.port}: "
                  f"{exc.strerror}")
        raise typer.Exit(1) from None
    port = sock.getsockname()[1]
    scheme = "https" if settings.https else "http"
    err.print(f"Serving {scheme}://{settings.host}:{port} with {count} worker processes")
    with sock:
        code = Supervisor(settings, demo=demo, count=count, port=port,
                          log_level=log_level).run()
    if code:
        raise typer.Exit(code)
