"""TLS settings: HTTPS unless dev, mTLS only over TLS, bad values refused with the name."""

from __future__ import annotations

import pytest

from bastion.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("BASTION_"):
            monkeypatch.delenv(key)


def test_https_unless_dev(tmp_path):
    served = load_settings(data_dir=tmp_path)
    assert served.https and not served.tls and served.mtls == "off"
    assert served.effective_issuer == "https://127.0.0.1:8443"
    dev = load_settings(data_dir=tmp_path, dev=True)
    assert not dev.https and dev.effective_issuer == "http://127.0.0.1:8443"
    files = load_settings(data_dir=tmp_path, dev=True, tls_cert="c.pem", tls_key="k.pem")
    assert files.https and files.effective_issuer.startswith("https://")


@pytest.mark.parametrize("over, fragment", [
    ({"dev": True, "mtls": "required"}, "mtls needs TLS"),
    ({"mtls": "sometimes"}, "mtls"),
    ({"tls_reload_interval": -1}, "tls_reload_interval"),
    ({"mtls_revocation_cache_ttl": 3600}, "mtls_revocation_cache_ttl"),
    ({"tls_expiry_warning_days": -1}, "tls_expiry_warning_days"),
], ids=["mtls-over-plain-http", "unknown-mtls-mode", "negative-reload-interval",
        "revocation-cache-too-long", "negative-warning"])
def test_bad_tls_settings(tmp_path, over, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_settings(data_dir=tmp_path, **over)


def test_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("BASTION_MTLS", "optional")
    monkeypatch.setenv("BASTION_TLS_HOSTNAMES", "id.test,10.0.0.5")
    s = load_settings(data_dir=tmp_path)
    assert s.mtls == "optional" and s.tls_hostnames == "id.test,10.0.0.5"
