"""`sfu serve` as a subprocess, the way an operator or a container runs it; stopped and reaped on exit."""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from sfu.auth.tokens import create_token
from tests.integration.test_cli import PYTHON, REPO, clean_env

BANNER_RE = re.compile(r"listening on (https?)://([^\s]+):(\d+)")
SECRET_RE = re.compile(r"key_id=(k_\w+) secret=(sk_\S+)")


@dataclass(slots=True)
class Served:
    proc: asyncio.subprocess.Process
    scheme: str
    port: int
    key_id: str
    secret: str
    output: list[str]

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.scheme == 'https' else 'ws'}://127.0.0.1:{self.port}/v1/rtc"

    def token(self, sid: str, uid: str, **claims: object) -> str:
        return create_token(key_id=self.key_id, secret=self.secret, sid=sid, uid=uid, **claims)  # type: ignore[arg-type]

    def signal(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)

    async def wait_line(self, needle: str, timeout_s: float = 10.0) -> str:
        """The next stdout line containing `needle` (lines read meanwhile are kept in `output`)."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout_s):
            while True:
                line = (await self.proc.stdout.readline()).decode()
                if not line:
                    raise AssertionError(f"serve ended before {needle!r}: {''.join(self.output)}")
                self.output.append(line)
                if needle in line:
                    return line


@asynccontextmanager
async def serve(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> AsyncIterator[Served]:
    """Starts `python -m sfu serve --port 0` and waits for its banner; kills it if still running after."""
    proc = await asyncio.create_subprocess_exec(
        *(PYTHON, "-m", "sfu", "serve", "--port", "0", "--data-dir", str(data_dir)),
        *("--log-level", "warning", *args),
        cwd=REPO,
        env=env or clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        banner = ""
        async with asyncio.timeout(30):
            while "demo page" not in banner:
                line = await proc.stdout.readline()
                if not line:
                    raise AssertionError(f"serve exited early: {(await proc.stderr.read()).decode()}")
                banner += line.decode()
        where, secret = BANNER_RE.search(banner), SECRET_RE.search(banner)
        assert where is not None and secret is not None, banner
        yield Served(proc, where.group(1), int(where.group(3)), secret.group(1), secret.group(2), [banner])
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
