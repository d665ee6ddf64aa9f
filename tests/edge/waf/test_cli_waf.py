"""``bastion waf test`` and ``bastion waf rules``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli import app
from bastion.cli.waf import parse_raw

runner = CliRunner()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BASTION_WAF_PARANOIA", "BASTION_WAF_MODE", "BASTION_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def run(*args: str, stdin: bytes | None = None) -> tuple[int, str]:
    result = runner.invoke(app, ["waf", *args], input=stdin)
    return result.exit_code, result.output


def test_a_blocked_request_with_redacted_matches() -> None:
    code, out = run("test", "/search?q=1%27%20OR%20%271%27%3D%271", "-H", "User-Agent: sqlmap")
    assert code == 0
    assert out.startswith("BLOCK 403  score")
    assert "ARGS:q" in out and "REQUEST_HEADERS:user-agent" in out and "110100" in out


def test_json_output_and_a_passing_request() -> None:
    code, out = run("test", "/search?q=skillet", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["decision"] == "pass" and doc["score"] == 0
    assert doc["matches"] == [] and doc["paranoia"] == 1


def test_body_from_a_file_and_from_stdin(tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"filter": {"$ne": None}}))
    code, out = run("test", "/api", "-H", "Content-Type: application/json", "--body",
                    str(body), "--json")
    doc = json.loads(out)
    assert doc["decision"] == "block"
    assert doc["matches"][0]["location"] == "JSON_NAMES:filter.$ne"
    code, out = run("test", "/api", "-X", "PUT", "-H", "Content-Type: text/plain", "--body",
                    "-", "--json", stdin=b"hello world")
    assert json.loads(out)["decision"] == "pass"


def test_a_raw_http_request() -> None:
    raw = (b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-"
           b"urlencoded\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"user=admin&pass=%27+or+1%3D1--")
    code, out = run("test", "--raw", "-", "--json", stdin=raw)
    doc = json.loads(out)
    assert {m["family"] for m in doc["matches"]} >= {"smuggling", "sqli"}


def test_a_refused_body_shows_its_status() -> None:
    code, out = run("test", "/x", "-H", "Content-Encoding: br", "--body", "-", stdin=b"x")
    assert code == 0 and out.startswith("BLOCK 415")


def test_paranoia_option() -> None:
    _, pl1 = run("test", "/x?q=x%27%20--%20y", "--json")
    _, pl2 = run("test", "/x?q=x%27%20--%20y", "--json", "--paranoia", "2")
    assert json.loads(pl1)["score"] < json.loads(pl2)["score"]


@pytest.mark.parametrize(("args", "message"), [
    (("test",), "give a URL or --raw"),
    (("test", "/x", "-H", "no colon"), "-H takes"),
    (("test", "--raw", "-", "/x"), "--raw takes the whole request"),
    (("test", "/x", "--body", "/no/such/file"), "cannot read"),
])
def test_bad_usage(args: tuple[str, ...], message: str) -> None:
    code, out = run(*args)
    assert code == 2 and message in out


def test_bad_raw_requests() -> None:
    code, out = run("test", "--raw", "-", stdin=b"garbage\r\n\r\n")
    assert code == 2 and "not an HTTP request" in out
    with pytest.raises(ValueError, match="malformed header"):
        parse_raw(b"GET / HTTP/1.1\r\nno-colon-here\r\n\r\n")


def test_rules_listing() -> None:
    code, out = run("rules")
    assert code == 0 and "110100" in out and "sqli" in out
    doc = json.loads(run("rules", "--json")[1])
    assert doc["skipped"] == [] and doc["families"]["xss"] >= 5
    assert sum(doc["families"].values()) == doc["total"] == len(doc["rules"])
    pl1 = json.loads(run("rules", "--json", "--paranoia", "1")[1])
    assert pl1["total"] < doc["total"]
