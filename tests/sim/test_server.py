"""Exact-time semantics of ``Server`` (the PriorityResource sharing model, callback-driven)."""

import pytest
import simpy

from m2sim.sim.server import DEMAND, PREFETCH, Server


@pytest.fixture
def env():
    return simpy.Environment()


def _run(env, server, jobs):
    """Submit (at_s, service_s, priority, label) jobs; return {label: completion time}."""
    done = {}

    def submitter(at_s, service_s, priority, label):
        yield env.timeout(at_s)
        yield server.submit(service_s, priority=priority, label=label)
        done[label] = env.now

    for job in jobs:
        env.process(submitter(*job))
    env.run()
    return done


def test_one_job_takes_its_service_time(env):
    server = Server(env, "link", 1, [])
    assert _run(env, server, [(0.0, 2.5, DEMAND, "a")]) == {"a": 2.5}


def test_two_jobs_on_one_engine_finish_at_t_and_2t(env):
    server = Server(env, "link", 1, [])
    done = _run(env, server, [(0.0, 1.0, DEMAND, "a"), (0.0, 1.0, DEMAND, "b")])
    assert done == {"a": 1.0, "b": 2.0}


def test_two_engines_serve_two_jobs_at_once(env):
    server = Server(env, "link", 2, [])
    done = _run(env, server, [(0.0, 1.0, DEMAND, "a"), (0.0, 1.0, DEMAND, "b"),
                              (0.0, 1.0, DEMAND, "c")])
    assert done == {"a": 1.0, "b": 1.0, "c": 2.0}


def test_demand_fetch_overtakes_queued_prefetch(env):
    server = Server(env, "link", 1, [])
    # p1 is in service when p2 and d arrive; d was submitted after p2 but is served first.
    done = _run(env, server, [(0.0, 1.0, PREFETCH, "p1"), (0.1, 1.0, PREFETCH, "p2"),
                              (0.2, 1.0, DEMAND, "d")])
    assert done == {"p1": 1.0, "d": 2.0, "p2": 3.0}


def test_job_in_service_is_not_preempted(env):
    server = Server(env, "link", 1, [])
    done = _run(env, server, [(0.0, 5.0, PREFETCH, "p"), (1.0, 1.0, DEMAND, "d")])
    assert done == {"p": 5.0, "d": 6.0}


def test_fifo_within_a_priority(env):
    server = Server(env, "link", 1, [])
    done = _run(env, server, [(0.0, 1.0, DEMAND, "a"), (0.0, 1.0, DEMAND, "b"),
                              (0.0, 1.0, DEMAND, "c")])
    assert done["a"] < done["b"] < done["c"]


def test_log_and_busy_time_record_every_job(env):
    log = []
    server = Server(env, "link", 1, log)
    _run(env, server, [(0.0, 1.0, DEMAND, "a"), (3.0, 2.0, PREFETCH, "b")])
    assert [(r.label, r.start_s, r.end_s, r.prefetch) for r in log] == [
        ("a", 0.0, 1.0, False), ("b", 3.0, 5.0, True)]
    assert server.busy_s == 3.0


def test_negative_service_time_is_rejected(env):
    with pytest.raises(ValueError):
        Server(env, "link", 1, []).submit(-1.0)


def _busy_over(env, server, at_s, service_s):
    def go():
        yield env.timeout(at_s)
        yield server.submit(service_s)
    env.process(go())


def test_a_slowdown_applies_only_while_the_watched_server_is_busy(env):
    """A job progresses at 1/slowdown of full speed while the other server works, at full
    speed otherwise: 1 s of work at half speed over [0, 0.5) and full speed after it ends at
    0.5 + (1 - 0.25) = 1.25 s."""
    log: list = []
    other = Server(env, "other", 1, [])
    server = Server(env, "link", 1, log, slowdown=lambda: 2.0 if other.busy else 1.0)
    server.watch(other)
    _busy_over(env, other, 0.0, 0.5)
    done = _run(env, server, [(0.0, 1.0, DEMAND, "a")])
    assert done["a"] == pytest.approx(1.25, rel=1e-12)
    assert server.busy_s == pytest.approx(1.25, rel=1e-12)  # busy time is the slowed time
    assert (log[0].start_s, log[0].end_s) == pytest.approx((0.0, 1.25), rel=1e-12)


def test_a_slowdown_that_starts_mid_job_stretches_only_the_rest(env):
    # full speed over [0, 0.4), half speed from 0.4 while the other works for 2 s: the
    # remaining 0.6 s of work takes 1.2 s, ending at 1.6 s
    other = Server(env, "other", 1, [])
    server = Server(env, "link", 1, [], slowdown=lambda: 2.0 if other.busy else 1.0)
    server.watch(other)
    _busy_over(env, other, 0.4, 2.0)
    assert _run(env, server, [(0.0, 1.0, DEMAND, "a")]) == {"a": pytest.approx(1.6, rel=1e-12)}


def test_an_unwatched_slowdown_is_read_when_a_job_starts(env):
    server = Server(env, "link", 1, [], slowdown=lambda: 3.0)
    assert _run(env, server, [(0.0, 1.0, DEMAND, "a")]) == {"a": pytest.approx(3.0)}
