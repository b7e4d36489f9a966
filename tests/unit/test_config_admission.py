"""The admission settings: `--max-participants` (per session) and `--max-worker-cpu` (new sessions)."""

from __future__ import annotations

import re

import pytest

from sfu.cli import build_parser
from sfu.config import Config, ConfigError, load


def serve_config(*argv: str, env: dict[str, str] | None = None) -> Config:
    args = build_parser().parse_args(["serve", *argv])
    return load(args, env or {})


def test_admission_limits_are_off_by_default() -> None:
    config = serve_config()
    assert config.max_participants is None and config.max_worker_cpu is None


def test_admission_limits_come_from_flags_and_the_environment() -> None:
    config = serve_config("--max-participants", "50", "--max-worker-cpu", "85")
    assert config.max_participants == 50 and config.max_worker_cpu == 85.0
    config = serve_config(env={"SFU_MAX_PARTICIPANTS": "7", "SFU_MAX_WORKER_CPU": "60.5"})
    assert config.max_participants == 7 and config.max_worker_cpu == 60.5


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (("--max-participants", "0"), {}, "invalid --max-participants '0': must be positive"),
        (("--max-participants", "-3"), {}, "invalid --max-participants '-3': must be positive"),
        ((), {"SFU_MAX_PARTICIPANTS": "ten"}, "invalid SFU_MAX_PARTICIPANTS 'ten'"),
        (("--max-worker-cpu", "0"), {}, "must be a percentage above 0 and at most 100"),
        (("--max-worker-cpu", "120"), {}, "must be a percentage above 0 and at most 100"),
    ],
)
def test_bad_admission_limits_are_refused(argv: tuple[str, ...], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        serve_config(*argv, env=env)
