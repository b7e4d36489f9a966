"""The `data_reset` notice as the SDK's typed DataReset event, and the data-channel counters in
`/metrics` and `/v1/stats` after real relaying (client_sdk peers through the in-process server)."""

from __future__ import annotations

import re
from typing import Any

import aiohttp

from client_sdk import DataReset
from sfu.media.datachannels import MAX_PAYLOAD_BYTES, DataDropReason, encode_client_message
from tests.integration.datachannels.support import Inbox, checksummed, relay_of, verify, wait_channels_open
from tests.integration.sdk.conftest import Sessions
from tests.support import Credentials, RunningServer, wait_until


async def test_a_reset_reaches_the_sdk_as_data_reset_and_reliable_data_flows_on(
    server: RunningServer, sessions: Sessions, creds: Credentials
) -> None:
    alice = await sessions.connect(token=creds.token("room", "alice"))
    bob = Inbox(await sessions.connect(token=creds.token("room", "bob")))
    try:
        await alice.publish_data(checksummed(0, 64))
        relay = relay_of(server, creds)
        await wait_channels_open(relay, ["bob"])
        await wait_until(bob.has(1, reliable=True))
        outbox = relay.outboxes_by_uid["bob"]
        old_channel = outbox.reliable
        outbox.reset()  # what an overflowing backlog does (test_data_under_loss makes one for real)
        await wait_until(lambda: len(bob.resets) == 1)
        reset = bob.resets[0]
        assert isinstance(reset, DataReset)
        assert reset.channel == "reliable" and reset.reliable and reset.dropped == 1
        assert outbox.reliable is not old_channel
        await wait_channels_open(relay, ["bob"])
        for seq in range(1, 20):
            await alice.publish_data(checksummed(seq, 500))
        await wait_until(bob.has(20, reliable=True))
        assert [verify(p) for p in bob.payloads(reliable=True)] == list(range(20))
        assert relay.counters.channel_resets == 1
    finally:
        await bob.close()


_SAMPLE = re.compile(r'^(sfu_data_[a-z_]+)(?:\{reason="([a-z_]+)"\})? ([0-9.e+]+)$', re.M)


async def _scrape(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as reply:
        assert reply.status == 200
        text = await reply.text()
    out: dict[str, float] = {}
    for name, reason, value in _SAMPLE.findall(text):
        out[f"{name}:{reason}" if reason else name] = float(value)
    return out


async def _stats(server: RunningServer, creds: Credentials) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {creds.admin_token()}"}
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/v1/stats", headers=headers) as reply:
        assert reply.status == 200
        body: dict[str, Any] = await reply.json()
    data: dict[str, Any] = body["data"]
    return data


async def test_metrics_and_stats_count_relayed_and_dropped_data(
    server: RunningServer, sessions: Sessions, creds: Credentials
) -> None:
    before = await _scrape(server.url)
    stats_before = await _stats(server, creds)
    alice = await sessions.connect(token=creds.token("room", "alice"))
    inboxes = [Inbox(await sessions.connect(token=creds.token("room", uid))) for uid in ("bob", "carol")]
    try:
        await alice.publish_data(b"x" * 100, topic="warm-up")
        relay = relay_of(server, creds)
        await wait_channels_open(relay, ["bob", "carol"])
        for _ in range(9):
            await alice.publish_data(b"y" * 1000)
        assert alice._publisher is not None
        await alice._data.send_raw(alice._publisher, encode_client_message(bytes(MAX_PAYLOAD_BYTES + 1)))
        await alice.publish_data(b"z" * 10, to=["nobody"])
        for inbox in inboxes:
            await wait_until(inbox.has(10, reliable=True))
        await wait_until(lambda: relay.counters.drops[DataDropReason.UNKNOWN_RECIPIENT] == 1)
    finally:
        for inbox in inboxes:
            await inbox.close()
    after = await _scrape(server.url)
    stats_after = await _stats(server, creds)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta("sfu_data_messages_relayed_total") == 20  # 10 messages x 2 recipients
    assert delta("sfu_data_bytes_relayed_total") == 2 * (100 + 9 * 1000)
    assert delta("sfu_data_messages_in_total") == 12
    assert delta("sfu_data_dropped_messages_total:oversize") == 1
    assert delta("sfu_data_dropped_bytes_total:oversize") > MAX_PAYLOAD_BYTES
    assert delta("sfu_data_dropped_messages_total:unknown_recipient") == 1
    assert delta("sfu_data_dropped_messages_total:lossy_congested") == 0
    assert "sfu_data_channel_resets_total" in after
    assert stats_after["messages_relayed"] - stats_before["messages_relayed"] == 20
    assert stats_after["bytes_relayed"] - stats_before["bytes_relayed"] == 2 * (100 + 9 * 1000)
    assert stats_after["dropped"]["oversize"] - stats_before["dropped"]["oversize"] == 1
    assert set(stats_after["dropped"]) == {r.name.lower() for r in DataDropReason}
