"""Settings: env, TOML file, validation with readable messages."""

from __future__ import annotations

import pytest

from bastion.config import ConfigError, load_settings


def test_defaults_are_safe(monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("BASTION_"):
            monkeypatch.delenv(key)
    s = load_settings()
    assert s.signing_alg == "ES256" and not s.dev and not s.tls
    assert s.code_ttl <= 600 and s.access_token_ttl == 900
    assert s.effective_database_url.startswith("sqlite+aiosqlite:///")


def test_env_and_toml(tmp_path, monkeypatch):
    cfg = tmp_path / "bastion.toml"
    cfg.write_text('access_token_ttl = 300\nissuer = "https://id.example.com/"\n')
    monkeypatch.setenv("BASTION_CONFIG", str(cfg))
    monkeypatch.setenv("BASTION_ID_TOKEN_TTL", "120")
    s = load_settings()
    assert s.access_token_ttl == 300 and s.id_token_ttl == 120
    assert s.effective_issuer == "https://id.example.com"
    monkeypatch.setenv("BASTION_ACCESS_TOKEN_TTL", "600")  # env beats the file
    assert load_settings().access_token_ttl == 600


@pytest.mark.parametrize("env, fragment", [
    ({"BASTION_CODE_TTL": "3600"}, "code_ttl"),
    ({"BASTION_ISSUER": "https://x.example/?q=1"}, "issuer"),
    ({"BASTION_SIGNING_ALG": "HS256"}, "signing_alg"),
    ({"BASTION_TLS_CERT": "/tmp/c.pem"}, "tls_cert and tls_key"),
], ids=["code-ttl-over-10-min", "issuer-with-query", "symmetric-alg", "cert-without-key"])
def test_bad_settings(monkeypatch, env, fragment):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        load_settings()


def test_unknown_toml_key_is_an_error(tmp_path, monkeypatch):
    cfg = tmp_path / "bastion.toml"
    cfg.write_text("acess_token_ttl = 5\n")
    monkeypatch.setenv("BASTION_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match="acess_token_ttl"):
        load_settings()


def test_missing_config_file(monkeypatch, tmp_path):
    monkeypatch.setenv("BASTION_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="no such file"):
        load_settings()


def test_configuration_doc_is_current():
    from pathlib import Path

    from bastion.configdoc import render

    doc = Path(__file__).parents[1] / "docs" / "configuration.md"
    assert doc.read_text() == render(), "run: python -m bastion.configdoc > docs/configuration.md"
