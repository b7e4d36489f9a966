"""`python -m loadtest --spawn` end to end: the CLI starts `sfu serve`, runs, stops it, prints JSON."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest


@pytest.mark.slow
async def test_the_cli_spawns_a_server_and_prints_one_json_report() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest", "--spawn", "-p", "1", "-s", "2", "--duration", "3",
        "--warmup", "1", "--width", "320", "--height", "180", "--bitrate", "300k", "--json", "--quiet",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(100):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()[-2000:]
    body = json.loads(out)
    report = body["report"]
    assert body["machine"]["nproc"] >= 1 and body["command"].startswith("python -m loadtest")
    assert (report["publishers"], report["subscribers"], report["streams"]) == (1, 2, 4)
    assert report["lost"] == 0 and report["expected"] > 0
    assert report["server_pps_out"] > 0 and report["server_cpu_us_per_packet"] > 0
