"""sfu.gc_tuning: the thresholds it sets, and the pauses it records from real collections."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from sfu import gc_tuning
from sfu.gc_tuning import GcPauses


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_tune_freezes_what_exists_and_raises_the_young_threshold() -> None:
    gc_tuning.tune()
    expected = (gc_tuning.GEN0_THRESHOLD, gc_tuning.GEN1_THRESHOLD, gc_tuning.GEN2_THRESHOLD)
    assert gc.get_threshold() == expected
    assert gc.get_freeze_count() > 1000  # at least the imported modules' objects


def test_pauses_are_counted_per_generation_and_the_longest_recent_one_is_kept() -> None:
    pauses = GcPauses()
    pauses.install()
    pauses.install()  # once
    try:
        gc.collect(0)
        gc.collect(2)
    finally:
        pauses.uninstall()
    gc.collect(1)  # not recorded once uninstalled
    assert pauses.collections == [1, 0, 1]
    assert all(p > 0 for p in (pauses.pause_s[0], pauses.pause_s[2])) and pauses.pause_s[1] == 0
    snap = pauses.snapshot()
    assert snap["collections"] == {"0": 1, "1": 0, "2": 1}
    assert snap["max_pause_10s"] == max(pauses.pause_s)
    assert pauses.max_recent_s(now=pauses.recent[-1][0] + gc_tuning.RECENT_S + 1) == 0.0


def test_default_gc_is_a_flag_and_an_environment_setting() -> None:
    from sfu.cli import build_parser
    from sfu.config import load

    def config(*argv: str, env: dict[str, str] | None = None) -> bool:
        return load(build_parser().parse_args(["serve", *argv]), env or {}).default_gc

    assert config() is False
    assert config("--default-gc") is True
    assert config(env={"SFU_DEFAULT_GC": "true"}) is True
