"""A full disk stops the recording (event + webhook), never the session: `sfu serve` in a mount namespace
whose `recordings/` is a 160 KiB tmpfs (needs root or unprivileged user namespaces; skipped otherwise)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import client_sdk
from client_sdk import Recording
from client_sdk.encoded import EncodedAudioTrack, EncodedVideoTrack
from client_sdk.tokens import create_token
from loadtest.media import encode_opus, encode_vp8
from tests.integration.recording.probe import serve

MOUNT_SCRIPT = 'mkdir -p "$0/recordings" && mount -t tmpfs -o size=160k tmpfs "$0/recordings" && exec "$@"'


def _namespace_wrap(data_dir: Path) -> list[str]:
    """`unshare -m` (as root) or `unshare -rm` running MOUNT_SCRIPT; skips when neither can mount."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare is not installed: cannot give the server a small disk")
    for flags in ("-m", "-rm"):
        probe = subprocess.run([unshare, flags, "sh", "-c", "mount -t tmpfs -o size=16k tmpfs /mnt"],
                               capture_output=True, check=False)
        if probe.returncode == 0:
            return [unshare, flags, "--propagation", "private", "sh", "-c", MOUNT_SCRIPT, str(data_dir)]
    pytest.skip("no mount namespace with tmpfs here (needs root or unprivileged user namespaces)")
    raise AssertionError  # unreachable


async def test_a_full_disk_fails_the_recording_with_an_event_and_a_webhook_and_the_session_goes_on(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    wrap = _namespace_wrap(data)
    hooks: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        hooks.append(await request.json())
        return web.Response()

    hook_app = web.Application()
    hook_app.router.add_post("/hook", receive)
    runner = web.AppRunner(hook_app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hook_port = runner.addresses[0][1]
    sessions: list[client_sdk.Session] = []
    try:
        async with serve(data, tmp_path / "serve.log", wrap) as served:
            token = create_token(served.key_id, served.secret, "room", "alice")
            alice = client_sdk.Session(served.url, token=token, reconnect=False)
            sessions.append(alice)
            await alice.join()
            events = alice.events()
            video = EncodedVideoTrack(encode_vp8(320, 240, fps=30, seconds=20, bitrate_bps=600_000,
                                                 keyframe_interval_s=1), loop=False)
            audio = EncodedAudioTrack(encode_opus(seconds=20), loop=False)
            await alice.publish_many([(video, "camera", None), (audio, "microphone", None)])
            async with served.admin() as admin:
                await admin.create_webhook(f"http://127.0.0.1:{hook_port}/hook")
                recording_id = await admin.start_recording("room")
                assert (await events.next(Recording)).state == "started"
                failed = await events.next(Recording, timeout_s=30)
                assert (failed.state, failed.recording_id) == ("failed", recording_id)
                record = await admin.get_recording(recording_id)
                assert record["state"] == "failed" and "no space left on device" in record["error"]
                session = await admin.get_session("room")
                assert [p["uid"] for p in session["participants"]] == ["alice"]
                assert session["recording"] is False
                for _ in range(100):
                    if {"recording_failed", "recording_finished"} <= {h["event"] for h in hooks}:
                        break
                    await asyncio.sleep(0.05)
                by_event = {h["event"]: h["data"] for h in hooks}
                assert by_event["recording_failed"]["recording_id"] == recording_id
                assert by_event["recording_finished"]["state"] == "failed"
            assert not alice.closed and video.readyState == "live"
            print(f"disk full after {video.frames_sent} video frames: {record['error']}", file=sys.stderr)
    finally:
        for opened in sessions:
            await opened.close()
        await runner.cleanup()
