"""Admission of new sessions by this process's recent CPU: `max_worker_cpu` with a single process.

With `--workers N` the front decides where a new session goes (sfu/cluster/placement.py) and the workers
do not check; a single process measures itself here: a task samples `time.process_time()` once a second.
"""

from __future__ import annotations

CPU_SAMPLE_INTERVAL_S = 1.0


class CpuMeter:
    """This process's CPU, a fraction of one core, over the last completed sampling interval."""

    __slots__ = ("_last", "cpu")

    def __init__(self, now_s: float, cpu_s: float) -> None:
        self._last = (now_s, cpu_s)
        self.cpu = 0.0

    def sample(self, now_s: float, cpu_s: float) -> None:
        """`now_s` from a monotonic clock, `cpu_s` from `time.process_time()`."""
        last_now, last_cpu = self._last
        if now_s <= last_now:
            return
        self.cpu = max(cpu_s - last_cpu, 0.0) / (now_s - last_now)
        self._last = (now_s, cpu_s)


def max_cpu_fraction(max_worker_cpu: float | None) -> float | None:
    """`max_worker_cpu` (percent) as a fraction of one core, as the load reports CPU; None: no limit."""
    return max_worker_cpu / 100 if max_worker_cpu is not None else None


def admits_new_session(cpu: float, max_cpu: float | None) -> bool:
    """A new session fits while CPU (fraction of one core) is below `max_cpu` (None: no limit)."""
    return max_cpu is None or cpu < max_cpu
