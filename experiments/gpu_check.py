"""One prepared CUDA check of the real backend (run on a lent GPU machine, never in CI).

Covers: real/ on CUDA -- the same tokens as on CPU, sim/real parity of bytes and hits on the
golden trace, and decode speed of a ~1.1B random LLaMA under dense, m2cache and no HBM cache,
with measured GPU energy (NVML) beside the modelled figure.
Run:    python experiments/gpu_check.py --out DIR [--device cuda] [--big-tokens 32]
Output: DIR/gpu_check.json (one record per step; a failing step records its error)
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import traceback
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from m2sim.cli import to_config
from m2sim.compose import CONF_DIR, load_config
from m2sim.sim.engine import simulate
from real.config import register_real_configs
from real.random_llama import save_random_llama
from real.run import run_real
from real.tiny import save_tiny_llama

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "data" / "tiny.m2trace"


def real(*overrides: str):
    register_real_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return run_real(to_config(compose(config_name="real", overrides=list(overrides))))


def tiny_steps(tmp: Path, device: str) -> dict:
    ckpt = save_tiny_llama(tmp / "tiny")
    out = {}
    for policy in ("m2cache", "powerinfer", "dense"):
        ids = {}
        for dev in ("cpu", device):
            r = real("model=tiny", "workload=tiny", "workload.output_tokens=12",
                     f"policy={policy}", f"real.checkpoint={ckpt}", f"real.device={dev}",
                     f"real.store_dir={tmp / 'tiny_store'}", "real.predictor=ORACLE")
            ids[dev] = r.summary["generated_token_ids"]
        out[f"same_tokens_cpu_vs_{device}_{policy}"] = ids["cpu"] == ids[device]
    over = ["model=tiny", "workload=tiny", "workload.output_tokens=12", "policy=m2cache",
            "trace=replay", f"trace.path={GOLDEN}", "host.dram_gib=0.0016",
            "host.os_reserved_gib=0.001"]
    s = simulate(load_config(*over)).summary
    r = real(*over, f"real.checkpoint={ckpt}", f"real.device={device}",
             f"real.store_dir={tmp / 'tiny_store'}").summary
    out["parity_bytes"] = r["bytes_by_link"] == s["bytes_by_link"]
    out["parity_hits"] = r["hit_rate_by_tier"] == s["hit_rate_by_tier"]
    out["bytes_by_link"] = r["bytes_by_link"]
    return out


def big_steps(tmp: Path, device: str, tokens: int) -> list[dict]:
    model_cfg = load_config("model=llama_1b_relu").model
    ckpt = save_random_llama(tmp / "big", model_cfg)
    rows = []
    runs = [("dense", []), ("m2cache", []), ("mixed_precision_only", []),
            ("m2cache", ["host.dram_gib=6", "host.os_reserved_gib=0.5"])]
    for policy, extra in runs:
        t0 = time.perf_counter()
        s = real("model=llama_1b_relu", "gpu=h100_pcie", "host=server_pcie4",
                 "workload.prompt_tokens=32", f"workload.output_tokens={tokens}",
                 f"policy={policy}", f"real.checkpoint={ckpt}", f"real.device={device}",
                 f"real.store_dir={tmp / 'big_store'}", "real.predictor=ORACLE",
                 "real.dtype=float16", *extra).summary
        rows.append({"policy": policy, "extra": extra, "wall_s": time.perf_counter() - t0,
                     **{k: s[k] for k in ("tokens_per_s", "decode_tokens_per_s", "ttft_s",
                                          "tpot_s", "hit_rate_by_tier", "bytes_by_link",
                                          "peak_bytes_by_tier", "measured_energy")}})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--big-tokens", type=int, default=32)
    ap.add_argument("--skip-big", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"platform": platform.platform(), "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}

    def save() -> None:
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))

    with tempfile.TemporaryDirectory() as tmp:
        steps = [("tiny", lambda: tiny_steps(Path(tmp), args.device))]
        if not args.skip_big:
            steps.append(("big", lambda: big_steps(Path(tmp), args.device, args.big_tokens)))
        for name, fn in steps:
            t0 = time.perf_counter()
            try:
                report[name] = fn()
            except Exception:
                report[name] = {"error": traceback.format_exc()[-3000:]}
            report[f"{name}_s"] = round(time.perf_counter() - t0, 1)
            save()
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
