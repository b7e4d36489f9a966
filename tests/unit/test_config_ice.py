"""Settings from flags and SFU_* variables, and the ice_servers handed out in `joined`."""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
from pathlib import Path

import aiohttp
import pytest

from sfu import config as cfg
from sfu.auth.ice import ice_servers_for
from tests.support import start_server


def parse(argv: list[str], env: dict[str, str] | None = None) -> cfg.Config:
    parser = argparse.ArgumentParser()
    cfg.add_arguments(parser)
    return cfg.load(parser.parse_args(argv), env or {})


@pytest.mark.parametrize(
    ("argv", "env", "field", "expected"),
    [
        (["--ice-host", "127.0.0.1", "--ice-host", "::1"], {}, "ice_hosts", ("127.0.0.1", "::1")),
        ([], {"SFU_ICE_HOSTS": "127.0.0.1, 10.0.0.5"}, "ice_hosts", ("127.0.0.1", "10.0.0.5")),
        (["--turn-url", "turn:127.0.0.1:3478"], {}, "turn_urls", ("turn:127.0.0.1:3478",)),
        ([], {"SFU_STUN_URLS": "stun:a.example:3478,stun:b.example"}, "stun_urls",
         ("stun:a.example:3478", "stun:b.example")),
        (["--port", "9000"], {"SFU_PORT": "8000"}, "port", 9000),
        ([], {"SFU_PORT": "8000"}, "port", 8000),
        ([], {}, "web_root", None),
    ],
)
def test_settings_come_from_flags_over_environment_over_defaults(
    argv: list[str], env: dict[str, str], field: str, expected: object
) -> None:
    assert getattr(parse(argv, env), field) == expected


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--port", "70000"], {}, "invalid --port"),
        (["--ice-host", "not-an-ip"], {}, "invalid --ice-hosts"),
        (["--turn-url", "http://x"], {}, "must start with stun:, turn: or turns:"),
        ([], {"SFU_PORTT": "1"}, "unknown setting SFU_PORTT"),
        ([], {"SFU_LOG_LEVEL": "loud"}, "invalid SFU_LOG_LEVEL"),
    ],
)
def test_bad_settings_are_refused_with_a_message_naming_them(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(cfg.ConfigError, match=message):
        parse(argv, env)


def test_turn_credentials_are_coturn_rest_style_and_expire() -> None:
    config = cfg.Config(stun_urls=("stun:s.example",), turn_urls=("turn:t.example:3478",),
                        turn_secret="s3cret", turn_ttl_s=600)
    stun, turn = ice_servers_for(config, "alice-1", now_s=1_000_000)
    assert stun == {"urls": ["stun:s.example"]}
    assert turn["username"] == "1000600:alice-1"
    expected = hmac.new(b"s3cret", b"1000600:alice-1", hashlib.sha1).digest()
    assert base64.b64decode(turn["credential"]) == expected


def test_no_ice_servers_are_configured_by_default() -> None:
    assert ice_servers_for(cfg.Config(), "alice-1", now_s=0) == []


async def test_joined_carries_the_configured_ice_servers(tmp_path: Path) -> None:
    async with start_server(tmp_path / "data", turn_urls=("turn:127.0.0.1:3478",), turn_secret="x") as server:
        creds = await server.credentials()
        async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
            await ws.send_json({"type": "join", "id": 1, "token": creds.token("room", "alice")})
            joined = await ws.receive_json(timeout=5)
    assert joined["type"] == "joined"
    (turn,) = joined["ice_servers"]
    assert turn["urls"] == ["turn:127.0.0.1:3478"] and turn["username"].endswith(":alice")
