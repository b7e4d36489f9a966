from __future__ import annotations

from sfu.media import sdp
from sfu.media.rtp import URI_ABS_SEND_TIME, URI_MID

OFFER = """v=0
o=- 1 1 IN IP4 0.0.0.0
s=-
t=0 0
a=group:BUNDLE 0
m=video 9 UDP/TLS/RTP/SAVPF 96 97 98
c=IN IP4 0.0.0.0
a=sendonly
a=mid:0
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:5 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:13 urn:3gpp:video-orientation
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 nack
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=rtpmap:98 H264/90000
a=ssrc-group:FID 11 22
a=ssrc:11 cname:x
a=ssrc:22 cname:x
"""

ANSWER = """v=0
o=- 2 2 IN IP4 0.0.0.0
s=-
t=0 0
a=group:BUNDLE 0
m=video 9 UDP/TLS/RTP/SAVPF 96 97 98
c=IN IP4 0.0.0.0
a=recvonly
a=mid:0
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 nack
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=rtpmap:98 H264/90000
"""


def test_publisher_answer_keeps_one_codec_and_the_offers_forwardable_extensions() -> None:
    answer, media = sdp.munge_publisher_answer(ANSWER, OFFER)
    assert "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n" in answer
    assert "rtx" not in answer and "H264" not in answer
    assert "a=extmap:13 urn:3gpp:video-orientation" in answer
    assert "transport-wide-cc" not in answer
    assert "a=fmtp:96 x-google-start-bitrate=1500" in answer
    section = media["0"]
    assert section.kind == "video" and section.payload_types == [96] and section.ssrcs == [11]
    assert section.rtpmap[96] == ("video/VP8", 90000)
    assert section.extmap[URI_MID] == 4 and section.extmap[URI_ABS_SEND_TIME] == 2


def test_subscriber_offer_gets_router_extension_ids_and_msid() -> None:
    offer = OFFER.replace("a=sendonly", "a=sendonly\na=msid:a b")
    out = sdp.munge_subscriber_offer(offer, {"0": sdp.OfferedSlot("video", "alice", "f_1")})
    section = sdp.parse(out)[0]
    assert URI_MID not in section.extmap and section.extmap[URI_ABS_SEND_TIME] == 3
    assert "a=msid:alice f_1" in out
