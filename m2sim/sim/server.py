"""``Server``: ``num_engines`` identical engines serving jobs non-preemptively by priority.

The sharing model is that of ``simpy.PriorityResource``: each job holds one engine for its
whole service time (at full speed unless slowed, below); queued jobs are served lowest priority value first (demand 0
before prefetch 1), FIFO within a priority; a job in service is never interrupted. Jobs are
driven by event callbacks rather than a process per job, because a decode token of a 70B model
issues hundreds of them. Every finished job is appended to ``log`` as a ``JobRecord``.
``slowdown`` (optional) is the factor by which the engines run slower at this instant: a job
progresses at 1 / slowdown() of full speed, and the factor is read again whenever a server it
depends on (``watch``) starts or stops being busy, and whenever this server's own queue goes
from empty to not or back (it may depend on that too). That models contention between things
that share a machine (host threads beside SSD reads, and the reads beside the host threads)
and a drive that reads faster with reads queued.
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


class _Run:
    """A job in service: its base (unslowed) seconds still to do, since when, at what factor."""

    __slots__ = ("job", "start_s", "left_s", "since_s", "factor", "gen")

    def __init__(self, job: tuple, now_s: float, factor: float):
        self.job, self.start_s, self.left_s = job, now_s, job[2]
        self.since_s, self.factor, self.gen = now_s, factor, 0


class Server:
    def __init__(self, env: simpy.Environment, name: str, num_engines: int, log: list,
                 slowdown: Optional[Callable[[], float]] = None):
        if num_engines < 1:
            raise ValueError(f"{name}: num_engines must be >= 1")
        self.env = env
        self.name = name
        self.num_engines = num_engines
        self._free = num_engines
        self._queue: list = []
        self._seq = itertools.count()
        self._log = log
        self._running: dict[int, _Run] = {}
        self._watchers: list[Server] = []
        self.busy_s = 0.0
        self.slowdown = slowdown

    def watch(self, other: Server) -> None:
        """Read ``slowdown`` again whenever ``other`` starts or stops being busy."""
        other._watchers.append(self)

    def submit(self, service_s: float, *, priority: int = DEMAND, label: str = "",
               layer: int = -1, token: int = -1, nbytes: int = 0,
               role: str = "") -> simpy.Event:
        """Queue a job of ``service_s`` seconds (at full speed); the returned event fires when
        it completes. ``role`` names the job's row in the log when one server plays several
        roles."""
        if service_s < 0:
            raise ValueError(f"{self.name}: negative service time {service_s}")
        done = self.env.event()
        job = (priority, next(self._seq), service_s, done, label, layer, token, nbytes,
               role or self.name)
        heapq.heappush(self._queue, job)
        was_busy = self.busy
        self._dispatch()
        self._notify(was_busy)
        if len(self._queue) == 1:  # jobs in service now have one waiting behind them
            self.restretch()
        return done

    def _factor(self) -> float:
        return self.slowdown() if self.slowdown is not None else 1.0

    def _dispatch(self) -> None:
        while self._free and self._queue:
            job = heapq.heappop(self._queue)
            self._free -= 1
            run = _Run(job, self.env.now, self._factor())
            self._running[job[1]] = run
            self._schedule(run)

    def _schedule(self, run: _Run) -> None:
        timer = self.env.timeout(run.left_s * run.factor)
        timer.callbacks.append(lambda _ev, run=run, gen=run.gen: self._finish(run, gen))

    def restretch(self) -> None:
        """The slowdown may have changed: bank each job's progress at the old factor and
        reschedule its end at the new one (a stale end event is ignored)."""
        now, factor = self.env.now, self._factor()
        for run in self._running.values():
            if factor != run.factor:
                run.left_s = max(0.0, run.left_s - (now - run.since_s) / run.factor)
                run.since_s, run.factor, run.gen = now, factor, run.gen + 1
                self._schedule(run)

    def _notify(self, was_busy: bool) -> None:
        if self.busy != was_busy:
            for w in self._watchers:
                w.restretch()

    def _finish(self, run: _Run, gen: int) -> None:
        if gen != run.gen:
            return
        priority, seq, _, done, label, layer, token, nbytes, role = run.job
        del self._running[seq]
        self._free += 1
        self.busy_s += self.env.now - run.start_s
        self._log.append(JobRecord(role, label, layer, token, run.start_s, self.env.now, nbytes,
                                   priority == PREFETCH))
        done.succeed()
        was_queued = bool(self._queue)
        self._dispatch()
        self._notify(True)
        if was_queued and not self._queue:  # the last waiting job just started
            self.restretch()

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def busy(self) -> bool:
        """Some engine is serving a job."""
        return self._free < self.num_engines
