"""The WAF evaluation corpus (tests/edge/waf/corpus): well-formed, reproducible, and what
``bastion.edge.waf`` detects in it at paranoia 1 and 2.

The floors and ceilings below are measured figures minus a small margin (see bench/RESULTS.md,
"Web application firewall"). Issue 9's goal, on a hidden corpus from similar public sources:
detection above CRS PL2's, false positives below half of CRS PL1's. On this corpus,
Apache + ModSecurity 2.9 + CRS 3.3 (bench/waf.py) detects 58.5% at PL1 with 15.8% false
positives, and 68.8% at PL2 with 66.5%.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest

CORPUS = Path(__file__).parent / "corpus"
ROOT = Path(__file__).resolve().parents[3]
ATTACK_FAMILIES = {
    "sqli", "xss", "rce", "lfi", "rfi", "ssrf", "ssti", "nosqli", "ldap", "xxe", "crlf",
    "smuggling", "java", "php-object", "scanner",
}
PLACEMENTS = {"query", "form", "json", "json-key", "cookie", "header", "path", "xml",
              "multipart", "framing", "body", "json-body"}
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

# Bastion's WAF on this corpus: per-family detection floors and the false-positive ceiling,
# per paranoia level: the figures measured in-process on 2026-12-04 18:10 UTC (95.5% overall,
# no false positive at PL1 or PL2; see bench/RESULTS.md) minus about 5 points. The overall
# floor is far above CRS PL2's 68.8% on this corpus and the ceiling below half of CRS PL1's
# 15.8%, issue 9's goal. The engine was written with this corpus in view: the public-source
# corpus of bench/waf_external.py is the fairer measure of how it generalises.
DETECTION_FLOOR: dict[int, dict[str, float]] = {pl: {
    "crlf": 0.90, "java": 0.93, "ldap": 0.90, "lfi": 0.91, "nosqli": 0.90, "php-object": 0.89,
    "rce": 0.90, "rfi": 0.84, "scanner": 0.85, "smuggling": 0.90, "sqli": 0.93, "ssrf": 0.85,
    "ssti": 0.91, "xss": 0.95, "xxe": 0.94,
} for pl in (1, 2)}
OVERALL_FLOOR = {1: 0.90, 2: 0.90}
FALSE_POSITIVE_CEILING = {1: 0.02, 2: 0.02}


def load(name: str) -> list[dict[str, Any]]:
    with (CORPUS / name).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


ATTACKS = load("attacks.jsonl")
BENIGN = load("benign.jsonl")


def body_of(rec: dict[str, Any]) -> bytes:
    if "body_b64" in rec:
        return base64.b64decode(rec["body_b64"], validate=True)
    return str(rec.get("body", "")).encode()


# --- the corpus itself -----------------------------------------------------------------------


def test_ids_are_unique_and_name_their_family() -> None:
    ids = [r["id"] for r in ATTACKS + BENIGN]
    assert len(ids) == len(set(ids))
    for r in ATTACKS + BENIGN:
        prefix = "b-benign-" if r["family"] == "benign" else f"a-{r['family']}-"
        assert r["id"].startswith(prefix), r["id"]


@pytest.mark.parametrize("name", ["attacks.jsonl", "benign.jsonl"])
def test_records_are_well_formed(name: str) -> None:
    expected = {"id", "method", "target", "headers", "family", "source", "placement"}
    for r in load(name):
        keys = set(r)
        assert expected <= keys <= expected | {"body", "body_b64"}, r["id"]
        assert not {"body", "body_b64"} <= keys, r["id"]
        assert r["method"] in METHODS, r["id"]
        assert r["target"].startswith("/") and " " not in r["target"], r["id"]
        assert all(len(h) == 2 and isinstance(h[0], str) and h[0] and isinstance(h[1], str)
                   for h in r["headers"]), r["id"]
        assert all("\r" not in k + v and "\n" not in k + v for k, v in r["headers"]), r["id"]
        assert not any(k.lower() == "host" for k, _ in r["headers"]), r["id"]
        assert r["placement"] in PLACEMENTS, r["id"]
        if "body_b64" in r:
            assert body_of(r), r["id"]
        if r["family"] == "benign":
            assert name == "benign.jsonl"
        else:
            assert name == "attacks.jsonl" and r["family"] in ATTACK_FAMILIES, r["id"]


def test_every_family_is_represented_and_balanced() -> None:
    counts = Counter(r["family"] for r in ATTACKS)
    assert set(counts) == ATTACK_FAMILIES
    assert all(50 <= n <= 220 for n in counts.values()), counts
    assert 2000 <= len(ATTACKS) <= 4000
    assert 1500 <= len(BENIGN) <= 3000
    size = sum((CORPUS / f).stat().st_size for f in ("attacks.jsonl", "benign.jsonl"))
    assert size < 5 * 1024 * 1024


def test_every_source_is_named_in_the_readme() -> None:
    readme = (CORPUS / "README.md").read_text()
    sources = {r["source"] for r in ATTACKS + BENIGN}
    for src in sources:
        origin, _, item = src.partition("#")
        assert origin.startswith("bastion:bench/") and item, src
        path = origin.removeprefix("bastion:")
        assert (ROOT / path).is_file(), src
        assert path.rsplit("/", 1)[-1] in readme, src


def test_build_is_reproducible(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "bench" / "waf_corpus.py"), "build", "--out",
                    str(tmp_path)], check=True, capture_output=True, timeout=120)
    for name in ("attacks.jsonl", "benign.jsonl"):
        assert (tmp_path / name).read_bytes() == (CORPUS / name).read_bytes(), name


def test_benign_traffic_has_the_hard_cases() -> None:
    text = "\n".join(unquote_plus(r["target"]) + unquote_plus(r.get("body", "")) + json.dumps(
        r["headers"]) for r in BENIGN)
    for needle in ("O'Brien", '12\\" Skillet', '12" Skillet', "${aws:username}", "arn:aws:", "code_verifier",
                   "grant_type", "Bearer eyJ", "SELECT ", "union", "drop", "docs/readme.md",
                   "&amp;", "query GetUser", "```"):
        assert needle in text, needle


# --- the engine on the corpus ----------------------------------------------------------------


@pytest.fixture(scope="module", params=[1, 2], ids=["PL1", "PL2"])
def outcomes(request: pytest.FixtureRequest) -> tuple[int, dict[str, bool]]:
    from bastion.edge import waf as engine

    level: int = request.param
    waf = engine.Waf(engine.WafConfig(paranoia=level, inbound_threshold=5, body_limit=131072,
                                      exclusions=()))
    refused: dict[str, bool] = {}
    for r in ATTACKS + BENIGN:
        req = engine.HttpRequest(method=r["method"], target=r["target"],
                                 headers=[(k, v) for k, v in r["headers"]], body=body_of(r))
        try:
            refused[r["id"]] = waf.inspect(req).blocked
        except Exception as exc:
            # bad input is refused with a 4xx; anything else is a bug
            status = getattr(exc, "status_code", getattr(exc, "status", 500))
            assert isinstance(status, int) and 400 <= status < 500, (r["id"], exc)
            refused[r["id"]] = True
    return level, refused


def test_detection_floors(outcomes: tuple[int, dict[str, bool]]) -> None:
    level, refused = outcomes
    rates = {}
    for fam in sorted(ATTACK_FAMILIES):
        recs = [r for r in ATTACKS if r["family"] == fam]
        rates[fam] = sum(refused[r["id"]] for r in recs) / len(recs)
    overall = sum(refused[r["id"]] for r in ATTACKS) / len(ATTACKS)
    low = {f: round(v, 3) for f, v in rates.items() if v < DETECTION_FLOOR[level][f]}
    assert not low, f"PL{level} below floor: {low}"
    assert overall >= OVERALL_FLOOR[level], f"PL{level} detection {overall:.3f}"


def test_false_positive_ceiling(outcomes: tuple[int, dict[str, bool]]) -> None:
    level, refused = outcomes
    blocked = [r["id"] for r in BENIGN if refused[r["id"]]]
    rate = len(blocked) / len(BENIGN)
    assert rate <= FALSE_POSITIVE_CEILING[level], (
        f"PL{level} false positives {rate:.3f}: {blocked[:10]}")
