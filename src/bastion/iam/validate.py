"""Policy validation in the manner of IAM Access Analyzer ``validate-policy``.

Each problem is a :class:`Finding` with a severity (``ERROR`` blocks :func:`parse_policy`;
``SECURITY_WARNING``, ``WARNING`` and ``SUGGESTION`` do not), a stable ``code`` and the JSON path
of the offending element (``Statement[0].Condition.StringEquals.aws:SourceIp``; a statement given
as a single object is ``Statement``).

The grammar is "IAM JSON policy grammar" / "IAM JSON policy element reference". Work is bounded:
the raw document is capped at :data:`MAX_DOCUMENT_CHARS` before parsing, JSON nesting beyond the
decoder's recursion limit is a finding (never a ``RecursionError``), and the walk only descends
into the fixed shape of the grammar.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from bastion.iam import variables
from bastion.iam.arn import arn_problem
from bastion.iam.conditions import OperatorError, check_value, parse_operator
from bastion.iam.keys import GLOBAL_CONDITION_KEY_PREFIXES, MULTIVALUED_KEYS, is_known_global_key
from bastion.iam.principal import principal_problems

Severity = Literal["ERROR", "SECURITY_WARNING", "WARNING", "SUGGESTION"]
Kind = Literal["identity", "resource", "trust", "boundary", "session"]
KINDS: tuple[str, ...] = ("identity", "resource", "trust", "boundary", "session")

#: AWS quotas ("IAM and AWS STS quotas"), in characters excluding whitespace.
DEFAULT_MAX_SIZE: dict[str, int] = {
    "identity": 6144,  # managed policy
    "boundary": 6144,  # a boundary is a managed policy
    "session": 2048,  # session policies (packed plaintext)
    "trust": 2048,  # role trust policy default
    "resource": 20480,  # e.g. S3 bucket policy
}
#: Inline policies attached to a user are capped at 2,048 characters: pass ``max_size=2048``.
INLINE_USER_MAX_SIZE = 2048
#: Raw input longer than this is refused before JSON parsing.
MAX_DOCUMENT_CHARS = 1 << 20

VERSIONS = ("2012-10-17", "2008-10-17")
TOP_KEYS = ("Version", "Id", "Statement")
STATEMENT_KEYS = (
    "Sid", "Effect", "Action", "NotAction", "Resource", "NotResource",
    "Principal", "NotPrincipal", "Condition",
)
_ACTION_RE = re.compile(r"\*|[A-Za-z0-9*?-]+:[A-Za-z0-9*?_.-]+")
_SID_RE = re.compile(r"[A-Za-z0-9]*")
_CONDITION_KEY_RE = re.compile(r"[A-Za-z0-9_.-]+:[^${}\n]+")


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    code: str
    message: str
    path: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


class PolicyError(ValueError):
    """A policy document with at least one ``ERROR`` finding."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings
        errors = [f for f in findings if f.severity == "ERROR"]
        first = errors[0] if errors else None
        summary = f"{first.code} at {first.path or '<policy>'}: {first.message}" if first else ""
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"invalid policy: {summary}{more}")


class _Object(dict[str, Any]):
    """A decoded JSON object that remembers keys given more than once."""

    duplicates: tuple[str, ...] = ()


def _object_hook(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object()
    dups = []
    for k, v in pairs:
        if k in obj:
            dups.append(k)
        obj[k] = v
    if dups:
        obj.duplicates = tuple(dups)
    return obj


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _mapping_as_dict(value: object) -> dict[Any, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def load_document(doc: object) -> tuple[Any, list[Finding]]:
    """Decode ``doc`` (str, bytes or a mapping) to plain JSON values, or explain why not."""
    def fail(message: str, code: str = "INVALID_JSON") -> tuple[Any, list[Finding]]:
        return None, [Finding("ERROR", code, message, "")]

    try:
        if isinstance(doc, bytes | bytearray | memoryview):
            raw = bytes(doc)
            if len(raw) > MAX_DOCUMENT_CHARS * 4:
                return fail("document is too large", "POLICY_SIZE_EXCEEDED")
            try:
                text = raw.decode("utf-8-sig")
            except UnicodeDecodeError:
                return fail("document is not UTF-8")
        elif isinstance(doc, str):
            text = doc
        elif isinstance(doc, Mapping):
            text = json.dumps(doc, allow_nan=False, default=_mapping_as_dict)
        else:
            return fail(f"a policy is JSON text or a mapping, not {type(doc).__name__}")
        if len(text) > MAX_DOCUMENT_CHARS:
            return fail("document is too large", "POLICY_SIZE_EXCEEDED")
        value = json.loads(text, object_pairs_hook=_object_hook, parse_constant=_reject_constant)
    except RecursionError:
        return fail("document is nested too deeply")
    except (ValueError, TypeError) as exc:
        return fail(f"not valid JSON: {str(exc)[:200]}")
    return value, []


def plain(value: Any) -> Any:
    """Drop :class:`_Object` (a plain, independent copy of the decoded document)."""
    return json.loads(json.dumps(value))


class _Validator:
    def __init__(self, kind: str, max_size: int | None) -> None:
        self.kind = kind
        self.max_size = max_size if max_size is not None else DEFAULT_MAX_SIZE.get(kind, 6144)
        self.findings: list[Finding] = []
        self.v2012 = False
        self.warned_2008: set[str] = set()

    def add(self, severity: Severity, code: str, message: str, path: str) -> None:
        self.findings.append(Finding(severity, code, message, path))

    def dup_keys(self, obj: object, path: str) -> None:
        for key in getattr(obj, "duplicates", ()):
            self.add("ERROR", "DUPLICATE_KEY", f"{key!r} is given more than once", _join(path, key))

    # -- document ------------------------------------------------------------------------------

    def document(self, doc: Any) -> None:
        if not isinstance(doc, dict):
            self.add("ERROR", "INVALID_TYPE", "a policy must be a JSON object", "")
            return
        size = len(json.dumps(doc, separators=(",", ":"), ensure_ascii=False))
        if size > self.max_size:
            self.add("ERROR", "POLICY_SIZE_EXCEEDED",
                     f"{size} characters (without whitespace) exceed the {self.kind} policy "
                     f"limit of {self.max_size}", "")
        self.dup_keys(doc, "")
        for key in doc:
            if key not in TOP_KEYS:
                self.add("ERROR", "UNKNOWN_ELEMENT", f"unknown policy element {key!r}", key)
        version = doc.get("Version")
        if version is None and "Version" not in doc:
            self.add("WARNING", "MISSING_VERSION",
                     "no Version: the 2008-10-17 language applies (no policy variables); "
                     "add \"Version\": \"2012-10-17\"", "Version")
        elif version not in VERSIONS:
            self.add("ERROR", "INVALID_VERSION", "Version must be '2012-10-17' or '2008-10-17'",
                     "Version")
        self.v2012 = version == "2012-10-17"
        if "Id" in doc and not isinstance(doc["Id"], str):
            self.add("ERROR", "INVALID_TYPE", "Id must be a string", "Id")
        if "Statement" not in doc:
            self.add("ERROR", "MISSING_STATEMENT", "a policy needs a Statement", "Statement")
            return
        statements = doc["Statement"]
        if isinstance(statements, dict):
            items: list[tuple[str, Any]] = [("Statement", statements)]
        elif isinstance(statements, list):
            if not statements:
                self.add("ERROR", "EMPTY_ARRAY", "Statement list is empty", "Statement")
            items = [(f"Statement[{i}]", s) for i, s in enumerate(statements)]
        else:
            self.add("ERROR", "INVALID_TYPE", "Statement must be an object or a list", "Statement")
            return
        sids: set[str] = set()
        for path, statement in items:
            self.statement(statement, path, sids)

    # -- statement -----------------------------------------------------------------------------

    def statement(self, st: Any, path: str, sids: set[str]) -> None:
        if not isinstance(st, dict):
            self.add("ERROR", "INVALID_TYPE", "a statement must be an object", path)
            return
        self.dup_keys(st, path)
        for key in st:
            if key not in STATEMENT_KEYS:
                self.add("ERROR", "UNKNOWN_ELEMENT", f"unknown statement element {key!r}",
                         _join(path, key))
        self.sid(st, path, sids)
        effect = st.get("Effect")
        if "Effect" not in st:
            self.add("ERROR", "MISSING_EFFECT", "a statement needs an Effect", path)
        elif effect not in ("Allow", "Deny"):
            self.add("ERROR", "INVALID_EFFECT", "Effect must be 'Allow' or 'Deny'",
                     _join(path, "Effect"))
        self.actions(st, path)
        self.resources(st, path)
        self.principals(st, path)
        if "Condition" in st:
            self.condition(st["Condition"], _join(path, "Condition"))
        if effect == "Allow":
            self.security(st, path)

    def sid(self, st: dict[str, Any], path: str, sids: set[str]) -> None:
        if "Sid" not in st:
            return
        sid = st["Sid"]
        sub = _join(path, "Sid")
        if not isinstance(sid, str):
            self.add("ERROR", "INVALID_TYPE", "Sid must be a string", sub)
            return
        if self.kind in ("identity", "boundary", "session") and not _SID_RE.fullmatch(sid):
            self.add("ERROR", "INVALID_SID", "in IAM policies a Sid holds only A-Z, a-z, 0-9",
                     sub)
        if sid:
            if sid in sids:
                self.add("ERROR", "DUPLICATE_SID", f"Sid {sid!r} is used more than once", sub)
            sids.add(sid)

    def strings(self, value: Any, path: str, what: str) -> Iterator[tuple[str, str]]:
        """Yield ``(path, string)`` of a string-or-list element; report type problems."""
        if isinstance(value, str):
            yield path, value
            return
        if not isinstance(value, list):
            self.add("ERROR", "INVALID_TYPE", f"{what} must be a string or a list of strings",
                     path)
            return
        if not value:
            self.add("ERROR", "EMPTY_ARRAY", f"{what} list is empty", path)
        seen: set[str] = set()
        for i, item in enumerate(value):
            sub = f"{path}[{i}]"
            if not isinstance(item, str):
                self.add("ERROR", "INVALID_TYPE", f"{what} entries must be strings", sub)
                continue
            if item in seen:
                self.add("SUGGESTION", "DUPLICATE_VALUE", f"{item!r} is listed twice", sub)
            seen.add(item)
            yield sub, item

    def actions(self, st: dict[str, Any], path: str) -> None:
        has, has_not = "Action" in st, "NotAction" in st
        if has and has_not:
            self.add("ERROR", "ACTION_AND_NOT_ACTION", "use Action or NotAction, not both", path)
        elif not has and not has_not:
            self.add("ERROR", "MISSING_ACTION", "a statement needs Action or NotAction", path)
        for key in ("Action", "NotAction"):
            if key not in st:
                continue
            for sub, action in self.strings(st[key], _join(path, key), key):
                if "${" in action:
                    self.add("ERROR", "INVALID_ACTION", "policy variables are not allowed in "
                             "Action", sub)
                elif not _ACTION_RE.fullmatch(action):
                    self.add("ERROR", "INVALID_ACTION",
                             f"{action!r} is not '*' or 'service:Action' (letters, digits, "
                             "'-', '_', '.', '*', '?')", sub)

    def variables_in(self, text: str, path: str) -> None:
        if "${" not in text:
            return
        if not self.v2012:
            if path not in self.warned_2008:
                self.warned_2008.add(path)
                self.add("WARNING", "VARIABLES_IN_2008_POLICY",
                         "policy variables are literal text unless Version is 2012-10-17", path)
            return
        problem = variables.check_variable_syntax(text)
        if problem:
            self.add("ERROR", "INVALID_VARIABLE", problem, path)

    def arn_value(self, text: str, path: str, what: str) -> None:
        self.variables_in(text, path)
        masked = re.sub(r"\$\{[^{}]*\}", "${v}", text) if self.v2012 else text
        problem = arn_problem(masked, wildcards=True)
        if problem:
            self.add("ERROR", "INVALID_ARN", f"{what} {text[:200]!r}: {problem}", path)

    def resources(self, st: dict[str, Any], path: str) -> None:
        has, has_not = "Resource" in st, "NotResource" in st
        if self.kind == "trust":
            for key in ("Resource", "NotResource"):
                if key in st:
                    self.add("ERROR", "RESOURCE_NOT_ALLOWED", f"a trust policy has no {key}",
                             _join(path, key))
            return
        if has and has_not:
            self.add("ERROR", "RESOURCE_AND_NOT_RESOURCE", "use Resource or NotResource, not both",
                     path)
        elif not has and not has_not:
            self.add("ERROR", "MISSING_RESOURCE", "a statement needs Resource or NotResource", path)
        for key in ("Resource", "NotResource"):
            if key not in st:
                continue
            for sub, resource in self.strings(st[key], _join(path, key), key):
                if resource != "*":
                    self.arn_value(resource, sub, "resource")

    def principals(self, st: dict[str, Any], path: str) -> None:
        has, has_not = "Principal" in st, "NotPrincipal" in st
        if self.kind not in ("resource", "trust"):
            for key in ("Principal", "NotPrincipal"):
                if key in st:
                    self.add("ERROR", "PRINCIPAL_NOT_ALLOWED",
                             f"{key} is only allowed in resource-based and trust policies",
                             _join(path, key))
            return
        if has and has_not:
            self.add("ERROR", "PRINCIPAL_AND_NOT_PRINCIPAL",
                     "use Principal or NotPrincipal, not both", path)
        elif not has and not has_not:
            self.add("ERROR", "MISSING_PRINCIPAL",
                     "a resource-based statement needs Principal or NotPrincipal", path)
        for key in ("Principal", "NotPrincipal"):
            if key in st:
                self.dup_keys(st[key], _join(path, key))
                for sub, code, message in principal_problems(st[key]):
                    self.add("ERROR", code, message, _join(path, key) + sub)

    # -- condition -----------------------------------------------------------------------------

    def condition(self, block: Any, path: str) -> None:
        if not isinstance(block, dict):
            self.add("ERROR", "INVALID_TYPE", "Condition must be an object", path)
            return
        self.dup_keys(block, path)
        if not block:
            self.add("SUGGESTION", "EMPTY_CONDITION", "the Condition block is empty", path)
        for op_name, entries in block.items():
            op_path = _join(path, op_name)
            try:
                op, qualifier, if_exists = parse_operator(op_name)
            except OperatorError as exc:
                self.add("ERROR", exc.code, str(exc), op_path)
                continue
            if not isinstance(entries, dict):
                self.add("ERROR", "INVALID_TYPE", "an operator maps condition keys to values",
                         op_path)
                continue
            self.dup_keys(entries, op_path)
            if not entries:
                self.add("ERROR", "EMPTY_OPERATOR", "the operator has no condition keys",
                         op_path)
            for key, values in entries.items():
                self.condition_key(key, op.family, qualifier, _join(op_path, key))
                self.condition_values(op_name, values, _join(op_path, key))

    def condition_key(self, key: str, family: str, qualifier: str | None, path: str) -> None:
        if not _CONDITION_KEY_RE.fullmatch(key):
            self.add("ERROR", "INVALID_CONDITION_KEY",
                     f"{key!r} is not a condition key such as 'aws:SourceIp'", path)
            return
        low = key.lower()
        if low.startswith("aws:") and not is_known_global_key(low):
            self.add("WARNING", "UNKNOWN_GLOBAL_CONDITION_KEY",
                     f"{key!r} is not a known global condition key", path)
            return
        if family == "null":
            return
        if qualifier is None and low in MULTIVALUED_KEYS:
            self.add("WARNING", "MISSING_SET_OPERATOR",
                     f"{key!r} is multi-valued: qualify the operator with ForAnyValue: or "
                     "ForAllValues:", path)
        elif qualifier is not None and is_known_global_key(low) and (
            low not in MULTIVALUED_KEYS or low.startswith(GLOBAL_CONDITION_KEY_PREFIXES)
        ):
            self.add("WARNING", "SET_OPERATOR_ON_SINGLE_VALUED_KEY",
                     f"{key!r} is single-valued: {qualifier}: can be overly permissive", path)

    def condition_values(self, op_name: str, values: Any, path: str) -> None:
        op, _, _ = parse_operator(op_name)
        if isinstance(values, list):
            if not values:
                self.add("ERROR", "EMPTY_ARRAY", "the condition value list is empty", path)
            items = [(f"{path}[{i}]", v) for i, v in enumerate(values)]
        else:
            items = [(path, values)]
        for sub, value in items:
            if isinstance(value, dict | list) or value is None:
                self.add("ERROR", "INVALID_TYPE", "a condition value must be a string, number "
                         "or boolean", sub)
                continue
            problem = check_value(op, value)
            if problem:
                self.add("ERROR", problem[0], problem[1], sub)
                continue
            if isinstance(value, str) and op.variables:
                if op.family == "arn":
                    self.arn_value(value, sub, "ARN")
                else:
                    self.variables_in(value, sub)

    # -- security checks (Allow statements) ----------------------------------------------------

    def security(self, st: dict[str, Any], path: str) -> None:
        def listed(key: str, value: str) -> bool:
            raw = st.get(key)
            return raw == value or (isinstance(raw, list) and value in raw)

        if listed("Action", "*") and listed("Resource", "*"):
            self.add("SECURITY_WARNING", "ALLOW_ALL_ACTIONS_ALL_RESOURCES",
                     "Allow of every action on every resource", path)
        if "NotAction" in st:
            self.add("SECURITY_WARNING", "ALLOW_WITH_NOT_ACTION",
                     "Allow with NotAction grants every action not listed, including future ones",
                     _join(path, "NotAction"))
        if "NotResource" in st:
            self.add("SECURITY_WARNING", "ALLOW_WITH_NOT_RESOURCE",
                     "Allow with NotResource grants every resource not listed",
                     _join(path, "NotResource"))
        if "NotPrincipal" in st and self.kind in ("resource", "trust"):
            self.add("SECURITY_WARNING", "ALLOW_WITH_NOT_PRINCIPAL",
                     "Allow with NotPrincipal grants every principal not listed",
                     _join(path, "NotPrincipal"))
        principal = st.get("Principal")
        public = principal == "*" or (
            isinstance(principal, dict)
            and (principal.get("AWS") == "*" or "*" in (principal.get("AWS") or []))
        )
        if self.kind in ("resource", "trust") and public and not st.get("Condition"):
            self.add("SECURITY_WARNING", "PUBLIC_PRINCIPAL",
                     "Principal '*' without a Condition grants access to anyone",
                     _join(path, "Principal"))


def analyze(doc: object, kind: str, max_size: int | None = None) -> tuple[list[Finding], Any]:
    """Findings for ``doc`` and its decoded JSON (``None`` when it did not decode)."""
    if kind not in KINDS:
        return [Finding("ERROR", "INVALID_KIND", f"kind must be one of {', '.join(KINDS)}",
                        "")], None
    value, findings = load_document(doc)
    if findings:
        return findings, None
    validator = _Validator(kind, max_size)
    try:
        validator.document(value)
    except Exception as exc:  # defensive: validation never raises
        validator.add("ERROR", "INTERNAL_ERROR", f"validation failed: {type(exc).__name__}", "")
    return validator.findings, value


def validate_policy(doc: str | bytes | Mapping[str, Any], *, kind: Kind = "identity",
                    max_size: int | None = None) -> list[Finding]:
    """Access-Analyzer-style findings for a policy document; never raises.

    ``max_size`` overrides the size quota of ``kind`` (:data:`DEFAULT_MAX_SIZE`), e.g.
    :data:`INLINE_USER_MAX_SIZE` for a user's inline policy.
    """
    try:
        return analyze(doc, kind, max_size)[0]
    except Exception as exc:  # pragma: no cover - analyze already guards
        return [Finding("ERROR", "INTERNAL_ERROR", f"validation failed: {type(exc).__name__}", "")]
