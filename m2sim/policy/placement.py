"""Dense-weight placement and the memory plan of a run (DECISION, m2cache.md).

Attention projections and the LM head are resident in HBM while they fit after the FFN cache,
KV cache and workspace are reserved; the rest is streamed per layer with look-ahead prefetch,
optionally stored at INT8/INT4. Streamed dense weights are pinned in DRAM when the DRAM budget
allows (else read from SSD with their layer). The token-embedding table stays in DRAM (a lookup
copies one row). ``dense_first`` reverses the HBM order for PowerInfer-style policies, whose hot
neurons fill whatever the dense weights leave.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Optional

from m2sim.errors import DoesNotFit, check_range
from m2sim.types import Precision


class DenseMode(Enum):
    AUTO = "auto"  # resident while it fits, streamed otherwise
    RESIDENT = "resident"  # everything resident; refuse if it does not fit
    STREAMED = "streamed"  # everything streamed every token (ZeRO-Infinity)


@dataclass
class PlacementConfig:
    mode: DenseMode = DenseMode.AUTO
    precision: Precision = Precision.FP16  # storage precision of attention and LM head
    prefetch_layers: int = 1  # streamed attention is copied this many layers ahead
    dense_first: bool = False  # place dense weights in HBM before the FFN cache

    def __post_init__(self) -> None:
        check_range("policy.placement.prefetch_layers", self.prefetch_layers, 0, 8)


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryNeeds:
    """Sizes the memory plan is made from (bytes)."""

    hbm_usable: int
    kv_cache: int
    attn_layer: int
    num_layers: int
    lm_head: int
    embedding: int
    ffn_cache: Optional[int]  # None: fill what the dense weights leave
    ffn_label: str = "the FFN neuron cache"  # how errors name ffn_cache
    dram_usable: int
    dram_min_ffn: int  # smallest DRAM FFN area the policy can run with
    ssd_capacity: int
    ssd_model: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Placement:
    attn_resident: tuple[bool, ...]  # per layer
    lm_head_resident: bool
    dense_in_dram: bool  # streamed dense weights pinned in DRAM (else read with their layer)
    ffn_cache_bytes: int  # HBM given to the FFN neuron cache, all layers
    hbm_bytes: dict  # breakdown of the HBM plan: kv, ffn_cache, attn, lm_head, scratch
    dram_ffn_bytes: int  # DRAM left for FFN layers / neurons
    dram_bytes: dict  # breakdown of the DRAM plan

    @property
    def num_attn_resident(self) -> int:
        return sum(self.attn_resident)


def plan_memory(cfg: PlacementConfig, n: MemoryNeeds) -> Placement:
    free = n.hbm_usable - n.kv_cache
    if free < 0:
        raise DoesNotFit("the KV cache", "HBM", n.kv_cache, n.hbm_usable)
    ffn = n.ffn_cache
    if not cfg.dense_first:
        if ffn is None:
            raise ValueError("ffn_cache=None needs dense_first")
        if ffn > free:
            raise DoesNotFit(n.ffn_label, "HBM", ffn + n.kv_cache, n.hbm_usable)
        free -= ffn
    resident, lm_res, scratch, free = _place_dense(cfg, n, free)
    if cfg.dense_first:
        if ffn is None:
            ffn = max(free, 0)
        elif ffn > free:
            raise DoesNotFit(n.ffn_label, "HBM", n.hbm_usable - free + ffn,
                             n.hbm_usable)
    streamed_dense = (n.num_layers - sum(resident)) * n.attn_layer + (0 if lm_res else n.lm_head)
    dram_free = n.dram_usable - n.embedding
    dense_in_dram = dram_free - streamed_dense >= n.dram_min_ffn
    if dense_in_dram:
        dram_free -= streamed_dense
    if dram_free < n.dram_min_ffn:
        raise DoesNotFit("the DRAM FFN area (embedding + the minimum layer window)", "DRAM",
                         n.dram_usable - dram_free + n.dram_min_ffn, n.dram_usable)
    if n.ssd_model > n.ssd_capacity:
        raise DoesNotFit("the stored model", "SSD", n.ssd_model, n.ssd_capacity)
    attn_res_bytes = sum(resident) * n.attn_layer
    return Placement(
        attn_resident=tuple(resident), lm_head_resident=lm_res, dense_in_dram=dense_in_dram,
        ffn_cache_bytes=int(ffn),
        hbm_bytes={"kv_cache": n.kv_cache, "ffn_cache": int(ffn), "attn": attn_res_bytes,
                   "lm_head": n.lm_head if lm_res else 0, "scratch": scratch},
        dram_ffn_bytes=int(dram_free),
        dram_bytes={"embedding": n.embedding,
                    "dense_pinned": streamed_dense if dense_in_dram else 0,
                    "ffn_area": int(dram_free)},
    )


def _place_dense(cfg: PlacementConfig, n: MemoryNeeds, free: int):
    """Resident layers, LM head residency, scratch bytes, and what HBM is left."""
    stream_scratch = (1 + cfg.prefetch_layers) * n.attn_layer
    if cfg.mode is DenseMode.STREAMED:
        scratch = stream_scratch + n.lm_head
        if scratch > free:
            raise DoesNotFit("the streaming buffers for dense weights", "HBM",
                             n.hbm_usable - free + scratch, n.hbm_usable)
        return [False] * n.num_layers, False, scratch, free - scratch
    all_dense = n.num_layers * n.attn_layer + n.lm_head
    if all_dense <= free:
        return [True] * n.num_layers, True, 0, free - all_dense
    if cfg.mode is DenseMode.RESIDENT:
        raise DoesNotFit("all dense weights (attention + LM head)", "HBM",
                         n.hbm_usable - free + all_dense, n.hbm_usable)
    # AUTO: LM head first (used every token, once), then attention layers while they fit,
    # keeping streaming buffers for the layers that do not.
    lm_res = n.lm_head + stream_scratch <= free
    if lm_res:
        free -= n.lm_head
    scratch = stream_scratch + (0 if lm_res else n.lm_head)
    if scratch > free:
        raise DoesNotFit("the streaming buffers for dense weights", "HBM",
                         n.hbm_usable - free + scratch, n.hbm_usable)
    free -= scratch
    k = min(n.num_layers, free // n.attn_layer) if n.attn_layer else n.num_layers
    free -= k * n.attn_layer
    resident = [i < k for i in range(n.num_layers)]
    return resident, lm_res, scratch, free
