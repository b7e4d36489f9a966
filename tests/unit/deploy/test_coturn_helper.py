"""The TURN test's coturn helper says why it skips instead of failing where coturn cannot be installed."""

from __future__ import annotations

import pytest

from tests.integration.deploy import coturn


def test_without_turnserver_and_without_root_the_reason_names_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    why = coturn.ensure_coturn()
    assert why == "coturn is not installed and cannot be installed here (needs root and apt-get)"


def test_a_port_free_for_udp_and_tcp_is_found() -> None:
    assert 0 < coturn.free_port() < 65536
