"""Storing fewer precisions: smaller SSD/DRAM layers, on-the-fly quantization on the CPU."""

import pytest

from m2sim.build import build_run
from m2sim.errors import ConfigError
from m2sim.sim.engine import simulate
from m2sim.specs import ModelSpec
from m2sim.types import Precision

BASE = ["policy=m2cache", "model=tiny", "model.num_layers=6", "workload=tiny",
        "host.dram_gib=0.0016", "host.os_reserved_gib=0.001", "gpu.memory_gib=0.05",
        "gpu.reserved_gib=0.001"]


def test_fp16_only_store_reads_fp16_layers_and_quantizes_on_the_cpu(make_cfg):
    all3 = make_cfg(*BASE)
    fp16 = make_cfg(*BASE, "policy.stored_precisions=[FP16]")
    spec = ModelSpec.of(all3.model)
    assert build_run(all3, all3.policy).sizes.dram_layer == sum(
        spec.ffn_layer_bytes(p) for p in Precision)
    assert build_run(fp16, fp16.policy).sizes.dram_layer == spec.ffn_layer_bytes(Precision.FP16)
    a, b = simulate(all3), simulate(fp16)
    # same decisions in HBM (bytes over PCIe equal), more management CPU time
    assert b.summary["bytes_by_link"]["DRAM_TO_HBM"] == a.summary["bytes_by_link"]["DRAM_TO_HBM"]
    assert b.summary["busy_s"]["cpu_mgmt"] > a.summary["busy_s"]["cpu_mgmt"]
    reads_a = a.transfers[a.transfers.label == "ffn_layer"].nbytes
    reads_b = b.transfers[b.transfers.label == "ffn_layer"].nbytes
    assert reads_b.max() < reads_a.max()


def test_a_band_above_every_stored_precision_is_rejected(make_cfg):
    with pytest.raises(ConfigError, match="policy.stored_precisions"):
        make_cfg(*BASE, "policy.stored_precisions=[INT4]")
