"""The metrics ledger keeps counters monotonic while the objects that counted them come and go."""

from __future__ import annotations

from sfu.metrics import CounterLedger

VIDEO = ("forwarder", "video")


def test_a_closed_forwarders_counts_stay_in_the_total() -> None:
    ledger = CounterLedger(fold_after_s=60)
    assert ledger.update({("f", 1): (VIDEO, (10, 100))}, 0.0)[VIDEO] == [10, 100]
    assert ledger.update({("f", 2): (VIDEO, (3, 30))}, 1.0)[VIDEO] == [13, 130]


def test_a_forwarder_that_comes_back_is_not_counted_twice() -> None:
    ledger = CounterLedger(fold_after_s=60)
    ledger.update({("f", 1): (VIDEO, (10, 100))}, 0.0)
    ledger.update({}, 1.0)
    assert ledger.update({("f", 1): (VIDEO, (12, 120))}, 2.0)[VIDEO] == [12, 120]


def test_retired_counts_are_folded_into_the_base_after_a_while() -> None:
    ledger = CounterLedger(fold_after_s=10)
    ledger.update({("f", 1): (VIDEO, (10, 100))}, 0.0)
    ledger.update({}, 1.0)
    assert ledger.update({}, 20.0)[VIDEO] == [10, 100]
    assert ledger._retired == {}
    assert ledger.update({("f", 3): (VIDEO, (1, 10))}, 21.0)[VIDEO] == [11, 110]


def test_totals_never_go_down() -> None:
    ledger = CounterLedger()
    ledger.update({("f", 1): (VIDEO, (10, 100))}, 0.0)
    assert ledger.update({("f", 1): (VIDEO, (5, 50))}, 1.0)[VIDEO] == [10, 100]
