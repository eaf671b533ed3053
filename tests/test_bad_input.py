"""Bad input through the real command: a clear error naming the field (and what is allowed),
a non-zero exit, no traceback, and nothing written to the run directory.

Every case runs as its own ``python -m m2sim`` process; the processes run concurrently (one
fixture), then one test per case checks its outcome.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import result_files, run_cli

TINY = ("policy=m2cache", "model=tiny", "workload=tiny")

# id: (overrides, field the error must name, other text it must contain, e.g. the allowed range)
CASES: dict[str, tuple[tuple[str, ...], str, tuple[str, ...]]] = {
    # negative or zero sizes and bandwidths
    "gpu_memory_negative": (("gpu.memory_gib=-1",), "gpu.memory_gib", ("0 < memory_gib",)),
    "gpu_bandwidth_zero": (("gpu.memory_bandwidth_gb_per_s=0",),
                           "gpu.memory_bandwidth_gb_per_s", ("0 <",)),
    "dram_negative": (("host.dram_gib=-4",), "host.dram_gib", ("0 < dram_gib",)),
    "ssd_bandwidth_zero": (("host.ssd.seq_read_gb_per_s=0",), "host.ssd.seq_read_gb_per_s",
                           ("0 <",)),
    "output_tokens_zero": (("workload.output_tokens=0",), "workload.output_tokens", ("1 <=",)),
    "gpu_memory_nan": (("gpu.memory_gib=nan",), "gpu.memory_gib", ("finite",)),
    # fractions outside [0, 1]; bands not summing to 1
    "pcie_efficiency_above_1": (("host.pcie_efficiency_frac=1.5",), "host.pcie_efficiency_frac",
                                ("<= 1",)),
    "active_frac_above_1": (("model.active_frac=1.5",), "model.active_frac", ("<= 1",)),
    "overlap_frac_above_1": (("trace.overlap_frac=1.2",), "trace.overlap_frac", ("<= 1",)),
    "predictor_recall_zero": (("trace.predictor_recall=0",), "trace.predictor_recall",
                              ("0 < predictor_recall",)),
    "bands_sum_above_1": (("policy.bands.fp16_frac=0.5",), "policy.bands", ("must be 1",)),
    "band_negative": (("policy.bands.fp16_frac=1.0", "policy.bands.int4_frac=-0.5"),
                      "policy.bands.int4_frac", ("0.0 <= int4_frac <= 1.0",)),
    # look-ahead deeper than the (4-layer) model
    "preload_deeper_than_model": (("policy.preload.depth=10",), "policy.preload.depth",
                                  ("<= 3",)),
    "streaming_prefetch_deeper_than_model": (("policy=zero_infinity",
                                              "policy.hbm_cache.prefetch_layers=6"),
                                             "policy.hbm_cache.prefetch_layers", ("<= 3",)),
    "placement_prefetch_deeper_than_model": (("policy.placement.prefetch_layers=4",),
                                             "policy.placement.prefetch_layers", ("<= 3",)),
    "window_not_deeper_than_preload": (("policy.dram_cache.window_layers=1",),
                                       "policy.dram_cache.window_layers", ("3 <=",)),
    # caches larger than their tier (or than the model)
    "fixed_layers_above_model": (("policy.dram_cache.fixed_layers=9",),
                                 "policy.dram_cache.fixed_layers", ("<= 4",)),
    "dram_lru_above_model": (("policy/dram_cache=layer_lru",
                              "policy.dram_cache.capacity_layers=100"),
                             "policy.dram_cache.capacity_layers", ("<= 4",)),
    "hot_cache_above_gpu": (("policy=powerinfer", "policy.hbm_cache.capacity_gib=100"),
                            "policy.hbm_cache.capacity_gib", ("<= 24",)),
    "hot_cache_without_size_or_dense_first": (("policy/hbm_cache=static_hot",),
                                              "policy.hbm_cache.capacity_gib",
                                              ("dense_first",)),
    "gpu_reserve_above_memory": (("gpu.reserved_gib=30",), "gpu.reserved_gib", ("< 24",)),
    "os_reserve_above_dram": (("host.os_reserved_gib=64",), "host.os_reserved_gib", ("< 64",)),
    "context_above_model": (("workload.prompt_tokens=600",), "workload.output_tokens",
                            ("512",)),
    "cluster_not_dividing_d_ff": (("trace.cluster_neurons=3",), "trace.cluster_neurons",
                                  ("d_ff=256",)),
    # unknown options and unknown keys
    "unknown_policy": (("policy=nope",), "policy", ("nope", "m2cache")),
    "unknown_key": (("policy.bogus=1",), "policy.bogus", ("PolicyConfig",)),
    "appended_unknown_key": (("+policy.bands.fp17_frac=1",), "policy.bands.fp17_frac",
                             ("int8_frac",)),
    "unknown_enum_name": (("policy.placement.precision=INT3",), "policy.placement.precision",
                          ("INT8",)),
    "missing_trace_path": (("trace=replay",), "trace.path", ("missing",)),
    "unknown_compare_preset": (("~policy", "compare=[m2cache,nope]"), "compare",
                               ("nope", "zero_infinity")),
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("bad")

    def one(case: str):
        overrides, _, _ = CASES[case]
        run_dir = root / case
        args = [*TINY, *overrides]
        if "~policy" in args:  # compare mode: drop the policy
            args = [a for a in args if not a.startswith(("~policy", "policy="))]
        r = run_cli(*args, f"hydra.run.dir={run_dir}")
        return case, r, run_dir

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return {case: (r, d) for case, r, d in pool.map(one, CASES)}


def test_enough_cases():
    assert len(CASES) >= 25


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused(case, outcomes):
    _, field, expect = CASES[case]
    r, run_dir = outcomes[case]
    out = r.stdout + r.stderr
    assert r.returncode != 0, f"accepted: {out}"
    assert "Traceback" not in out
    assert field in r.stderr
    for text in expect:
        assert text in r.stderr, f"{text!r} not in {r.stderr!r}"
    assert result_files(Path(run_dir)) == []
    if r.returncode == 2:  # m2sim's own checks: exactly one line
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert r.stderr.startswith(f"m2sim: error: {field}")
