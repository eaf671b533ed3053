"""``Server``: ``num_engines`` identical engines serving jobs non-preemptively by priority.

The sharing model is that of ``simpy.PriorityResource``: each job holds one engine for its
whole service time at full speed; queued jobs are served lowest priority value first (demand 0
before prefetch 1), FIFO within a priority; a job in service is never interrupted. Jobs are
driven by event callbacks rather than a process per job, because a decode token of a 70B model
issues hundreds of them. Every finished job is appended to ``log`` as a ``JobRecord``.
``stretch`` (optional) scales a job's service time by a factor read when the job starts: how a
host thread slows down while something beside it (SSD reads) is busy.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import NamedTuple, Optional

import simpy

DEMAND = 0
PREFETCH = 1


class JobRecord(NamedTuple):
    """One finished job (a row of the ``transfers`` table)."""

    server: str
    label: str
    layer: int
    token: int
    start_s: float
    end_s: float
    nbytes: int
    prefetch: bool


class Server:
    def __init__(self, env: simpy.Environment, name: str, num_engines: int, log: list,
                 stretch: Optional[Callable[[], float]] = None):
        if num_engines < 1:
            raise ValueError(f"{name}: num_engines must be >= 1")
        self.env = env
        self.name = name
        self.num_engines = num_engines
        self._free = num_engines
        self._queue: list = []
        self._seq = itertools.count()
        self._log = log
        self.busy_s = 0.0
        self.stretch = stretch

    def submit(self, service_s: float, *, priority: int = DEMAND, label: str = "",
               layer: int = -1, token: int = -1, nbytes: int = 0,
               role: str = "") -> simpy.Event:
        """Queue a job of ``service_s`` seconds; the returned event fires when it completes.
        ``role`` names the job's row in the log when one server plays several roles."""
        if service_s < 0:
            raise ValueError(f"{self.name}: negative service time {service_s}")
        done = self.env.event()
        job = (priority, next(self._seq), service_s, done, label, layer, token, nbytes,
               role or self.name)
        heapq.heappush(self._queue, job)
        self._dispatch()
        return done

    def _dispatch(self) -> None:
        while self._free and self._queue:
            job = heapq.heappop(self._queue)
            self._free -= 1
            service_s = job[2] * self.stretch() if self.stretch is not None else job[2]
            timer = self.env.timeout(service_s)
            start_s = self.env.now
            timer.callbacks.append(lambda _ev, job=job, start_s=start_s, service_s=service_s:
                                   self._finish(job, start_s, service_s))

    def _finish(self, job: tuple, start_s: float, service_s: float) -> None:
        priority, _, _, done, label, layer, token, nbytes, role = job
        self._free += 1
        self.busy_s += service_s
        self._log.append(JobRecord(role, label, layer, token, start_s, self.env.now, nbytes,
                                   priority == PREFETCH))
        done.succeed()
        self._dispatch()

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def busy(self) -> bool:
        """Some engine is serving a job."""
        return self._free < self.num_engines
