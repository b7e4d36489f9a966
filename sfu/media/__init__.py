"""The media core: aiortc for SDP, ICE, DTLS and SRTP keys; our own RTP/RTCP packet path beside it.

Import direction: nothing here imports `sfu.session`, `sfu.signaling` or aiohttp. Only `bridge.py`
touches aiortc internals.
"""
