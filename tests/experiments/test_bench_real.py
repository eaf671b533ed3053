"""The real-backend benchmark's pieces on the tiny model: the peers decode what m2real decodes
from the same prompt, and the report's arithmetic (medians, ratios, roofline)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

torch = pytest.importorskip("torch")


def test_dense_peer_generates_what_m2real_generates_with_every_neuron_at_fp16(tmp_path):
    from hydra import compose, initialize_config_dir

    from m2sim.cli import to_config
    from m2sim.compose import CONF_DIR
    from real.config import register_real_configs
    from real.run import run_real
    from real.tiny import save_tiny_llama

    ckpt = save_tiny_llama(tmp_path / "tiny")
    r = subprocess.run([sys.executable, "-m", "experiments.bench_peers", "dense", "--model",
                        str(ckpt), "--dtype", "float32", "--prompt-tokens", "8",
                        "--new-tokens", "6"], capture_output=True, text=True, cwd=REPO,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    peer = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(peer["token_s"]) == 5 and peer["decode_tokens_per_s"] > 0
    register_real_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = to_config(compose(config_name="real", overrides=[
            "model=tiny", "workload=tiny", "workload.prompt_tokens=8",
            "workload.output_tokens=6", "policy=m2cache", "trace.active_frac=1.0",
            "policy.bands.fp16_frac=1.0", "policy.bands.int8_frac=0.0",
            "policy.bands.int4_frac=0.0", "real.predictor=ORACLE", f"real.checkpoint={ckpt}",
            f"real.store_dir={tmp_path / 'store'}", "real.measure_energy=false"]))
    # the store holds FP16 weights; the tiny model's FP32 weights round to the same tokens here
    assert run_real(cfg).summary["generated_token_ids"] == peer["generated_token_ids"]


def test_report_gives_medians_ratios_and_the_roofline():
    from experiments.bench_real import report

    base = {"model": "llama_1b_relu", "ssd_bytes_per_token": None, "disk_bytes_per_s": 1e9,
            "dram_budget_gib": None, "peak_gib": 2.0}
    rows = [dict(base, contender="accelerate_disk", decode_tokens_per_s=v) for v in (1, 2, 9)]
    rows += [dict(base, contender="m2cache", decode_tokens_per_s=v, ssd_bytes_per_token=5e8,
                  dram_budget_gib=0.5) for v in (1.0, 1.5, None)]
    table = report(rows)
    acc = next(line for line in table.splitlines() if line.startswith("| accelerate_disk"))
    m2 = next(line for line in table.splitlines() if line.startswith("| m2cache"))
    assert "| 2 | 3/3 | 1x |" in acc
    # median of the two finished runs 1.25; roofline 1e9 / 5e8 = 2 tok/s, reached 62%
    assert "| 1.25 | 2/3 | 0.625x | 500 | 2 | 62% | 0.5 |" in m2
