"""Loads a CRS directory: ``crs-setup.conf`` (or ``.example``; Debian's lives in
``/etc/modsecurity/crs/``) then ``rules/*.conf`` in name order, as ModSecurity's
``Include rules/*.conf`` does. Every rule is either loaded or skipped with the reason
(an operator, variable or transformation outside the supported subset, a regex RE2 cannot
run, a response phase) — ``bastion waf rules`` prints both.
"""

from __future__ import annotations

import glob
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import re2

from bastion.edge.waf.crs import parser
from bastion.edge.waf.crs.model import Defaults, Marker, Operator, SecRule, Skipped, Variable
from bastion.edge.waf.crs.transforms import find_transform

DEBIAN_SETUP = Path("/etc/modsecurity/crs/crs-setup.conf")
OPERATORS = frozenset({
    "rx", "pm", "pmFromFile", "pmf", "detectSQLi", "detectXSS", "within", "streq",
    "beginsWith", "endsWith", "contains", "containsWord", "eq", "ge", "gt", "lt", "le",
    "validateByteRange", "validateUrlEncoding", "validateUtf8Encoding", "unconditionalMatch",
    "strmatch"})
VARIABLES = frozenset({
    "ARGS", "ARGS_NAMES", "ARGS_GET", "ARGS_GET_NAMES", "ARGS_POST", "ARGS_POST_NAMES",
    "ARGS_COMBINED_SIZE", "REQUEST_HEADERS", "REQUEST_HEADERS_NAMES", "REQUEST_COOKIES",
    "REQUEST_COOKIES_NAMES", "REQUEST_FILENAME", "REQUEST_BASENAME", "REQUEST_URI",
    "REQUEST_URI_RAW", "REQUEST_LINE", "REQUEST_METHOD", "REQUEST_PROTOCOL", "QUERY_STRING",
    "REQUEST_BODY", "REQUEST_BODY_LENGTH", "FILES", "FILES_NAMES", "FILES_COMBINED_SIZE",
    "XML", "TX", "REQBODY_ERROR", "REQBODY_PROCESSOR_ERROR", "REQBODY_PROCESSOR",
    "MULTIPART_STRICT_ERROR", "MULTIPART_UNMATCHED_BOUNDARY", "MULTIPART_PART_HEADERS",
    "REMOTE_ADDR", "UNIQUE_ID", "MATCHED_VAR", "MATCHED_VARS", "MATCHED_VAR_NAME",
    "MATCHED_VARS_NAMES", "DURATION"})
IGNORED_ACTIONS = frozenset({
    "id", "phase", "msg", "logdata", "tag", "ver", "rev", "maturity", "accuracy",
    "severity", "auditlog", "noauditlog", "status", "multiMatch", "expirevar",
    "initcol", "setsid", "setuid"})


_QUIET = re2.Options()
_QUIET.log_errors = False


@dataclass
class Ruleset:
    """What ``load_crs`` read: the items of each phase in order (rules and markers), the
    loaded and skipped rules, and the files."""

    directory: Path
    phases: dict[int, list[SecRule | Marker]] = field(default_factory=lambda: {1: [], 2: []})
    loaded: list[SecRule] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    defaults: Defaults = field(default_factory=Defaults)
    version: str = ""

    def reasons(self) -> dict[str, list[str]]:
        """Skip reasons with the rule ids each covers."""
        out: dict[str, list[str]] = {}
        for s in self.skipped:
            out.setdefault(s.reason, []).append(s.id)
        return out


def rule_files(directory: Path) -> list[Path]:
    """The setup file and the rule files of a CRS directory, in load order."""
    setup = [p for p in (directory / "crs-setup.conf", directory / "crs-setup.conf.example")
             if p.is_file()][:1]
    if not setup and DEBIAN_SETUP.is_file() and (directory / "rules").is_dir():
        setup = [DEBIAN_SETUP]
    rules_dir = directory / "rules" if (directory / "rules").is_dir() else directory
    rules = sorted(p for p in rules_dir.glob("*.conf") if p.is_file())
    if not rules:
        raise ValueError(f"no CRS rule files (*.conf) in {rules_dir}")
    return setup + rules


def load_crs(directory: Path, *, paranoia: int = 1,
             tx: Mapping[str, str] | None = None) -> Ruleset:
    """The ruleset of ``directory`` at ``paranoia`` (``tx.paranoia_level`` and CRS 4's
    ``tx.blocking_paranoia_level``), with ``tx`` variables set after the setup file as an
    operator's ``SecAction`` id 900000 would."""
    if not 1 <= paranoia <= 4:
        raise ValueError("paranoia is 1-4")
    files = rule_files(directory)
    out = Ruleset(directory=directory, files=files)
    setvars = {"tx.paranoia_level": str(paranoia), "tx.blocking_paranoia_level": str(paranoia),
               **{f"tx.{k.lower()}": v for k, v in (tx or {}).items()}}
    first_rules = 1 if files[0].name.startswith("crs-setup") else 0
    for i, path in enumerate(files):
        if i == first_rules:
            out.phases[1].append(SecRule(
                "900000", 1, (), Operator("unconditionalMatch"), (),
                [("setvar", f"{k}={v}") for k, v in setvars.items()], "(bastion)", 0,
                disruptive="pass", log=False))
        _load_file(path, out, depth=0)
    return out


def _load_file(path: Path, out: Ruleset, depth: int) -> None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    parent: SecRule | None = None  # the last rule of an open chain
    for d in parser.directives(text):
        name = d.name.lower()
        if name in ("include", "includeoptional") and d.args and depth < 4:
            pattern = d.args[0] if Path(d.args[0]).is_absolute() else str(path.parent / d.args[0])
            for inc in sorted(glob.glob(pattern)):
                _load_file(Path(inc), out, depth + 1)
            continue
        if name == "seccomponentsignature" and d.args:
            out.version = d.args[0]
        elif name == "secdefaultaction" and d.args:
            acts = dict(parser.actions(d.args[0], d.line))
            phase = _phase(acts.get("phase", "2"))
            for a in ("deny", "block", "pass", "drop", "allow"):
                if a in acts and a != "block":
                    out.defaults.disruptive[phase] = a
        elif name == "secmarker" and d.args:
            for items in out.phases.values():
                items.append(Marker(d.args[0].strip("'\"")))
        elif name in ("secrule", "secaction"):
            rule = _rule(d, path)
            if parent is not None:
                parent.chained = rule
            elif rule is not None:
                _admit(rule, out, path)
            parent = rule if rule is not None and any(a == "chain" for a, _ in rule.actions) \
                else None


def _phase(value: str) -> int:
    return {"request": 2, "response": 4, "logging": 5}.get(value, int(value) if value.isdigit()
                                                            else 2)


def _rule(d: parser.Directive, path: Path) -> SecRule:
    if d.name.lower() == "secaction":
        variables: tuple[Variable, ...] = ()
        op = Operator("unconditionalMatch")
        acts = parser.actions(d.args[0] if d.args else "", d.line)
    else:
        if len(d.args) < 2:
            raise parser.SecLangError(d.line, "SecRule needs variables and an operator")
        variables = parser.variables(d.args[0], d.line)
        op = parser.operator(d.args[1])
        acts = parser.actions(d.args[2] if len(d.args) > 2 else "", d.line)
    values: dict[str, str] = {}
    transforms: list[str] = []
    tags: list[str] = []
    disruptive = ""
    for a, v in acts:
        if a == "t":
            transforms = [] if v == "none" else [*transforms, v]
        elif a == "tag":
            tags.append(v)
        elif a in ("deny", "block", "pass", "allow", "drop", "redirect"):
            disruptive = a
        values.setdefault(a, v)
    return SecRule(values.get("id", "").strip("'"), _phase(values.get("phase", "2")),
                   variables, op, tuple(transforms), acts, path.name, d.line, tags=tuple(tags),
                   msg=values.get("msg", ""), severity=values.get("severity", "").upper(),
                   disruptive=disruptive, capture="capture" in values,
                   log="nolog" not in values)


def unsupported(rule: SecRule, base: Path) -> str | None:
    """Why the interpreter cannot run ``rule`` (or a rule chained to it), or None."""
    if rule.phase not in (1, 2):
        return "response phase (3-5): responses are not inspected"
    for link in rule.links():
        for v in link.variables:
            if v.collection not in VARIABLES:
                return f"variable {v.collection} not supported"
        op = link.operator
        if op.name not in OPERATORS:
            return f"operator @{op.name} not supported"
        for t in link.transforms:
            if find_transform(t) is None:
                return f"transformation {t} not supported"
        if op.name == "rx" and "%{" not in op.argument:
            try:
                re2.compile(op.argument, _QUIET)
            except re2.error as exc:
                why = exc.args[0] if exc.args else "error"
                why = why.decode() if isinstance(why, bytes) else str(why)
                return f"regex not supported by RE2: {why}"
        if op.name in ("pmFromFile", "pmf"):
            for name in op.argument.split():
                if not (base / name).is_file():
                    return f"@pmFromFile file {name} missing"
        for a, _ in link.actions:
            if a in ("exec", "proxy", "redirect", "append", "prepend"):
                return f"action {a} not supported"
    return None


def _admit(rule: SecRule, out: Ruleset, path: Path) -> None:
    reason = unsupported(rule, path.parent)
    if reason is not None:
        out.skipped.append(Skipped(rule.id, path.name, reason))
        return
    out.loaded.append(rule)
    out.phases[rule.phase].append(rule)
