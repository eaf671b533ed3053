"""Property tests over random small scenarios: capacity, conservation, monotonicity."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m2sim.compose import load_config as compose_cfg
from m2sim.errors import DoesNotFit
from m2sim.sim.engine import simulate

POLICIES = ["m2cache", "zero_infinity", "accelerate_offload", "dense", "uniform_int4",
            "powerinfer", "flash_window", "m2cache_hbm_lru", "m2cache_dram_lru",
            "m2cache_neuron_preload", "mixed_precision_only"]

scenario = st.fixed_dictionaries({
    "policy": st.sampled_from(POLICIES),
    "layers": st.integers(3, 6),
    "d_ff": st.sampled_from([128, 256, 512]),
    "gpu_gib": st.floats(0.003, 0.05),
    "dram_gib": st.floats(0.003, 0.05),
    "pcie_eff": st.floats(0.05, 1.0),
    "ssd_gb_s": st.floats(0.1, 10.0),
    "seed": st.integers(0, 5),
})


def _cfg(s, **extra):
    over = [f"policy={s['policy']}", "model=tiny", f"model.num_layers={s['layers']}",
            f"model.d_ff={s['d_ff']}", "workload=tiny", f"workload.seed={s['seed']}",
            f"gpu.memory_gib={s['gpu_gib']}", "gpu.reserved_gib=0.001",
            f"host.dram_gib={s['dram_gib']}", "host.os_reserved_gib=0.001",
            f"host.pcie_efficiency_frac={s['pcie_eff']}",
            f"host.ssd.seq_read_gb_per_s={s['ssd_gb_s']}", "sim.parquet=false"]
    over += [f"{k}={v}" for k, v in extra.items()]
    return compose_cfg(*over)


def _run(cfg):
    try:
        return simulate(cfg)
    except DoesNotFit:
        return None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario)
def test_no_tier_ever_exceeds_its_capacity(s):
    cfg = _cfg(s)
    res = _run(cfg)  # the run itself raises InvariantError if a tier overflows
    if res is None:
        return
    peak = res.summary["peak_bytes_by_tier"]
    assert peak["hbm"] <= cfg.gpu.memory_bytes
    assert peak["dram"] <= cfg.host.dram_bytes


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario)
def test_bytes_moved_equal_what_the_policies_decided(s):
    cfg = _cfg(s)
    res = _run(cfg)
    if res is None:
        return
    dec = res.layers[res.layers.phase == "decode"]
    t = res.transfers
    ffn = t[(t.server == "DRAM_TO_HBM") & (t.label == "ffn_neurons") & (t.token >= 0)]
    from m2sim.build import build_run

    id_bytes = build_run(cfg, cfg.policy).sizes.id_bytes
    loads = dec[["loads_fp16", "loads_int8", "loads_int4"]].to_numpy()
    decided = int((loads * np.array(id_bytes)).sum())
    assert int(ffn.nbytes.sum()) == decided
    summary = res.summary["bytes_by_link"]
    assert summary["DRAM_TO_HBM"] == int(t.nbytes[t.server == "DRAM_TO_HBM"].sum())
    assert summary["SSD_TO_DRAM"] == int(t.nbytes[t.server == "SSD_TO_DRAM"].sum())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario, st.floats(1.0, 8.0), st.sampled_from(["pcie", "ssd"]))
def test_a_faster_link_never_makes_a_run_slower(s, factor, which):
    slow = _run(_cfg(s))
    if slow is None:
        return
    faster = dict(s)
    if which == "pcie":
        faster["pcie_eff"] = min(1.0, s["pcie_eff"] * factor)
    else:
        faster["ssd_gb_s"] = s["ssd_gb_s"] * factor
    fast = _run(_cfg(faster))
    assert fast is not None
    assert fast.summary["total_s"] <= slow.summary["total_s"] * (1 + 1e-9)


def test_same_seed_gives_identical_results():
    s = {"policy": "m2cache", "layers": 3, "d_ff": 256, "gpu_gib": 0.05, "dram_gib": 0.006,
         "pcie_eff": 0.5, "ssd_gb_s": 1.0, "seed": 4}
    a, b = simulate(_cfg(s)), simulate(_cfg(s))
    assert a.summary == b.summary
    assert a.layers.equals(b.layers) and a.transfers.equals(b.transfers)
    c = simulate(_cfg({**s, "seed": 5}))
    assert not c.layers.equals(a.layers)


def test_interleaved_runs_do_not_interact():
    import simpy  # noqa: F401  (a second simulation in the same process)

    s = {"policy": "m2cache", "layers": 3, "d_ff": 256, "gpu_gib": 0.05, "dram_gib": 0.006,
         "pcie_eff": 0.5, "ssd_gb_s": 1.0, "seed": 1}
    solo = simulate(_cfg(s)).summary
    simulate(_cfg({**s, "seed": 2, "policy": "flash_window"}))
    assert simulate(_cfg(s)).summary == solo


@pytest.mark.parametrize("dram_gib", [0.02, 0.0016])  # roomy; and most layers on SSD
@pytest.mark.parametrize("policy", POLICIES)
def test_every_preset_runs_on_a_tiny_model(policy, dram_gib):
    s = {"policy": policy, "layers": 6, "d_ff": 256, "gpu_gib": 0.05, "dram_gib": dram_gib,
         "pcie_eff": 0.8, "ssd_gb_s": 3.0, "seed": 0}
    res = simulate(_cfg(s))
    assert res.summary["tokens_per_s"] > 0
    ssd_bytes = res.summary["bytes_by_link"]["SSD_TO_DRAM"]
    if policy in ("dense", "uniform_int4", "powerinfer"):  # never reads the SSD while serving
        assert ssd_bytes == 0
    elif dram_gib < 0.01:
        assert ssd_bytes > 0
