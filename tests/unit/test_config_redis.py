"""The multi-node settings: `--redis URL` (alias of `--redis-url`), `--node-url`, `--region`, `--redirect`."""

from __future__ import annotations

import pytest

from sfu.cli import build_parser
from sfu.config import Config, ConfigError, load


def serve_config(*argv: str, env: dict[str, str] | None = None) -> Config:
    args = build_parser().parse_args(["serve", *argv])
    return load(args, env or {})


def test_redis_settings_come_from_flags() -> None:
    config = serve_config("--redis", "redis://10.0.0.5:6379/2", "--node-url", "https://sfu-1.example.com/",
                          "--region", "eu", "--redirect")
    assert config.redis_url == "redis://10.0.0.5:6379/2"
    assert config.node_url == "https://sfu-1.example.com"
    assert config.region == "eu"
    assert config.redirect is True


def test_redis_settings_come_from_the_environment() -> None:
    env = {"SFU_REDIS_URL": "rediss://:pw@redis:6380/0", "SFU_REDIRECT": "false", "SFU_REGION": "us"}
    config = serve_config(env=env)
    assert config.redis_url == "rediss://:pw@redis:6380/0"
    assert config.redirect is False and config.region == "us"


def test_without_redis_nothing_changes() -> None:
    config = serve_config()
    assert config.redis_url is None and config.redirect is False


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (("--redis", "http://redis:6379"), {}, "must start with redis://"),
        (("--redis", "redis://r/0", "--node-url", "sfu-1:7880"), {}, r"must be http\(s\)://HOST:PORT"),
        (("--redis", "redis://r/0", "--node-url", "http://sfu-1:7880/path"), {}, r"HOST:PORT"),
        (("--region", "eu"), {}, "need --redis-url"),
        ((), {"SFU_REDIRECT": "true"}, "need --redis-url"),
        ((), {"SFU_REDIS_URL": "redis://r/0", "SFU_REDIRECT": "maybe"}, "must be true or false"),
    ],
)
def test_bad_redis_settings_are_clear_errors(
    argv: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        serve_config(*argv, env=env)
