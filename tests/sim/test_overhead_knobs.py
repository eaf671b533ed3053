"""Exact-time checks of the knobs a machine profile sets (sim-to-real, issue 5): each adds
exactly its closed form, and each is off by default (existing behaviour unchanged)."""

import dataclasses

import pytest
import simpy

from m2sim.cost import OverheadConfig, gpu_roofline, mgmt_s
from m2sim.hardware import PCIE_GB_PER_S_PER_LANE
from m2sim.plan import Compute, Payload, Transfer
from m2sim.sim.engine import simulate
from m2sim.sim.hardware import Hardware
from m2sim.types import Device, Link, Precision

TINY = ["model=tiny", "workload=tiny", "gpu=t4", "host=server_pcie4"]


def _op(what="ffn", weights=(1000, 2000, 3000), **kw):
    return Compute(device=Device.GPU, what=what, layer=0, weights=weights,
                   weight_bytes=kw.pop("weight_bytes", 4000), **kw)


def test_new_knobs_are_off_by_default():
    ov = OverheadConfig()
    assert (ov.attention_us, ov.ffn_us, ov.ffn_band_us, ov.lm_head_us, ov.layer_us) == (0,) * 5
    assert (ov.unit_load_per_band_us, ov.unit_load_per_id_ns, ov.evict_per_band_us,
            ov.evict_per_id_ns) == (0,) * 4
    assert ov.ffn_gather_per_band_us is None and ov.staged_gather
    assert ov.ssd_busy_host_slowdown_frac == 0 and ov.host_busy_ssd_slowdown_frac == 0


def _machine(make_cfg, *overrides):
    """A modelled machine, its log, and one 4 MB layer read with its full-speed seconds."""
    env = simpy.Environment()
    log: list = []
    hw = Hardware(env, make_cfg(*overrides), log)
    t = Transfer(link=Link.SSD_TO_DRAM, payload=Payload.FFN_LAYER, layer=1, nbytes=4 * 10**6,
                 prefetch=True)
    return env, log, hw, t, hw.transfer_s(t)


def _host_job(hw, env, at_s, service_s, label):
    def go():
        yield env.timeout(at_s)
        yield hw.mgmt.submit(service_s, label=label, role="CPU_MGMT")
    env.process(go())


def test_host_jobs_that_start_while_an_ssd_read_is_in_flight_are_stretched(make_cfg):
    env, log, hw, t, read_s = _machine(make_cfg, *TINY, "gpu.is_host_cpu=true",
                                       "sim.overheads.ssd_busy_host_slowdown_frac=0.5")
    hw.transfer(t, 0)  # in flight over [0, read_s)
    _host_job(hw, env, 0.0, 1e-4, "during")  # starts with the read: 1.5x
    _host_job(hw, env, read_s + 1e-3, 1e-4, "after")  # starts once the SSD is idle: 1x
    env.run()
    took = {r.label: r.end_s - r.start_s for r in log if r.server == "CPU_MGMT"}
    assert took["during"] == pytest.approx(1.5e-4, rel=1e-12)
    assert took["after"] == pytest.approx(1e-4, rel=1e-12)
    assert hw.mgmt.busy_s == pytest.approx(2.5e-4, rel=1e-12)  # busy time is the stretched time
    ssd = [r for r in log if r.server == Link.SSD_TO_DRAM.name]
    assert ssd[0].end_s - ssd[0].start_s == pytest.approx(read_s, rel=1e-12)  # link unchanged
    assert hw.mgmt is hw.gpu  # a CPU-only profile: the compute thread itself is stretched


def test_a_host_job_is_stretched_only_while_the_read_lasts(make_cfg):
    # 1.5x slower while the read runs over [0, R): a job of J > R/1.5 starting with it has done
    # R/1.5 when the read ends and the rest at full speed: it ends at R + J - R/1.5
    env, log, hw, t, read_s = _machine(make_cfg, *TINY, "gpu.is_host_cpu=true",
                                       "sim.overheads.ssd_busy_host_slowdown_frac=0.5")
    hw.transfer(t, 0)
    _host_job(hw, env, 0.0, read_s, "spans")
    env.run()
    (job,) = [r for r in log if r.label == "spans"]
    assert job.end_s == pytest.approx(read_s + read_s - read_s / 1.5, rel=1e-12)


def test_ssd_reads_are_slower_while_a_host_thread_is_busy(make_cfg):
    # 2x slower while the compute thread works over [0, H): the read of R > H/2 ends at
    # H + (R - H/2); the host job itself keeps its time (the other knob is off)
    env, log, hw, t, read_s = _machine(make_cfg, *TINY, "gpu.is_host_cpu=true",
                                       "sim.overheads.host_busy_ssd_slowdown_frac=1.0")
    host_s = read_s / 2
    _host_job(hw, env, 0.0, host_s, "compute")
    hw.transfer(t, 0)
    env.run()
    took = {r.label: r.end_s - r.start_s for r in log}
    assert took["compute"] == pytest.approx(host_s, rel=1e-12)
    assert took[Payload.FFN_LAYER.value] == pytest.approx(host_s + read_s - host_s / 2,
                                                          rel=1e-12)
    assert hw.links[Link.SSD_TO_DRAM].busy_s == pytest.approx(took[Payload.FFN_LAYER.value])


def _ssd_read(hw, env, at_s, t, token):
    def go():
        yield env.timeout(at_s)
        yield hw.transfer(t, token)
    env.process(go())


def test_a_read_with_none_queued_behind_it_is_slower(make_cfg):
    # lone reads 1.5x: of two reads asked for together the first has the second waiting behind
    # it (full speed, R) and the second is alone (1.5 R); a third, asked for at 0.5 R after the
    # second has finished, is alone too
    env, log, hw, t, r = _machine(make_cfg, *TINY, "host.ssd.lone_read_slowdown_frac=0.5")
    hw.transfer(t, 0)
    hw.transfer(t, 1)
    _ssd_read(hw, env, 3 * r, t, 2)
    env.run()
    ends = {rec.token: (rec.start_s, rec.end_s) for rec in log}
    assert ends[0] == pytest.approx((0.0, r), rel=1e-12)
    assert ends[1] == pytest.approx((r, 2.5 * r), rel=1e-12)
    assert ends[2] == pytest.approx((3 * r, 4.5 * r), rel=1e-12)


def test_a_lone_read_speeds_up_when_another_queues_behind_it(make_cfg):
    # alone over [0, R/2): R/3 done at 1/1.5 speed; the rest, 2R/3, at full speed
    env, log, hw, t, r = _machine(make_cfg, *TINY, "host.ssd.lone_read_slowdown_frac=0.5")
    hw.transfer(t, 0)
    _ssd_read(hw, env, r / 2, t, 1)
    env.run()
    first = [rec for rec in log if rec.token == 0][0]
    assert first.end_s == pytest.approx(r / 2 + 2 * r / 3, rel=1e-12)


def test_without_the_knob_host_jobs_beside_ssd_reads_keep_their_time(make_cfg):
    env, log, hw, t, _ = _machine(make_cfg, *TINY)
    hw.transfer(t, 0)
    _host_job(hw, env, 0.0, 1e-4, "during")
    env.run()
    assert [r.end_s - r.start_s for r in log if r.label == "during"] == \
        pytest.approx([1e-4], rel=1e-12)


def test_ssd_contention_slows_an_ssd_bound_host_cpu_run(make_cfg):
    over = [*TINY, "policy=m2cache", "policy.dram_cache.fixed_layers=0", "gpu.is_host_cpu=true"]
    a = simulate(make_cfg(*over)).summary
    b = simulate(make_cfg(*over, "sim.overheads.ssd_busy_host_slowdown_frac=1.0")).summary
    assert a["bytes_by_link"] == b["bytes_by_link"] and b["bytes_by_link"]["SSD_TO_DRAM"] > 0
    assert b["tpot_s"] > a["tpot_s"]
    # the reads all happen before decode (every layer stays in DRAM): decode is not stretched
    dram = [*TINY, "policy=m2cache", "gpu.is_host_cpu=true"]
    c = simulate(make_cfg(*dram)).summary
    d = simulate(make_cfg(*dram, "sim.overheads.ssd_busy_host_slowdown_frac=1.0")).summary
    assert d["tpot_s"] == c["tpot_s"]


@pytest.mark.parametrize("knob", ["sim.overheads.ssd_busy_host_slowdown_frac",
                                  "sim.overheads.host_busy_ssd_slowdown_frac",
                                  "host.ssd.lone_read_slowdown_frac"])
def test_a_negative_slowdown_is_refused_with_the_field_named(make_cfg, knob):
    with pytest.raises(Exception, match=knob):
        make_cfg(*TINY, f"{knob}=-0.1")


def test_read_contention_slows_an_ssd_bound_host_cpu_run(make_cfg):
    over = [*TINY, "policy=m2cache", "policy.dram_cache.fixed_layers=0", "gpu.is_host_cpu=true"]
    a = simulate(make_cfg(*over)).summary
    b = simulate(make_cfg(*over, "sim.overheads.host_busy_ssd_slowdown_frac=1.0")).summary
    assert a["bytes_by_link"] == b["bytes_by_link"]
    assert b["busy_s"]["SSD_TO_DRAM"] > a["busy_s"]["SSD_TO_DRAM"]
    assert b["tpot_s"] > a["tpot_s"]


def test_op_fixed_costs_add_exactly(make_cfg):
    g = make_cfg(*TINY).gpu
    base = OverheadConfig()
    ov = OverheadConfig(attention_us=300, ffn_us=20, ffn_band_us=100, lm_head_us=4000)
    d = {w: gpu_roofline(_op(w), g, ov)[0] - gpu_roofline(_op(w), g, base)[0]
         for w in ("attention", "ffn", "lm_head", "predictor")}
    assert d["attention"] == pytest.approx(300e-6, rel=1e-12)
    assert d["ffn"] == pytest.approx((20 + 3 * 100) * 1e-6, rel=1e-12)
    assert d["lm_head"] == pytest.approx(4000e-6, rel=1e-12)
    assert d["predictor"] == 0.0
    two = _op("ffn", weights=(1000, 0, 3000))
    assert gpu_roofline(two, g, ov)[0] - gpu_roofline(two, g, base)[0] == pytest.approx(220e-6)


def test_separate_dequant_pass_adds_per_weight_on_ffn_ops_only(make_cfg):
    g = make_cfg(*TINY).gpu
    ov = OverheadConfig()
    gp = dataclasses.replace(g, fp16_dequant_ns_per_weight=0.5, int8_dequant_ns_per_weight=1.0,
                             int4_dequant_ns_per_weight=2.0)
    # the pass replaces the in-kernel ALU dequantization: compare with it switched off
    g0 = dataclasses.replace(g, fp16_dequant_ns_per_weight=0.0, int8_dequant_ns_per_weight=0.0,
                             int4_dequant_ns_per_weight=0.0)
    ffn = _op("ffn")
    extra = (1000 * 0.5 + 2000 * 1.0 + 3000 * 2.0) * 1e-9
    assert gpu_roofline(ffn, gp, ov)[0] - gpu_roofline(ffn, g0, ov)[0] == pytest.approx(extra)
    att = _op("attention")
    assert gpu_roofline(att, gp, ov)[0] == gpu_roofline(att, g0, ov)[0]
    assert gp.dequant_ops_per_weight(Precision.INT4) == 0.0


def test_ffn_gather_costs_bands_plus_bytes_read_and_written(make_cfg):
    g = make_cfg(*TINY).gpu
    op = _op("ffn", gather=True, weight_bytes=8000)
    off = gpu_roofline(op, g, OverheadConfig())[0]
    on = gpu_roofline(op, g, OverheadConfig(ffn_gather_per_band_us=50))[0]
    assert on - off == pytest.approx(3 * 50e-6 + 2 * 8000 / g.memory_bytes_per_s, rel=1e-12)
    plain = _op("ffn", weight_bytes=8000)  # an ATU unit: no gather
    assert gpu_roofline(plain, g, OverheadConfig(ffn_gather_per_band_us=50))[0] == \
        gpu_roofline(plain, g, OverheadConfig())[0]


def test_unit_load_and_eviction_bookkeeping(make_cfg):
    host = make_cfg(*TINY).host
    ov = OverheadConfig(cache_mgmt_per_layer_us=0, cache_mgmt_per_id_ns=0, unit_load_per_band_us=7,
                        unit_load_per_id_ns=11, evict_per_band_us=13, evict_per_id_ns=17)
    t = mgmt_s(0, 0, 0, host, ov, unit_loads=(10, 0, 20), evictions=(5, 5, 5))
    assert t == pytest.approx(2 * 7e-6 + 30 * 11e-9 + 3 * 13e-6 + 15 * 17e-9, rel=1e-12)
    moved = mgmt_s(0, 0, 0, host, dataclasses.replace(ov, evict_per_byte_ns=0.5),
                   unit_loads=(10, 0, 20), evictions=(5, 5, 5), evicted_bytes=40_000)
    assert moved - t == pytest.approx(40_000 * 0.5e-9, rel=1e-9)
    staged = mgmt_s(4, 4, 4096, host, OverheadConfig())
    direct = mgmt_s(4, 4, 4096, host, OverheadConfig(staged_gather=False))
    assert staged - direct == pytest.approx(4096 / (host.dram_bytes_per_s * 0.5) + 4 * 50e-9)


def test_measured_link_bandwidth_overrides_pcie(make_cfg):
    cfg = make_cfg(*TINY)
    assert cfg.host.gpu_link_bytes_per_s(cfg.gpu) == pytest.approx(
        PCIE_GB_PER_S_PER_LANE[3] * 16 * 1e9 * cfg.host.pcie_efficiency_frac)  # T4: PCIe 3
    cfg = make_cfg(*TINY, "host.gpu_link_gb_per_s=3.5")
    assert cfg.host.gpu_link_bytes_per_s(cfg.gpu) == 3.5e9


def test_host_cpu_device_serializes_copies_management_and_compute(make_cfg):
    """gpu.is_host_cpu: one thread copies, manages and computes: jobs never overlap."""
    cfg = make_cfg(*TINY, "gpu.is_host_cpu=true")
    env = simpy.Environment()
    hw = Hardware(env, cfg, [])
    assert hw.links[Link.DRAM_TO_HBM] is hw.gpu is hw.mgmt is hw.cpu
    assert hw.links[Link.SSD_TO_DRAM] is not hw.gpu
    t = Transfer(link=Link.DRAM_TO_HBM, payload=Payload.FFN_NEURONS, layer=0, nbytes=10**6,
                 prefetch=False)
    op = _op("ffn")
    events = [hw.transfer(t, 0), hw.compute(op, 0),
              hw.compute(dataclasses.replace(op, device=Device.CPU, what="ffn_cold"), 0)]
    env.run(env.all_of(events))
    expected = hw.transfer_s(t) + 2 * gpu_roofline(op, cfg.gpu, cfg.sim.overheads)[0]
    assert env.now == pytest.approx(expected, rel=1e-12)


def test_host_cpu_run_reports_bytes_per_link(make_cfg):
    over = [*TINY, "policy=m2cache", "sim.predict_after_attention=true"]
    a = simulate(make_cfg(*over)).summary
    b = simulate(make_cfg(*over, "gpu.is_host_cpu=true")).summary
    assert a["bytes_by_link"] == b["bytes_by_link"] and b["bytes_by_link"]["DRAM_TO_HBM"] > 0
    assert b["tpot_s"] >= a["tpot_s"] * (1 - 1e-12)  # nothing overlaps with the copies any more


def test_layer_us_adds_exactly_per_layer_in_a_serial_run(make_cfg):
    over = [*TINY, "policy=m2cache", "sim.overlap=false"]
    base = simulate(make_cfg(*over)).summary["tpot_s"]
    more = simulate(make_cfg(*over, "sim.overheads.layer_us=250")).summary["tpot_s"]
    assert more - base == pytest.approx(4 * 250e-6, rel=1e-9)  # 4 layers


@pytest.mark.parametrize("policy, layers_charged", [("m2cache", 4), ("dense", 0)])
def test_cache_planning_per_layer_is_charged_to_sparse_layers_only(make_cfg, policy,
                                                                   layers_charged):
    over = [*TINY, f"policy={policy}", "sim.overlap=false", "gpu.is_host_cpu=true"]
    base = simulate(make_cfg(*over, "sim.overheads.cache_mgmt_per_layer_us=0")).summary["tpot_s"]
    more = simulate(make_cfg(*over, "sim.overheads.cache_mgmt_per_layer_us=170")).summary
    assert more["tpot_s"] - base == pytest.approx(layers_charged * 170e-6, rel=1e-9, abs=1e-12)


def test_uncharged_predictor_removes_exactly_its_kernels(make_cfg):
    over = [*TINY, "policy=m2cache", "sim.overlap=false"]
    cfg = make_cfg(*over)
    base = simulate(cfg).summary["tpot_s"]
    free = simulate(make_cfg(*over, "sim.charge_predictor=false")).summary["tpot_s"]
    from m2sim.build import build_run
    from m2sim.planner import Planner

    planner = Planner(build_run(cfg, cfg.policy), num_decode_tokens=2)
    for layer in range(4):
        planner.prefill(layer, cfg.workload.prompt_tokens)
    pred = planner.decode(0, 0, cfg.workload.prompt_tokens + 1).predictor
    per_layer = gpu_roofline(pred, cfg.gpu, cfg.sim.overheads)[0]
    assert base - free == pytest.approx(4 * per_layer, rel=1e-9)


def test_blocking_ffn_prefetch_waits_for_what_it_sends(make_cfg):
    over = ["model=tiny", "workload=tiny", "gpu=t4", "host=paper_3090", "policy=zero_infinity",
            "policy.placement.mode=RESIDENT", "policy.dram_cache.fixed_layers=1",
            "host.pcie_efficiency_frac=0.05"]
    bg = simulate(make_cfg(*over)).summary
    fg = simulate(make_cfg(*over, "sim.blocking_ffn_prefetch=true")).summary
    assert fg["bytes_by_link"] == bg["bytes_by_link"]
    assert fg["tpot_s"] > bg["tpot_s"]  # the sends no longer hide behind the layer's FFN
    serial = [simulate(make_cfg(*over, "sim.overlap=false",
                                f"sim.blocking_ffn_prefetch={x}")).summary["tpot_s"]
              for x in ("false", "true")]
    assert serial[0] == pytest.approx(serial[1], rel=1e-12)



def test_single_host_thread_serializes_a_gpu_run_without_moving_bytes(make_cfg):
    """m2real's one Python thread on a GPU: copies, management and kernels in one queue."""
    over = [*TINY, "policy=m2cache", "policy.dram_cache.fixed_layers=1"]
    a = simulate(make_cfg(*over)).summary
    b = simulate(make_cfg(*over, "sim.single_host_thread=true")).summary
    assert a["bytes_by_link"] == b["bytes_by_link"]
    assert a["hit_rate_by_tier"] == b["hit_rate_by_tier"]
    assert b["tpot_s"] >= a["tpot_s"] * (1 - 1e-12)
    assert b["energy_j"] > 0  # the host thread's time is one core's, within the runtime


def test_a_layers_cache_work_carries_the_bytes_of_the_ids_it_evicts(make_cfg):
    from m2sim.build import build_run
    from m2sim.planner import Planner

    cfg = make_cfg(*TINY, "policy=m2cache")
    run = build_run(cfg, cfg.policy)
    n_tok = 6
    planner = Planner(run, num_decode_tokens=n_tok)
    for layer in range(run.num_layers):
        planner.prefill(layer, 8)
    evicted = 0
    for token in range(n_tok):
        for layer in range(run.num_layers):
            plan = planner.decode(token, layer, 8 + token + 1)
            ev = plan.update.evict or ((), (), ())
            want = sum(len(ids) * b for ids, b in zip(ev, run.sizes.id_bytes))
            assert plan.cache_work.evicted_bytes == want
            evicted += want
    assert evicted > 0
