"""The root config of m2sim and its registration with Hydra's ConfigStore.

Schemas are dataclasses defined beside the code that consumes them; YAML files in ``conf/``
hold values. ``register_configs()`` stores every schema as ``base_<name>`` (each YAML option
extends one); the entry point calls it once, then converts the composed ``DictConfig`` with
``OmegaConf.to_object`` -- the only place a ``DictConfig`` exists. ``__post_init__`` methods
only check values (cross-field checks live in ``M2SimConfig``); configs are never mutated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from m2sim.carbon.config import CarbonConfig, register_carbon_configs
from m2sim.cost import OverheadConfig
from m2sim.errors import ConfigError, check_range
from m2sim.hardware import GPUConfig, HostConfig, SSDConfig
from m2sim.policy.all_in_dram import AllInDramConfig
from m2sim.policy.atu import ATUConfig
from m2sim.policy.config import PolicyConfig
from m2sim.policy.layer_lru import LayerLRUConfig
from m2sim.policy.layer_window import LayerWindowConfig
from m2sim.policy.lru import LRUConfig, WindowConfig
from m2sim.policy.neuron_window import NeuronWindowConfig
from m2sim.policy.preload import (
    LayerLookaheadConfig,
    NeuronLookaheadConfig,
    OnDemandConfig,
    preload_depth,
)
from m2sim.policy.static_hot import StaticHotConfig
from m2sim.policy.streaming import ResidentConfig, StreamingConfig
from m2sim.specs import ModelConfig, QuantConfig
from m2sim.trace import ReplayTraceConfig, SyntheticTraceConfig, TraceConfig
from m2sim.workload import WorkloadConfig

DEFAULT_COMPARE = ["m2cache", "zero_infinity", "accelerate_offload", "dense", "uniform_int4",
                   "powerinfer", "flash_window"]


@dataclass
class SimConfig:
    overheads: OverheadConfig = field(default_factory=OverheadConfig)
    overlap: bool = True  # False: every op waits for the previous one (no I/O-compute overlap)
    # False (paper §5.3): the predictor scores layer l at its entry, so the HBM cache's loads
    # overlap attention. True: it reads the FFN input after attention (as m2real does).
    predict_after_attention: bool = False
    # False: the active sets are replayed from a recorded trace with no predictor running
    # (m2real with real.predictor=TRACE), so the predictor's kernels cost nothing.
    charge_predictor: bool = True
    # True: the host sends FFN weights ahead (streaming prefetch) in plan order and waits for
    # each -- first for its layer to be in DRAM, then for the copy -- before going on with the
    # layer that sends it (m2real's executor). False: those loads run in the background.
    blocking_ffn_prefetch: bool = False
    # True: one host thread issues every kernel, copy and cache update and waits for each
    # (m2real's executor): GPU, DRAM->HBM link and management core are one server, only SSD
    # reads run beside it. A CPU-only profile (gpu.is_host_cpu) implies it.
    single_host_thread: bool = False
    chrome_trace: bool = False  # also write timeline.json (Chrome/Perfetto trace events)
    progress: bool = True  # progress bar on runs of many tokens (stderr)
    parquet: bool = True  # write tables as parquet besides CSV


@dataclass
class M2SimConfig:
    gpu: GPUConfig = MISSING
    host: HostConfig = MISSING
    model: ModelConfig = MISSING
    workload: WorkloadConfig = MISSING
    policy: Optional[PolicyConfig] = None  # None: run every preset in ``compare``
    trace: TraceConfig = MISSING  # the `trace` group (conf: synthetic); a subclass of TraceConfig
    quant: QuantConfig = field(default_factory=QuantConfig)
    carbon: CarbonConfig = field(default_factory=CarbonConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    compare: list[str] = field(default_factory=lambda: list(DEFAULT_COMPARE))

    def __post_init__(self) -> None:
        m, w = self.model, self.workload
        context = w.prompt_tokens + w.output_tokens
        if context > m.max_context:
            raise ConfigError("workload.output_tokens",
                              f"prompt_tokens + output_tokens = {context} exceeds the context of "
                              f"{m.name} (allowed: <= {m.max_context})")
        if self.policy is not None:
            check_policy_against_model(self.policy, self)


def check_policy_against_model(p: PolicyConfig, cfg: M2SimConfig) -> None:
    """Checks that need the policy and the model or hardware together."""
    L = cfg.model.num_layers
    depth = preload_depth(p.preload)
    check_range("policy.preload.depth", depth, 0, L - 1)
    d = p.dram_cache
    if isinstance(d, LayerWindowConfig):
        check_range("policy.dram_cache.fixed_layers", d.fixed_layers, 0, L, optional=True)
        check_range("policy.dram_cache.window_layers", d.window_layers, depth + 1, L,
                    optional=True)
    if isinstance(d, LayerLRUConfig):
        check_range("policy.dram_cache.capacity_layers", d.capacity_layers, 1, L, optional=True)
    h = p.hbm_cache
    if isinstance(h, StaticHotConfig) and h.capacity_gib is None and not p.placement.dense_first:
        raise ConfigError("policy.hbm_cache.capacity_gib",
                          "is required unless policy.placement.dense_first=true (allowed: a "
                          "size in GiB, or null to fill what dense weights placed first leave)")
    if isinstance(h, StaticHotConfig) and h.capacity_gib is not None:
        check_range("policy.hbm_cache.capacity_gib", h.capacity_gib, 0, cfg.gpu.memory_gib,
                    lo_open=True)
    if isinstance(h, StreamingConfig):
        check_range("policy.hbm_cache.prefetch_layers", h.prefetch_layers, 0, L - 1)
    check_range("policy.placement.prefetch_layers", p.placement.prefetch_layers, 0, L - 1)
    if cfg.workload.seed < 0:
        raise ConfigError("workload.seed", "must be >= 0")


def register_configs(cs: Optional[ConfigStore] = None) -> None:
    """Store every schema in Hydra's ConfigStore (call once, from the entry point or tests)."""
    cs = cs or ConfigStore.instance()
    cs.store(name="base_m2sim", node=M2SimConfig)
    cs.store(group="gpu", name="base_gpu", node=GPUConfig)
    cs.store(group="host", name="base_host", node=HostConfig)
    cs.store(group="host/ssd", name="base_ssd", node=SSDConfig)
    cs.store(group="sim/overheads", name="base_overheads", node=OverheadConfig)
    cs.store(group="model", name="base_model", node=ModelConfig)
    cs.store(group="workload", name="base_workload", node=WorkloadConfig)
    cs.store(group="trace", name="base_synthetic", node=SyntheticTraceConfig)
    cs.store(group="trace", name="base_replay", node=ReplayTraceConfig)
    cs.store(group="policy", name="base_policy", node=PolicyConfig)
    for name, node in [("base_atu", ATUConfig), ("base_lru", LRUConfig),
                       ("base_window", WindowConfig), ("base_static_hot", StaticHotConfig),
                       ("base_streaming", StreamingConfig), ("base_resident", ResidentConfig)]:
        cs.store(group="policy/hbm_cache", name=name, node=node)
    for name, node in [("base_layer_window", LayerWindowConfig),
                       ("base_layer_lru", LayerLRUConfig), ("base_all_in_dram", AllInDramConfig),
                       ("base_neuron_window", NeuronWindowConfig)]:
        cs.store(group="policy/dram_cache", name=name, node=node)
    for name, node in [("base_layer_lookahead", LayerLookaheadConfig),
                       ("base_neuron_lookahead", NeuronLookaheadConfig),
                       ("base_on_demand", OnDemandConfig)]:
        cs.store(group="policy/preload", name=name, node=node)
    register_carbon_configs(cs)


__all__ = ["M2SimConfig", "SimConfig", "register_configs", "TraceConfig"]
