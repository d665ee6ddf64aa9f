"""``bastion waf``: try a request against the WAF (``test``) and list its rules (``rules``),
with the settings' paranoia level, threshold and exclusions: the tools for tuning exclusions
(docs/waf.md). Nothing is sent anywhere; matched data is printed redacted."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer

from bastion.cli.common import JsonOut, _settings, err, out

waf_app = typer.Typer(help="Test requests against the web application firewall, list its "
                      "rules.", no_args_is_help=True)

MAX_INPUT = 64 * 1024 ** 2


def _read(source: str) -> bytes:
    """A file's bytes, or stdin's for ``-``; at most MAX_INPUT."""
    if source == "-":
        data = sys.stdin.buffer.read(MAX_INPUT + 1)
    else:
        try:
            with Path(source).open("rb") as f:
                data = f.read(MAX_INPUT + 1)
        except OSError as exc:
            err.print(f"[red]error:[/red] cannot read {source}: {exc.strerror}")
            raise typer.Exit(2) from None
    if len(data) > MAX_INPUT:
        err.print("[red]error:[/red] input larger than 64 MiB")
        raise typer.Exit(2)
    return data


def parse_raw(data: bytes) -> tuple[str, str, list[tuple[str, str]], bytes]:
    """(method, target, headers, body) of a raw HTTP/1.x request (RFC 9112 §2-§5); a
    ``ValueError`` says what is wrong."""
    sep = data.find(b"\r\n\r\n")
    head, body = (data[:sep], data[sep + 4:]) if sep >= 0 else (data, b"")
    if sep < 0 and b"\n\n" in data:
        head, _, body = data.partition(b"\n\n")
    lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError("the first line must be METHOD TARGET HTTP/1.1")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name:
            raise ValueError(f"malformed header line {line[:40]!r}")
        headers.append((name.lower(), value.strip(" \t")))
    return parts[0], parts[1], headers, body


def _verdict_json(verdict: Any, threshold: int, paranoia: int) -> dict[str, Any]:
    return {"decision": "block" if verdict.blocked else "pass",
            "status": verdict.status if verdict.blocked else 200,
            "reason": verdict.reason, "score": verdict.score, "threshold": threshold,
            "paranoia": paranoia,
            "matches": [{"rule_id": m.rule_id, "family": m.family, "location": m.location,
                         "match": m.redacted, "score": m.score,
                         "description": m.description} for m in verdict.matches]}


@waf_app.command("test")
def test(
    url: Annotated[str | None, typer.Argument(metavar="[URL]", help="Request target: "
                                              "/path?query or http(s)://host/path?query.")]
    = None,
    method: Annotated[str | None, typer.Option("-X", "--method", help="Method (default "
                                               "GET, or POST with a body).")] = None,
    header: Annotated[list[str] | None, typer.Option("-H", "--header", metavar="NAME: VALUE",
                                                     help="A header (repeatable).")] = None,
    body_file: Annotated[str | None, typer.Option("--body", "-d", metavar="FILE",
                                                  help="Body from FILE (- for stdin).")]
    = None,
    raw: Annotated[str | None, typer.Option("--raw", metavar="FILE", help="A raw HTTP "
                                            "request from FILE (- for stdin) instead of "
                                            "URL, -X, -H and --body.")] = None,
    paranoia: Annotated[int | None, typer.Option("--paranoia", min=1, max=4,
                                                 help="Paranoia level (default: "
                                                 "waf_paranoia).")] = None,
    as_json: JsonOut = False,
) -> None:
    """Inspect one request with the configured WAF: decision, score, every matched rule."""
    from bastion.edge.waf import HttpRequest, Waf
    from bastion.edge.waf.settings import build_waf

    settings = _settings()
    if paranoia is not None:
        settings = settings.model_copy(update={"waf_paranoia": paranoia})
    if raw is not None:
        if url is not None or header or body_file is not None or method is not None:
            err.print("[red]error:[/red] --raw takes the whole request; give no URL, -X, "
                      "-H or --body with it")
            raise typer.Exit(2)
        try:
            m, target, headers, body = parse_raw(_read(raw))
        except ValueError as exc:
            err.print(f"[red]error:[/red] not an HTTP request: {exc}")
            raise typer.Exit(2) from None
    else:
        if url is None:
            err.print("[red]error:[/red] give a URL or --raw FILE")
            raise typer.Exit(2)
        body = _read(body_file) if body_file is not None else b""
        headers = []
        for h in header or []:
            name, colon, value = h.partition(":")
            if not colon or not name.strip():
                err.print(f"[red]error:[/red] -H takes 'Name: value', not {h[:40]!r}")
                raise typer.Exit(2)
            headers.append((name.strip().lower(), value.strip()))
        if body and not any(n == "content-length" for n, _ in headers):
            headers.append(("content-length", str(len(body))))
        m = (method or ("POST" if body else "GET")).upper()
        target = url
    waf: Waf = build_waf(settings)
    request = HttpRequest(m, target, headers, body)
    verdict = waf.inspect(request)
    config = waf.config
    if as_json:
        out.print(json.dumps(_verdict_json(verdict, config.inbound_threshold,
                                           config.paranoia), indent=2))
        return
    decision = (f"[red]BLOCK[/red] {verdict.status}" if verdict.blocked
                else "[green]PASS[/green]")
    out.print(f"{decision}  score {verdict.score} (threshold {config.inbound_threshold}, "
              f"paranoia {config.paranoia}, mode {settings.waf_mode})"
              + (f"  {verdict.reason}" if verdict.blocked and verdict.status != 403 else ""))
    for match in verdict.matches:
        out.print(f"  {match.rule_id}  {match.family:<10} +{match.score}  {match.location}"
                  f"  {match.redacted!r}  {match.description}", markup=False)


@waf_app.command("rules")
def rules(
    paranoia: Annotated[int | None, typer.Option("--paranoia", min=1, max=4,
                                                 help="Only the rules active at this "
                                                 "level (default: all, with their "
                                                 "level).")] = None,
    crs: Annotated[Path | None, typer.Option("--crs", help="A CRS directory to report on "
                                             "(default: the setting waf_crs_dir).")] = None,
    as_json: JsonOut = False,
) -> None:
    """The loaded rules and their counts per family; with a CRS directory, which CRS rules
    loaded and which were skipped, and why."""
    from bastion.edge.waf import Waf, WafConfig, load_rules

    crs_dir = crs or _settings().waf_crs_dir
    if crs_dir is not None:
        _crs_rules(crs_dir, paranoia or 1, as_json)
        return
    everything = load_rules()
    waf = Waf(WafConfig(paranoia=paranoia or 4, rules=everything))
    active = waf.rules
    counts = Counter(r.family for r in active)
    if as_json:
        out.print(json.dumps({
            "paranoia": paranoia, "total": len(active), "families": dict(sorted(counts.items())),
            "rules": [{"id": r.id, "family": r.family, "paranoia": r.paranoia,
                       "severity": r.severity, "score": r.score, "operator": r.operator,
                       "transforms": list(r.transforms), "targets": list(r.targets),
                       "description": r.description} for r in active],
            "skipped": [{"id": i, "reason": why} for i, why in sorted(waf.skipped.items())],
        }, indent=2))
        return
    for r in active:
        out.print(f"{r.id}  PL{r.paranoia}  {r.family:<10} {r.severity:<8} {r.operator:<10} "
                  f"{r.description}", markup=False)
    out.print("")
    out.print(f"{len(active)} rules: " + ", ".join(f"{f} {n}" for f, n in sorted(
        counts.items())), markup=False)
    for rule_id, why in sorted(waf.skipped.items()):
        out.print(f"skipped {rule_id}: {why}", markup=False)


def _crs_rules(directory: Path, paranoia: int, as_json: bool) -> None:
    from bastion.edge.waf.crs import load_crs
    from bastion.edge.waf.crs.parser import SecLangError

    try:
        ruleset = load_crs(directory, paranoia=paranoia)
    except (ValueError, SecLangError) as exc:
        err.print(f"[red]error:[/red] {exc}", markup=True)
        raise typer.Exit(2) from None
    reasons = ruleset.reasons()
    if as_json:
        out.print(json.dumps({
            "directory": str(directory), "version": ruleset.version,
            "files": [str(f) for f in ruleset.files], "loaded": len(ruleset.loaded),
            "skipped": len(ruleset.skipped),
            "loaded_ids": [r.id for r in ruleset.loaded],
            "skipped_by_reason": {why: ids for why, ids in sorted(reasons.items())},
        }, indent=2))
        return
    out.print(f"{ruleset.version or 'CRS'} in {directory}: {len(ruleset.loaded)} rules "
              f"loaded, {len(ruleset.skipped)} skipped", markup=False)
    for why, ids in sorted(reasons.items(), key=lambda kv: -len(kv[1])):
        shown = ", ".join(ids[:8]) + (", ..." if len(ids) > 8 else "")
        out.print(f"  {len(ids):>4} skipped: {why} ({shown})", markup=False)
