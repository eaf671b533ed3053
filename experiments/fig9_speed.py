"""Figure 9: generation speed, M2Cache vs ZeRO-Infinity (paper §6.2).

Covers: m2cache, zero_infinity; LLaMA-2 7B/13B/70B and Falcon-40B; prompts 64/128 tokens,
        outputs 64/128/512; RTX 3090, 64 GB DDR4, PCIe 3.0 NVMe (conf/experiment/fig9_speed.yaml).
Run:    .venv/bin/python -m experiments.fig9_speed [--jobs 2] [OVERRIDE ...]
Output: results/paper/fig9_speed.csv, results/paper/fig9_speed.png   (~4 min on 2 cores)
"""

from __future__ import annotations

import pandas as pd

from experiments import common, plotting

NAME = "fig9_speed"
KEYS = ["model", "prompt_tokens", "output_tokens"]


def table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, prompt, output): tokens/s of each policy and M2Cache's speed-up."""
    d = common.ok(df)
    wide = d.pivot_table(index=KEYS, columns="policy", values="tokens_per_s").reset_index()
    wide.columns.name = None
    if {"m2cache", "zero_infinity"} <= set(wide.columns):
        wide["speedup"] = wide["m2cache"] / wide["zero_infinity"]
    return wide


def plot(df: pd.DataFrame, out):
    d = common.ok(df).sort_values(["prompt_tokens", "output_tokens", "policy"])
    d["workload"] = d.prompt_tokens.astype(str) + "/" + d.output_tokens.astype(str)
    models = sorted(dict.fromkeys(d.model), key=lambda m: (m.startswith("falcon"), len(m), m))
    fig, axes = plotting.panels(len(models))
    for ax, m in zip(axes, models):
        plotting.bars(d[d.model == m], "workload", "tokens_per_s", "policy", ax=ax, logy=True,
                      ylabel="tokens/s", title=m)
        ax.set_xlabel("prompt / output tokens")
    fig.suptitle("Fig. 9: generation speed (batch 1, RTX 3090)", fontsize=10)
    return plotting.save(fig, out / NAME)


def main(argv: list[str] | None = None) -> None:
    args = common.parse_args(__doc__, argv)
    df = common.run_sweep(NAME, args)
    common.save_csv(table(df), args.out, NAME)
    plot(df, args.out)


if __name__ == "__main__":
    main()
