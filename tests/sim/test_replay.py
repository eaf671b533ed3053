"""Replaying a recorded trace gives the same decisions as the source it was recorded from."""

from m2sim.build import build_run
from m2sim.sim.engine import simulate
from m2sim.trace import write_trace

OVER = ["policy=m2cache", "model=tiny", "model.num_layers=5", "workload=tiny",
        "workload.output_tokens=8", "host.dram_gib=0.0016", "host.os_reserved_gib=0.001",
        "gpu.memory_gib=0.05", "gpu.reserved_gib=0.001"]


def test_replayed_trace_moves_the_same_bytes_and_hits(make_cfg, tmp_path):
    synth = make_cfg(*OVER)
    run = build_run(synth, synth.policy)
    path = write_trace(run.source, tmp_path / "tiny.m2trace", num_tokens=7, model="tiny",
                       d_model=synth.model.d_model)
    replay = make_cfg(*OVER, "trace=replay", f"trace.path={path}")
    a, b = simulate(synth).summary, simulate(replay).summary
    for key in ("bytes_by_link", "hit_rate_by_tier", "tpot_s", "ttft_s", "peak_bytes_by_tier"):
        assert a[key] == b[key], key


def test_replay_of_another_model_is_refused(make_cfg, tmp_path):
    import pytest

    from m2sim.trace.file import TraceFormatError

    synth = make_cfg(*OVER)
    path = write_trace(build_run(synth, synth.policy).source, tmp_path / "t.m2trace",
                       num_tokens=2, model="tiny", d_model=synth.model.d_model)
    cfg = make_cfg("policy=m2cache", "model=smollm2_135m", "workload=tiny", "trace=replay",
                   f"trace.path={path}")
    with pytest.raises(TraceFormatError, match="recorded on tiny"):
        simulate(cfg)
