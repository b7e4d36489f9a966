"""Worker processes of the front: start, watch, restart, poll for load, stop.

Each worker is `python -m sfu.cluster.worker`, handed its Config (pickled) on stdin; it answers one line
`READY <port>` on stdout once its internal HTTP/WebSocket port on 127.0.0.1 listens. The pool polls
`GET /cluster/load` of every worker each `POLL_INTERVAL_S` (CPU, forwarded packets/s, live sessions and
recordings). A worker that exits is restarted (with a backoff when it keeps dying); the recordings it was
writing are marked interrupted, as the single process does for a crashed previous run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import aiohttp

from sfu.config import Config
from sfu.store.base import Store

log = logging.getLogger("sfu.cluster")

POLL_INTERVAL_S = 1.0
READY_TIMEOUT_S = 60.0
RESTART_BACKOFF_S = (0.0, 0.5, 1.0, 2.0, 5.0)
"""Delay before restart number n in a row (a worker that ran 30 s resets the count)."""
STABLE_AFTER_S = 30.0
INTERNAL_PROXIES = ("127.0.0.1/32", "::1/128")


@dataclass(slots=True)
class WorkerLoad:
    cpu: float = 0.0  # fraction of one core over the last poll interval
    pps: float = 0.0  # RTP packets forwarded per second
    participants: int = 0
    sessions: tuple[tuple[str, str], ...] = ()  # (cid, sid)
    recordings: tuple[tuple[str, str], ...] = ()  # (cid, recording_id) being written


@dataclass(slots=True, eq=False)
class WorkerProcess:
    index: int
    config: Config
    generation: int = 0
    process: asyncio.subprocess.Process | None = None
    port: int = 0
    alive: bool = False
    draining: bool = False
    restarts: int = 0
    started_at: float = 0.0
    load: WorkerLoad = field(default_factory=WorkerLoad)

    @property
    def name(self) -> str:
        return f"worker-{self.index}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


def worker_config(config: Config, index: int, count: int) -> Config:
    """What worker `index` of `count` runs with: internal port on loopback, no TLS (the front terminates
    it), the front trusted as a proxy, its own slice of `rtc_port_range`, no CPU admission of its own."""
    ports = config.rtc_port_range
    if ports is not None:
        low, high = ports
        size = (high - low + 1) // count
        if size < 1:
            raise ValueError(f"--rtc-port-range {low}-{high} has fewer ports than --workers {count}")
        ports = (low + index * size, low + (index + 1) * size - 1)
    proxies = tuple(dict.fromkeys((*config.trusted_proxies, *INTERNAL_PROXIES)))
    return replace(config, host="127.0.0.1", port=0, tls_cert=None, tls_key=None, rtc_port_range=ports,
                   trusted_proxies=proxies, max_worker_cpu=None)  # the front places by CPU


class WorkerPool:
    def __init__(self, config: Config, count: int, store: Store) -> None:
        self.config = config
        self.store = store
        self.workers = [WorkerProcess(i, worker_config(config, i, count)) for i in range(count)]
        self.on_report: list[Callable[[WorkerProcess], None]] = []
        self.on_death: list[Callable[[WorkerProcess], None]] = []
        self.stopping = False
        self.restarts_total = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5.0))
        return self._http

    async def start(self) -> None:
        """Starts every worker and returns once all are ready (raises if one cannot start)."""
        await asyncio.gather(*(self._spawn(w) for w in self.workers))
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._watch(w), name=f"watch-{w.name}") for w in self.workers]
        self._tasks.append(loop.create_task(self._poll(), name="worker-poll"))

    async def _spawn(self, worker: WorkerProcess) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sfu.cluster.worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        worker.process = process
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(pickle.dumps((worker.config, worker.index)))
        await process.stdin.drain()
        process.stdin.close()
        try:
            line = await asyncio.wait_for(process.stdout.readline(), READY_TIMEOUT_S)
        except TimeoutError:
            line = b""
        head, _, port = line.decode(errors="replace").strip().partition(" ")
        if head != "READY" or not port.isdigit():
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise RuntimeError(f"{worker.name} did not start (exit code {process.returncode})")
        worker.port, worker.alive, worker.started_at = int(port), True, time.monotonic()
        worker.load = WorkerLoad()
        log.info("%s ready: pid %d, port %d", worker.name, process.pid, worker.port)

    async def _watch(self, worker: WorkerProcess) -> None:
        """Restarts the worker whenever it exits, until the pool stops."""
        in_a_row = 0
        while True:
            process = worker.process
            assert process is not None
            code = await process.wait()
            worker.alive = False
            if self.stopping:
                return
            log.warning("%s (pid %d) exited with %s: restarting", worker.name, process.pid, code)
            recordings = worker.load.recordings
            for callback in self.on_death:
                callback(worker)
            await self._interrupt(recordings)
            in_a_row = 0 if time.monotonic() - worker.started_at > STABLE_AFTER_S else in_a_row + 1
            while not self.stopping:
                await asyncio.sleep(RESTART_BACKOFF_S[min(in_a_row, len(RESTART_BACKOFF_S) - 1)])
                worker.generation += 1
                worker.restarts += 1
                self.restarts_total += 1
                try:
                    await self._spawn(worker)
                    break
                except (RuntimeError, OSError) as exc:
                    log.error("%s: %s", worker.name, exc)
                    in_a_row += 1
            if self.stopping:
                return

    async def _interrupt(self, recordings: tuple[tuple[str, str], ...]) -> None:
        """Files of a killed worker stay as they were cut; their records say so."""
        for cid, recording_id in recordings:
            try:
                record = await self.store.get_recording(cid, recording_id)
                if record is not None and record.state == "recording":
                    cut = replace(record, state="interrupted", stopped_at=time.time())
                    await self.store.save_recording(cut)
            except Exception:
                log.exception("marking recording %s interrupted failed", recording_id)

    async def _poll(self) -> None:
        while True:
            await asyncio.gather(*(self._poll_one(w) for w in self.workers if w.alive))
            await asyncio.sleep(POLL_INTERVAL_S)

    async def _poll_one(self, worker: WorkerProcess) -> None:
        generation = worker.generation
        try:
            async with self.http.get(f"http://127.0.0.1:{worker.port}/cluster/load") as response:
                body = await response.json()
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return
        if not worker.alive or worker.generation != generation or not isinstance(body, dict):
            return
        worker.load = WorkerLoad(
            cpu=float(body.get("cpu", 0.0)),
            pps=float(body.get("pps", 0.0)),
            participants=int(body.get("participants", 0)),
            sessions=tuple((str(c), str(s)) for c, s in body.get("sessions", ())),
            recordings=tuple((str(c), str(r)) for c, r in body.get("recordings", ())),
        )
        worker.draining = bool(body.get("draining", False))
        for callback in self.on_report:
            callback(worker)

    def signal_all(self, signum: int) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signum)

    async def stop(self, timeout_s: float) -> None:
        """SIGTERM to every worker (each ends its sessions and finalizes its recordings), SIGKILL after
        `timeout_s`; idempotent."""
        self.stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self.signal_all(signal.SIGTERM)
        processes = [w.process for w in self.workers if w.process is not None]
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in processes)), timeout_s)
        except TimeoutError:
            log.warning("workers did not stop within %.0f s: killing them", timeout_s)
            self.signal_all(signal.SIGKILL)
            await asyncio.gather(*(p.wait() for p in processes))
        for worker in self.workers:
            worker.alive = False
        if self._http is not None:
            await self._http.close()
            self._http = None
