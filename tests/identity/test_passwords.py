"""Rules for new passwords (NIST SP 800-63B §3.1.1.2, OWASP ASVS 4.0.3 V2.1): length, the
username, the breached-password list; and nothing else (no composition rules)."""

from __future__ import annotations

import gzip

import pytest

from bastion.identity.passwords import (
    BREACHED_LIST,
    MIN_PASSWORD_CHARS,
    WeakPassword,
    check_new_password,
)


@pytest.mark.parametrize("password,fragment", [
    pytest.param("abc", "at least 12", id="3-characters"),
    pytest.param("", "at least 12", id="empty"),
    pytest.param("x" * (MIN_PASSWORD_CHARS - 1), "at least 12", id="one-short"),
    pytest.param("é" * 6, "at least 12", id="6-characters-12-bytes"),
    pytest.param("x" * 1025, "at most 1024 bytes", id="over-1024-bytes"),
    pytest.param("🔑" * 257, "at most 1024 bytes", id="257-emoji-1028-bytes"),
    pytest.param("q1w2e3r4t5y6", "breached", id="breached"),
    pytest.param("Q1W2E3R4T5Y6", "breached", id="breached-upper-case"),
    pytest.param("QwErTy123456", "breached", id="breached-mixed-case"),
    pytest.param("carol-the-admin", "username", id="the-username"),
    pytest.param("CAROL-THE-ADMIN", "username", id="the-username-upper-case"),
])
def test_weak_passwords_refused(password, fragment):
    with pytest.raises(WeakPassword, match=fragment):
        check_new_password(password, username="carol-the-admin")


@pytest.mark.parametrize("password", [
    pytest.param("x" * 12 + "-Kq9", id="16-characters"),
    pytest.param("correct horse battery staple", id="passphrase-with-spaces"),
    pytest.param("a" * 12, id="no-composition-rules"),
    pytest.param("z" * 64, id="64-characters"),
    pytest.param("ü" * 512, id="512-characters-1024-bytes"),
    pytest.param("пароль-надёжный", id="cyrillic"),
])
def test_good_passwords_accepted(password):
    check_new_password(password, username="carol")


def test_breached_list_is_shipped_and_lower_case():
    with gzip.open(BREACHED_LIST, "rt", encoding="utf-8") as fh:
        entries = [line.strip() for line in fh if line.strip()]
    assert len(entries) > 10_000
    assert all(e == e.casefold() for e in entries[:1000])
    for entry in [e for e in entries if len(e) >= MIN_PASSWORD_CHARS][:50]:
        with pytest.raises(WeakPassword, match="breached"):
            check_new_password(entry)
