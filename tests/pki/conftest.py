"""One ``bastion serve --demo`` for the package: the HTTP/CSR path of ``test_client.py`` and
the demo's end-to-end checks of ``test_demo_s2s.py`` run against the same server (each
registers clients of its own), which saves starting a second one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.live import LiveServer, free_port, start_live_server


@pytest.fixture(scope="package")
def demo_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``bastion serve --demo``; ``env["INVENTORY_URL"]`` is its inventory (mTLS, the live
    CA)."""
    port = free_port()
    for server in start_live_server(tmp_path_factory.mktemp("demo"), "--demo",
                                    env_over={"BASTION_DEMO_INVENTORY_PORT": str(port)}):
        server.env["INVENTORY_URL"] = f"https://127.0.0.1:{port}"
        yield server
