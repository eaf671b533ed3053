"""The per-(token, layer) plan of operations that both executors consume.

A ``LayerPlan`` is data: transfers (link, bytes, requests, demand or prefetch, the ids they
carry) and computes (device, weights touched per band, bytes, FLOPs, kernels). Dependencies
are fixed by the shape of the plan and documented once here, so both executors agree:

  1. ``ssd_prefetch``, ``dense_prefetch``, ``ffn_prefetch``, ``lm_head_load`` start at once and
     run in the background; later layers wait for what they fill.
  2. ``predictor`` runs first on the GPU; ``cache_work`` (CPU: bookkeeping + gather) follows it.
  3. ``ffn_loads`` (DRAM->HBM) wait for ``cache_work`` and for this layer's data in DRAM
     (``ssd_demand`` or an earlier prefetch of the layer).
  4. ``attention`` waits for this layer's dense weights (resident, prefetched or
     ``dense_demand``); it overlaps with 3.
  5. ``ffn`` waits for 3, 4 and any FFN prefetch of this layer; ``ffn_cpu`` waits for 4 and
     runs beside ``ffn``. The layer ends when both are done; ``lm_head`` ends the token.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Optional

import numpy as np

from m2sim.policy.records import CacheUpdate
from m2sim.types import Device, Link


class Phase(Enum):
    PREFILL = "prefill"
    DECODE = "decode"


class Payload(Enum):
    FFN_LAYER = "ffn_layer"  # a whole layer's FFN (all stored precisions), SSD->DRAM
    FFN_NEURONS = "ffn_neurons"  # scattered neuron bundles of one band
    ATTN = "attn"  # a layer's attention weights
    LM_HEAD = "lm_head"


@dataclass(frozen=True, slots=True, kw_only=True)
class Transfer:
    link: Link
    payload: Payload
    layer: int
    nbytes: int
    prefetch: bool
    num_requests: int = 1
    band: Optional[int] = None  # index into BANDS for FFN_NEURONS
    ids: Optional[np.ndarray] = None  # the neuron ids carried (FFN_NEURONS, one band)
    read_ids: Optional[tuple] = None  # SSD neuron-level reads: ids per band (IdsByBand)
    evict_layers: tuple[int, ...] = ()  # SSD reads: DRAM layers dropped to make room first


@dataclass(frozen=True, slots=True, kw_only=True)
class Compute:
    device: Device
    what: str  # "predictor", "attention", "ffn", "ffn_cold", "lm_head"
    layer: int
    weights: tuple[int, int, int] = (0, 0, 0)  # weights touched per band (FP16, INT8, INT4)
    weight_bytes: int = 0  # bytes of those weights, scales included
    tokens: int = 1  # tokens processed (prompt length in prefill)
    other_bytes: int = 0  # KV cache, activations
    other_flops: float = 0.0  # FLOPs not proportional to weights (attention scores)
    num_kernels: int = 0
    # FFN ops: the ids are read out of a larger cache unit (LRU, hot set, DRAM layer), so the
    # executor gathers each band's rows first; False: the unit is exactly the active set (ATU)
    gather: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheWork:
    """CPU work of the HBM cache manager for one layer (the paper's single core)."""

    layer: int
    ids_changed: int  # ids loaded + evicted
    ids_gathered: int  # scattered bundles packed for DMA
    gather_bytes: int
    weights_quantized: int = 0  # weights quantized on the fly (band precision not stored)
    unit_loads: tuple[int, int, int] = (0, 0, 0)  # ids loaded into the cache unit, per band
    evictions: tuple[int, int, int] = (0, 0, 0)  # ids evicted from the cache unit, per band
    evicted_bytes: int = 0  # their records' bytes (the pool is kept compact by moving rows)


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerPlan:
    phase: Phase
    token: int  # decode token index (-1 in prefill)
    layer: int
    ssd_prefetch: tuple[Transfer, ...] = ()
    ssd_demand: Optional[Transfer] = None
    dense_prefetch: tuple[Transfer, ...] = ()
    dense_demand: Optional[Transfer] = None
    ffn_prefetch: tuple[Transfer, ...] = ()
    lm_head_load: Optional[Transfer] = None
    predictor: Optional[Compute] = None
    cache_work: Optional[CacheWork] = None
    ffn_loads: tuple[Transfer, ...] = ()
    ffn_prefetched: bool = False  # this layer's FFN weights were sent by an earlier ffn_prefetch
    attention: Compute
    ffn: Compute
    ffn_cpu: Optional[Compute] = None
    lm_head: Optional[Compute] = None
    update: Optional[CacheUpdate] = None
    want: tuple[int, int, int] = (0, 0, 0)  # active ids per band
    want_ids: Optional[tuple] = None  # the active ids per band (IdsByBand), decode only
    dram_miss_ids: int = 0  # active ids whose data had to be read from SSD on demand
    dense_resident: bool = True  # attention weights already in HBM
    dense_via_ssd: bool = False  # streamed attention lives with its layer on SSD
