"""Server packet path CPU per forwarded packet, plain vs simulcast vs simulcast + TWCC (no SRTP, no sockets).

    .venv/bin/python -m loadtest.bench_simulcast [--packets 20000] [--subscribers 1,10,50]

The TWCC column sends through the real `bridge.SrtpSink.send_rtp` with congestion control negotiated
(abs-send-time + transport-wide seq stamped into every packet, the send history written), its SRTP
protect and `sendto` replaced by no-ops, so it adds exactly the per-packet cost of TWCC to the column
before it; the allocator and feedback parsing run off the packet path (once a second / per feedback).

`Receiver.on_rtp` -> `Forwarder.forward` -> a sink that drops the packet: what simulcast adds (three
layers received, each subscriber forwarding one of them, spread over q/h/f) next to one plain stream.
`loadtest.bench_forwarding` measures the whole path (SRTP, sockets, event loop) but has no simulcast
publisher (aiortc cannot send simulcast); add SRTP protect + sendto (~13-15 us, AIORTC_NOTES.md) for
an end-to-end figure.
"""

from __future__ import annotations

import argparse
import struct
import time

from sfu.media.bridge import SrtpSink
from sfu.media.forwarder import Forwarder, RtpSink
from sfu.media.receiver import Receiver
from sfu.media.rtp import ROUTER_EXTENSION_IDS, URI_ABS_SEND_TIME
from sfu.media.twcc import TRANSPORT_CC_ID


class _Listener:
    def on_receiver_feedback(self, receiver: Receiver, urgent: bool) -> None:
        pass


class _Sink:
    connected = True

    def send_rtp(self, packet: bytearray) -> bool:
        return True


def _packets(ssrc: int, count: int, key_every: int = 60) -> list[bytes]:
    out = []
    for i in range(count):
        vp8 = bytes([0x10, 0x00, 0x9D]) if i % key_every == 0 else bytes([0x10, 0x01, 0x00])
        out.append(struct.pack("!BBHII", 0x80, 96, i & 0xFFFF, i * 3000, ssrc) + vp8 + bytes(1100))
    return out


def _identity(packet: bytes | bytearray) -> bytes:
    return bytes(packet)


def _drop(data: bytes, addr: tuple[str, int]) -> None:
    pass


def _twcc_sink() -> RtpSink:
    """The real send path with congestion control on, minus SRTP and the socket."""
    sink = SrtpSink()
    sink._protect = _identity
    sink._sendto = _drop
    sink.connected = True
    sink.set_congestion_control(ROUTER_EXTENSION_IDS[URI_ABS_SEND_TIME], TRANSPORT_CC_ID)
    return sink


def run(simulcast: bool, subscribers: int, count: int, twcc: bool = False) -> float:
    """Microseconds of CPU per forwarded packet."""
    listener = _Listener()
    layers = [
        Receiver(listener, mid="0", kind="video", codec="video/VP8", clock_rate=90000, payload_type=96,
                 ssrc=1000 + i, rid="qhf"[i], layer=i)
        for i in range(3 if simulcast else 1)
    ]
    head = layers[0]
    if simulcast:
        head.set_layers(tuple(layers))
        head.set_active_layers(0b111, 0)
    forwarders = []
    for k in range(subscribers):
        sink = _twcc_sink() if twcc else _Sink()
        f = Forwarder(head, sink, mid="1", ssrc=5000 + k, payload_type=96, initial_seq=1, initial_ts=1)
        head.add_forwarder(f)
        if simulcast:
            f.set_max_layer(k % 3, 0)
        forwarders.append(f)
    streams = [_packets(r.ssrc, count) for r in layers]
    started = time.process_time()
    for i in range(count):
        now_ns = i * 1_000_000
        for receiver, stream in zip(layers, streams, strict=True):
            receiver.on_rtp(stream[i], now_ns)
    elapsed = time.process_time() - started
    return elapsed / max(1, sum(f.packets for f in forwarders)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--packets", type=int, default=20000)
    parser.add_argument("--subscribers", default="1,10,50")
    args = parser.parse_args()
    print("| subscribers | plain us/packet | simulcast us/packet | simulcast + TWCC us/packet |")
    print("|---|---|---|---|")
    for subscribers in (int(x) for x in args.subscribers.split(",")):
        plain = run(False, subscribers, args.packets)
        layered = run(True, subscribers, args.packets)
        twcc = run(True, subscribers, args.packets, twcc=True)
        print(f"| {subscribers} | {plain:.2f} | {layered:.2f} | {twcc:.2f} |")


if __name__ == "__main__":
    main()
