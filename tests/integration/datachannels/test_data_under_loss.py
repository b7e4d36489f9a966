"""Reliable data under 5% random loss on a receiver's link (a test host in a network namespace)."""

from __future__ import annotations

import asyncio
import os
import random
import sys
from asyncio.subprocess import Process
from pathlib import Path

import orjson
import pytest

from sfu.media.datachannels import DataDropReason
from tests.integration.datachannels.support import Inbox, checksummed, relay_of, verify, wait_channels_open
from tests.integration.sdk.conftest import Sessions
from tests.nethost import NetHost
from tests.support import RunningServer, wait_until

REPO = Path(__file__).resolve().parents[3]
MESSAGES = 600

pytestmark = pytest.mark.netns


async def _start_receiver(net_host: NetHost, server: RunningServer, token: str, timeout_s: float) -> Process:
    url = f"http://{net_host.gateway}:{server.port}"
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", net_host.name,
        sys.executable, "-m", "tests.integration.datachannels.netns_receiver", url, token, str(timeout_s),
        cwd=REPO, stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"joined"
    return proc


async def _result(proc: Process, within_s: float) -> dict[str, object]:
    assert proc.stdout is not None
    out = await asyncio.wait_for(proc.stdout.read(), within_s)
    assert await proc.wait() == 0, "receiver process failed"
    result: dict[str, object] = orjson.loads(out.splitlines()[-1])
    return result


async def _stop(proc: Process | None) -> None:
    if proc is not None and proc.returncode is None:
        proc.kill()
        await proc.wait()


async def test_reliable_data_arrives_in_order_with_none_missing_under_5_percent_loss(
    net_host: NetHost, lan_server: RunningServer
) -> None:
    creds = await lan_server.credentials()
    via = net_host.set_loss(5)
    sessions = Sessions(lan_server.url)
    proc = None
    try:
        proc = await _start_receiver(net_host, lan_server, creds.token("room", "far"), 60)
        alice = await sessions.connect(token=creds.token("room", "alice"))
        rng = random.Random(5)
        await alice.publish_data(checksummed(0, 100))
        await wait_channels_open(relay_of(lan_server, creds), ["far"], timeout_s=30)
        for seq in range(1, MESSAGES):
            await alice.publish_data(checksummed(seq, rng.choice((100, 1000, 10_240))))
        await alice.publish_data(str(MESSAGES).encode(), topic="end")
        result = await _result(proc, 90)
    finally:
        await _stop(proc)
        await sessions.close_all()
    print(f"loss via {via}: {result}")
    assert result == {"received": MESSAGES, "expected": MESSAGES, "intact": True, "in_order": True,
                      "complete": True, "resets": 0}


async def test_a_slow_receiver_is_reset_and_told_while_a_fast_one_gets_everything(
    net_host: NetHost, lan_server: RunningServer
) -> None:
    creds = await lan_server.credentials()
    net_host.set_rate(1000)  # 1 Mbit/s towards the namespace: far slower than the sender
    sessions = Sessions(lan_server.url)
    proc = None
    bob_inbox = None
    count = 400  # 4 MiB of 10 KiB messages
    try:
        proc = await _start_receiver(net_host, lan_server, creds.token("room", "slow"), 30)
        alice = await sessions.connect(token=creds.token("room", "alice"))
        bob_inbox = Inbox(await sessions.connect(token=creds.token("room", "bob")))
        await alice.publish_data(checksummed(0, 100))
        relay = relay_of(lan_server, creds)
        await wait_channels_open(relay, ["slow", "bob"], timeout_s=30)
        for seq in range(1, count):
            await alice.publish_data(checksummed(seq, 10_240))
        await alice.publish_data(str(count).encode(), topic="end")
        await wait_until(bob_inbox.has(count + 1, reliable=True), timeout_s=60)
        result = await _result(proc, 60)
    finally:
        if bob_inbox is not None:
            await bob_inbox.close()
        await _stop(proc)
        await sessions.close_all()
        net_host.clear_rate()
    print(f"slow receiver: {result}; relay {relay.counters.as_dict()}")
    assert [verify(p) for p in bob_inbox.payloads(reliable=True)[:-1]] == list(range(count))
    assert isinstance(result["resets"], int) and result["resets"] >= 1
    assert result["intact"] is True and result["in_order"] is True and result["complete"] is False
    assert relay.counters.channel_resets >= 1
    assert relay.counters.drops[DataDropReason.RELIABLE_OVERFLOW] >= count - int(str(result["received"]))
