"""The WAF engine: rules compiled once, requests inspected in one pass per transformation
chain, anomaly scoring as in the OWASP Core Rule Set.

A rule is data (``Rule``): an id, a family, the targets it reads (``ARGS``,
``REQUEST_HEADERS:user-agent``...), a transformation chain, an operator (``rx`` a regular
expression, ``pm`` phrases, or a code operator such as ``detectSQLi``), a severity that
gives its anomaly score (critical 5, error 4, warning 3, notice 2), a paranoia level and
tags. Bastion's own pack is TOML in ``rules/``; a SecLang loader produces the same ``Rule``
objects.

Matching: the rules are grouped by transformation chain; the ``rx``/``pm`` patterns of one
chain are compiled into ONE Hyperscan database (``HS_FLAG_SINGLEMATCH``). Per request, each
chain transforms every targeted value once, joins them with a separator and scans the lot in
one call; a hit is located by its offset and confirmed on its own value. A pattern that
Hyperscan cannot compile exactly is compiled with ``HS_FLAG_PREFILTER`` and a candidate
is confirmed with RE2 (linear time); one that not even the prefilter accepts runs in RE2
alone. Python's backtracking ``re`` never sees a request. Compiled databases are reused
(``dbcache``): once per process, and across processes through an authenticated cache
directory.

``inspect`` is synchronous, pure CPU and thread-safe (Hyperscan scratch space is per
thread).
"""

from __future__ import annotations

import bisect
import threading
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import hyperscan
import re2

from bastion.edge.waf.dbcache import Compiled, DbCache
from bastion.edge.waf.decode import Field, HttpRequest, Refused, decode
from bastion.edge.waf.operators import MODULES, OPERATORS, available
from bastion.edge.waf.transforms import TRANSFORMS, check_chain

SEVERITY = {"critical": 5, "error": 4, "warning": 3, "notice": 2}
SEP = b"\n\x00\n"
# the collections a rule reads when it names a group
GROUPS = {
    "@args": ("ARGS", "JSON", "XML", "PATH_SEGMENTS", "REQUEST_COOKIES", "REQUEST_BODY"),
    "@names": ("ARGS_NAMES", "JSON_NAMES", "REQUEST_COOKIES_NAMES"),
    "@headers": ("REQUEST_HEADERS",),
}
COLLECTIONS = frozenset({
    "REQUEST_METHOD", "REQUEST_URI_RAW", "REQUEST_PATH", "PATH_SEGMENTS", "ARGS",
    "ARGS_NAMES", "REQUEST_HEADERS", "REQUEST_HEADERS_NAMES", "REQUEST_COOKIES",
    "REQUEST_COOKIES_NAMES", "JSON", "JSON_NAMES", "XML", "XML_DTD", "FILES",
    "FILES_CONTENT", "MULTIPART_HEADERS", "REQUEST_BODY", "FRAMING"})
REDACT_PREFIX = 12
# an ASCII value with none of these characters (and no double space) is left unchanged by
# every transformation in FAST_CHAIN except lower-casing (by those in LOWERING)
PLAIN_BREAKERS = frozenset("%+&\\\x00/'\"^$*;,()\t\n\r\x0b\x0c")
FAST_CHAIN = frozenset({"urlDecode", "urlDecodeUni", "htmlEntityDecode", "jsDecode",
                        "cssDecode", "lowercase", "compressWhitespace", "removeNulls",
                        "replaceComments", "normalizePath", "normalisePath",
                        "normalizePathWin", "normalisePathWin", "cmdLine", "shellUnquote",
                        "utf8toUnicode"})
LOWERING = frozenset({"lowercase", "cmdLine", "shellUnquote"})
READS_MEMO = 2048  # (collection, name) answers kept per rule


@dataclass(frozen=True)
class Rule:
    """One detection rule (see the module docstring)."""

    id: str
    family: str
    targets: tuple[str, ...]
    operator: str
    argument: str = ""
    transforms: tuple[str, ...] = ()
    severity: str = "critical"
    paranoia: int = 1
    tags: tuple[str, ...] = ()
    description: str = ""
    phase: int = 2

    def __post_init__(self) -> None:
        if not self.id or not self.family:
            raise ValueError("a rule needs an id and a family")
        if self.severity not in SEVERITY:
            raise ValueError(f"rule {self.id}: severity is one of {', '.join(SEVERITY)}")
        if not 1 <= self.paranoia <= 4:
            raise ValueError(f"rule {self.id}: paranoia is 1-4")
        if self.operator not in ("rx", "pm") and self.operator not in OPERATORS:
            raise ValueError(f"rule {self.id}: unknown operator {self.operator!r}")
        check_chain(self.transforms)
        for target in self.targets:
            coll = target.lstrip("!").split(":", 1)[0]
            if coll not in COLLECTIONS:
                raise ValueError(f"rule {self.id}: unknown target {target!r}")

    @property
    def score(self) -> int:
        return SEVERITY[self.severity]

    @cached_property
    def _whole(self) -> frozenset[str]:
        """Collections read whole, when no target is negated (the fast path of reads)."""
        if any(t.startswith("!") for t in self.targets):
            return frozenset()
        return frozenset(t for t in self.targets if ":" not in t)

    @cached_property
    def _read(self) -> dict[tuple[str, str], bool]:
        """``reads`` answers by field (names repeat across requests; bounded in ``reads``)."""
        return {}

    def reads(self, collection: str, name: str) -> bool:
        """Whether the rule reads this field: a target names it (``COLL``, ``COLL:name``,
        ``COLL:prefix*``) and no ``!`` target excludes it."""
        if collection in self._whole:
            return True
        memo = self._read
        key = (collection, name)
        answer = memo.get(key)
        if answer is None:
            answer = self._reads(collection, name)
            if len(memo) >= READS_MEMO:  # an attacker's endless new names cost no memory
                memo.clear()
            memo[key] = answer
        return answer

    def _reads(self, collection: str, name: str) -> bool:
        hit = False
        for target in self.targets:
            negate = target.startswith("!")
            coll, sep, want = target.lstrip("!").partition(":")
            if coll != collection:
                continue
            if not sep or want == name or (want.endswith("*") and name.startswith(want[:-1])):
                if negate:
                    return False
                hit = True
        return hit


def expand_targets(targets: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for t in targets:
        out.extend(GROUPS.get(t, (t,)))
    return tuple(dict.fromkeys(out))


def load_rules(paths: Iterable[Path] | None = None) -> list[Rule]:
    """The rules of TOML rule files (Bastion's own pack when ``paths`` is None)."""
    if paths is None:
        pack = resources.files("bastion.edge.waf") / "rules"
        files: list[Any] = sorted((p for p in pack.iterdir() if p.name.endswith(".toml")),
                                  key=lambda p: p.name)
    else:
        files = list(paths)
    rules: list[Rule] = []
    for path in files:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
        family = doc.get("family", "")
        for item in doc.get("rule", []):
            item = dict(item)
            operator = item.pop("operator", "rx")
            argument = item.pop("pattern", item.pop("argument", ""))
            if operator == "pm":
                argument = "|".join(re2.escape(p) for p in item.pop("phrases"))
                operator = "rx"
            rules.append(Rule(
                id=str(item.pop("id")), family=item.pop("family", family),
                targets=expand_targets(item.pop("targets")), operator=operator,
                argument=argument, transforms=tuple(item.pop("transforms", ())),
                severity=item.pop("severity", "critical"),
                paranoia=int(item.pop("paranoia", 1)), tags=tuple(item.pop("tags", ())),
                description=item.pop("description", "")))
            if item:
                raise ValueError(f"rule {rules[-1].id}: unknown keys {sorted(item)}")
    ids = [r.id for r in rules]
    if len(set(ids)) != len(ids):
        raise ValueError("rule ids must be unique")
    return rules


@dataclass(frozen=True)
class Exclusion:
    """Rules not applied on some paths: ``rule_ids`` and/or ``families`` (both empty: all
    rules) on ``paths`` (a path covers the paths below it; ``/`` every path), for the
    ``targets`` given (``ARGS:redirect_uri``, ``JSON``, ``JSON:policy.*``; none: the whole
    request)."""

    paths: tuple[str, ...] = ("/",)
    rule_ids: tuple[str, ...] = ()
    families: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()

    def covers_path(self, path: str) -> bool:
        return any(p == "/" or path == p or path.startswith(p.rstrip("/") + "/")
                   for p in self.paths)

    def covers(self, rule: Rule, location: str) -> bool:
        if self.rule_ids or self.families:
            if rule.id not in self.rule_ids and rule.family not in self.families:
                return False
        if not self.targets:
            return True
        for t in self.targets:
            if t.endswith("*"):
                if location.startswith(t[:-1]):
                    return True
            elif location == t or location.split(":", 1)[0] == t:
                return True
        return False


@dataclass(frozen=True)
class WafConfig:
    paranoia: int = 1
    inbound_threshold: int = 5
    body_limit: int = 131_072
    exclusions: Sequence[Exclusion | Mapping[str, Any]] = ()
    rules: Sequence[Rule] | None = None  # None: Bastion's own pack
    cache: DbCache | None = None  # None: DbCache.default() ($XDG_CACHE_HOME/bastion/waf)

    def __post_init__(self) -> None:
        if not 1 <= self.paranoia <= 4:
            raise ValueError("paranoia is 1-4")
        if self.inbound_threshold < 1 or self.body_limit < 1:
            raise ValueError("inbound_threshold and body_limit must be >= 1")


@dataclass(frozen=True)
class Match:
    rule_id: str
    family: str
    location: str
    redacted: str
    score: int = 0
    description: str = ""


@dataclass
class Verdict:
    """``blocked``: refused (a 403 on rules, else ``status``: 413, 415, 400...);
    ``reason``: why, for logs (never sent to the client)."""

    blocked: bool
    score: int
    matches: list[Match] = field(default_factory=list)
    status: int = 200
    reason: str = ""


def redact(value: str) -> str:
    """What may be logged of a matched value: a short printable prefix and the length."""
    prefix = "".join(c if c.isprintable() else "?" for c in value[:REDACT_PREFIX])
    return f"{prefix}…({len(value)} chars)" if len(value) > REDACT_PREFIX else prefix


def location(f: Field) -> str:
    """``COLLECTION:name``; the name (attacker-chosen) printable and at most 100
    characters, so it is safe in logs and audit records."""
    if not f[1]:
        return f[0]
    name = f[1] if f[1].isprintable() else "".join(c if c.isprintable() else "?"
                                                   for c in f[1])
    return f"{f[0]}:{name[:100]}"


def _compile(patterns: list[bytes], flags: list[int]) -> Any:
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(expressions=patterns, ids=list(range(len(patterns))), flags=flags)
    return db


def _compiles(pattern: bytes, flags: int) -> bool:
    try:
        _compile([pattern], [flags])
    except hyperscan.error:
        return False
    return True


BASE_FLAGS = hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_CASELESS | \
    hyperscan.HS_FLAG_MULTILINE


@lru_cache(maxsize=1)
def _re2_version() -> str:  # a plan depends on what RE2 accepts
    try:
        return metadata.version("google-re2")
    except metadata.PackageNotFoundError:
        return "unknown"


def _plan(rules: list[Rule], patterns: list[bytes]) -> Compiled:
    """Every pattern exact when they all compile (the common case), else each exact, in
    prefilter mode (confirmed by RE2) or left out (RE2 alone, or skipped)."""
    if not patterns:
        return Compiled(None, ())
    try:
        return Compiled(_compile(patterns, [BASE_FLAGS] * len(patterns)),
                        (BASE_FLAGS,) * len(patterns))
    except hyperscan.error:
        pass
    plan: list[int] = []
    for rule, pat in zip(rules, patterns, strict=True):
        if _compiles(pat, BASE_FLAGS):
            plan.append(BASE_FLAGS)
            continue
        try:
            re2.compile("(?i)" + rule.argument)
        except re2.error:
            plan.append(-1)
            continue
        prefilter = BASE_FLAGS | hyperscan.HS_FLAG_PREFILTER
        plan.append(prefilter if _compiles(pat, prefilter) else -1)
    kept = [i for i, f in enumerate(plan) if f != -1]
    db = _compile([patterns[i] for i in kept], [plan[i] for i in kept]) if kept else None
    return Compiled(db, tuple(plan))


class _Chain:
    """The rules sharing one transformation chain, their patterns in one database (from
    ``cache``: compiled once per process and shared by every ``Waf``, read-only; scratch
    space is per thread)."""

    def __init__(self, transforms: tuple[str, ...], rules: list[Rule], cache: DbCache) -> None:
        self.transforms = transforms
        self.fast = FAST_CHAIN.issuperset(transforms)
        self.lower = bool(LOWERING.intersection(transforms))
        self.collections = frozenset(t.split(":", 1)[0] for r in rules for t in r.targets
                                     if not t.startswith("!"))
        self.functions = [r for r in rules if r.operator in OPERATORS]
        rx = [r for r in rules if r.operator == "rx"]
        self.rx: list[Rule] = []
        self.confirm: dict[int, Any] = {}  # prefiltered id -> RE2 pattern
        self.re2_only: list[tuple[Rule, Any]] = []
        self.skipped: dict[str, str] = {}
        patterns = [r.argument.encode() for r in rx]
        compiled = cache.get(f"engine; re2 {_re2_version()}", patterns,
                             [BASE_FLAGS] * len(rx), lambda: _plan(rx, patterns))
        for rule, flag in zip(rx, compiled.plan, strict=True):
            if flag != BASE_FLAGS:  # RE2 confirms (prefilter) or runs alone (-1)
                try:
                    r2 = re2.compile("(?i)" + rule.argument)
                except re2.error as exc:
                    if flag != -1:  # ids would shift: the plan was not made here
                        raise
                    self.skipped[rule.id] = f"pattern not supported: {exc}"
                    continue
                if flag == -1:
                    self.re2_only.append((rule, r2))
                    continue
                self.confirm[len(self.rx)] = r2
            self.rx.append(rule)
        self.db: Any = compiled.db
        self._local = threading.local()

    def scratch(self) -> Any:
        s = getattr(self._local, "scratch", None)
        if s is None:
            s = self._local.scratch = hyperscan.Scratch(self.db)
        return s

    def scan(self, data: bytes) -> list[tuple[int, int]]:
        hits: list[tuple[int, int]] = []

        def on_match(pid: int, start: int, end: int, flags: int, ctx: Any) -> None:
            hits.append((pid, end))

        self.db.scan(data, match_event_handler=on_match, scratch=self.scratch())
        return hits


class Waf:
    """Rules compiled once; ``inspect`` decides on one request."""

    def __init__(self, config: WafConfig | None = None) -> None:
        self.config = config = config or WafConfig()
        all_rules = list(config.rules) if config.rules is not None else load_rules()
        self.skipped: dict[str, str] = {}
        self.rules: list[Rule] = []
        for rule in all_rules:
            if rule.paranoia > config.paranoia:
                continue
            module = MODULES.get(rule.operator)
            if module is not None and not available(module):
                self.skipped[rule.id] = f"operator {rule.operator} unavailable"
                continue
            self.rules.append(rule)
        by_chain: dict[tuple[str, ...], list[Rule]] = {}
        for rule in self.rules:
            by_chain.setdefault(check_chain(rule.transforms), []).append(rule)
        cache = config.cache if config.cache is not None else DbCache.default()
        self.chains = [_Chain(t, rs, cache) for t, rs in by_chain.items()]
        for chain in self.chains:
            self.skipped.update(chain.skipped)
        self.rules = [r for r in self.rules if r.id not in self.skipped]
        self.exclusions = tuple(e if isinstance(e, Exclusion) else exclusion(e)
                                for e in config.exclusions)

    def inspect(self, request: HttpRequest, *, body_limit: int | None = None) -> Verdict:
        """The verdict on ``request``; a request that cannot be inspected is refused with
        its 4xx (``Verdict.status``)."""
        try:
            decoded = decode(request, body_limit=body_limit or self.config.body_limit)
        except Refused as exc:
            return Verdict(True, 0, [], exc.status, exc.reason)
        excl = [e for e in self.exclusions if e.covers_path(decoded.path)]
        matches = self._match(decoded.fields, excl)
        score = sum(m.score for m in matches)
        blocked = score >= self.config.inbound_threshold
        return Verdict(blocked, score, matches, 403 if blocked else 200,
                       "anomaly score" if blocked else "")

    def _match(self, fields: list[Field], excl: list[Exclusion]) -> list[Match]:
        found: dict[str, Match] = {}
        memo: dict[str, dict[str, str]] = {name: {} for name in TRANSFORMS}
        seen: dict[tuple[str, str], str | None] = {}  # operator results of this request

        plain: dict[str, bool] = {}

        def transformed(chain: _Chain, value: str) -> str:
            simple = plain.get(value)
            if simple is None:
                simple = plain[value] = (value.isascii() and PLAIN_BREAKERS.isdisjoint(value)
                                         and "  " not in value)
            if simple and chain.fast:
                return value.lower() if chain.lower else value
            for name in chain.transforms:  # each step memoised: chains share prefixes
                step = memo[name]
                out = step.get(value)
                if out is None:
                    out = step[value] = TRANSFORMS[name](value)
                value = out
            return value

        def eligible(rule: Rule, f: Field) -> bool:
            if not rule.reads(f[0], f[1]):
                return False
            return not excl or not any(e.covers(rule, location(f)) for e in excl)

        def record(rule: Rule, f: Field, evidence: str) -> None:
            found[rule.id] = Match(rule.id, rule.family, location(f), redact(evidence),
                                   rule.score, rule.description)

        for chain in self.chains:
            mine = [f for f in fields if f[0] in chain.collections]
            if not mine:
                continue
            values = [transformed(chain, f[2]) for f in mine]
            if chain.db is not None:
                self._scan(chain, mine, values, eligible, record, found)
            for rule in chain.functions:
                op, gate = OPERATORS[rule.operator]
                for f, v in zip(mine, values, strict=True):
                    if gate is not None and gate.isdisjoint(v):
                        continue
                    if eligible(rule, f):
                        key = (rule.operator, v)
                        if key in seen:
                            evidence = seen[key]
                        else:
                            evidence = seen[key] = _operate(rule.operator, op, v)
                        if evidence:
                            record(rule, f, evidence)
                            break
            for rule, r2 in chain.re2_only:
                for f, v in zip(mine, values, strict=True):
                    if eligible(rule, f) and (m := r2.search(v)):
                        record(rule, f, m.group(0))
                        break
        return list(found.values())

    @staticmethod
    def _scan(chain: _Chain, mine: list[Field], values: list[str], eligible: Any,
              record: Any, found: dict[str, Match]) -> None:
        encoded = [v.encode("utf-8", "replace") for v in values]
        starts: list[int] = []
        pos = 0
        for e in encoded:
            starts.append(pos)
            pos += len(e) + len(SEP)
        alone: dict[int, set[int]] = {}

        def hits_in(i: int) -> set[int]:
            ids = alone.get(i)
            if ids is None:
                ids = {pid for pid, _ in chain.scan(encoded[i])} if encoded[i] else set()
                ids = {pid for pid in ids
                       if pid not in chain.confirm or chain.confirm[pid].search(values[i])}
                alone[i] = ids
            return ids

        for pid, end in chain.scan(SEP.join(encoded)):
            rule = chain.rx[pid]
            if rule.id in found:
                continue
            i = bisect.bisect_right(starts, end - 1) - 1
            if 0 <= i < len(mine) and eligible(rule, mine[i]) and pid in hits_in(i):
                record(rule, mine[i], _evidence(chain, pid, values[i]))
                continue
            for j, f in enumerate(mine):  # the first hit was elsewhere: look per value
                if eligible(rule, f) and pid in hits_in(j):
                    record(rule, f, _evidence(chain, pid, values[j]))
                    break


_RESULTS: dict[tuple[str, str], str | None] = {}
RESULT_CACHE = 20_000  # entries; values up to CACHE_VALUE characters
CACHE_VALUE = 512


def _operate(name: str, op: Any, value: str) -> str | None:
    """A code operator's result, cached across requests for short values (headers and
    common parameters repeat; the operators are pure)."""
    if len(value) > CACHE_VALUE:
        result: str | None = op(value)
        return result
    key = (name, value)
    try:
        return _RESULTS[key]
    except KeyError:
        pass
    result = op(value)
    if len(_RESULTS) >= RESULT_CACHE:
        _RESULTS.clear()
    _RESULTS[key] = result
    return result


def _evidence(chain: _Chain, pid: int, value: str) -> str:
    r2 = chain.confirm.get(pid)
    if r2 is not None and (m := r2.search(value)):
        return str(m.group(0))
    return value


def exclusion(item: Mapping[str, Any]) -> Exclusion:
    """An ``Exclusion`` from settings data (``paths``, ``rule_ids``, ``families``,
    ``targets``)."""
    unknown = set(item) - {"paths", "rule_ids", "families", "targets"}
    if unknown:
        raise ValueError(f"unknown exclusion keys {sorted(unknown)}")
    return Exclusion(paths=tuple(item.get("paths", ("/",))),
                     rule_ids=tuple(str(i) for i in item.get("rule_ids", ())),
                     families=tuple(item.get("families", ())),
                     targets=tuple(item.get("targets", ())))
