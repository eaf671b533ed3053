"""Shared by the tier tests: the tiny random store's shapes and ground-truth checks."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

from m2sim.types import BANDS, Precision
from real.device_cache import DeviceNeuronCache
from real.store import Store

L, D, DFF = 2, 64, 128
FP16, INT8, INT4 = BANDS
PROPS = settings(max_examples=40, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])
CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA")])


def tiny_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = {"model.embed_tokens.weight": torch.randn(50, D, generator=g),
         "model.norm.weight": torch.rand(D, generator=g)}
    for i in range(L):
        p = f"model.layers.{i}."
        w[p + "mlp.gate_proj.weight"] = torch.randn(DFF, D, generator=g)
        w[p + "mlp.up_proj.weight"] = torch.randn(DFF, D, generator=g)
        w[p + "mlp.down_proj.weight"] = torch.randn(D, DFF, generator=g)
        w[p + "self_attn.q_proj.weight"] = torch.randn(D, D, generator=g)
        w[p + "input_layernorm.weight"] = torch.rand(D, generator=g)
    return w


def file_records(store: Store, layer: int, p: Precision) -> torch.Tensor:
    """Ground truth: the layer file read with plain Python I/O, (d_ff, record_bytes)."""
    raw = bytearray(store.ffn_path(layer, p).read_bytes())
    return torch.frombuffer(raw, dtype=torch.uint8).view(DFF, -1)


def o_direct_supported(directory) -> bool:
    probe = directory / ".odirect-probe"
    probe.write_bytes(b"\0" * 4096)
    try:
        os.close(os.open(probe, os.O_RDONLY | os.O_DIRECT))
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


def device_cache(store: Store, slots, capacity=None, device="cpu") -> DeviceNeuronCache:
    m = store.manifest
    return DeviceNeuronCache(d_model=m.d_model, ffn_mats=m.ffn_mats, quant=m.quant, slots=slots,
                             capacity_bytes=capacity, device=device)


def check_consistent(cache: DeviceNeuronCache, store: Store, layer: int, p: Precision) -> None:
    """id -> slot is a bijection onto [0, n) and every slot holds its id's record."""
    cache.synchronize()
    ids = cache.resident_ids(layer, p)
    assert len(set(ids.tolist())) == len(ids) == cache.num_resident(layer, p)
    if len(ids):
        slots = cache.slot_of(layer, p, ids).cpu()
        assert slots.tolist() == list(range(len(ids)))
        pool = cache._pools[(layer, p)][:len(ids)].cpu()
        assert torch.equal(pool, file_records(store, layer, p)[torch.from_numpy(ids)])
