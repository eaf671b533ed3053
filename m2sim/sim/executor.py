"""Executes ``LayerPlan``s on the modelled ``Hardware`` (the dependency rules are in plan.py).

Granularity: one SimPy job per (token, layer, link, precision band) transfer and per kernel
group (predictor, attention, FFN, LM head) -- never per neuron. Background transfers register
the event that fills a layer's DRAM data, attention weights or FFN weights; a later layer
waits on it. Per layer it records the GPU's busy time and how long the GPU waited on SSD, on the
GPU link, and on the management CPU.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import simpy

from m2sim.plan import LayerPlan
from m2sim.sim.hardware import Hardware


class LayerRecord(NamedTuple):
    """One layer of one token (a row of the ``layers`` table)."""

    phase: str
    request: int
    token: int
    layer: int
    start_s: float
    end_s: float
    gpu_busy_s: float
    stall_ssd_s: float
    stall_link_s: float
    stall_cpu_s: float
    hits: tuple[int, int, int]
    loads: tuple[int, int, int]
    evicted: int
    want: tuple[int, int, int]
    dram_miss_ids: int
    ssd_demand_bytes: int


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


class Executor:
    def __init__(self, env: simpy.Environment, hw: Hardware, *, overlap: bool = True,
                 predict_after_attention: bool = False, charge_predictor: bool = True,
                 blocking_ffn_prefetch: bool = False):
        self.env = env
        self.hw = hw
        self.overlap = overlap
        self.predict_after_attention = predict_after_attention
        self.charge_predictor = charge_predictor
        self.blocking_ffn_prefetch = blocking_ffn_prefetch
        self.dram_ready: dict[int, simpy.Event] = {}
        self.attn_ready: dict[int, simpy.Event] = {}
        self.ffn_ready: dict[int, simpy.Event] = {}
        self.lm_ready: Optional[simpy.Event] = None
        self.records: list[LayerRecord] = []

    def _after(self, first: Optional[simpy.Event], start) -> simpy.Event:
        """An event for ``start()``'s job, submitted once ``first`` (if pending) has fired."""
        if first is None or first.processed:
            return start()
        done = self.env.event()
        first.callbacks.append(lambda _ev: start().callbacks.append(lambda _e: done.succeed()))
        return done

    def _issue_ssd(self, plan: LayerPlan, token: int) -> None:
        for t in plan.ssd_prefetch:
            self.dram_ready[t.layer] = self.hw.transfer(t, token)

    def _issue_dense(self, plan: LayerPlan, token: int) -> None:
        hw = self.hw
        for t in plan.dense_prefetch:
            wait = self.dram_ready.get(t.layer) if plan.dense_via_ssd else None
            self.attn_ready[t.layer] = self._after(wait, lambda t=t: hw.transfer(t, token))

    def _issue_ffn(self, plan: LayerPlan, token: int) -> None:
        hw = self.hw
        if plan.ffn_prefetch:
            evs = [self._after(self.dram_ready.get(t.layer), lambda t=t: hw.transfer(t, token))
                   for t in plan.ffn_prefetch]
            for layer in {t.layer for t in plan.ffn_prefetch}:
                self.ffn_ready[layer] = self.env.all_of(
                    [e for e, t in zip(evs, plan.ffn_prefetch) if t.layer == layer])

    def _issue(self, plan: LayerPlan, token: int, *, dense: bool):
        """Process: start the plan's background transfers and its SSD demand read (serial
        mode: wait for every pending transfer first)."""
        env, hw = self.env, self.hw
        self._issue_ssd(plan, token)
        if dense:
            self._issue_dense(plan, token)
        self._issue_ffn(plan, token)
        if plan.lm_head_load is not None:
            self.lm_ready = hw.transfer(plan.lm_head_load, token)
        if not self.overlap:  # serial: background work completes before anything else
            pending = [e for e in (*self.dram_ready.values(), *self.attn_ready.values(),
                                   *self.ffn_ready.values(), self.lm_ready)
                       if e is not None and not e.processed]
            if pending:
                yield env.all_of(pending)
        if plan.ssd_demand is not None:
            self.dram_ready[plan.layer] = hw.transfer(plan.ssd_demand, token)
            if not self.overlap:
                yield self.dram_ready[plan.layer]

    def _ffn_inputs(self, plan: LayerPlan, token: int, marks: dict):
        """Process: cache management, wait for the layer in DRAM, then DRAM->HBM loads."""
        env, hw = self.env, self.hw
        if hw.ov.layer_us:
            yield hw.host_work(plan.layer, token)
        if self.blocking_ffn_prefetch and plan.ffn_prefetch:  # the host waits for what it sends
            sent = {t.layer for t in plan.ffn_prefetch}
            yield env.all_of([self.ffn_ready[layer] for layer in sent])
        if plan.cache_work is not None:
            yield hw.cache_work(plan.cache_work, token)
        marks["mgmt"] = env.now
        dram = self.dram_ready.get(plan.layer)
        if dram is not None and not dram.processed:
            yield dram
        marks["dram"] = env.now
        loads = [hw.transfer(t, token) for t in plan.ffn_loads]
        if plan.ffn_prefetched and plan.layer in self.ffn_ready:
            loads.append(self.ffn_ready.pop(plan.layer))
        if loads:
            yield env.all_of(loads)

    def run_layer(self, plan: LayerPlan, request: int):
        """Process: one layer of one token, from its first op to its last."""
        env, hw = self.env, self.hw
        token = plan.token
        start = env.now
        gpu0 = hw.gpu.busy_s
        marks: dict = {}
        stall_link = 0.0
        # The predictor reads the FFN input: no load/attention overlap, and the plan (its SSD
        # reads and loads) exists only once attention is done -- unless this layer's attention
        # weights themselves come with the plan's transfers.
        after = self.predict_after_attention and plan.dense_resident
        if after:
            self._issue_dense(plan, token)
            stall_link += yield from self._attention(plan, token)
        yield from self._issue(plan, token, dense=not after)
        if self.predict_after_attention and not after:
            stall_link += yield from self._attention(plan, token)
        if plan.predictor is not None and self.charge_predictor:
            yield hw.compute(plan.predictor, token)
        ffn_path = env.process(self._ffn_inputs(plan, token, marks))
        if not self.overlap:
            yield ffn_path
        if not self.predict_after_attention:
            stall_link += yield from self._attention(plan, token)
        cpu_ffn = None
        if plan.ffn_cpu is not None and self.overlap:
            cpu_ffn = hw.compute(plan.ffn_cpu, token)
        a = env.now
        if not ffn_path.processed:
            yield ffn_path
        b = env.now
        stall_ssd = stall_cpu = 0.0
        if b > a:
            stall_cpu = _overlap(a, b, a, marks["mgmt"])
            stall_ssd = _overlap(a, b, marks["mgmt"], marks["dram"])
            stall_link += (b - a) - stall_cpu - stall_ssd
        yield hw.compute(plan.ffn, token)
        if plan.ffn_cpu is not None and not self.overlap:
            cpu_ffn = hw.compute(plan.ffn_cpu, token)
        if cpu_ffn is not None and not cpu_ffn.processed:
            w0 = env.now
            yield cpu_ffn
            stall_cpu += env.now - w0
        stall_link += yield from self._lm_head(plan, token)
        self._record(plan, request, start, hw.gpu.busy_s - gpu0, stall_ssd, stall_link,
                     stall_cpu)

    def _attention(self, plan: LayerPlan, token: int):
        """Process: wait for this layer's attention weights, then compute; returns the wait."""
        env, hw = self.env, self.hw
        attn = self.attn_ready.pop(plan.layer, None) if not plan.dense_resident else None
        if plan.dense_demand is not None:
            wait = self.dram_ready.get(plan.layer) if plan.dense_via_ssd else None
            attn = self._after(wait, lambda: hw.transfer(plan.dense_demand, token))
        w0 = env.now
        if attn is not None and not attn.processed:
            yield attn
        waited = env.now - w0
        yield hw.compute(plan.attention, token)
        return waited

    def _lm_head(self, plan: LayerPlan, token: int):
        """Process: the LM head after the last layer (waiting for its weights if streamed)."""
        if plan.lm_head is None:
            return 0.0
        w0 = self.env.now
        if self.lm_ready is not None and not self.lm_ready.processed:
            yield self.lm_ready
        waited = self.env.now - w0
        self.lm_ready = None
        yield self.hw.compute(plan.lm_head, token)
        return waited

    def _record(self, plan: LayerPlan, request: int, start: float, gpu_s: float, ssd: float,
                link: float, cpu: float) -> None:
        upd = plan.update
        d = plan.ssd_demand
        self.records.append(LayerRecord(
            phase=plan.phase.value, request=request, token=plan.token, layer=plan.layer,
            start_s=start, end_s=self.env.now, gpu_busy_s=gpu_s, stall_ssd_s=ssd,
            stall_link_s=link, stall_cpu_s=cpu,
            hits=upd.hits if upd is not None else (0, 0, 0),
            loads=upd.load_counts if upd is not None else (0, 0, 0),
            evicted=upd.evicted if upd is not None else 0,
            want=plan.want, dram_miss_ids=plan.dram_miss_ids,
            ssd_demand_bytes=d.nbytes if d is not None else 0))
