"""Runs a loaded CRS ruleset as ModSecurity v3 does (Reference Manual v3, "Processing
Phases", "Actions"): phase 1 then phase 2, each rule in file order; a rule's variables are
resolved on the engine's decoded request, transformed, and tested by its operator; a match
runs the rule's chain, then its actions: ``setvar`` on TX with ``%{...}`` macros, ``capture``
into ``TX:0-9``, ``ctl:ruleRemoveById/ruleRemoveTargetById``, ``skipAfter``/``skip`` and the
disruptive action (``block`` means ``SecDefaultAction``'s). REQUEST-949 compares the anomaly
score with the inbound threshold and denies.

``@rx``/``@pm``/``@pmFromFile`` patterns of a phase are compiled into ONE Hyperscan database
in prefilter mode (reused through ``dbcache``); a value is scanned once per request and a
rule's RE2 pattern runs only when Hyperscan reports its id (a pattern the prefilter rejects
runs in RE2 alone). Python's ``re`` never sees request data.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hyperscan
import re2

from bastion.edge.waf.crs.loader import Ruleset
from bastion.edge.waf.crs.model import Marker, SecRule, Variable
from bastion.edge.waf.crs.operators import COMPARE
from bastion.edge.waf.crs.transforms import find_transform
from bastion.edge.waf.dbcache import Compiled, DbCache
from bastion.edge.waf.decode import Decoded, HttpRequest, Refused, decode, parse_pairs, split_target
from bastion.edge.waf.engine import Match, Verdict, redact
from bastion.edge.waf.transforms import url_decode

SEVERITY = {"CRITICAL": 5, "ERROR": 4, "WARNING": 3, "NOTICE": 2}
HS_FLAGS = hyperscan.HS_FLAG_PREFILTER | hyperscan.HS_FLAG_SINGLEMATCH | \
    hyperscan.HS_FLAG_ALLOWEMPTY
Values = list[tuple[str, str]]  # (variable name as logged, value)
# collections that do not change while rules run (resolved once per request)
STATIC = frozenset({"ARGS", "ARGS_NAMES", "ARGS_GET", "ARGS_GET_NAMES", "ARGS_POST",
                    "ARGS_POST_NAMES", "REQUEST_HEADERS", "REQUEST_HEADERS_NAMES",
                    "REQUEST_COOKIES", "REQUEST_COOKIES_NAMES", "REQUEST_FILENAME",
                    "REQUEST_BASENAME", "REQUEST_URI", "REQUEST_LINE", "QUERY_STRING",
                    "REQUEST_BODY", "FILES", "FILES_NAMES", "XML", "REQUEST_METHOD",
                    "REQUEST_PROTOCOL", "REQUEST_URI_RAW"})


def _phrases(link: SecRule, base: Path) -> list[str]:
    if link.operator.name == "pm":
        return link.operator.argument.split()
    out: list[str] = []
    for name in link.operator.argument.split():
        for line in (base / name).read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


class _Phase:
    """The patterns of one phase: a Hyperscan prefilter database and each rule's RE2."""

    def __init__(self, links: list[SecRule], base: Path, cache: DbCache) -> None:
        self.re2: dict[int, Any] = {}  # id(link) -> RE2
        self.pid: dict[int, int] = {}  # id(link) -> Hyperscan id
        patterns: list[bytes] = []
        flags: list[int] = []
        for link in links:
            op = link.operator
            if op.name == "rx":
                if "%{" in op.argument:
                    continue
                source, hs, caseless = op.argument, op.argument, 0
            else:
                words = _phrases(link, base)
                source = "(?i)(?:" + "|".join(re2.escape(w) for w in words) + ")"
                hs, caseless = "|".join(re2.escape(w) for w in words), \
                    hyperscan.HS_FLAG_CASELESS
            options = re2.Options()
            options.max_mem = 64 << 20
            self.re2[id(link)] = re2.compile(source, options)
            self.pid[id(link)] = len(patterns)
            patterns.append(hs.encode("utf-8", "surrogateescape"))
            flags.append(HS_FLAGS | caseless)
        compiled = cache.get("crs", patterns, flags, lambda: _subset(patterns, flags))
        order = sorted(self.pid, key=self.pid.__getitem__)
        kept = {i: n for n, i in enumerate(compiled.kept())}  # the others run in RE2 alone
        self.pid = {key: kept[i] for i, key in enumerate(order) if i in kept}
        self.db = compiled.db
        self._local = threading.local()

    def candidates(self, data: bytes) -> set[int]:
        if self.db is None:
            return set()
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = hyperscan.Scratch(self.db)
        hits: set[int] = set()

        def on_match(pid: int, start: int, end: int, flags: int, ctx: Any) -> None:
            hits.add(pid)

        self.db.scan(data, match_event_handler=on_match, scratch=scratch)
        return hits


def _subset(patterns: list[bytes], flags: list[int]) -> Compiled:
    """One database of the patterns Hyperscan accepts (in prefilter mode); -1 in the plan
    for the others."""
    ok = _compilable(patterns, flags, 0, len(patterns))
    plan = tuple(f if i in ok else -1 for i, f in enumerate(flags))
    kept = [i for i in range(len(patterns)) if i in ok]
    db = _compile([patterns[i] for i in kept], [flags[i] for i in kept]) if kept else None
    return Compiled(db, plan)


def _compilable(patterns: list[bytes], flags: list[int], lo: int, hi: int) -> set[int]:
    """The indexes in [lo, hi) that Hyperscan accepts, found by halving (a database
    compiles whole far faster than pattern by pattern)."""
    if lo >= hi:
        return set()
    try:
        _compile(patterns[lo:hi], flags[lo:hi])
    except hyperscan.error:
        if hi - lo == 1:
            return set()
        mid = (lo + hi) // 2
        return _compilable(patterns, flags, lo, mid) | _compilable(patterns, flags, mid, hi)
    return set(range(lo, hi))


def _compile(patterns: list[bytes], flags: list[int]) -> Any:
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(expressions=patterns, ids=list(range(len(patterns))), flags=flags)
    return db


@dataclass
class _Txn:
    """One request's state: its collections, TX, removals and the current match."""

    coll: dict[str, Values]
    tx: dict[str, str] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    removed_ranges: list[tuple[int, int]] = field(default_factory=list)
    removed_tags: set[str] = field(default_factory=set)
    removed_targets: dict[str, list[Variable]] = field(default_factory=dict)
    matched: Values = field(default_factory=list)
    memo: dict[tuple[tuple[str, ...], str], str] = field(default_factory=dict)
    hs: dict[tuple[int, str], set[int]] = field(default_factory=dict)
    resolved: dict[tuple[Variable, ...], Values] = field(default_factory=dict)
    matches: list[Match] = field(default_factory=list)
    rule: SecRule | None = None
    blocked: bool = False

    def is_removed(self, rule: SecRule) -> bool:
        if rule.id in self.removed or self.removed_tags.intersection(rule.tags):
            return True
        n = int(rule.id) if rule.id.isdigit() else -1
        return any(lo <= n <= hi for lo, hi in self.removed_ranges)


class CrsWaf:
    """A CRS ruleset compiled once; ``inspect`` runs it on one request (thread-safe)."""

    def __init__(self, ruleset: Ruleset, *, body_limit: int = 131_072,
                 cache: DbCache | None = None) -> None:
        """``cache``: where compiled databases are reused (None: ``DbCache.default()``)."""
        self.ruleset = ruleset
        self.body_limit = body_limit
        cache = cache if cache is not None else DbCache.default()
        base = ruleset.files[-1].parent if ruleset.files else ruleset.directory
        self.phases: dict[int, _Phase] = {}
        self.markers: dict[int, dict[str, int]] = {}
        for phase, items in ruleset.phases.items():
            links = [link for r in items if isinstance(r, SecRule) for link in r.links()
                     if link.operator.name in ("rx", "pm", "pmFromFile", "pmf")]
            self.phases[phase] = _Phase(links, base, cache)
            self.markers[phase] = {m.name: i for i, m in enumerate(items)
                                   if isinstance(m, Marker)}
        self._keys: dict[str, Any] = {}
        self._fns: dict[tuple[str, ...], list[Any]] = {}

    def inspect(self, request: HttpRequest, *, body_limit: int | None = None) -> Verdict:
        try:
            decoded = decode(request, body_limit=body_limit or self.body_limit)
        except Refused as exc:
            return Verdict(True, 0, [], exc.status, exc.reason)
        txn = _Txn(collections(request, decoded))
        for phase in (1, 2):
            self._run(phase, txn)
            if txn.blocked:
                break
        tx = txn.tx
        score = _int(tx.get("blocking_inbound_anomaly_score") or tx.get("anomaly_score")
                     or tx.get("inbound_anomaly_score") or "0")
        return Verdict(txn.blocked, score, txn.matches, 403 if txn.blocked else 200,
                       "CRS anomaly score" if txn.blocked else "")

    # --- evaluation ----------------------------------------------------------------------
    def _run(self, phase: int, txn: _Txn) -> None:
        items = self.ruleset.phases[phase]
        markers = self.markers[phase]
        i = 0
        while i < len(items):
            rule = items[i]
            i += 1
            if isinstance(rule, Marker) or txn.is_removed(rule):
                continue
            txn.matched = []
            txn.rule = rule
            if not all(self._link(link, txn, phase) for link in _lazy_links(rule)):
                continue
            jump = self._act(rule, txn, phase)
            if txn.blocked or jump == -2:
                if jump == -2:
                    txn.blocked = False
                    i = len(items)
                return
            if isinstance(jump, str):
                i = markers.get(jump, len(items)) + 1
            elif jump > 0:
                skipped = 0
                while i < len(items) and skipped < jump:
                    skipped += isinstance(items[i], SecRule)
                    i += 1

    def _link(self, link: SecRule, txn: _Txn, phase: int) -> bool:
        op = link.operator
        if not link.variables:
            return op.name == "unconditionalMatch"
        compiled = self.phases[phase].re2.get(id(link))
        pid = self.phases[phase].pid.get(id(link))
        values = self._resolve(link, txn)
        found: Values = []
        arg = _expand(op.argument, txn) if "%{" in op.argument else op.argument
        for name, raw in values:
            value = self._transform(link.transforms, raw, txn)
            if op.name in ("rx", "pm", "pmFromFile", "pmf"):
                if compiled is None:  # a pattern with a macro, compiled per request
                    compiled = re2.compile(arg)
                hit = None
                if pid is None or pid in self._candidates(phase, value, txn):
                    hit = compiled.search(value)
                ok = hit is not None
                if ok and link.capture and hit is not None and op.name == "rx":
                    groups = [hit.group(0), *hit.groups()]
                    for n, g in enumerate(groups[:10]):
                        txn.tx[str(n)] = g or ""
            else:
                ok = COMPARE[op.name](value, arg)
            if ok != op.negated:
                found.append((name, value))
        txn.matched = found
        return bool(found)

    def _candidates(self, phase: int, value: str, txn: _Txn) -> set[int]:
        key = (phase, value)
        hits = txn.hs.get(key)
        if hits is None:
            hits = txn.hs[key] = self.phases[phase].candidates(
                value.encode("utf-8", "surrogateescape"))
        return hits

    def _transform(self, names: tuple[str, ...], value: str, txn: _Txn) -> str:
        if not names:
            return value
        key = (names, value)
        out = txn.memo.get(key)
        if out is None:
            fns = self._fns.get(names)
            if fns is None:
                fns = self._fns[names] = [f for n in names if (f := find_transform(n))]
            out = value
            for fn in fns:
                out = fn(out)
            txn.memo[key] = out
        return out

    def _resolve(self, link: SecRule, txn: _Txn) -> Values:
        rid = txn.rule.id if txn.rule is not None else ""
        removed = txn.removed_targets.get(rid)
        if removed or not STATIC.issuperset(v.collection for v in link.variables):
            return self._resolve_now(link, txn, removed or [])
        found = txn.resolved.get(link.variables)
        if found is None:
            found = txn.resolved[link.variables] = self._resolve_now(link, txn, [])
        return found

    def _resolve_now(self, link: SecRule, txn: _Txn, removed: list[Variable]) -> Values:
        include = [v for v in link.variables if not v.negated]
        exclude = [v for v in link.variables if v.negated] + removed
        out: Values = []
        for var in include:
            values = self._values(var, txn)
            if exclude:
                values = [(n, v) for n, v in values
                          if not any(self._excluded(x, n) for x in exclude)]
            if var.count:
                out.append((f"&{var.collection}", str(len(values))))
            else:
                out.extend(values)
        return out

    def _excluded(self, var: Variable, name: str) -> bool:
        coll, _, key = name.partition(":")
        if coll != var.collection:
            return False
        return not var.key or self._key_matches(var, key)

    def _key_matches(self, var: Variable, key: str) -> bool:
        if var.regex:
            pattern = self._keys.get(var.key)
            if pattern is None:
                pattern = self._keys[var.key] = re2.compile("(?i)" + var.key)
            return pattern.search(key) is not None
        return var.key.lower() == key.lower()

    def _values(self, var: Variable, txn: _Txn) -> Values:
        c = var.collection
        if c == "TX":
            items: Values = [(f"TX:{k}", v) for k, v in txn.tx.items()]
        elif c in ("MATCHED_VAR", "MATCHED_VAR_NAME"):
            last = txn.matched[-1:] if txn.matched else []
            items = [(c, v if c == "MATCHED_VAR" else n) for n, v in last]
        elif c in ("MATCHED_VARS", "MATCHED_VARS_NAMES"):
            items = [(f"{c}:{n}", v if c == "MATCHED_VARS" else n) for n, v in txn.matched]
        else:
            items = txn.coll.get(c, [])
        if not var.key or c == "XML":
            return items
        return [(n, v) for n, v in items if self._key_matches(var, n.partition(":")[2])]

    def _act(self, rule: SecRule, txn: _Txn, phase: int) -> str | int:
        """Runs the actions of a matched rule; the marker to skip to, a count of rules to
        skip, -2 for ``allow``, or 0."""
        jump: str | int = 0
        for link in rule.links():
            for name, value in link.actions:
                if name == "setvar":
                    _setvar(_expand(value, txn), txn)
                elif name == "ctl":
                    _ctl(value, txn)
                elif name == "skipAfter":
                    jump = value
                elif name == "skip" and value.isdigit():
                    jump = int(value)
        action = rule.disruptive
        if action == "block":
            action = self.ruleset.defaults.disruptive.get(phase, "pass")
        if rule.log and rule.id:
            where, value = (txn.matched[0] if txn.matched else ("", ""))
            txn.matches.append(Match(rule.id, _family(rule.file), where[:120], redact(value),
                                     SEVERITY.get(rule.severity, 0), _expand(rule.msg, txn)))
        if action in ("deny", "drop"):
            txn.blocked = True
        elif action == "allow":
            return -2
        return jump


def _lazy_links(rule: SecRule) -> Any:
    link: SecRule | None = rule
    while link is not None:
        yield link
        link = link.chained


def _family(file: str) -> str:
    parts = file.split("-")
    return f"crs-{parts[1]}" if len(parts) > 1 else "crs"


def _int(text: str) -> int:
    try:
        return int(text.strip() or 0)
    except ValueError:
        return 0


def _expand(text: str, txn: _Txn) -> str:
    """``%{tx.x}``, ``%{MATCHED_VAR}``, ``%{rule.id}``... replaced by their values."""
    out: list[str] = []
    i = 0
    while (start := text.find("%{", i)) >= 0:
        end = text.find("}", start)
        if end < 0:
            break
        out.append(text[i:start])
        out.append(_macro(text[start + 2:end], txn))
        i = end + 1
    out.append(text[i:])
    return "".join(out)


def _macro(name: str, txn: _Txn) -> str:
    coll, _, key = name.partition(".")
    coll, key = coll.upper(), key.lower()
    if coll == "TX":
        return txn.tx.get(key, "")
    if coll == "RULE":
        rule = txn.rule
        return {"id": rule.id, "msg": rule.msg}.get(key, "") if rule is not None else ""
    if coll == "MATCHED_VAR":
        return txn.matched[-1][1] if txn.matched else ""
    if coll == "MATCHED_VAR_NAME":
        return txn.matched[-1][0] if txn.matched else ""
    for n, v in txn.coll.get(coll, []):
        if not key or n.partition(":")[2].lower() == key:
            return v
    return ""


def _setvar(spec: str, txn: _Txn) -> None:
    """``tx.a=1``, ``tx.a=+5``, ``tx.a=-1``, ``!tx.a``; other collections ignored."""
    delete = spec.startswith("!")
    name, eq, value = spec.lstrip("!").partition("=")
    coll, _, key = name.partition(".")
    if coll.lower() != "tx" or not key:
        return
    key = key.lower()
    if delete:
        txn.tx.pop(key, None)
    elif not eq:
        txn.tx[key] = "1"
    elif value[:1] in "+-" and value[1:].strip().lstrip("-").isdigit():
        txn.tx[key] = str(_int(txn.tx.get(key, "0")) + _int(value))
    else:
        txn.tx[key] = value


def _ctl(spec: str, txn: _Txn) -> None:
    name, _, value = spec.partition("=")
    if name == "ruleRemoveById":
        for part in value.split():
            lo, dash, hi = part.partition("-")
            if dash and lo.isdigit() and hi.isdigit():
                txn.removed_ranges.append((int(lo), int(hi)))
            else:
                txn.removed.add(part)
    elif name == "ruleRemoveByTag":
        txn.removed_tags.add(value)
    elif name == "ruleRemoveTargetById":
        rid, _, target = value.partition(";")
        coll, _, key = target.partition(":")
        txn.removed_targets.setdefault(rid, []).append(
            Variable(coll.upper(), key.strip("'"), key.startswith("/"), True))


def collections(req: HttpRequest, d: Decoded) -> dict[str, Values]:
    """ModSecurity's request collections from the engine's decoded fields."""
    c: dict[str, Values] = {}

    def add(coll: str, name: str, value: str) -> None:
        c.setdefault(coll, []).append((f"{coll}:{name}" if name else coll, value))

    raw_path, query = split_target(req.target)
    gets = Decoded()
    parse_pairs(query, gets)
    n_get = sum(1 for f in gets.fields if f[0] == "ARGS")
    n_args = 0
    headers = [(n.lower(), v) for n, v in req.headers]
    ctype = next((v.lower() for n, v in headers if n == "content-type"), "")
    for coll, name, value in d.fields:
        if coll in ("ARGS", "JSON"):
            add("ARGS", name, value)
            add("ARGS_GET" if coll == "ARGS" and n_args < n_get else "ARGS_POST", name, value)
            n_args += 1
        elif coll in ("ARGS_NAMES", "JSON_NAMES"):
            add("ARGS_NAMES", name, name)
            add("ARGS_GET_NAMES" if coll == "ARGS_NAMES" and len(c.get("ARGS_GET_NAMES", []))
                < n_get else "ARGS_POST_NAMES", name, name)
        elif coll in ("FILES", "XML"):
            add(coll, name, value)
            if coll == "FILES":
                add("FILES_NAMES", name, name)
        elif coll == "MULTIPART_HEADERS":
            add("MULTIPART_PART_HEADERS", name, f"{name.partition(':')[2]}: {value}")
    for name, value in headers:
        if name == "cookie":  # ModSecurity keeps cookie values as sent (no decoding)
            for item in value.split(";"):
                k, _, v = item.strip().partition("=")
                if k or v:
                    add("REQUEST_COOKIES", k, v)
                    add("REQUEST_COOKIES_NAMES", k, k)
        add("REQUEST_HEADERS", name, value)
        add("REQUEST_HEADERS_NAMES", name, name)
    body = req.body.decode("utf-8", "replace")
    path = d.path
    processor = ("JSON" if "json" in ctype else "XML" if "xml" in ctype else "MULTIPART"
                 if "multipart" in ctype else "URLENCODED" if req.body else "")
    for coll, value in (
            ("REQUEST_METHOD", req.method), ("REQUEST_PROTOCOL", "HTTP/1.1"),
            ("REQUEST_URI_RAW", req.target), ("REQUEST_LINE", f"{req.method} {req.target} "
                                                               "HTTP/1.1"),
            ("REQUEST_URI", url_decode(raw_path + ("?" + query if query else ""), plus=False)),
            ("REQUEST_FILENAME", path), ("REQUEST_BASENAME", path.rsplit("/", 1)[-1]),
            ("QUERY_STRING", query), ("REQUEST_BODY_LENGTH", str(len(req.body))),
            ("ARGS_COMBINED_SIZE", str(sum(len(v) + len(n.partition(":")[2])
                                           for n, v in c.get("ARGS", [])))),
            ("FILES_COMBINED_SIZE", "0"), ("REQBODY_ERROR", "0"),
            ("REQBODY_PROCESSOR_ERROR", "0"), ("MULTIPART_STRICT_ERROR", "0"),
            ("MULTIPART_UNMATCHED_BOUNDARY", "0"), ("REMOTE_ADDR", "127.0.0.1"),
            ("UNIQUE_ID", "bastion"), ("DURATION", "0")):
        add(coll, "", value)
    if processor:
        add("REQBODY_PROCESSOR", "", processor)
    if req.body:
        add("REQUEST_BODY", "", body)
    return c
