"""VP9 (non-SVC) is negotiated for forwarding only: a Chromium offer that prefers VP9 is answered with
VP9 and the publisher's profile, and subscribers are offered exactly that codec (+ RTX). Chromium's VP9
packets (flexible mode) are read right by key-frame detection and by the recorder's depacketizer."""

from __future__ import annotations

from sfu.media import sdp
from sfu.media.publisher import PublisherTransport
from sfu.media.rtp import is_vp9_key_frame
from sfu.media.subscriber import SubscriberTransport

LOOPBACK = ("127.0.0.1",)

FINGERPRINT = (
    "A5:C4:C6:D2:A2:51:42:7F:13:C1:15:86:CF:2C:A7:F5:CB:F2:94:22:64:33:99:B3:81:E0:72:2F:F0:0B:70:9C"
)
# Chromium 156's offer after `setCodecPreferences([VP9 profile 0, VP9 profile 2, rtx])` (ids as sent).
CHROME_VP9_OFFER = """v=0
o=- 6496217565512551135 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
a=extmap-allow-mixed
a=msid-semantic: WMS
m=video 9 UDP/TLS/RTP/SAVPF 98 99 100 101
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:crid
a=ice-pwd:2powd06X5lhhEdsXM3cAWvlg
a=ice-options:trickle
a=fingerprint:sha-256 {FINGERPRINT}
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:toffset
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:3 urn:3gpp:video-orientation
a=extmap:4 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay
a=extmap:9 urn:ietf:params:rtp-hdrext:sdes:mid
a=sendonly
a=msid:- 4a7bf6e3-b51b-4811-9dcf-3a9646c10aab
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:98 VP9/90000
a=rtcp-fb:98 goog-remb
a=rtcp-fb:98 transport-cc
a=rtcp-fb:98 ccm fir
a=rtcp-fb:98 nack
a=rtcp-fb:98 nack pli
a=fmtp:98 profile-id=0
a=rtpmap:99 rtx/90000
a=fmtp:99 apt=98
a=rtpmap:100 VP9/90000
a=rtcp-fb:100 nack
a=rtcp-fb:100 nack pli
a=fmtp:100 profile-id=2
a=rtpmap:101 rtx/90000
a=fmtp:101 apt=100
a=ssrc-group:FID 1682281696 1089144298
a=ssrc:1682281696 cname:D1MT4C7tC7obKHP6
a=ssrc:1089144298 cname:D1MT4C7tC7obKHP6
""".replace("{FINGERPRINT}", FINGERPRINT)

PROFILE_2_ONLY = (
    CHROME_VP9_OFFER.replace("98 99 100 101", "100 101")
    .replace("a=rtpmap:98 VP9/90000\n", "")
    .replace("a=fmtp:98 profile-id=0\n", "")
    .replace("a=rtpmap:99 rtx/90000\na=fmtp:99 apt=98\n", "")
)
PROFILE_2_ONLY = "\n".join(x for x in PROFILE_2_ONLY.splitlines() if not x.startswith("a=rtcp-fb:98")) + "\n"


def video_lines(text: str) -> list[str]:
    """The m-line's payload types and the codec lines (the port is the ICE candidate's)."""
    return [
        " ".join(x.split()[2:]) if x.startswith("m=") else x
        for x in text.splitlines()
        if x.startswith(("m=video", "a=rtpmap", "a=fmtp"))
    ]


async def test_chrome_vp9_offer_is_answered_with_vp9_and_forwarded_to_subscribers_as_vp9() -> None:
    publisher = PublisherTransport(LOOPBACK)
    subscriber = SubscriberTransport(LOOPBACK)
    try:
        answer, tracks = await publisher.negotiate(CHROME_VP9_OFFER)
        assert video_lines(answer) == [
            "UDP/TLS/RTP/SAVPF 98",
            "a=rtpmap:98 VP9/90000",
            "a=fmtp:98 profile-id=0;x-google-start-bitrate=1500",
        ]
        assert "a=recvonly" in answer
        [track] = tracks
        assert track.codec == "video/VP9" and track.receiver.ssrc == 1682281696
        assert track.receiver.detect_key_frame is is_vp9_key_frame

        forwarder = subscriber.add(track.receiver, tag="f_1", stream_id="alice")
        offer, tags = await subscriber.create_offer()
        [section] = sdp.parse(offer)
        assert tags == {section.mid: "f_1"} and section.direction == "sendonly"
        codec_pt = forwarder.payload_type
        assert section.rtpmap[codec_pt] == ("video/VP9", 90000)
        assert "profile-id=0" in section.fmtp[codec_pt]
        assert sdp.rtx_payload_type(section, codec_pt) > 0
        assert [mime for mime, _ in section.rtpmap.values()] == ["video/VP9", "video/rtx"]
    finally:
        await subscriber.close()
        await publisher.close()


async def test_vp9_profile_2_offer_gets_profile_2_in_answer_and_in_subscriber_offer() -> None:
    publisher = PublisherTransport(LOOPBACK)
    subscriber = SubscriberTransport(LOOPBACK)
    try:
        answer, [track] = await publisher.negotiate(PROFILE_2_ONLY)
        assert "a=fmtp:100 profile-id=2;x-google-start-bitrate=1500" in answer
        assert "profile-id=0" not in answer
        forwarder = subscriber.add(track.receiver)
        offer, _ = await subscriber.create_offer()
        [section] = sdp.parse(offer)
        assert section.rtpmap[forwarder.payload_type][0] == "video/VP9"
        assert "profile-id=2" in section.fmtp[forwarder.payload_type]
    finally:
        await subscriber.close()
        await publisher.close()


async def test_vp8_first_offer_still_gets_vp8() -> None:
    """VP9 is registered last: Chrome's default order (VP8 first) keeps VP8 for every publisher."""
    offer = CHROME_VP9_OFFER.replace("98 99 100 101", "96 98 99 100 101").replace(
        "a=rtpmap:98 VP9/90000", "a=rtpmap:96 VP8/90000\na=rtpmap:98 VP9/90000"
    )
    publisher = PublisherTransport(LOOPBACK)
    try:
        answer, [track] = await publisher.negotiate(offer)
        assert track.codec == "video/VP8"
        assert "VP9" not in answer
    finally:
        await publisher.close()


def test_answer_mirrors_the_offered_vp9_profile() -> None:
    answer = (
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 100\r\na=mid:0\r\na=recvonly\r\n"
        "a=rtpmap:100 VP9/90000\r\na=fmtp:100 profile-id=0\r\n"
    )
    offer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 100\r\na=mid:0\r\na=sendonly\r\na=rtpmap:100 VP9/90000\r\n" \
        "a=fmtp:100 profile-id=2\r\na=ssrc:5 cname:x\r\n"
    out, media = sdp.munge_publisher_answer(answer, offer)
    assert "a=fmtp:100 profile-id=2;x-google-start-bitrate=1500" in out
    assert media["0"].fmtp[100].startswith("profile-id=2")


# VP9 payloads as Chromium 156 sends them (seen in tests/browser/test_chromium_vp9.py; the key frame's
# first bytes verbatim, the others with the descriptor bytes seen, 0xd9 and 0x91): flexible mode (F), a
# 15-bit picture id, SS data with the size on key frames, P_DIFF on inter frames.
CHROME_KEY = bytes.fromhex("9ba5b7100280016882498342")  # I F B V Z | pid | SS: Y, 640x360 | frame
CHROME_INTER_START = bytes.fromhex("d9a5b80286004821")  # I P F B Z | pid | P_DIFF 1 | frame
CHROME_MIDDLE = bytes.fromhex("91a5b7deab1c4230")  # I F Z: neither first nor last packet


def rtp(payload: bytes) -> bytes:
    return bytes([0x80, 98]) + bytes(10) + payload


def test_vp9_key_frames_are_found_in_chromes_flexible_mode_packets() -> None:
    for payload, key in ((CHROME_KEY, True), (CHROME_INTER_START, False), (CHROME_MIDDLE, False)):
        data = rtp(payload)
        assert is_vp9_key_frame(data, 12, len(data)) is key
    # L1T3 (flexible, L set): one layer byte (TID U SID D), no TL0PICIDX
    layered = ((b"\xb8\x80\x01\x00", True), (b"\xf8\x80\x02\x40\x02", False), (b"\xb8\x80\x01\x02", False))
    for descriptor, key in layered:
        data = rtp(descriptor + b"\x82\x49")
        assert is_vp9_key_frame(data, 12, len(data)) is key


def test_the_recorders_depacketizer_skips_chromes_descriptors_exactly() -> None:
    from sfu.recording.depacketize import Part, vp9_part

    assert vp9_part(CHROME_KEY) == Part(bytes.fromhex("82498342"), True, True)
    assert vp9_part(CHROME_INTER_START) == Part(bytes.fromhex("86004821"), True, False)
    assert vp9_part(CHROME_MIDDLE) == Part(bytes.fromhex("deab1c4230"), False, False)
    assert vp9_part(b"\xf8\x80\x02\x40\x02\xaa") == Part(b"\xaa", True, False)  # L1T3 inter frame
