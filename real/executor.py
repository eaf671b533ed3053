"""``RealExecutor``: carries out the shared planner's ``LayerPlan``s on real tiers.

The model calls ``parts_fn(layer, h_normed)`` once per layer; the executor scores the layer's
neurons (decode), asks the planner for the plan -- the same code the simulator runs -- and
executes it: SSD reads into the DRAM cache (background for prefetches, waited on for demands),
the HBM cache's evictions and DRAM->device loads (re-quantizing bands whose precision is not
stored), and returns the FFN parts: views of the device slot pools, scratch blocks for
transient loads, and DRAM blocks for neurons the CPU computes. It owns no policy logic.
Dense weights (attention, norms, embedding, LM head) stay resident on the device.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from m2sim.build import Run
from m2sim.plan import LayerPlan, Payload, Phase, Transfer
from m2sim.planner import Planner
from m2sim.sim.executor import LayerRecord
from m2sim.sim.server import JobRecord
from m2sim.types import BANDS, Link
from real.bundle import Bundles, decode, encode, quantize_bundles
from real.device_cache import DeviceNeuronCache
from real.dram import DRAMCache
from real.live import LiveSource
from real.model import FFNPart
from real.prefetch import Prefetcher
from real.store import Store

Scorer = Callable[[int, Tensor], np.ndarray]  # (layer, h (d,)) -> (d_ff,) neuron scores
OP_KINDS = ("attention", "ffn", "lm_head", "evict", "load", "link")


def _part(b: Bundles) -> FFNPart:
    return FFNPart(gate=b.gate, up=b.up, down=b.down)


def _rows(table: Tensor, rows: Optional[np.ndarray]) -> Tensor:
    """``table[rows]`` (all of it if None); index_select copies whole rows, ~10x faster than
    advanced indexing on uint8 rows on a CPU."""
    if rows is None:
        return table
    return table.index_select(0, torch.from_numpy(np.asarray(rows, dtype=np.int64)))


class RealExecutor:
    def __init__(self, *, run: Run, planner: Planner, store: Store, dram: DRAMCache,
                 device: DeviceNeuronCache, prefetcher: Prefetcher,
                 source: Optional[LiveSource], scorer: Optional[Scorer],
                 record_ops: bool = False):
        self.run, self.planner, self.store = run, planner, store
        self.dram, self.device, self.prefetcher = dram, device, prefetcher
        self.source, self.scorer = source, scorer
        m = run.cfg.model
        self.d_model, self.ffn_mats, self.quant = m.d_model, m.ffn_mats, run.cfg.quant
        self.stored = run.sizes.stored
        self.t0 = time.perf_counter()
        self.log: list[JobRecord] = []
        self.records: list[LayerRecord] = []
        self.request = 0
        self.prompt_tokens = 0
        self.token = -1  # decode index of the forward in progress; -1 = prefill
        self._scratch: dict[int, list[FFNPart]] = {}  # FFN sent ahead for a later layer
        self._layer_start = 0.0
        self.busy = {"gpu": 0.0, "cpu_mgmt": 0.0, "cpu": 0.0,
                     Link.SSD_TO_DRAM.name: 0.0, Link.DRAM_TO_HBM.name: 0.0}
        self.host_s: list[tuple[Phase, float]] = []  # per layer: the executor's own host time
        # with record_ops (real.record_op_times), decode's ops as they ran here (the profiler
        # fits the simulator's costs to them): attention (T, context, s), ffn (T, ids per band,
        # s), lm_head (s,), the cache unit's evict and load (band, ids, s), and link: a band's
        # ids copied to scratch for this token's FFN alone (streaming; band, ids, s)
        self.record_ops = record_ops
        self.op_s: dict[str, list[tuple]] = {k: [] for k in OP_KINDS}
        self._ffn_plan: Optional[LayerPlan] = None  # the plan of the FFN about to run
        self._parts_s = 0.0  # the time _parts took to hand that FFN its parts
        self._sync = (torch.cuda.synchronize if device.device.type == "cuda"
                      else (lambda: None))

    def now(self) -> float:
        return time.perf_counter() - self.t0

    # ---- timing the model's ops (``real.model.OpTimer``) ------------------------------------
    def clock(self) -> float:
        """Now, once the device has run what was queued (a CUDA run timed so loses overlap)."""
        self._sync()
        return time.perf_counter()

    def add(self, op: str, layer: int, seconds: float) -> None:
        if self.token < 0:  # decode only
            return
        if op == "attention":
            self.op_s[op].append((1, self.prompt_tokens + self.token + 1, seconds))
        elif op == "ffn":
            # the plan's op, unless the CPU computes some of it (an op of its own in the plan);
            # handing the FFN its parts is the FFN's (the pools' views), except rows gathered
            # out of a unit (the plan charges the gather on its own, ffn_gather_per_band_us)
            plan = self._ffn_plan
            upd = plan.update
            if upd is not None and upd.offload is not None and any(len(x) for x in upd.offload):
                return
            parts_s = 0.0 if plan.ffn.gather else self._parts_s
            self.op_s[op].append((1, *(int(c) for c in plan.want), seconds + parts_s))
        elif op == "lm_head":
            self.op_s[op].append((seconds,))

    # ---- the model's hook ---------------------------------------------------------------------
    def begin_prefill(self, request: int, prompt_tokens: int) -> None:
        self.request, self.prompt_tokens, self.token = request, prompt_tokens, -1

    def begin_decode(self, token: int) -> None:
        """The next forward is decode step ``token`` (counted across requests, as the trace)."""
        self.token = token

    def parts_fn(self, layer: int, h_normed: Tensor) -> list[FFNPart]:
        T = h_normed.shape[1]  # (1, T, d)
        t_in = self.now()
        start = t_in if layer == 0 else self._layer_start
        if self.token < 0:
            plan = self.planner.prefill(layer, T)
        else:
            if self.scorer is not None:
                self.source.put(self.token, layer, self.scorer(layer, h_normed[0, -1]))
                t_in = self.now()  # the predictor is not the executor's own work
            plan = self.planner.decode(self.token, layer, self.prompt_tokens + self.token + 1)
        mgmt0 = self.busy["cpu_mgmt"]
        stalls = self._execute(plan)
        t_parts = self.now()
        parts = self._parts(plan)
        end = self.now()
        self._record(plan, start, end, stalls)
        self._layer_start = end
        if self.record_ops:
            self._ffn_plan, self._parts_s = plan, end - t_parts
        # the executor's own host work this layer: planning, issuing, records (not the waits,
        # evictions, loads or FFN parts, which the plan's ops stand for)
        own = (t_parts - t_in) - stalls["ssd"] - stalls["link"] - (self.busy["cpu_mgmt"] - mgmt0)
        self.host_s.append((plan.phase, own + self.now() - end))
        return parts

    # ---- executing a plan ---------------------------------------------------------------------
    def _execute(self, plan: LayerPlan) -> dict[str, float]:
        stalls = {"ssd": 0.0, "link": 0.0, "cpu": 0.0}
        for t in plan.ssd_prefetch:
            self._ssd(t, plan.token)
        for t in plan.ffn_prefetch:  # the next layer's FFN, sent now (once it is in DRAM)
            self.prefetcher.wait_layer(t.layer)
            l0 = time.perf_counter()
            self._scratch.setdefault(t.layer, []).append(self._load(t, plan.token, transient=True))
            stalls["link"] += time.perf_counter() - l0
        if plan.ssd_demand is not None:
            w0 = time.perf_counter()
            self._ssd(plan.ssd_demand, plan.token)
            stalls["ssd"] += time.perf_counter() - w0
        w0 = time.perf_counter()
        self.prefetcher.wait_layer(plan.layer)  # this layer's data must be in DRAM
        stalls["ssd"] += time.perf_counter() - w0
        upd = plan.update
        c0 = time.perf_counter()
        if upd is not None and upd.evict is not None:
            for b, ids in enumerate(upd.evict):
                e0 = time.perf_counter()
                self.device.evict(plan.layer, BANDS[b], ids)
                self._op("evict", b, len(ids), time.perf_counter() - e0)
        self.busy["cpu_mgmt"] += time.perf_counter() - c0
        transient = upd is None or upd.transient
        l0 = time.perf_counter()
        loads = []
        for t in plan.ffn_loads:
            u0 = time.perf_counter()
            loads.append(self._load(t, plan.token, transient))
            if not transient:
                self._op("load", t.band, len(t.ids), time.perf_counter() - u0)
        stalls["link"] += time.perf_counter() - l0
        if transient:
            self._scratch.setdefault(plan.layer, []).extend(p for p in loads if p is not None)
        return stalls

    def _op(self, kind: str, band: int, num_ids: int, seconds: float) -> None:
        """Record a cache op of a decode step (with ``record_ops``; ``add`` times the others)."""
        if self.record_ops and self.token >= 0 and num_ids:
            self.op_s[kind].append((band, num_ids, seconds))

    def _ssd(self, t: Transfer, token: int) -> None:
        """SSD -> DRAM: drop what the DRAM policy evicted, then read a layer or neuron records."""
        for old in t.evict_layers:
            self.prefetcher.drop_layer(old)
        start = self.now()
        if t.payload is Payload.FFN_LAYER:
            futs = [self.prefetcher.prefetch_layer(t.layer, self.stored)]
        else:
            futs = [self.prefetcher.prefetch_records(t.layer, self.run.policy.source_of(BANDS[b]),
                                                     ids)
                    for b, ids in enumerate(t.read_ids) if len(ids)]
        job = [len(futs)]

        def done(_f) -> None:
            job[0] -= 1
            if job[0] == 0:
                end = self.now()
                self.busy[Link.SSD_TO_DRAM.name] += end - start
                self.log.append(JobRecord(Link.SSD_TO_DRAM.name, t.payload.value, t.layer, token,
                                          start, end, t.nbytes, t.prefetch))

        for f in futs:
            f.add_done_callback(done)
        if not t.prefetch:
            for f in futs:
                f.result()

    def _records(self, layer: int, band: int, ids: np.ndarray) -> tuple[Tensor, Optional[
            np.ndarray]]:
        """Records of ``ids`` at the band's precision, re-quantized if it is not stored."""
        p = BANDS[band]
        src = self.run.policy.source_of(p)
        table, rows = self.dram.lookup_records(layer, src, ids)
        if src is p:
            return table, rows
        block = _rows(table, rows)
        gate, up, down = decode(block, self.d_model, self.ffn_mats, src,
                                self.quant).dequantize()
        return encode(quantize_bundles(gate, up, down, p, self.quant)), None

    def _load(self, t: Transfer, token: int, transient: bool) -> Optional[FFNPart]:
        """DRAM -> device for one band: into the cache unit, or a scratch part if transient."""
        start = self.now()
        table, rows = self._records(t.layer, t.band, t.ids)
        part = None
        if transient:
            block = _rows(table, rows)
            part = _part(decode(block.to(self.device.device), self.d_model, self.ffn_mats,
                                BANDS[t.band], self.quant))
        else:
            self.device.load(t.layer, BANDS[t.band], t.ids, table, rows=rows)
        end = self.now()
        if transient:
            self._op("link", t.band, len(t.ids), end - start)
        self.busy[Link.DRAM_TO_HBM.name] += end - start
        self.log.append(JobRecord(Link.DRAM_TO_HBM.name, t.payload.value, t.layer, token, start,
                                  end, t.nbytes, t.prefetch))
        return part

    # ---- the FFN's parts ----------------------------------------------------------------------
    def _parts(self, plan: LayerPlan) -> list[FFNPart]:
        layer, upd = plan.layer, plan.update
        scratch = self._scratch.pop(layer, None)
        if scratch is not None:
            return scratch
        if not plan.ffn.gather:  # the unit is the active set: its pools, whole
            return [_part(b) for b in self.device.active(layer).values()]
        parts = []
        for b, ids in enumerate(plan.want_ids):
            cold = upd.offload[b] if upd.offload is not None else ids[:0]
            hot = ids if not len(cold) else np.setdiff1d(ids, cold, assume_unique=True)
            if len(hot):
                parts.append(_part(self.device.gather(layer, BANDS[b], hot)))
            if len(cold):  # computed from DRAM (the CPU's share, PowerInfer)
                table, rows = self._records(layer, b, cold)
                block = _rows(table, rows)
                parts.append(_part(decode(block.to(self.device.device), self.d_model,
                                          self.ffn_mats, BANDS[b], self.quant)))
        return parts

    def _record(self, plan: LayerPlan, start: float, end: float, st: dict[str, float]) -> None:
        upd = plan.update
        compute = max(0.0, end - start - st["ssd"] - st["link"] - st["cpu"])
        self.busy["gpu"] += compute
        self.records.append(LayerRecord(
            phase=plan.phase.value, request=self.request, token=plan.token, layer=plan.layer,
            start_s=start, end_s=end, gpu_busy_s=compute, stall_ssd_s=st["ssd"],
            stall_link_s=st["link"], stall_cpu_s=st["cpu"],
            hits=upd.hits if upd is not None else (0, 0, 0),
            loads=upd.load_counts if upd is not None else (0, 0, 0),
            evicted=upd.evicted if upd is not None else 0, want=plan.want,
            dram_miss_ids=plan.dram_miss_ids,
            ssd_demand_bytes=plan.ssd_demand.nbytes if plan.ssd_demand is not None else 0))
