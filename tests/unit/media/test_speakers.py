"""Audio levels from RTP header extensions, their smoothing, and active speaker reports."""

from __future__ import annotations

import itertools
import struct

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.media.speakers import ActiveSpeakerDetector, AudioLevelMeter, audio_level

AUDIO_LEVEL_ID = 2


def rtp(
    extension: bytes | None, profile: int = 0xBEDE, csrcs: int = 0, payload: bytes = b"\xf8\xff\xfe"
) -> bytes:
    """An RTP packet (RFC 3550 section 5.1) with `extension` as its header extension block."""
    b0 = 0x80 | csrcs | (0x10 if extension is not None else 0)
    header = struct.pack("!BBHII", b0, 111, 1, 960, 0x1234) + bytes(4 * csrcs)
    if extension is None:
        return header + payload
    extension += bytes(-len(extension) % 4)
    return header + struct.pack("!HH", profile, len(extension) // 4) + extension + payload


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        (rtp(bytes([0x20, 0x80 | 30])), 30),  # id 2, L=0, V bit set
        (rtp(bytes([0x20, 127])), 127),
        (rtp(bytes([0x10, ord("0"), 0x20, 5])), 5),  # after a one-byte mid
        (rtp(bytes([0x11, ord("a"), ord("b"), 0, 0, 0x20, 9])), 9),  # after a 2-byte element and padding
        (rtp(bytes([0x10, ord("0"), 0x20, 5]), csrcs=2), 5),
        (rtp(bytes([0x10, ord("0")])), None),  # not present
        (rtp(bytes([0xF0, 0x20, 5])), None),  # id 15 stops the walk (RFC 8285 section 4.2)
        (rtp(None), None),  # no X bit
        (rtp(bytes([2, 1, 0x80 | 40]), 0x1000), 40),  # two-byte form (RFC 8285 section 4.3)
        (rtp(bytes([1, 2, 0x61, 0x62, 2, 1, 17]), 0x1000), 17),  # two-byte form after another element
        (rtp(bytes([0, 0, 2, 1, 17]), 0x1003), 17),  # two-byte padding, appbits in the profile
        (rtp(bytes([2, 0]), 0x1000), None),  # zero-length value
        (rtp(bytes([0x20, 5]), 0x1234), None),  # unknown profile
        (rtp(bytes([0x20, 5]))[:-7], None),  # extension block truncated
        (rtp(bytes([0x20, 5]))[:14], None),
        (b"\x90" + bytes(5), None),  # shorter than an RTP header
    ],
)
def test_audio_level_reads_the_extension_in_both_forms(packet: bytes, expected: int | None) -> None:
    assert audio_level(packet, AUDIO_LEVEL_ID) == expected


def test_audio_level_reads_what_aiortc_writes() -> None:
    extensions = HeaderExtensionsMap()
    extensions.configure(
        type(
            "Params",
            (),
            {
                "headerExtensions": [
                    RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
                    RTCRtpHeaderExtensionParameters(id=7, uri="urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
                ]
            },
        )()
    )
    packet = RtpPacket(payload_type=111, sequence_number=1, timestamp=2, ssrc=3, payload=b"\x01\x02")
    packet.extensions.mid = "audio0"
    packet.extensions.audio_level = (True, 42)
    assert audio_level(packet.serialize(extensions), 7) == 42


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80), st.integers(1, 14))
def test_audio_level_never_raises_on_random_bytes(data: bytes, ext_id: int) -> None:
    result = audio_level(b"\x90" + data, ext_id)
    assert result is None or 0 <= result <= 127


def feed(meter: AudioLevelMeter, level: int, start_ms: int, end_ms: int, step_ms: int = 20) -> None:
    for now_ms in range(start_ms, end_ms, step_ms):
        meter.observe(level, now_ms)


@pytest.mark.parametrize(
    ("level", "expected"),
    [(0, 1.0), (35, 0.5), (70, 0.0), (127, 0.0)],
)
def test_a_steady_level_gives_a_steady_loudness_linear_in_db(level: int, expected: float) -> None:
    meter = AudioLevelMeter()
    feed(meter, level, 0, 2000)
    assert meter.level(1990) == pytest.approx(expected)


def test_loudness_ramps_up_over_the_window_and_decays_after_speech_stops() -> None:
    meter = AudioLevelMeter()
    assert meter.level(0) == 0.0
    feed(meter, 0, 0, 100)  # 5 packets of a full-scale level
    assert meter.level(99) == pytest.approx(5 / 25)
    feed(meter, 0, 100, 1000)
    assert meter.level(999) == pytest.approx(1.0)
    assert 0.0 < meter.level(1200) < 1.0  # no packets for 200 ms (DTX): fading
    assert meter.level(1500) == 0.0


def test_silence_packets_pull_loudness_down() -> None:
    meter = AudioLevelMeter()
    feed(meter, 0, 0, 1000)
    feed(meter, 127, 1000, 1250)
    assert meter.level(1249) == pytest.approx(0.5, abs=0.05)


def meters(levels_by_uid: dict[str, int], until_ms: int) -> dict[str, AudioLevelMeter]:
    out = {}
    for uid, level in levels_by_uid.items():
        out[uid] = AudioLevelMeter()
        feed(out[uid], level, 0, until_ms)
    return out


def test_speakers_are_ordered_loudest_first_and_quiet_ones_left_out() -> None:
    detector = ActiveSpeakerDetector(min_level=0.25)
    by_uid = meters({"carol": 10, "alice": 30, "bob": 127, "dave": 30}, 2000)
    speakers = detector.update(by_uid, 990)
    assert speakers is not None
    assert [s.uid for s in speakers] == ["carol", "alice", "dave"]
    assert speakers[0].uid == "carol"
    assert speakers[0].level == pytest.approx(1 - 10 / 70)
    assert detector.update(by_uid, 1300) is None  # same set and order: nothing to report


def test_max_speakers_keeps_only_the_loudest() -> None:
    detector = ActiveSpeakerDetector(max_speakers=1)
    speakers = detector.update(meters({"a": 30, "b": 10}, 1000), 990)
    assert speakers is not None
    assert [(s.uid, round(s.level, 3)) for s in speakers] == [("b", round(1 - 10 / 70, 3))]


@pytest.mark.parametrize(
    ("timeline", "expected_reports"),
    [
        pytest.param(
            # (now_ms, uid speaking or "" for nobody); update every 50 ms
            [(0, "a"), (1000, "b"), (2000, "")],
            [("a",), ("a", "b"), ("b",), ()],
            id="speakers come and go",
        ),
        pytest.param(
            [(0, "a"), (600, "b"), (700, "a"), (800, "b"), (900, "a"), (1000, "b"), (1100, "a")],
            [("a",), ("a", "b"), ("b", "a"), ("a",)],
            id="rapid alternation is reported at most every 250 ms",
        ),
    ],
)
def test_reports_come_only_on_change_and_at_most_four_times_a_second(
    timeline: list[tuple[int, str]], expected_reports: list[tuple[str, ...]]
) -> None:
    by_uid = {"a": AudioLevelMeter(), "b": AudioLevelMeter()}
    detector = ActiveSpeakerDetector(min_level=0.25, min_interval_ms=250)
    reports: list[tuple[int, tuple[str, ...]]] = []
    changes = dict(timeline)
    speaking = ""
    for now_ms in range(0, 3000, 10):
        speaking = changes.get(now_ms, speaking)
        if now_ms % 20 == 0:
            for uid, meter in by_uid.items():
                meter.observe(10 if uid == speaking else 127, now_ms)
        if now_ms % 50 == 0:
            speakers = detector.update(by_uid, now_ms)
            if speakers is not None:
                reports.append((now_ms, tuple(s.uid for s in speakers)))
    assert all(b[0] - a[0] >= 250 for a, b in itertools.pairwise(reports))
    assert [r[1] for r in reports] == expected_reports
