"""Benchmark: simulated decode tokens per wall-clock second (one core), m2cache, 7B/13B/70B.

Run:    .venv/bin/python experiments/bench_sim_speed.py [--tokens N] [--clusters 1,16]
Output: a table on stdout (and results/bench_sim_speed.csv). Setup (building the run, the
        first token's cache fill) is timed separately from steady-state decode.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from m2sim.compose import load_config
from m2sim.sim.engine import simulate


def measure(model: str, tokens: int, cluster: int, policy: str) -> dict:
    def run(n: int) -> float:
        cfg = load_config(f"policy={policy}", f"model={model}", "workload.prompt_tokens=16",
                          f"workload.output_tokens={n}", f"trace.cluster_neurons={cluster}",
                          "sim.progress=false")
        t0 = time.perf_counter()
        simulate(cfg)
        return time.perf_counter() - t0

    short, long = run(2), run(tokens + 2)  # the difference is `tokens` decode steps
    per_token_s = (long - short) / tokens
    return {"model": model, "policy": policy, "cluster_neurons": cluster,
            "decode_tokens": tokens, "setup_s": round(short, 3),
            "wall_ms_per_token": round(per_token_s * 1e3, 3),
            "sim_tokens_per_wall_s": round(1.0 / per_token_s, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--clusters", default="1,16")
    ap.add_argument("--models", default="llama2_7b,llama2_13b,llama2_70b")
    ap.add_argument("--policy", default="m2cache")
    args = ap.parse_args()
    rows = [measure(m, args.tokens, int(g), args.policy) for g in args.clusters.split(",")
            for m in args.models.split(",")]
    df = pd.DataFrame(rows)
    print(df.to_string(index=False))
    out = Path("results")
    out.mkdir(exist_ok=True)
    df.to_csv(out / "bench_sim_speed.csv", index=False)


if __name__ == "__main__":
    main()
