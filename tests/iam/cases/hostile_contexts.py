"""Hostile request contexts: never an exception, never an allow on an unreadable value.

Same row shape as ``condition_operators`` (condition, context, three-valued expectation), run in
an Allow and in a Deny statement by ``test_hostile``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from tests.iam.cases.condition_operators import ABSENT, c

FAIL_CLOSED = "Bastion fail-closed rule (bastion.iam.evaluate): an unreadable value is unknown"
CAP = "Bastion bounded work (bastion.iam.context.MAX_CONTEXT_VALUES): longer lists are unknown"
CASE = "IAM JSON policy elements: Condition › key names are case-insensitive (two spellings: unknown)"
U = "aws:username"
MB = 1 << 20


class ExplodingMapping(Mapping[str, object]):
    def __getitem__(self, key: str) -> object:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("boom")

    def __len__(self) -> int:
        return 1


class Weird:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no eq")

    __hash__ = None  # type: ignore[assignment]


CASES: list[dict[str, Any]] = [
    c("nan-numeric", FAIL_CLOSED, {"NumericLessThan": {"orders:n": "10"}},
      {"orders:n": float("nan")}, None),
    c("inf-numeric", FAIL_CLOSED, {"NumericLessThan": {"orders:n": "10"}},
      {"orders:n": float("-inf")}, None),
    c("nan-date", FAIL_CLOSED, {"DateLessThan": {"aws:EpochTime": "10"}},
      {"aws:EpochTime": float("nan")}, None),
    c("nan-string", FAIL_CLOSED, {"StringEquals": {U: "nan"}}, {U: float("nan")}, None),
    c("dict-value", FAIL_CLOSED, {"StringEquals": {U: "alice"}}, {U: {"alice": 1}}, None),
    c("dict-value-negated", FAIL_CLOSED, {"StringNotEquals": {U: "alice"}}, {U: {"a": 1}}, None),
    c("object-value", FAIL_CLOSED, {"StringEquals": {U: "alice"}}, {U: object()}, None),
    c("exploding-object-value", FAIL_CLOSED, {"StringLike": {U: "*"}}, {U: Weird()}, None),
    c("bytes-for-string", FAIL_CLOSED, {"StringEquals": {U: "alice"}}, {U: b"alice"}, None),
    c("nested-list-member", FAIL_CLOSED, {"StringEquals": {U: "alice"}}, {U: [["alice"]]}, None),
    c("deeply-nested-value", FAIL_CLOSED, {"StringEquals": {U: "alice"}},
      {U: {"a": {"b": {"c": ["alice"]}}}}, None),
    c("none-is-absent", ABSENT, {"StringEquals": {U: "alice"}}, {U: None}, False),
    c("none-is-absent-negated", ABSENT, {"StringNotEquals": {U: "alice"}}, {U: None}, True),
    c("none-is-absent-null", ABSENT, {"Null": {U: "true"}}, {U: None}, True),
    c("huge-int-numeric", FAIL_CLOSED, {"NumericEquals": {"orders:n": "1"}},
      {"orders:n": 10**5000}, False),
    c("huge-int-as-string", FAIL_CLOSED, {"StringEquals": {"orders:n": "1"}},
      {"orders:n": 10**5000}, None),
    c("megabyte-string-like", FAIL_CLOSED, {"StringLike": {U: "a*b*c*d*e*f*g"}}, {U: "a" * MB},
      False),
    c("megabyte-string-like-qmarks", FAIL_CLOSED, {"StringLike": {U: "*a?b*c?d*"}},
      {U: "ab" * (MB // 2)}, False),
    c("megabyte-string-equals", FAIL_CLOSED, {"StringEquals": {U: "alice"}}, {U: "x" * MB}, False),
    c("megabyte-string-ip", FAIL_CLOSED, {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
      {"aws:SourceIp": "1" * MB}, None),
    c("megabyte-string-date", FAIL_CLOSED, {"DateLessThan": {"aws:CurrentTime": "2030-01-01"}},
      {"aws:CurrentTime": "2" * MB}, None),
    c("megabyte-string-number", FAIL_CLOSED, {"NumericLessThan": {"orders:n": "10"}},
      {"orders:n": "9" * MB}, None),
    c("megabyte-string-arn", FAIL_CLOSED, {"ArnLike": {"aws:SourceArn": "arn:*:*:*:*:x*y*z"}},
      {"aws:SourceArn": "arn:a:b:c:d:" + "x" * MB}, False),
    c("list-over-cap", CAP, {"ForAnyValue:StringEquals": {"aws:TagKeys": "k1"}},
      {"aws:TagKeys": [f"k{i}" for i in range(100_000)]}, None),
    c("list-over-cap-for-all", CAP, {"ForAllValues:StringEquals": {"aws:TagKeys": "k1"}},
      {"aws:TagKeys": ["k1"] * 100_000}, None),
    c("list-at-cap", CAP, {"ForAnyValue:StringEquals": {"aws:TagKeys": "k4095"}},
      {"aws:TagKeys": [f"k{i}" for i in range(4096)]}, True),
    c("tuple-value", FAIL_CLOSED, {"ForAnyValue:StringEquals": {"aws:TagKeys": "a"}},
      {"aws:TagKeys": ("b", "a")}, True),
    c("set-value", FAIL_CLOSED, {"ForAllValues:StringEquals": {"aws:TagKeys": ["a", "b"]}},
      {"aws:TagKeys": {"b", "a"}}, True),
    c("two-spellings-of-a-key", CASE, {"StringEquals": {U: "alice"}},
      {"aws:username": "alice", "AWS:USERNAME": "bob"}, None),
    c("two-spellings-null", CASE, {"Null": {U: "true"}},
      {"aws:username": "alice", "AWS:USERNAME": "alice"}, None),
    c("non-str-keys-ignored", FAIL_CLOSED, {"StringEquals": {U: "alice"}},
      {1: "x", (2, 3): "y", U: "alice"}, True),
    c("many-keys", FAIL_CLOSED, {"StringEquals": {U: "alice"}},
      {**{f"k{i}": i for i in range(10_000)}, U: "alice"}, True),
]

#: Whole contexts that are not readable mappings: every condition is unknown.
BROKEN_CONTEXTS: list[tuple[str, Any]] = [
    ("list", ["aws:username", "alice"]),
    ("none", None),
    ("string", "aws:username=alice"),
    ("exploding-mapping", ExplodingMapping()),
    ("int", 42),
]
