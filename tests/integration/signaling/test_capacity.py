"""`--max-participants` through the real WebSocket front: the join beyond it is refused, others stay."""

from __future__ import annotations

from pathlib import Path

from sfu.session.admission import CpuMeter
from tests.integration.signaling.peers import open_peers
from tests.support import start_server


async def test_a_session_holds_max_participants_and_a_re_join_and_a_recorder_still_fit(
    tmp_path: Path,
) -> None:
    async with start_server(tmp_path / "d", max_participants=2) as running, open_peers(running) as peers:
        creds = await running.credentials()
        alice = await peers.join(creds.token("s", "alice"))
        bob = await peers.join(creds.token("s", "bob"))
        carol = await peers.join(creds.token("s", "carol"), expect="error")
        assert carol.frames[0]["code"] == "forbidden"
        assert carol.frames[0]["message"] == "session is full: 2 participants"
        assert await carol.closed() == 4003
        recorder = await peers.join(creds.token("s", "rec", grants={"hidden": True, "publish": False}))
        assert recorder.joined["participant"]["grants"]["hidden"] is True
        bob_again = await peers.join(creds.token("s", "bob"))
        assert await bob.closed() == 4010
        assert (await alice.request("ping"))["type"] == "pong"
        assert (await bob_again.request("ping"))["type"] == "pong"
        assert [f["participant"]["uid"] for f in alice.of_type("participant_joined")] == ["bob", "bob"]
        other_session = await peers.join(creds.token("other", "carol"))
        assert other_session.joined["session"]["sid"] == "other"


class BusyMeter(CpuMeter):
    """A process that always reads one full core."""

    def __init__(self) -> None:
        super().__init__(0.0, 0.0)
        self.cpu = 1.0

    def sample(self, now_s: float, cpu_s: float) -> None:
        pass


async def test_a_busy_single_process_refuses_a_new_session_unavailable_and_keeps_a_live_one(
    tmp_path: Path,
) -> None:
    async with start_server(tmp_path / "d", max_worker_cpu=50.0) as running, open_peers(running) as peers:
        creds = await running.credentials()
        registry = running.server.registry
        ann = await peers.join(creds.token("live", "ann"))
        registry.cpu_meter = BusyMeter()  # load injected: the server's sampling cannot undo it
        carol = await peers.join(creds.token("new", "carol"), expect="error")
        assert carol.frames[0] == {"type": "error", "re": 1, "code": "unavailable",
                                   "message": "server at capacity, try again later"}
        assert carol.of_type("closed") == [{"type": "closed", "reason": "unavailable"}]
        assert await carol.closed() == 1013
        bob = await peers.join(creds.token("live", "bob"))
        assert [p["uid"] for p in bob.joined["participants"]] == ["ann"]
        await ann.event("participant_joined")
        assert registry.get(creds.cid, "new") is None
