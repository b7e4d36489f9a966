"""KeyFrameRequester: at most one request per interval per feed, none lost, PLI or FIR as negotiated."""

from __future__ import annotations

import pytest

from sfu.media.keyframes import KeyFrameRequester
from sfu.media.rtcp import Fir, Pli, parse_compound

SENDER, MEDIA = 0x1111, 0x2222

# (operation, now_ms) -> whether a packet goes out
Step = tuple[str, int, bool]


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param([("request", 0, True)], id="first request goes out at once"),
        pytest.param(
            [("request", 0, True), ("request", 100, False), ("request", 200, False), ("poll", 499, False),
             ("poll", 500, True), ("poll", 600, False), ("poll", 2000, False)],
            id="requests inside the interval become one request when it ends",
        ),
        pytest.param(
            [("request", 0, True), ("request", 100, False), ("poll", 300, False), ("request", 700, True),
             ("poll", 800, False)],
            id="a pending request goes out on the next request after the interval",
        ),
        pytest.param(
            [("request", 0, True), ("request", 100, False), ("key_frame", 200, False), ("poll", 600, False)],
            id="a key frame serves pending requests",
        ),
        pytest.param(
            [("request", 0, True), ("request", 500, True), ("request", 999, False), ("request", 1000, True)],
            id="requests spaced by the interval each go out",
        ),
        pytest.param(
            [("poll", 0, False), ("poll", 10_000, False)], id="polling with nothing asked sends nothing"
        ),
    ],
)  # fmt: skip
def test_requests_are_coalesced_per_interval(steps: list[Step]) -> None:
    requester = KeyFrameRequester(SENDER, MEDIA, min_interval_ms=500)
    for op, now_ms, sends in steps:
        if op == "request":
            out = requester.request_key_frame(now_ms)
        elif op == "poll":
            out = requester.poll(now_ms)
        else:
            requester.on_key_frame()
            out = None
        assert (out is not None) == sends, (op, now_ms)
        if out is not None:
            assert parse_compound(out) == [Pli(SENDER, MEDIA)]


def test_counters_and_next_due_time_follow_the_requests() -> None:
    requester = KeyFrameRequester(SENDER, MEDIA, min_interval_ms=500)
    assert requester.next_due_ms() is None
    requester.request_key_frame(1000)
    assert requester.next_due_ms() is None
    requester.request_key_frame(1200)
    requester.request_key_frame(1300)
    assert requester.pending
    assert requester.next_due_ms() == 1500
    requester.poll(1500)
    assert (requester.requests_in, requester.requests_sent, requester.requests_coalesced) == (3, 2, 2)


def test_fir_carries_an_increasing_sequence_number_that_wraps() -> None:
    requester = KeyFrameRequester(SENDER, MEDIA, use_fir=True, min_interval_ms=500)
    seqs = []
    for k in range(257):
        out = requester.request_key_frame(k * 500)
        assert out is not None
        (fir,) = parse_compound(out)
        assert isinstance(fir, Fir)
        assert fir.sender_ssrc == SENDER
        seqs.append(fir.entries[0])
    assert seqs[:3] == [(MEDIA, 1), (MEDIA, 2), (MEDIA, 3)]
    assert seqs[254:] == [(MEDIA, 255), (MEDIA, 0), (MEDIA, 1)]


@pytest.mark.parametrize(
    ("rtcp_fb", "expected"),
    [
        (["nack", "nack pli", "ccm fir", "goog-remb"], Pli),
        (["ccm fir", "nack"], Fir),
        (["NACK  PLI"], Pli),
        (["nack", "transport-cc"], None),
        ([], None),
    ],
)
def test_pli_is_preferred_and_fir_used_when_only_it_was_negotiated(
    rtcp_fb: list[str], expected: type | None
) -> None:
    requester = KeyFrameRequester.from_rtcp_fb(SENDER, MEDIA, rtcp_fb)
    if expected is None:
        assert requester is None
        return
    assert requester is not None
    out = requester.request_key_frame(0)
    assert out is not None
    assert type(parse_compound(out)[0]) is expected


def test_a_request_is_retried_when_no_key_frame_follows() -> None:
    requester = KeyFrameRequester(SENDER, MEDIA, min_interval_ms=500, retry_ms=1000)
    assert requester.request_key_frame(0) is not None
    assert requester.poll(999) is None
    assert requester.next_due_ms() == 1000
    assert requester.poll(1000) is not None
    requester.on_key_frame()
    assert requester.poll(5000) is None
    assert requester.next_due_ms() is None


def test_a_new_ssrc_is_used_for_the_next_request() -> None:
    requester = KeyFrameRequester(SENDER, MEDIA)
    requester.set_ssrc(0x3333)
    out = requester.request_key_frame(0)
    assert out is not None
    assert parse_compound(out) == [Pli(SENDER, 0x3333)]
