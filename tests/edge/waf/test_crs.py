"""Bastion's CRS mode on Debian's OWASP CRS 3.3 (scripts/system-deps.sh installs
``modsecurity-crs``), checked against ModSecurity v3 loading the same files (the
``libmodsecurity`` wheel, bench/peers/modsecurity/oracle.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.edge.waf.crs import CrsWaf, Ruleset, load_crs
from bastion.edge.waf.decode import HttpRequest
from tests.edge.waf.crs_oracle import ALLOWED_METHODS, compare, oracle, sample

DEBIAN_CRS = Path("/usr/share/modsecurity-crs")
HEADERS = [("Host", "localhost"), ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64)"),
           ("Accept", "text/html")]


@pytest.fixture(scope="module")
def ruleset() -> Ruleset:
    assert (DEBIAN_CRS / "rules").is_dir(), "run scripts/system-deps.sh (modsecurity-crs)"
    return load_crs(DEBIAN_CRS, paranoia=1, tx={"allowed_methods": ALLOWED_METHODS})


@pytest.fixture(scope="module")
def waf(ruleset: Ruleset) -> CrsWaf:
    return CrsWaf(ruleset)


def test_debian_crs_33_loads_with_every_skip_explained(ruleset: Ruleset) -> None:
    assert ruleset.version.startswith("OWASP_CRS/3.3")
    ids = [r.id for r in ruleset.loaded]
    assert len(ids) == len(set(ids)) == 526
    assert len(ruleset.skipped) == 108
    reasons = ruleset.reasons()
    assert len(reasons["response phase (3-5): responses are not inspected"]) == 98
    assert set(reasons["operator @rbl not supported"]) == {"910140"}
    lookaround = [r for r in reasons if r.startswith("regex not supported by RE2")]
    assert sorted(i for r in lookaround for i in reasons[r]) == [
        "920120", "920600", "942130", "942260"]
    assert all(s.reason and s.file.endswith(".conf") for s in ruleset.skipped)
    # the detection families are all there
    for family in ("941100", "942100", "930100", "932100", "933100", "944100", "949110"):
        assert family in ids


@pytest.mark.parametrize(("target", "expected"), [
    ("/search?q=hello+world", set()),
    ("/?q=1%27%20or%201=1--", {"942100", "949110"}),
    ("/?x=%3Cscript%3Ealert(1)%3C/script%3E", {"941100", "941110", "941160", "949110"}),
    ("/../../etc/passwd", {"930100", "930110", "949110"}),
], ids=["benign", "sqli-libinjection", "xss", "traversal"])
def test_known_requests(waf: CrsWaf, target: str, expected: set[str]) -> None:
    verdict = waf.inspect(HttpRequest("GET", target, HEADERS))
    assert {m.rule_id for m in verdict.matches} == expected
    assert verdict.blocked == bool(expected)
    assert verdict.score >= (5 if expected else 0)


def test_method_enforcement_uses_tx_macro(waf: CrsWaf) -> None:
    verdict = waf.inspect(HttpRequest("TRACE", "/", HEADERS))
    assert "911100" in {m.rule_id for m in verdict.matches}  # !@within %{tx.allowed_methods}


def test_paranoia_gating_by_tx(waf: CrsWaf) -> None:
    # ``waf`` is paranoia 1 (a CrsWaf compiles its Hyperscan databases in ~10 s: one each)
    pl2 = CrsWaf(load_crs(DEBIAN_CRS, paranoia=2, tx={"allowed_methods": ALLOWED_METHODS}))
    req = HttpRequest("GET", "/?q=a%27b%27c%27d%27e", HEADERS)  # 942430: 12 special chars? no
    pl1_ids = {m.rule_id for m in waf.inspect(req).matches}
    req2 = HttpRequest("GET", "/?q=" + "%27" * 12, HEADERS)
    pl2_ids = {m.rule_id for m in pl2.inspect(req2).matches}
    assert not any(i.startswith("9424") for i in pl1_ids)
    assert "942432" in pl2_ids or "942431" in pl2_ids or "942430" in pl2_ids


def test_bad_input_is_a_4xx_not_an_error(waf: CrsWaf) -> None:
    verdict = waf.inspect(HttpRequest("G E T", "/", HEADERS))
    assert verdict.blocked and verdict.status == 400
    verdict = waf.inspect(HttpRequest("POST", "/", [*HEADERS, ("Content-Type",
                                                               "application/json")], b"{" * 200))
    assert verdict.status in (200, 400, 403)


@pytest.fixture(scope="module")
def modsec() -> object:
    return oracle(1)


def _agreement(modsec: object, waf: CrsWaf, name: str, n: int) -> tuple[float, float, int]:
    decided = same = blocked = 0
    for rec in sample(name, n):
        out = compare(modsec, waf, rec)
        if out is None:
            continue
        decided += 1
        same += out.oracle_blocked == out.blocked
        if out.oracle_blocked:
            blocked += 1
    return same / decided, blocked / decided, decided


def test_oracle_blocked_attacks_fire_the_same_rules(modsec: object, waf: CrsWaf) -> None:
    """On attacks the oracle blocks, CRS mode blocks and fires the oracle's rule ids."""
    both = same_ids = covered = 0
    oracle_blocked = 0
    for rec in sample("attacks", 250):
        out = compare(modsec, waf, rec)
        if out is None or not out.oracle_blocked:
            continue
        oracle_blocked += 1
        both += out.blocked
        same_ids += out.ids == out.oracle_ids
        covered += out.oracle_ids <= out.ids
    assert oracle_blocked >= 100
    print(f"attacks: oracle blocked {oracle_blocked}; CRS mode blocked {both}, same rule ids "
          f"{same_ids}, oracle ids all fired {covered}")
    assert both / oracle_blocked >= 0.97
    assert same_ids / oracle_blocked >= 0.80
    assert covered / oracle_blocked >= 0.82


def test_benign_agreement(modsec: object, waf: CrsWaf) -> None:
    agree, rate, decided = _agreement(modsec, waf, "benign", 250)
    print(f"benign: decision agreement {agree:.1%} over {decided}; oracle FP {rate:.1%}")
    assert decided >= 200
    assert agree >= 0.95


def test_cli_rules_reports_loaded_and_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from typer.testing import CliRunner

    from bastion.cli import app

    monkeypatch.delenv("BASTION_CONFIG", raising=False)
    monkeypatch.setenv("BASTION_WAF_CRS_DIR", str(DEBIAN_CRS))
    runner = CliRunner()
    result = runner.invoke(app, ["waf", "rules", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert (doc["loaded"], doc["skipped"]) == (526, 108)
    assert doc["skipped_by_reason"]["operator @rbl not supported"] == ["910140"]
    text = runner.invoke(app, ["waf", "rules", "--crs", str(DEBIAN_CRS)]).output
    assert "526 rules loaded, 108 skipped" in text
    assert "98 skipped: response phase" in text
    bad = runner.invoke(app, ["waf", "rules", "--crs", "/nonexistent-crs"])
    assert bad.exit_code == 2 and "no CRS rule files" in bad.output


def test_settings_build_a_crs_waf(monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.config import Settings
    from bastion.edge.waf.crs import CombinedWaf
    from bastion.edge.waf.settings import build_waf

    monkeypatch.delenv("BASTION_CONFIG", raising=False)
    for rulesets in ("crs", "both"):
        waf = build_waf(Settings(waf_crs_dir=DEBIAN_CRS, waf_rulesets=rulesets))
        assert isinstance(waf, CombinedWaf)
        verdict = waf.inspect(HttpRequest("GET", "/?q=1%27%20or%201=1--", HEADERS))
        assert verdict.blocked and "949110" in {m.rule_id for m in verdict.matches}
        assert not waf.inspect(HttpRequest("GET", "/search?q=shoes", HEADERS)).blocked
        assert waf.inspect(HttpRequest("G E T", "/", HEADERS)).status == 400
