"""200 participants joining one session at once."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.integration.signaling.peers import Peer, Peers
from tests.support import Credentials, wait_until

CLIENTS = 200


def knows_everyone(peer: Peer) -> bool:
    if not peer.of_type("joined"):
        return False
    known = {p["uid"] for p in peer.joined["participants"]}
    known |= {f["participant"]["uid"] for f in peer.of_type("participant_joined")}
    return len(known) == CLIENTS - 1


@pytest.mark.slow
async def test_200_clients_joining_at_once_all_get_joined_and_every_presence_event(
    peers: Peers, creds: Credentials
) -> None:
    tokens = [creds.token("big", f"user-{i}") for i in range(CLIENTS)]
    started = time.monotonic()
    joined = await asyncio.gather(*(peers.join(token) for token in tokens))
    all_joined = time.monotonic() - started
    await wait_until(lambda: all(knows_everyone(p) for p in joined), timeout_s=60)
    everything = time.monotonic() - started
    print(f"\n{CLIENTS} clients: all joined in {all_joined:.2f} s, "
          f"every presence event in {everything:.2f} s")
    for peer in joined:
        assert not peer.of_type("error")
        events = [f["participant"]["uid"] for f in peer.of_type("participant_joined")]
        assert len(events) == len(set(events))
