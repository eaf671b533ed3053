"""``Planner``: turns policy decisions into ``LayerPlan``s, one per (token, layer).

This is the only code that asks the policies for decisions during a run; the simulator and the
real backend both call it, so they move the same bytes for the same trace. Prefill runs the
dense FFN at the highest stored precision, streamed through the (still empty) HBM cache area
(DECISION, m2cache.md); decode follows the policy. Token -1 denotes prefill.
"""

from __future__ import annotations

import numpy as np

from m2sim.build import Run
from m2sim.plan import CacheWork, Compute, LayerPlan, Payload, Phase, Transfer
from m2sim.policy.atu import ATU
from m2sim.policy.preload import SEQUENTIAL_REQUEST_BYTES, ahead
from m2sim.policy.records import EMPTY_IDS, BandedSet, CacheUpdate, LayerRead
from m2sim.policy.streaming import Resident, Streaming
from m2sim.types import BANDS, Device, Link

KERNELS_ATTENTION = 8  # norm, q/k/v, rope, scores, softmax, AV, o-proj, residual
KERNELS_PER_FFN_BAND = 3  # gate|up GEMV, activation*up, down GEMV
KERNELS_PREDICTOR = 2


class Planner:
    def __init__(self, run: Run, *, num_decode_tokens: int):
        self.run = run
        self.L = run.num_layers
        self.num_decode_tokens = num_decode_tokens
        s, spec = run.sizes, run.spec
        self.id_weights = s.neurons_per_id * run.cfg.model.ffn_mats * run.cfg.model.d_model
        self.attn_band = BANDS.index(run.policy.placement.precision)
        self.attn_params = spec.attn_params_per_layer()
        self.kv_row_bytes = 2 * spec.kv_dim * 2  # K and V of one token, one layer, FP16
        n = run.layout.num_ids
        all_ids = np.arange(n, dtype=np.int32)
        self.dense_want = BandedSet(ids=tuple(all_ids if b == s.prefill_band else EMPTY_IDS
                                              for b in range(3)))
        self.resident_ffn = isinstance(run.hbm, Resident)
        # the HBM unit is exactly the active set (ATU; dense resident): FFN kernels read it
        # whole; any other unit is indexed, its active rows gathered per band
        self.unit_is_active_set = isinstance(run.hbm, ATU) or (self.resident_ffn
                                                                and not run.policy.sparse)
        stream = isinstance(run.hbm, Streaming)
        self.ffn_ahead_layers = run.policy.placement.prefetch_layers
        # decode FFN can be sent ahead only when the set is known: dense streaming
        self.decode_ffn_ahead = (run.hbm.cfg.prefetch_layers if stream and not run.policy.sparse
                                 else 0)
        self._ffn_sent: dict[tuple[int, int], CacheUpdate] = {}
        self._dense_sent: set[tuple[int, int]] = set()

    # ---- helpers -----------------------------------------------------------------------
    def _in_run(self, token: int) -> bool:
        return token < self.num_decode_tokens

    def _ssd(self, read: LayerRead) -> Transfer:
        payload = Payload.FFN_LAYER if read.ids is None else Payload.FFN_NEURONS
        return Transfer(link=Link.SSD_TO_DRAM, payload=payload, layer=read.layer,
                        nbytes=read.nbytes, prefetch=read.prefetch,
                        num_requests=read.num_requests, read_ids=read.ids,
                        evict_layers=read.evict_layers)

    def _ffn_transfers(self, upd: CacheUpdate, prefetch: bool) -> tuple[Transfer, ...]:
        out = []
        for b, ids in enumerate(upd.load):
            if len(ids):
                out.append(Transfer(link=Link.DRAM_TO_HBM, payload=Payload.FFN_NEURONS,
                                    layer=upd.layer, nbytes=len(ids) * self.run.sizes.id_bytes[b],
                                    prefetch=prefetch, band=b, ids=ids))
        return tuple(out)

    def _dense(self, token: int, layer: int) -> tuple[tuple[Transfer, ...], Transfer | None]:
        """Attention weights: prefetch for a later layer, demand for this one if not sent."""
        res = self.run.placement.attn_resident
        p = self.run.policy.placement.prefetch_layers
        nbytes = self.run.sizes.attn_layer
        demand = None
        if not res[layer] and (token, layer) not in self._dense_sent:
            demand = Transfer(link=Link.DRAM_TO_HBM, payload=Payload.ATTN, layer=layer,
                              nbytes=nbytes, prefetch=False)
        self._dense_sent.discard((token, layer))
        pre = []
        for step in range(1, p + 1):
            t2, l2 = ahead(token, layer, step, self.L)
            if not res[l2] and (t2, l2) not in self._dense_sent and self._in_run(t2):
                self._dense_sent.add((t2, l2))
                pre.append(Transfer(link=Link.DRAM_TO_HBM, payload=Payload.ATTN, layer=l2,
                                    nbytes=nbytes, prefetch=True))
        return tuple(pre), demand

    # ---- the compute ops of a plan (also what calibration compares measurements with) -------
    def attention_op(self, layer: int, tokens: int, context: int, prefill: bool) -> Compute:
        spec = self.run.spec
        w = [0, 0, 0]
        w[self.attn_band] = self.attn_params
        if prefill:
            flops = 2 * 2 * spec.q_dim * tokens * (tokens + 1) / 2
            kv = tokens * self.kv_row_bytes  # written once
        else:
            flops = spec.attn_score_flops(context)
            kv = context * self.kv_row_bytes
        return Compute(device=Device.GPU, what="attention", layer=layer, weights=tuple(w),
                       weight_bytes=self.run.sizes.attn_layer, tokens=tokens, other_bytes=kv,
                       other_flops=flops, num_kernels=KERNELS_ATTENTION)

    def ffn_op(self, layer: int, counts: tuple[int, int, int], tokens: int,
               device: Device = Device.GPU, what: str = "ffn", gather: bool = False) -> Compute:
        ib = self.run.sizes.id_bytes
        return Compute(device=device, what=what, layer=layer,
                       weights=tuple(c * self.id_weights for c in counts),
                       weight_bytes=sum(c * b for c, b in zip(counts, ib)), tokens=tokens,
                       num_kernels=KERNELS_PER_FFN_BAND * sum(1 for c in counts if c),
                       gather=gather)

    def lm_head_op(self, layer: int) -> Compute:
        w = [0, 0, 0]
        w[self.attn_band] = self.run.cfg.model.vocab_size * self.run.cfg.model.d_model
        return Compute(device=Device.GPU, what="lm_head", layer=layer, weights=tuple(w),
                       weight_bytes=self.run.sizes.lm_head, num_kernels=2)

    def _lm_head(self, token: int, layer: int) -> tuple[Compute | None, Transfer | None]:
        if layer != self.L - 1:
            return None, None
        comp = self.lm_head_op(layer)
        load = None
        if not self.run.placement.lm_head_resident:
            load = Transfer(link=Link.DRAM_TO_HBM, payload=Payload.LM_HEAD, layer=layer,
                            nbytes=self.run.sizes.lm_head, prefetch=True)
        return comp, load

    def _ffn_stream(self, token: int, layer: int, want: BandedSet, ahead_layers: int):
        """This layer's cache update (sent earlier if it was prefetched) and FFN prefetches."""
        run = self.run
        key = (token, layer)
        prefetched = key in self._ffn_sent
        upd = self._ffn_sent.pop(key) if prefetched else run.hbm.update(token, layer, want)
        pre: list[Transfer] = []
        for step in range(1, ahead_layers + 1):
            t2, l2 = ahead(token, layer, step, self.L)
            if (t2, l2) in self._ffn_sent or not self._in_run(t2):
                continue
            if (t2 < 0) != (token < 0):
                continue  # prefill and decode do not prefetch across the boundary
            want2 = self.dense_want if t2 < 0 else run.bands.assign(run.predictor.predict(t2, l2))
            upd2 = run.hbm.update(t2, l2, want2)
            self._ffn_sent[(t2, l2)] = upd2
            pre.extend(self._ffn_transfers(upd2, prefetch=True))
        return upd, prefetched, tuple(pre)

    def _check_in_dram(self, layer: int, want: BandedSet) -> None:
        """The data this layer loads must still be in DRAM after the reads ahead were admitted."""
        if self.run.dram.holds_layers and not self.run.dram.missing(layer, want.ids).empty:
            raise RuntimeError(f"planner invariant: layer {layer} left DRAM while in use "
                               f"(DRAM window smaller than the preload depth + 1?)")

    # ---- plans -------------------------------------------------------------------------
    def prefill(self, layer: int, prompt_tokens: int) -> LayerPlan:
        run = self.run
        want = self.dense_want
        ssd_pre: tuple[Transfer, ...] = ()
        demand = None
        if self.resident_ffn:
            pass  # every FFN weight is already in HBM
        elif run.dram.holds_layers:
            demand = run.preload.demand(-1, layer, want)  # admit this layer before reading ahead
            ssd_pre = tuple(self._ssd(r) for r in run.preload.prefetch(-1, layer))
            self._check_in_dram(layer, want)
        else:  # neuron-level DRAM: the dense prefill streams each layer through uncached
            demand = LayerRead(layer=layer, nbytes=run.sizes.dram_layer,
                               num_requests=-(-run.sizes.dram_layer // SEQUENTIAL_REQUEST_BYTES),
                               prefetch=False)
        dense_pre, dense_dem = self._dense(-1, layer)
        loads: tuple[Transfer, ...] = ()
        ffn_pre: tuple[Transfer, ...] = ()
        prefetched = False
        if not self.resident_ffn:
            key = (-1, layer)
            prefetched = key in self._ffn_sent
            if prefetched:
                self._ffn_sent.pop(key)
            else:
                loads = self._whole_layer_loads(layer, prefetch=False)
            for step in range(1, self.ffn_ahead_layers + 1):
                t2, l2 = ahead(-1, layer, step, self.L)
                if t2 == -1 and (t2, l2) not in self._ffn_sent:
                    self._ffn_sent[(t2, l2)] = None  # type: ignore[assignment]
                    ffn_pre += self._whole_layer_loads(l2, prefetch=True)
        lm, lm_load = self._lm_head(-1, layer)
        return LayerPlan(
            phase=Phase.PREFILL, token=-1, layer=layer, ssd_prefetch=ssd_pre,
            ssd_demand=self._ssd(demand) if demand else None, dense_prefetch=dense_pre,
            dense_demand=dense_dem, ffn_prefetch=ffn_pre, lm_head_load=lm_load,
            ffn_loads=loads, ffn_prefetched=prefetched,
            attention=self.attention_op(layer, prompt_tokens, prompt_tokens, prefill=True),
            ffn=self.ffn_op(layer, want.counts, prompt_tokens), lm_head=lm,
            dense_resident=run.placement.attn_resident[layer],
            dense_via_ssd=not run.placement.dense_in_dram)

    def _whole_layer_loads(self, layer: int, prefetch: bool) -> tuple[Transfer, ...]:
        b = self.run.sizes.prefill_band
        n = self.run.layout.num_ids
        return (Transfer(link=Link.DRAM_TO_HBM, payload=Payload.FFN_NEURONS, layer=layer,
                         nbytes=n * self.run.sizes.id_bytes[b], prefetch=prefetch, band=b,
                         ids=self.dense_want.ids[b]),)

    def decode(self, token: int, layer: int, context_tokens: int) -> LayerPlan:
        run = self.run
        want = run.bands.assign(run.predictor.predict(token, layer))
        ssd_pre: tuple[Transfer, ...] = ()
        demand = None
        if not self.resident_ffn:
            demand = run.preload.demand(token, layer, want)  # admit this layer before reading ahead
            ssd_pre = tuple(self._ssd(r) for r in run.preload.prefetch(token, layer))
            self._check_in_dram(layer, want)
        dense_pre, dense_dem = self._dense(token, layer)
        upd, prefetched, ffn_pre = self._ffn_stream(token, layer, want, self.decode_ffn_ahead)
        loads = () if prefetched else self._ffn_transfers(upd, prefetch=False)
        work = None
        predictor = None
        if run.policy.sparse:
            n_load = sum(upd.load_counts)
            quantized = sum(c for c, q in zip(upd.load_counts, run.sizes.quantized_bands) if q)
            evicted = (tuple(len(x) for x in upd.evict) if upd.evict is not None
                       else (0, 0, 0))
            work = CacheWork(layer=layer, ids_changed=n_load + upd.evicted,
                             ids_gathered=n_load,
                             gather_bytes=sum(t.nbytes for t in loads),
                             weights_quantized=quantized * self.id_weights,
                             unit_loads=(0, 0, 0) if upd.transient else upd.load_counts,
                             evictions=evicted,
                             evicted_bytes=sum(n * b for n, b in zip(evicted,
                                                                      run.sizes.id_bytes)))
            predictor = Compute(device=Device.GPU, what="predictor", layer=layer,
                                weights=(run.sizes.predictor_layer // 2, 0, 0),
                                weight_bytes=run.sizes.predictor_layer,
                                num_kernels=KERNELS_PREDICTOR)
        counts = want.counts
        ffn_cpu = None
        if upd.offload is not None:
            cold = tuple(len(x) for x in upd.offload)
            counts = tuple(c - o for c, o in zip(counts, cold))
            if any(cold):
                ffn_cpu = self.ffn_op(layer, cold, 1, device=Device.CPU, what="ffn_cold",
                                      gather=True)
        lm, lm_load = self._lm_head(token, layer)
        if demand is None:
            dram_miss = 0
        else:
            dram_miss = want.size if demand.ids is None else demand.num_requests
        return LayerPlan(
            phase=Phase.DECODE, token=token, layer=layer, ssd_prefetch=ssd_pre,
            ssd_demand=self._ssd(demand) if demand else None, dense_prefetch=dense_pre,
            dense_demand=dense_dem, ffn_prefetch=ffn_pre, lm_head_load=lm_load,
            predictor=predictor, cache_work=work, ffn_loads=loads, ffn_prefetched=prefetched,
            attention=self.attention_op(layer, 1, context_tokens, prefill=False),
            ffn=self.ffn_op(layer, counts, 1, gather=not (self.unit_is_active_set
                                                          or upd.transient)),
            ffn_cpu=ffn_cpu, lm_head=lm, update=upd,
            want=want.counts, want_ids=want.ids, dram_miss_ids=dram_miss,
            dense_resident=run.placement.attn_resident[layer],
            dense_via_ssd=not run.placement.dense_in_dram)
