"""Analytic checks: simulated times equal closed forms computed here from datasheet numbers."""

import math

import pytest

from m2sim.hardware import pcie_gb_per_s
from m2sim.sim.engine import simulate
from m2sim.specs import ModelSpec
from m2sim.types import Precision


def _h2d_bytes_per_s(cfg):
    gen = min(cfg.gpu.pcie_gen, cfg.host.pcie_gen)
    return pcie_gb_per_s(gen, 16) * 1e9 * cfg.host.pcie_efficiency_frac


def _gpu_s(cfg, nbytes, flops, kernels):
    g = cfg.gpu
    mem = nbytes / (g.memory_bandwidth_gb_per_s * 1e9 * g.memory_efficiency_frac)
    comp = flops / (max(g.fp16_tflops, g.fp32_tflops) * 1e12 * g.compute_efficiency_frac)
    return max(mem, comp) + kernels * cfg.sim.overheads.kernel_launch_us * 1e-6


def _layer_terms(cfg, context):
    """(attention compute, FFN compute, attention bytes, FFN bytes) of one dense FP16 layer."""
    spec = ModelSpec.of(cfg.model, cfg.quant)
    attn_b = spec.attn_layer_bytes(Precision.FP16)
    kv = context * 2 * spec.kv_dim * 2
    attn_c = _gpu_s(cfg, attn_b + kv, 2 * spec.attn_params_per_layer()
                    + 4 * spec.q_dim * context, 8)
    ffn_b = spec.ffn_layer_bytes(Precision.FP16)
    ffn_c = _gpu_s(cfg, ffn_b, 2 * spec.ffn_params_per_layer(), 3)
    return attn_c, ffn_c, attn_b, ffn_b, spec


def _lm_head_s(cfg, spec):
    return _gpu_s(cfg, spec.lm_head_bytes(Precision.FP16),
                  2 * cfg.model.vocab_size * cfg.model.d_model, 2)


def test_dense_decode_matches_the_memory_bandwidth_roofline(make_cfg):
    cfg = make_cfg("policy=dense", "model=llama2_7b", "gpu=a100_80gb", "host=server_pcie4",
                   "workload.prompt_tokens=32", "workload.output_tokens=5")
    s = simulate(cfg).summary
    expected = []
    for i in range(cfg.workload.output_tokens - 1):
        ctx = cfg.workload.prompt_tokens + i + 1
        attn_c, ffn_c, *_, spec = _layer_terms(cfg, ctx)
        expected.append(cfg.model.num_layers * (attn_c + ffn_c) + _lm_head_s(cfg, spec))
    assert s["tpot_s"] == pytest.approx(sum(expected) / len(expected), rel=1e-9)
    assert s["bytes_by_link"] == {"SSD_TO_DRAM": 0, "DRAM_TO_HBM": 0}
    # without launch overheads it is the memory roofline: weights (~13.5 GB) + a little KV over
    # 1935 GB/s x 0.8 efficiency
    no_launch = make_cfg("policy=dense", "model=llama2_7b", "gpu=a100_80gb", "host=server_pcie4",
                         "workload.prompt_tokens=32", "workload.output_tokens=5",
                         "sim.overheads.kernel_launch_us=0")
    spec = ModelSpec.of(no_launch.model)
    weights = spec.total_bytes() - spec.embedding_bytes()
    assert simulate(no_launch).summary["tpot_s"] == pytest.approx(weights / (1935e9 * 0.8),
                                                                  rel=0.002)


def test_no_overlap_run_equals_the_closed_form_sum(make_cfg):
    # Dense streaming, no prefetch, everything in DRAM after prefill, overlap disabled.
    cfg = make_cfg("policy=accelerate_offload", "model=tiny", "host=server_pcie4",
                   "gpu=t4", "workload.prompt_tokens=8", "workload.output_tokens=4",
                   "sim.overlap=false")
    s = simulate(cfg).summary
    bw, lat = _h2d_bytes_per_s(cfg), cfg.host.gpu_link_latency_s
    per_token = []
    for i in range(cfg.workload.output_tokens - 1):
        ctx = cfg.workload.prompt_tokens + i + 1
        attn_c, ffn_c, attn_b, ffn_b, spec = _layer_terms(cfg, ctx)
        layer = (lat + attn_b / bw) + (lat + ffn_b / bw) + attn_c + ffn_c
        lm = lat + spec.lm_head_bytes(Precision.FP16) / bw + _lm_head_s(cfg, spec)
        per_token.append(cfg.model.num_layers * layer + lm)
    assert s["tpot_s"] == pytest.approx(sum(per_token) / len(per_token), rel=1e-9)


@pytest.mark.parametrize("pcie_efficiency, bound", [(0.001, "link"), (1.0, "compute")])
def test_fully_overlapped_layer_costs_max_of_transfer_and_compute(make_cfg, pcie_efficiency,
                                                                  bound):
    # ZeRO-Infinity streaming with next-layer prefetch; all weights in DRAM after prefill.
    cfg = make_cfg("policy=zero_infinity", "model=tiny", "model.num_layers=12",
                   "host=server_pcie4", "gpu=t4",
                   "workload.prompt_tokens=8", "workload.output_tokens=4",
                   f"host.pcie_efficiency_frac={pcie_efficiency}",
                   "sim.overheads.kernel_launch_us=200")  # make compute visible on a tiny model
    res = simulate(cfg)
    bw, lat = _h2d_bytes_per_s(cfg), cfg.host.gpu_link_latency_s
    layers = res.layers[(res.layers.phase == "decode") & (res.layers.token >= 1)
                        & (res.layers.layer >= 3) & (res.layers.layer < cfg.model.num_layers - 1)]
    ctx = (cfg.workload.prompt_tokens + 1 + layers.token).to_numpy()
    for (row, c) in zip(layers.itertuples(), ctx):
        attn_c, ffn_c, attn_b, ffn_b, _ = _layer_terms(cfg, int(c))
        transfer = 2 * lat + (attn_b + ffn_b) / bw
        compute = attn_c + ffn_c
        assert (transfer > compute) == (bound == "link")
        assert row.end_s - row.start_s == pytest.approx(max(transfer, compute), rel=1e-9)
    assert len(layers) > 0


def test_one_ssd_read_takes_latency_waves_plus_bytes_over_bandwidth(make_cfg):
    import simpy

    from m2sim.plan import Payload, Transfer
    from m2sim.sim.hardware import Hardware
    from m2sim.types import Link

    cfg = make_cfg("model=tiny", "host=paper_3090")
    env = simpy.Environment()
    hw = Hardware(env, cfg, [])
    t = Transfer(link=Link.SSD_TO_DRAM, payload=Payload.FFN_NEURONS, layer=0, nbytes=10_000_000,
                 prefetch=False, num_requests=65)
    ev = hw.transfer(t, token=0)
    env.run(ev)
    ssd = cfg.host.ssd
    expected = math.ceil(65 / ssd.queue_depth) * ssd.read_latency_us * 1e-6 + 1e7 / 3.5e9
    assert env.now == pytest.approx(expected, rel=1e-12)


def test_predicting_after_attention_gives_up_the_load_attention_overlap(make_cfg):
    base = ["policy=mixed_precision_only", "model=tiny", "host=server_pcie4", "gpu=t4",
            "workload.prompt_tokens=8", "workload.output_tokens=6",
            "sim.overheads.kernel_launch_us=50", "host.pcie_efficiency_frac=0.02"]
    entry = simulate(make_cfg(*base)).summary["tpot_s"]
    after = simulate(make_cfg(*base, "sim.predict_after_attention=true")).summary["tpot_s"]
    assert after > entry * 1.05  # the loads no longer hide behind attention
    # with no overlap at all, the order of the same ops cannot change the total
    serial = [simulate(make_cfg(*base, "sim.overlap=false",
                                f"sim.predict_after_attention={x}")).summary["tpot_s"]
              for x in ("false", "true")]
    assert serial[0] == pytest.approx(serial[1], rel=1e-12)
