"""``bastion pki`` and ``bastion ca``: the internal CA from the command line (docs/pki.md).
Keys the CLI makes are written 0600 next to their certificate and never printed."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bastion.cli.common import DataDir, JsonOut, _emit, _run, _settings, err, operator, out

pki_app = typer.Typer(help="Certificates from Bastion's internal CA.", no_args_is_help=True)
ca_app = typer.Typer(help="The internal CA itself: its trust bundle and rotation.",
                     no_args_is_help=True)

_DURATION = re.compile(r"^\s*(\d{1,9})\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
Ttl = Annotated[str | None, typer.Option("--ttl", metavar="DURATION", help="Lifetime: "
                                         "seconds, or 30m, 24h, 90d. Default: the profile's.")]
Profile = Annotated[str, typer.Option("--profile", help="server (serverAuth), client "
                                      "(clientAuth) or workload (both; needs --spiffe-id).")]


def _ttl(text: str | None) -> int | None:
    if text is None:
        return None
    m = _DURATION.match(text)
    if not m:
        err.print(f"[red]error:[/red] --ttl {text!r} is not a duration (3600, 30m, 24h, 90d)")
        raise typer.Exit(2)
    return int(m.group(1)) * _UNITS[m.group(2)]


def _requester() -> str:
    return f"local-operator:{operator()['userName']}"


def _write(path: Path, data: str | bytes, *, secret: bool) -> None:
    """Atomically replace ``path`` (a renewal never leaves a half-written file; a symlink
    planted at ``path`` is replaced, never followed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600 if secret else 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _refused(result: Any) -> None:
    from bastion.pki import PkiError

    if isinstance(result, PkiError):
        err.print(f"[red]error:[/red] {result.code}: {result}")
        raise typer.Exit(1)


def _issued_json(issued: Any, cert_path: Path, key_path: Path | None) -> dict[str, Any]:
    c = issued.certificate
    return {"serial": issued.serial, "subject": c.subject.rfc4514_string(),
            "notBefore": c.not_valid_before_utc.isoformat(),
            "notAfter": c.not_valid_after_utc.isoformat(), "certificate": str(cert_path),
            "key": None if key_path is None else str(key_path)}


@pki_app.command("issue")
def issue(
    names: Annotated[list[str] | None, typer.Argument(help="DNS names.")] = None,
    ip: Annotated[list[str] | None, typer.Option("--ip", help="IP address (repeatable).")]
    = None,
    spiffe_id: Annotated[str | None, typer.Option("--spiffe-id", metavar="URI",
                                                  help="spiffe://<trust domain>/<path>")] = None,
    profile: Profile = "server",
    ttl: Ttl = None,
    cn: Annotated[str | None, typer.Option("--cn", help="Subject common name.")] = None,
    csr: Annotated[Path | None, typer.Option("--csr", metavar="FILE", help="Certify this "
                                             "CSR's key and names instead of making a key.")]
    = None,
    out_prefix: Annotated[Path | None, typer.Option("--out", metavar="PREFIX", help="Write "
                                                    "PREFIX.crt (with its chain) and "
                                                    "PREFIX.key (0600). Default: the first "
                                                    "name.")] = None,
    data_dir: DataDir = None, as_json: JsonOut = False,
) -> None:
    """Issue a certificate from the internal CA."""
    lifetime = _ttl(ttl)
    request = None
    if csr is not None:
        try:
            request = x509.load_pem_x509_csr(csr.read_bytes())
        except (OSError, ValueError) as exc:
            err.print(f"[red]error:[/red] --csr: not a readable PEM CSR ({type(exc).__name__})")
            raise typer.Exit(2) from None
    candidates: list[str] = [*(names or ()), *(ip or ()),
                             *([spiffe_id.rsplit("/", 1)[-1]] if spiffe_id else [])]
    first = candidates[0] if candidates else None
    if out_prefix is None and first is None:
        err.print("[red]error:[/red] name at least one DNS name, --ip or --spiffe-id "
                  "(or --csr with --out)")
        raise typer.Exit(2)
    prefix = out_prefix or Path(re.sub(r"[^A-Za-z0-9._-]", "_", str(first)))
    settings = _settings(data_dir=data_dir)

    async def job(p: Any) -> Any:
        from bastion.pki import PkiError

        try:
            if request is not None:
                return await p.ca.issue_for_csr(request, profile=profile, ttl=lifetime,
                                                requester=_requester())
            return await p.ca.issue(profile=profile, dns_names=names or (),
                                    ip_addresses=ip or (), spiffe_id=spiffe_id,
                                    common_name=cn, ttl=lifetime, requester=_requester())
        except PkiError as exc:
            return exc

    issued = _run(settings, job, create=True)
    _refused(issued)
    cert_path = prefix.with_name(prefix.name + ".crt")
    key_path = None if request is not None else prefix.with_name(prefix.name + ".key")
    if key_path is not None:
        _write(key_path, issued.key_pem(), secret=True)
    _write(cert_path, issued.pem_chain(), secret=False)
    data = _issued_json(issued, cert_path, key_path)
    _emit(as_json, data, f"issued {data['serial']} ({data['subject'] or 'no subject'}), "
          f"valid until {data['notAfter']}\ncertificate: {cert_path}"
          + (f"\nkey:         {key_path} (0600)" if key_path else ""))


@pki_app.command("renew")
def renew(
    cert_file: Annotated[Path, typer.Argument(metavar="CERT", help="The certificate to "
                                              "renew (as written by 'pki issue').")],
    key_file: Annotated[Path | None, typer.Option("--key", metavar="FILE", help="Its key "
                                                  "file (default: CERT with .key); replaced "
                                                  "by a new key.")] = None,
    ttl: Ttl = None,
    revoke_old: Annotated[bool, typer.Option("--revoke-old", help="Revoke the old "
                                             "certificate (reason superseded).")] = False,
    data_dir: DataDir = None, as_json: JsonOut = False,
) -> None:
    """Issue a new certificate (new key) with the same names and profile; replace the
    files atomically."""
    try:
        old = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError):
        err.print(f"[red]error:[/red] {cert_file} is not a readable PEM certificate")
        raise typer.Exit(2) from None
    key_path = key_file or cert_file.with_suffix(".key")
    lifetime = _ttl(ttl)
    settings = _settings(data_dir=data_dir)

    async def job(p: Any) -> Any:
        from bastion.pki import PkiError

        try:
            row = await p.ca.get(old.serial_number)
            spiffe = row.spiffe_id
            dns = old.extensions.get_extension_for_class(x509.SubjectAlternativeName) \
                .value.get_values_for_type(x509.DNSName)
            ips = [str(i) for i in old.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)]
            issued = await p.ca.issue(profile=row.profile, dns_names=dns, ip_addresses=ips,
                                      spiffe_id=spiffe, ttl=lifetime, requester=_requester())
            if revoke_old:
                await p.ca.revoke(old.serial_number, "superseded", _requester())
            return issued
        except PkiError as exc:
            return exc

    issued = _run(settings, job, create=False)
    _refused(issued)
    _write(key_path, issued.key_pem(), secret=True)
    _write(cert_file, issued.pem_chain(), secret=False)
    data = _issued_json(issued, cert_file, key_path)
    _emit(as_json, data, f"renewed: {data['serial']} valid until {data['notAfter']}")


@pki_app.command("revoke")
def revoke(
    serial: Annotated[str, typer.Argument(help="Serial number (hex).")],
    reason: Annotated[str, typer.Option("--reason", help="RFC 5280 reason: unspecified, "
                                        "keyCompromise, superseded, cessationOfOperation, "
                                        "affiliationChanged, privilegeWithdrawn...")]
    = "unspecified",
    data_dir: DataDir = None, as_json: JsonOut = False,
) -> None:
    """Revoke a certificate: the CRL and OCSP say so at once."""
    settings = _settings(data_dir=data_dir)

    async def job(p: Any) -> Any:
        from bastion.pki import PkiError

        try:
            await p.ca.revoke(serial, reason, _requester())
            return None
        except PkiError as exc:
            return exc

    _refused(_run(settings, job, create=False))
    _emit(as_json, {"serial": serial, "revoked": True, "reason": reason},
          f"revoked {serial} ({reason})")


@pki_app.command("list")
def list_(
    include_expired: Annotated[bool, typer.Option("--all", help="Include expired "
                                                  "certificates.")] = False,
    profile: Annotated[str | None, typer.Option("--profile")] = None,
    data_dir: DataDir = None, as_json: JsonOut = False,
) -> None:
    """Certificates the CA issued, newest first."""
    settings = _settings(data_dir=data_dir)

    async def job(p: Any) -> Any:
        return await p.ca.list(include_expired=include_expired, profile=profile)

    rows = _run(settings, job, create=False)
    data = [r.as_dict() for r in rows]
    if as_json:
        _emit(True, data, "")
        return
    if not rows:
        out.print("no certificates")
    for r in rows:
        out.print(f"{r.serial}  {r.profile:<8}  {'REVOKED ' if r.revoked_at else ''}"
                  f"until {r.not_after}  {', '.join(r.names)}")


@pki_app.command("crl")
def crl(
    der: Annotated[bool, typer.Option("--der", help="DER instead of PEM (to --out).")]
    = False,
    out_file: Annotated[Path | None, typer.Option("--out", metavar="FILE")] = None,
    data_dir: DataDir = None,
) -> None:
    """The current intermediate's CRL (PEM on stdout by default)."""
    if der and out_file is None:
        err.print("[red]error:[/red] --der needs --out FILE")
        raise typer.Exit(2)
    settings = _settings(data_dir=data_dir)

    async def job(p: Any) -> bytes:
        return await p.ca.crl_der()  # type: ignore[no-any-return]

    raw = _run(settings, job, create=True)
    data = raw if der else x509.load_der_x509_crl(raw).public_bytes(
        serialization.Encoding.PEM)
    if out_file is not None:
        _write(out_file, data, secret=False)
    else:
        print(data.decode(), end="")


@ca_app.command("export")
def export(
    out_file: Annotated[Path | None, typer.Option("--out", metavar="FILE")] = None,
    chain: Annotated[bool, typer.Option("--chain", help="Also the current intermediate.")]
    = False,
    data_dir: DataDir = None,
) -> None:
    """Print the trust bundle (the root certificates) clients need, PEM."""
    settings = _settings(data_dir=data_dir)

    async def job(p: Any) -> str:
        bundle: str = await p.ca.trust_bundle_pem()
        return bundle + (await p.ca.chain_pem() if chain else "")

    text = _run(settings, job, create=True)
    if out_file is not None:
        _write(out_file, text, secret=False)
    else:
        print(text, end="")


@ca_app.command("rotate")
def rotate(data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """A new online intermediate; the old one keeps serving CRL and OCSP for its
    certificates until they expire."""
    settings = _settings(data_dir=data_dir)

    async def job(p: Any) -> x509.Certificate:
        return await p.ca.rotate(_requester())  # type: ignore[no-any-return]

    cert = _run(settings, job, create=True)
    data = {"subject": cert.subject.rfc4514_string(), "serial": format(cert.serial_number, "x"),
            "notAfter": cert.not_valid_after_utc.isoformat()}
    _emit(as_json, data, f"new intermediate {data['subject']} until {data['notAfter']}")
