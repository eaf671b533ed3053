"""Sim/real parity: replaying the golden recorded trace, the simulator and the real backend run
the same policy code, so they move the same bytes and hit the same neurons, layer by layer.
Timings are not compared (CPU). The golden trace comes from experiments/record_tiny_trace.py."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from m2sim.cli import to_config
from m2sim.compose import CONF_DIR, load_config
from m2sim.sim.engine import simulate
from real.config import register_real_configs
from real.run import run_real
from real.tiny import save_tiny_llama

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "tiny.m2trace"
COLUMNS = ["phase", "token", "layer", "hits_fp16", "hits_int8", "hits_int4", "loads_fp16",
           "loads_int8", "loads_int4", "evicted", "want_fp16", "want_int8", "want_int4",
           "dram_miss_ids", "ssd_demand_bytes"]
# most FFN layers on "SSD": 1.6 MiB of DRAM minus 1 MiB for the OS
TIGHT = ["host.dram_gib=0.0016", "host.os_reserved_gib=0.001"]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("ckpt") / "tiny")


def _real(overrides: list[str], ckpt: Path, store: Path):
    register_real_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        d = compose(config_name="real", overrides=[
            *overrides, f"real.checkpoint={ckpt}", f"real.store_dir={store}",
            "real.measure_energy=false"])
    return run_real(to_config(d))


@pytest.mark.parametrize("policy, extra", [
    ("m2cache", TIGHT),
    ("m2cache", []),
    ("m2cache_hbm_lru", TIGHT),
    ("mixed_precision_only", TIGHT),
    ("powerinfer", []),
    ("m2cache", [*TIGHT, "policy.stored_precisions=[FP16]"]),
])
def test_replayed_trace_gives_identical_bytes_and_hits(policy, extra, tiny_ckpt, tmp_path):
    over = ["model=tiny", "workload=tiny", "workload.output_tokens=12", f"policy={policy}",
            "trace=replay", f"trace.path={GOLDEN}", *extra]
    sim = simulate(load_config(*over))
    real = _real(over, tiny_ckpt, tmp_path / "store")
    s, r = sim.summary, real.summary
    assert r["backend"] == "real" and s["backend"] == "sim"
    assert r["bytes_by_link"] == s["bytes_by_link"]
    assert r["hit_rate_by_tier"] == s["hit_rate_by_tier"]
    a = sim.layers[COLUMNS].reset_index(drop=True)
    b = real.layers[COLUMNS].reset_index(drop=True)
    assert a.equals(b)
    if extra == TIGHT or "TIGHT" in str(extra):
        pass
    # the real tiers really moved those bytes
    tiers = r["tier_stats"]
    assert tiers["device"]["bytes_moved"] >= 0
    if s["bytes_by_link"]["SSD_TO_DRAM"]:
        assert tiers["ssd"]["num_reads"] > 0
