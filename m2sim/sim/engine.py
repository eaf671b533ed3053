"""``simulate``: one run of one policy, from prefill through decode, for every request.

Everything a run needs (environment, hardware, policies, activation source, planner) is built
here on each call, so two simulations in one process never interact.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import simpy
from tqdm import tqdm

from m2sim.build import Run, build_run
from m2sim.carbon.activity import Activity
from m2sim.carbon.assess import assess
from m2sim.config import M2SimConfig
from m2sim.plan import LayerPlan
from m2sim.planner import Planner
from m2sim.policy.config import PolicyConfig
from m2sim.results import Results, summarize
from m2sim.sim.executor import Executor
from m2sim.sim.hardware import Hardware
from m2sim.types import Link


class InvariantError(RuntimeError):
    """A policy let a tier exceed its capacity: a bug, not a user error."""


@dataclass
class MemoryTracker:
    """Peak bytes per tier, checked against capacity after every layer."""

    run: Run
    hbm_static: int
    hbm_capacity: int
    dram_static: int
    dram_capacity: int
    _ffn_by_layer: list = field(default_factory=list)
    _ffn_total: int = 0
    peak_hbm: int = 0
    peak_dram: int = 0
    dram_byte_s: float = 0.0  # integral of DRAM bytes in use over time (for DRAM power)
    _dram_now: int = 0
    _dram_since_s: float = 0.0

    def __post_init__(self) -> None:
        self._ffn_by_layer = [0] * self.run.num_layers
        self._dram_now = self.dram_static + self.run.dram.resident_bytes()
        self.peak_hbm = self.hbm_static + self.run.hbm.resident_bytes()

    def after_layer(self, plan: LayerPlan) -> None:
        upd = plan.update
        transient = 0
        if upd is not None:
            if upd.transient:
                transient = sum(t.nbytes for t in plan.ffn_loads)
            else:
                self._ffn_total += upd.resident_bytes - self._ffn_by_layer[plan.layer]
                self._ffn_by_layer[plan.layer] = upd.resident_bytes
        hbm = self.hbm_static + max(self._ffn_total, self.run.hbm.resident_bytes()) + transient
        if hbm > self.hbm_capacity:
            raise InvariantError(f"HBM use {hbm} exceeds its capacity {self.hbm_capacity} "
                                 f"at token {plan.token} layer {plan.layer}")
        self.peak_hbm = max(self.peak_hbm, hbm)

    def after_token(self, now_s: float) -> None:
        dram = self.dram_static + self.run.dram.resident_bytes()
        if dram > self.dram_capacity:
            raise InvariantError(f"DRAM use {dram} exceeds its capacity {self.dram_capacity}")
        self.peak_dram = max(self.peak_dram, dram)
        self.dram_byte_s += self._dram_now * (now_s - self._dram_since_s)
        self._dram_now, self._dram_since_s = dram, now_s


def _memory_tracker(run: Run) -> MemoryTracker:
    cfg, pl, s = run.cfg, run.placement, run.sizes
    hb = pl.hbm_bytes
    hbm_static = (int(cfg.gpu.reserved_gib * 2**30) + run.num_layers * s.predictor_layer
                  + hb["kv_cache"] + hb["attn"] + hb["lm_head"] + hb["scratch"])
    dram_static = pl.dram_bytes["embedding"] + pl.dram_bytes["dense_pinned"]
    return MemoryTracker(run=run, hbm_static=hbm_static, hbm_capacity=int(cfg.gpu.memory_bytes),
                         dram_static=dram_static,
                         dram_capacity=int(cfg.host.dram_bytes))


@dataclass
class _Clock:
    requests: list = field(default_factory=list)  # (request, start_s, first_token_s, end_s)
    token_end_s: list = field(default_factory=list)


def _serve(env: simpy.Environment, run: Run, planner: Planner, ex: Executor,
           mem: MemoryTracker, clock: _Clock, bar: tqdm):
    """Process: serve the workload's requests back to back, batch size 1."""
    w = run.cfg.workload
    L = run.num_layers
    token = 0
    for r in range(w.num_requests):
        start = env.now
        for layer in range(L):
            plan = planner.prefill(layer, w.prompt_tokens)
            yield from ex.run_layer(plan, r)
            mem.after_layer(plan)
        mem.after_token(env.now)
        first = env.now
        for i in range(w.output_tokens - 1):
            context = w.prompt_tokens + i + 1
            for layer in range(L):
                plan = planner.decode(token, layer, context)
                yield from ex.run_layer(plan, r)
                mem.after_layer(plan)
            mem.after_token(env.now)
            clock.token_end_s.append(env.now)
            token += 1
            bar.update(1)
        clock.requests.append((r, start, first, env.now))


def simulate(cfg: M2SimConfig, policy: PolicyConfig | None = None) -> Results:
    """Simulate ``cfg.workload`` under ``policy`` (default ``cfg.policy``)."""
    policy = policy if policy is not None else cfg.policy
    if policy is None:
        raise ValueError("simulate needs a policy (cfg.policy is None)")
    run = build_run(cfg, policy)
    env = simpy.Environment()
    log: list = []
    hw = Hardware(env, cfg, log)
    w = cfg.workload
    n_decode = w.num_requests * (w.output_tokens - 1)
    planner = Planner(run, num_decode_tokens=n_decode)
    ex = Executor(env, hw, overlap=cfg.sim.overlap,
                  predict_after_attention=cfg.sim.predict_after_attention,
                  charge_predictor=cfg.sim.charge_predictor,
                  blocking_ffn_prefetch=cfg.sim.blocking_ffn_prefetch)
    mem = _memory_tracker(run)
    clock = _Clock()
    show = cfg.sim.progress and n_decode * run.num_layers >= 20_000 and sys.stderr.isatty()
    with tqdm(total=n_decode, desc=f"sim {policy.name}", unit="tok", disable=not show,
              leave=False) as bar:
        env.process(_serve(env, run, planner, ex, mem, clock, bar))
        env.run()
    total_s = max((r[3] for r in clock.requests), default=0.0)
    report = assess(sim_activity(run, hw, mem, total_s), cfg.gpu, cfg.host, cfg.carbon)
    return summarize(run, hw, ex.records, log, mem, clock.requests, clock.token_end_s,
                     carbon=report)


def sim_activity(run: Run, hw: Hardware, mem: MemoryTracker, runtime_s: float) -> Activity:
    """What the simulated run did, in the terms of the power model."""
    gpu_busy = hw.gpu_compute_bound_s + hw.gpu_memory_bound_s
    ssd = hw.links[Link.SSD_TO_DRAM]
    w = run.cfg.workload
    if hw.mgmt is hw.gpu:  # one host thread (gpu.is_host_cpu, sim.single_host_thread): the
        # time it spent outside kernels is one core's
        cpu_core_s = max(0.0, hw.gpu.busy_s - gpu_busy)
    else:
        cpu_core_s = hw.mgmt.busy_s + hw.cpu.busy_s * run.cfg.host.cpu_cores
    return Activity(
        runtime_s=runtime_s, start_hour=run.cfg.carbon.start_hour,
        gpu_busy_compute_s=hw.gpu_compute_bound_s, gpu_busy_memory_s=hw.gpu_memory_bound_s,
        gpu_wait_io_s=max(0.0, runtime_s - gpu_busy),  # the GPU only idles waiting for inputs
        cpu_busy_core_s=cpu_core_s,
        dram_resident_gb_s=mem.dram_byte_s / 1e9,
        dram_bytes_moved=hw.bytes_moved(Link.SSD_TO_DRAM) + hw.bytes_moved(Link.DRAM_TO_HBM)
        + hw.cpu_weight_bytes,
        ssd_active_s=min(ssd.busy_s, runtime_s),
        pcie_bytes_moved=hw.bytes_moved(Link.DRAM_TO_HBM),
        num_tokens=w.output_tokens * w.num_requests)
