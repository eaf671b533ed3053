"""Wiring a run: sizes, the memory plan and fresh policy objects, shared by both executors.

``build_run(cfg, policy)`` is the one place where hardware, model and policy configs meet. It
returns a ``Run``: everything the planner needs, built anew per call (policies hold state).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import numpy as np

from m2sim.config import M2SimConfig
from m2sim.hardware import GIB
from m2sim.policy.bands import ScoreBands
from m2sim.policy.config import PolicyConfig
from m2sim.policy.dram import DramCache
from m2sim.policy.hbm import HBMCachePolicy
from m2sim.policy.layout import NeuronLayout
from m2sim.policy.placement import MemoryNeeds, Placement, plan_memory
from m2sim.policy.predictor import TracePredictor
from m2sim.policy.preload import Preloader
from m2sim.policy.records import BandedSet
from m2sim.policy.registry import (
    build_dram_cache,
    build_hbm_cache,
    build_preloader,
    dram_min_bytes,
    hbm_demand_bytes,
)
from m2sim.policy.streaming import ResidentConfig
from m2sim.specs import ModelSpec
from m2sim.trace import ActivationSource, build_source
from m2sim.types import BANDS, Precision


@dataclass(frozen=True, slots=True, kw_only=True)
class Sizes:
    """Byte constants of a run."""

    id_bytes: tuple[int, int, int]  # one id (neurons_per_id neurons) per band
    neurons_per_id: int
    attn_layer: int  # a layer's attention weights at the placement precision
    lm_head: int
    embedding_row: int
    kv_per_token: int
    predictor_layer: int  # one layer's predictor weights (FP16)
    dram_layer: int  # one layer's FFN in DRAM: every stored precision
    stored: tuple[Precision, ...]  # precisions kept on SSD / in DRAM
    prefill_band: int  # band index prefill runs the dense FFN at
    quantized_bands: tuple[bool, bool, bool]  # band is derived on the fly (not stored)


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    cfg: M2SimConfig
    policy: PolicyConfig
    spec: ModelSpec
    layout: NeuronLayout
    sizes: Sizes
    placement: Placement
    source: Optional[ActivationSource]
    predictor: TracePredictor
    bands: ScoreBands
    hbm: HBMCachePolicy
    dram: DramCache
    preload: Preloader

    @property
    def num_layers(self) -> int:
        return self.layout.num_layers


def _sizes(cfg: M2SimConfig, policy: PolicyConfig, spec: ModelSpec, g: int) -> Sizes:
    stored = policy.stored
    id_bytes = tuple(g * spec.neuron_bytes(p) for p in BANDS)
    d, r = cfg.model.d_model, policy.predictor_rank
    predictor = 2 * (d * r + r * cfg.model.d_ff) if policy.sparse else 0
    return Sizes(
        id_bytes=id_bytes,  # type: ignore[arg-type]
        neurons_per_id=g,
        attn_layer=spec.attn_layer_bytes(policy.placement.precision),
        lm_head=spec.lm_head_bytes(policy.placement.precision),
        embedding_row=cfg.model.d_model * 2,
        kv_per_token=spec.kv_bytes_per_token(),
        predictor_layer=predictor,
        dram_layer=sum(spec.ffn_layer_bytes(p) for p in stored),
        stored=stored,
        prefill_band=BANDS.index(stored[0]),
        quantized_bands=tuple(p not in stored for p in BANDS),  # type: ignore[arg-type]
    )


def build_run(cfg: M2SimConfig, policy: PolicyConfig,
              source: Optional[ActivationSource] = None) -> Run:
    """Sizes, memory plan and fresh policies; ``source`` overrides ``cfg.trace`` (the real
    backend passes its live predictor here)."""
    spec = ModelSpec.of(cfg.model, cfg.quant)
    seed = cfg.workload.seed
    if not policy.sparse:
        source = None
    elif source is None:
        source = build_source(cfg.trace, cfg.model, seed)
    g = getattr(source, "neurons_per_id", 1) if source is not None else 1
    num_ids = cfg.model.d_ff // g
    predictor = TracePredictor(source, sparse=True) if source is not None else None
    if predictor is None:
        predictor = _dense_predictor(cfg.model.num_layers, num_ids)
    sizes = _sizes(cfg, policy, spec, g)
    L = cfg.model.num_layers
    layout = NeuronLayout(num_layers=L, num_ids=num_ids, neurons_per_id=g,
                          id_bytes=sizes.id_bytes,
                          max_active=tuple(predictor.max_active(i) for i in range(L)),
                          fracs=policy.bands.fracs)
    context = cfg.workload.prompt_tokens + cfg.workload.output_tokens
    needs = MemoryNeeds(
        hbm_usable=int(cfg.gpu.usable_bytes) - L * sizes.predictor_layer,
        kv_cache=context * sizes.kv_per_token,
        attn_layer=sizes.attn_layer, num_layers=L, lm_head=sizes.lm_head,
        embedding=spec.embedding_bytes(),
        ffn_cache=hbm_demand_bytes(policy.hbm_cache, layout),
        ffn_label=_ffn_label(policy),
        dram_usable=int(cfg.host.dram_bytes - cfg.host.os_reserved_gib * GIB),
        dram_min_ffn=dram_min_bytes(policy.dram_cache, policy.preload, num_layers=L,
                                    layer_bytes=sizes.dram_layer, layout=layout),
        ssd_capacity=int(cfg.host.ssd.capacity_bytes),
        ssd_model=L * (sizes.dram_layer + sizes.attn_layer) + spec.embedding_bytes()
        + sizes.lm_head,
    )
    placement = plan_memory(policy.placement, needs)
    bands = ScoreBands(policy.bands)
    frequency = source.neuron_frequency if source is not None else _uniform_frequency(num_ids)
    hbm = build_hbm_cache(policy.hbm_cache, layout, capacity_bytes=placement.ffn_cache_bytes,
                          frequency=frequency)
    dram = build_dram_cache(policy.dram_cache, policy.preload, layout,
                            area_bytes=placement.dram_ffn_bytes, layer_bytes=sizes.dram_layer)
    read_bytes = sizes.dram_layer + (0 if placement.dense_in_dram else sizes.attn_layer)

    def banded(token: int, layer: int) -> BandedSet:
        return bands.assign(predictor.predict(token, layer))

    preload = build_preloader(policy.preload, dram, layout, layer_read_bytes=read_bytes,
                              banded=banded, seed=seed)
    return Run(cfg=cfg, policy=policy, spec=spec, layout=layout, sizes=sizes,
               placement=placement, source=source, predictor=predictor, bands=bands, hbm=hbm,
               dram=dram, preload=preload)


class _AllNeurons:
    """Stands in for an activation source when sparsity is off."""

    def __init__(self, num_layers: int, num_ids: int):
        self.num_layers = num_layers
        self.num_neurons = num_ids


def _dense_predictor(num_layers: int, num_ids: int) -> TracePredictor:
    return TracePredictor(_AllNeurons(num_layers, num_ids), sparse=False)  # type: ignore[arg-type]


def _uniform_frequency(num_ids: int) -> Callable[[int], np.ndarray]:
    return lambda layer: np.ones(num_ids)


def _ffn_label(policy: PolicyConfig) -> str:
    if isinstance(policy.hbm_cache, ResidentConfig):
        precisions = "/".join(p.name for p in policy.bands.used)
        return f"all FFN weights ({precisions}) plus the KV cache"
    return f"the FFN neuron cache ({type(policy.hbm_cache).__name__.removesuffix('Config')})"
