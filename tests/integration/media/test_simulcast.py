"""Simulcast end to end over 127.0.0.1: a raw-RTP three-layer publisher (simulcast_peer.py), the server's
publisher/subscriber transports in-process, and a decoding aiortc subscriber that sees one stream whose
picture size follows the selected layer, with continuous seq numbers and no freeze across switches."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

from sfu.media.engine import MediaEngine
from sfu.media.forwarder import Forwarder
from sfu.media.receiver import Receiver
from tests.integration.media.peers import ClientPeer, wait_until
from tests.integration.media.simulcast_peer import SimulcastPublisher

SIZES = ((160, 96), (320, 192), (640, 384))


def last_size(client: ClientPeer) -> tuple[int, int]:
    sizes = client.received.video_sizes
    return (sizes[-1][1], sizes[-1][2]) if sizes else (0, 0)


async def test_three_layers_arrive_and_the_subscriber_follows_switches_without_a_freeze(
    engine: MediaEngine, new_client: Callable[[], ClientPeer]
) -> None:
    publisher = SimulcastPublisher(SIZES)
    pub = engine.create_publisher()
    feed_layers: list[list[dict[str, Any]]] = []
    wanted: list[list[str]] = []
    pub.on_layers_changed = lambda _r, layers: feed_layers.append(layers)
    pub.on_layers_wanted = lambda r: wanted.append(r.wanted_rids)
    try:
        tracks = await publisher.publish(pub)
        head: Receiver = tracks[0].receiver
        assert [r.rid for r in head.layers] == ["q", "h", "f"]

        client = new_client()
        sub = engine.create_subscriber()
        forwarder: Forwarder = sub.add(head, tag="cam")
        changes: list[tuple[str, str]] = []
        forwarder.on_layer_changed = lambda _f, rid, reason: changes.append((rid, reason))
        await client.answer(sub)
        await wait_until(lambda: sub.sink.connected and pub.sink.connected and publisher.sink.connected)
        publisher.start()

        # 1. every layer is latched by its rid and reported with the size of its key frames
        await wait_until(lambda: bool(feed_layers) and len(feed_layers[-1]) == 3
                         and all(x["width"] for x in feed_layers[-1]))
        assert [(x["rid"], x["width"], x["height"]) for x in feed_layers[-1]] == [
            ("q", 160, 96), ("h", 320, 192), ("f", 640, 384),
        ]
        assert len({r.ssrc for r in head.layers}) == 3
        # 2. a new subscriber gets the highest layer
        await wait_until(lambda: last_size(client) == SIZES[2] and client.received.frames["video"] > 10)
        assert wanted[-1] == ["f"]

        # 3. down to q (set_quality 160x96) and back up, each on a key frame of the target
        forwarder.set_max_layer(0, time.monotonic_ns())
        assert wanted[-1] == ["q", "f"]  # dynacast: f until the switch, then q only
        await wait_until(lambda: last_size(client) == SIZES[0], within_s=3)
        assert wanted[-1] == ["q"]
        forwarder.set_max_layer(2, time.monotonic_ns())
        await wait_until(lambda: last_size(client) == SIZES[2], within_s=3)

        # 4. the top layer stops: the forwarder falls back to h within a second
        publisher.active.discard(2)
        stopped = time.monotonic()
        await wait_until(lambda: last_size(client) == SIZES[1], within_s=3)
        fallback_s = time.monotonic() - stopped
        assert fallback_s < 1.3, fallback_s
        await wait_until(lambda: bool(feed_layers) and [x["rid"] for x in feed_layers[-1]] == ["q", "h"])

        # the start may go through q or h first when the layers' first packets straddle an RTCP tick
        expected = [("f", "publisher"), ("q", "preference"), ("f", "preference"), ("h", "publisher")]
        assert changes[-4:] == expected
        assert all(reason == "publisher" for _, reason in changes[:-4]), changes
        seqs = client.received.seqs(forwarder.ssrc)
        assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs)), "seq jumped"
        times = [t for t, _, _ in client.received.video_sizes if t < stopped]
        worst_gap = max(b - a for a, b in itertools.pairwise(times))
        assert worst_gap < 0.25, worst_gap  # preference switches: frames keep coming (a stop cannot)

        # 5. the subscriber's REMB says 300 kbit/s: the allocator caps it to q (fits), reason "bandwidth"
        sub.allocator.bwe.on_remb(300_000, time.monotonic_ns() // 1_000_000)
        await wait_until(lambda: last_size(client) == SIZES[0], within_s=3)
        assert changes[-1] == ("q", "bandwidth")
        print(f"fallback after a layer stopped: {fallback_s:.2f} s; worst frame gap {worst_gap:.3f} s; "
              f"plis to publisher {publisher.plis}; subscriber REMBs {sub.allocator.bwe.remb_count}, "
              f"estimate {sub.allocator.bwe.estimate_bps(time.monotonic_ns() // 1_000_000)} bit/s; "
              f"layer bitrates {[r.bitrate_bps for r in head.layers]}")
    finally:
        await publisher.close()
        await pub.close()
