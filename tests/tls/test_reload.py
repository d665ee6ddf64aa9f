"""Hot reload of the server certificate: new files reach new handshakes on the same
SSLContext, live connections keep theirs, no request fails while the files are replaced,
a bad new file is logged and the old certificate kept; expiry as a gauge and a warning."""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time

import pytest
from prometheus_client import CollectorRegistry

from bastion.edge.tls import TlsCollector, TlsReloader, server_context
from tests.tls import certs
from tests.tls.harness import (
    client_context,
    connect,
    get,
    request,
    serial_of,
    serve_thread,
    settings,
)

INTERVAL = 0.1  # tls_reload_interval of these servers


@pytest.fixture
def root():
    return certs.authority("Test root")


@pytest.fixture
def files(tmp_path, root):
    (tmp_path / "ca.pem").write_bytes(root.cert_pem())
    first = certs.server(root)
    cert, key = first.write(tmp_path / "tls", "server")
    return first, cert, key


@pytest.fixture
def server(tmp_path, files):
    _, cert, key = files
    s = settings(tmp_path, tls_cert=cert, tls_key=key, tls_reload_interval=INTERVAL)
    with serve_thread(s) as (port, serving):
        yield port, serving


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_new_handshakes_get_the_new_certificate_live_connections_keep_theirs(
        tmp_path, root, files, server):
    first, cert, key = files
    port, serving = server
    ctx = client_context(tmp_path / "ca.pem")
    with connect(port, ctx) as kept:
        assert get(kept)[0] == 200 and serial_of(kept) == first.serial
        second = certs.server(root)
        second.write(tmp_path / "tls", "server")
        wait_for(lambda: request(port, ctx).serial == second.serial)
        assert get(kept)[0] == 200  # the live connection is untouched
        assert serial_of(kept) == first.serial
    assert serving.reloader is not None and serving.reloader.reloads == 1


def _bad(name: str, root: certs.Pair, current: certs.Pair) -> tuple[bytes, bytes]:
    other = certs.server(root)
    expired = certs.leaf(root, dns=("localhost",), eku=(certs.SERVER_AUTH,), expired=True)
    rsa = certs.server(root, key="rsa")
    return {
        "garbage-cert": (b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n",
                         current.key_pem()),
        "empty-key": (other.cert_pem(), b""),
        "key-mismatch": (other.cert_pem(), current.key_pem()),
        "expired": (expired.cert_pem(), expired.key_pem()),
        "key-type-change": (rsa.cert_pem(), rsa.key_pem()),
    }[name]


@pytest.mark.parametrize("name, reason", [
    ("garbage-cert", "no PEM certificate"), ("empty-key", "no unencrypted PEM private key"),
    ("key-mismatch", "does not match"), ("expired", "expired on"),
    ("key-type-change", "key type changed"),
])
def test_a_bad_new_file_is_logged_and_the_old_certificate_kept(
        tmp_path, root, files, server, caplog, name, reason):
    first, cert, key = files
    port, serving = server
    ctx = client_context(tmp_path / "ca.pem")
    cert_pem, key_pem = _bad(name, root, first)
    key.write_bytes(key_pem)
    cert.write_bytes(cert_pem)
    past = time.time() - 10  # not a replacement still being written: a real failure
    os.utime(cert, (past, past))
    os.utime(key, (past, past))
    with caplog.at_level(logging.ERROR, logger="bastion.tls"):
        wait_for(lambda: serving.reloader is not None and serving.reloader.failures == 1)
    assert any(reason in r.getMessage() and "stays" in r.getMessage()
               for r in caplog.records), caplog.text
    assert "PRIVATE KEY" not in caplog.text
    answer = request(port, ctx)
    assert answer.status == 200 and answer.serial == first.serial
    fixed = certs.server(root)  # and a good file after the bad one is taken
    fixed.write(tmp_path / "tls", "server")
    wait_for(lambda: request(port, ctx).serial == fixed.serial)


def test_no_request_fails_while_the_files_are_replaced(tmp_path, root, files, server):
    """A client loops requests on one kept-alive connection, another opens a connection
    per request, while the files are replaced five times (key then certificate, each
    renamed into place, as certbot and `bastion pki renew` do)."""
    first, cert, key = files
    port, _ = server
    ctx = client_context(tmp_path / "ca.pem")
    stop = threading.Event()
    failures: list[str] = []
    fresh: list[str] = []  # serials new connections saw
    per_thread: dict[int, list[str]] = {}  # in the order each thread saw them
    kept_serials: set[str] = set()
    counts = {"kept": 0, "fresh": 0}

    def kept_alive() -> None:
        try:
            with connect(port, ctx) as sock:
                while not stop.is_set():
                    status, _ = get(sock)
                    if status != 200:
                        failures.append(f"kept: {status}")
                    counts["kept"] += 1
                    kept_serials.add(serial_of(sock))
        except Exception as exc:
            failures.append(f"kept: {exc!r}")

    def new_connections() -> None:
        while not stop.is_set():
            try:
                answer = request(port, ctx)
                if answer.status != 200:
                    failures.append(f"fresh: {answer.status}")
                fresh.append(answer.serial)
                per_thread.setdefault(threading.get_ident(), []).append(answer.serial)
                counts["fresh"] += 1
            except Exception as exc:
                failures.append(f"fresh: {exc!r}")

    threads = [threading.Thread(target=kept_alive), threading.Thread(target=new_connections),
               threading.Thread(target=new_connections)]
    for t in threads:
        t.start()
    serials = [first.serial]
    for _ in range(5):
        time.sleep(0.4)
        pair = certs.server(root)
        pair.write(tmp_path / "tls", "server")
        serials.append(pair.serial)
    wait_for(lambda: bool(fresh) and fresh[-1] == serials[-1])
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(20)
    assert failures == []
    assert counts["kept"] > 20 and counts["fresh"] > 20, counts
    assert kept_serials == {first.serial}
    assert set(fresh) <= set(serials) and len(set(fresh)) >= 3, (serials, set(fresh))
    # once a new certificate is served, no later connection gets an older one
    for seen in per_thread.values():
        order = [serials.index(s) for s in seen]
        assert order == sorted(order)


# --- expiry ----------------------------------------------------------------------------------

def test_expiry_is_a_gauge_and_a_warning_under_the_threshold(tmp_path, root, caplog):
    pair = certs.server(root, days=1)
    cert, key = pair.write(tmp_path, "server")
    reloader = TlsReloader(server_context(), cert, key, warn_days=2)
    with caplog.at_level(logging.WARNING, logger="bastion.tls"):
        reloader.load()
        reloader.warn_expiry()  # once a day, not at every check
    warnings = [r for r in caplog.records if "expires in 1.0 days" in r.getMessage()]
    assert len(warnings) == 1 and pair.serial in warnings[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bastion.tls"):
        reloader.warn_expiry(now=time.time() + 86400.5)  # a day later: again
    assert "expires in" in caplog.text
    registry = CollectorRegistry()
    registry.register(TlsCollector(reloader))
    value = registry.get_sample_value("bastion_tls_certificate_expiry_timestamp_seconds",
                                      {"source": "file"})
    assert value == pair.cert.not_valid_after_utc.timestamp()
    assert registry.get_sample_value("bastion_tls_certificate_reloads_total",
                                     {"outcome": "failed"}) == 0


def test_no_warning_above_the_threshold_or_when_off(tmp_path, root, caplog):
    cert, key = certs.server(root, days=30).write(tmp_path, "server")
    short_cert, short_key = certs.server(root, days=1).write(tmp_path, "short")
    with caplog.at_level(logging.WARNING, logger="bastion.tls"):
        TlsReloader(server_context(), cert, key, warn_days=14).load()
        TlsReloader(server_context(), short_cert, short_key, warn_days=0).load()
    assert "expires in" not in caplog.text


def test_a_half_written_replacement_is_retried_silently(tmp_path, root, caplog):
    first = certs.server(root)
    cert, key = first.write(tmp_path, "server")
    reloader = TlsReloader(server_context(), cert, key)
    reloader.load()
    second = certs.server(root)
    key.write_bytes(second.key_pem())  # the key is new, the certificate not yet
    with caplog.at_level(logging.ERROR, logger="bastion.tls"):
        assert reloader.check() is False
    assert caplog.text == "" and reloader.failures == 0
    assert reloader.current is not None and reloader.current.serial == first.serial
    cert.write_bytes(second.cert_pem())
    assert reloader.check() is True and reloader.current.serial == second.serial


def test_a_missing_file_keeps_the_certificate(tmp_path, root, caplog):
    first = certs.server(root)
    cert, key = first.write(tmp_path, "server")
    ctx = server_context()
    reloader = TlsReloader(ctx, cert, key)
    reloader.load()
    key.unlink()
    with caplog.at_level(logging.WARNING, logger="bastion.tls"):
        assert reloader.check() is False
        assert reloader.check() is False
    assert len([r for r in caplog.records if "is gone" in r.getMessage()]) == 1
    assert reloader.current is not None and reloader.current.serial == first.serial
    assert isinstance(ctx, ssl.SSLContext)


def test_reloads_do_not_pile_up_chain_certificates(tmp_path, root):
    """``load_cert_chain`` replaces the context's chain: after reloads the server still
    sends its leaf and one intermediate."""
    import subprocess

    intermediate = certs.authority("Test intermediate", root)
    (tmp_path / "ca.pem").write_bytes(root.cert_pem())

    def issue() -> certs.Pair:
        return certs.leaf(intermediate, dns=("localhost",), ips=("127.0.0.1",),
                          eku=(certs.SERVER_AUTH,))

    cert, key = issue().write(tmp_path / "tls", "server")
    s = settings(tmp_path, tls_cert=cert, tls_key=key, tls_reload_interval=INTERVAL)
    with serve_thread(s) as (port, serving):
        ctx = client_context(tmp_path / "ca.pem")
        for _ in range(3):
            pair = issue()
            pair.write(tmp_path / "tls", "server")
            wait_for(lambda p=pair: request(port, ctx).serial == p.serial)
        shown = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                                "-showcerts"], input="", capture_output=True, text=True,
                               timeout=30, check=False).stdout
    assert serving.reloader is not None and serving.reloader.reloads == 3
    assert shown.count("BEGIN CERTIFICATE") == 2
