"""`--spawn`: run `sfu serve` as a child on a free port of 127.0.0.1 with a temporary data dir.

A client and a secret key are created first through the CLI's `--json` output, exactly as an operator
would. The port is chosen by the kernel (`--port 0`) and read back from the banner, so there is no race
for a free port. `close()` sends SIGTERM (the server's clean shutdown), then SIGKILL after a grace period.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final

BANNER: Final = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")
READY_TIMEOUT_S: Final = 30.0


def _cli(*args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "sfu", *args, "--json"], capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    body: dict[str, Any] = json.loads(done.stdout)
    return body


class SpawnedServer:
    """`with SpawnedServer() as server:` -> server.url, server.key_id, server.secret."""

    def __init__(self, extra_args: Sequence[str] = ()) -> None:
        self.extra_args = tuple(extra_args)  # more `sfu serve` flags, e.g. ("--workers", "1")
        self.data_dir = Path(tempfile.mkdtemp(prefix="sfu-loadtest-"))
        self.url = ""
        self.key_id = ""
        self.secret = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SpawnedServer:
        data = str(self.data_dir)
        cid = _cli("client", "create", "loadtest", "--data-dir", data)["cid"]
        key = _cli("key", "create", "--client", cid, "--data-dir", data)
        self.key_id, self.secret = key["key_id"], key["secret"]
        log = self.data_dir / "serve.log"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sfu", "serve", "--host", "127.0.0.1", "--port", "0",
                 "--data-dir", data, "--ice-host", "127.0.0.1", "--log-level", "warning", *self.extra_args],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self.url:
            found = BANNER.search(log.read_text(errors="replace"))
            if found:
                self.url = found.group(1)
            elif self.proc.poll() is not None or time.monotonic() > deadline:
                text = log.read_text(errors="replace")[-2000:]
                self.close()
                raise RuntimeError(f"sfu serve did not start: {text}")
            else:
                time.sleep(0.1)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> SpawnedServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


RELAY_BANNER: Final = re.compile(r"aiortc relay listening on (http://127\.0\.0\.1:\d+)")


class SpawnedRelay(SpawnedServer):
    """`python -m loadtest.aiortc_relay` (the decode/re-encode baseline) on a free port; no keys needed."""

    def start(self) -> SpawnedRelay:
        log = self.data_dir / "relay.log"
        self.key_id, self.secret = "-", "-"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "loadtest.aiortc_relay", "--port", "0"],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self.url:
            found = RELAY_BANNER.search(log.read_text(errors="replace"))
            if found:
                self.url = found.group(1)
            elif self.proc.poll() is not None or time.monotonic() > deadline:
                text = log.read_text(errors="replace")[-2000:]
                self.close()
                raise RuntimeError(f"aiortc relay did not start: {text}")
            else:
                time.sleep(0.1)
        return self

    def __enter__(self) -> SpawnedRelay:
        return self.start()
