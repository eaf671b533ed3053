"""The real backend end to end on a tiny random LLaMA: exact math, caching that never changes
the output, recorded traces, and one-line errors for bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from m2sim.cli import to_config
from m2sim.compose import CONF_DIR
from m2sim.errors import DoesNotFit, M2SimError
from m2sim.trace import RecordedTrace
from real.checkpoint_cache import CheckpointCache
from real.config import register_real_configs
from real.run import run_real
from real.tiny import save_tiny_llama

TIGHT = ["host.dram_gib=0.0016", "host.os_reserved_gib=0.001"]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("store") / "tiny"


def _cfg(*overrides: str):
    register_real_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return to_config(compose(config_name="real", overrides=list(overrides)))


def _run(ckpt, store, *overrides):
    return run_real(_cfg("model=tiny", "workload=tiny", "workload.output_tokens=10",
                         f"real.checkpoint={ckpt}", f"real.store_dir={store}",
                         "real.measure_energy=false", *overrides))


def test_all_neurons_at_fp16_generates_what_transformers_generates(tiny_ckpt, store):
    from transformers import LlamaForCausalLM

    res = _run(tiny_ckpt, store, "policy=m2cache", "trace.active_frac=1.0",
               "policy.bands.fp16_frac=1.0", "policy.bands.int8_frac=0.0",
               "policy.bands.int4_frac=0.0", "real.predictor=ORACLE")
    hf = LlamaForCausalLM.from_pretrained(tiny_ckpt, local_files_only=True).eval()
    with torch.no_grad():  # the store holds FP16 weights: compare with FP16-rounded weights
        for p in hf.parameters():
            p.copy_(p.half().float())
    prompt = [(7 * i + 1) % 512 for i in range(8)]  # the ids run_real uses without a tokenizer
    ref = hf.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False)[0, 8:]
    assert res.summary["generated_token_ids"] == ref.tolist()
    # every neuron stays active: the first decode token loads them all, the 8 others hit
    assert res.summary["hit_rate_by_tier"]["hbm"] == pytest.approx(8 / 9)


@pytest.mark.parametrize("policy", ["m2cache", "m2cache_hbm_lru", "powerinfer"])
def test_caching_never_changes_the_output(tiny_ckpt, store, policy):
    roomy = _run(tiny_ckpt, store, f"policy={policy}", "real.predictor=ORACLE")
    if policy == "powerinfer":  # PowerInfer needs the model in DRAM: shrink the GPU instead
        tight = _run(tiny_ckpt, store, f"policy={policy}", "real.predictor=ORACLE",
                     "policy.hbm_cache.capacity_gib=0.00005")
    else:
        tight = _run(tiny_ckpt, store, f"policy={policy}", "real.predictor=ORACLE", *TIGHT)
        assert tight.summary["bytes_by_link"]["SSD_TO_DRAM"] > 0
    assert tight.summary["generated_token_ids"] == roomy.summary["generated_token_ids"]


def test_runs_sharing_a_checkpoint_cache_match_a_fresh_run(tiny_ckpt, store):
    """The oracle (dense FFN weights kept) and a replay (dense weights only), twice each, on
    one cache: each key read once, and every run as a fresh process's run."""
    trace = store.parent / "shared.m2trace"
    fresh = _run(tiny_ckpt, store, "policy=m2cache", "real.predictor=ORACLE",
                 f"real.record_trace={trace}")
    cache = CheckpointCache()
    for overrides in (("real.predictor=ORACLE",),
                      ("trace=replay", f"trace.path={trace}", "real.predictor=TRACE")):
        cfg = _cfg("model=tiny", "workload=tiny", "workload.output_tokens=10",
                   f"real.checkpoint={tiny_ckpt}", f"real.store_dir={store}",
                   "real.measure_energy=false", "policy=m2cache", *overrides)
        for _ in range(2):
            s = run_real(cfg, cache).summary
            assert s["generated_token_ids"] == fresh.summary["generated_token_ids"]
            assert s["bytes_by_link"] == fresh.summary["bytes_by_link"]
    assert cache.reads == 3  # the full model, the dense weights, the (absent) tokenizer


def test_the_hbm_cache_does_not_change_the_output(tiny_ckpt, store):
    cached = _run(tiny_ckpt, store, "policy=m2cache", "real.predictor=ORACLE")
    streamed = _run(tiny_ckpt, store, "policy=mixed_precision_only", "real.predictor=ORACLE")
    assert cached.summary["generated_token_ids"] == streamed.summary["generated_token_ids"]
    assert (cached.summary["bytes_by_link"]["DRAM_TO_HBM"]
            < streamed.summary["bytes_by_link"]["DRAM_TO_HBM"])


def test_a_run_records_a_trace_the_simulator_can_replay(tiny_ckpt, store, tmp_path):
    out = tmp_path / "run.m2trace"
    _run(tiny_ckpt, store, "policy=m2cache", "real.predictor=ORACLE", f"real.record_trace={out}")
    trace = RecordedTrace(out)
    assert (trace.num_tokens, trace.num_layers, trace.num_neurons) == (9, 4, 256)
    assert trace.max_active(0) == round(0.25 * 256)


@pytest.mark.parametrize("overrides, error, match", [
    (["gpu.memory_gib=0.7503"], DoesNotFit, "HBM"),
    (["workload.prompt_tokens=600"], M2SimError, "context"),
    (["real.device=cuda:7"], M2SimError, "real.device"),
])
def test_bad_input_is_a_clear_error(tiny_ckpt, store, overrides, error, match):
    if match == "real.device" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(error, match=match):
        _run(tiny_ckpt, store, "policy=m2cache", *overrides)


def test_a_corrupt_store_or_missing_checkpoint_fails_in_one_line(tiny_ckpt, tmp_path):
    bad = tmp_path / "store"
    _run(tiny_ckpt, bad, "policy=m2cache", "real.predictor=ORACLE")
    victim = next(bad.glob("ffn_L001_int8.bin"))
    victim.write_bytes(victim.read_bytes()[:100])  # truncated
    for extra in ([f"real.store_dir={bad}", f"real.checkpoint={tiny_ckpt}"],
                  [f"real.store_dir={tmp_path / 's2'}", f"real.checkpoint={tmp_path / 'nope'}"]):
        r = subprocess.run([sys.executable, "-m", "real", "model=tiny", "workload=tiny",
                            "policy=m2cache", *extra, f"hydra.run.dir={tmp_path / 'run'}"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
        assert not (tmp_path / "run" / "summary.json").exists()


def test_cli_writes_the_simulator_schema_plus_generated_tokens(tiny_ckpt, store, tmp_path):
    r = subprocess.run([sys.executable, "-m", "real", "model=tiny", "workload=tiny",
                        "policy=m2cache", f"real.checkpoint={tiny_ckpt}",
                        f"real.store_dir={store}", "real.predictor=ORACLE",
                        f"hydra.run.dir={tmp_path}"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "summary.json").read_text())
    for key in ("policy", "model", "gpu", "host", "tokens_per_s", "decode_tokens_per_s",
                "ttft_s", "tpot_s", "bytes_by_link", "hit_rate_by_tier", "peak_bytes_by_tier",
                "generated_token_ids", "carbon_g_per_token"):
        assert key in s
    assert len(s["generated_token_ids"]) == 6 and s["backend"] == "real"


@pytest.mark.parametrize("policy", ["m2cache", "m2cache_hbm_lru", "powerinfer",
                                    "mixed_precision_only", "dense"])
def test_timed_ops_are_the_plans_ops_of_every_decode_layer(tiny_ckpt, store, policy):
    """real.record_op_times: one attention and one LM head row per decode layer and token, at
    the context the planner was given; an FFN row at the plan's active ids per band unless the
    CPU computes part of it (PowerInfer's cold neurons); evictions and loads into the cache
    unit at their band and id count; without a cache unit (mixed precision only), every
    active id copied to scratch each token (link rows) and nothing loaded into a unit. The ops fit within the decode's time, and timing them
    does not change the output."""
    # PowerInfer with a GPU too small for every hot neuron: the cold ones run on the CPU
    small = ("policy.hbm_cache.capacity_gib=0.00005",) if policy == "powerinfer" else ()
    res = _run(tiny_ckpt, store, f"policy={policy}", "real.record_op_times=true", *small)
    s, layers = res.summary, res.layers
    ops = s["executor_op_samples"]
    dec = layers[layers.phase == "decode"].sort_values(["token", "layer"])
    n_tok, n_layers = dec.token.nunique(), dec.layer.nunique()
    assert n_tok == 9 and len(ops["lm_head"]) == n_tok
    assert [c for _, c, _ in ops["attention"]] == [8 + t + 1 for t in range(n_tok)
                                                   for _ in range(n_layers)]
    want = [tuple(int(c) for c in w)
            for w in dec[["want_fp16", "want_int8", "want_int4"]].to_numpy()]
    if policy == "powerinfer":  # cold neurons on the CPU: no FFN row for those layers
        assert len(ops["ffn"]) < len(want)
        assert {tuple(r[1:4]) for r in ops["ffn"]} <= set(want)
    else:
        assert [tuple(r[1:4]) for r in ops["ffn"]] == want
    assert all(r[0] == 1 for r in ops["ffn"] + ops["attention"])
    if policy in ("dense", "mixed_precision_only"):
        assert ops["evict"] == [] and ops["load"] == []
    if policy == "mixed_precision_only":
        copied = [sum(n for b_, n, _ in ops["link"] if b_ == b) for b in range(3)]
        assert copied == [int(dec[f"want_{p}"].sum()) for p in ("fp16", "int8", "int4")]
        assert all(s_ > 0 for *_, s_ in ops["link"])
    else:
        assert ops["link"] == []
    assert sum(int(n) for _, n, _ in ops["evict"]) == int(dec.evicted.sum())
    timed = sum(r[-1] for k in ("attention", "ffn", "lm_head") for r in ops[k])
    assert 0 < timed < s["tpot_s"] * n_tok
    plain = _run(tiny_ckpt, store, f"policy={policy}", *small).summary
    assert "executor_op_samples" not in plain
    assert plain["generated_token_ids"] == s["generated_token_ids"]
