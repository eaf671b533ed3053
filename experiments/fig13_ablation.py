"""Figure 13: ablation, mixed precision -> + HBM cache -> + SSD tier (paper §6.5).

Covers: zero_infinity (reference), mixed_precision_only (MP), m2cache (MP + HBM cache), each
        with every weight in DRAM (policy/dram_cache=all_in_dram) or with the SSD tier
        (layer_window); tokens/s, DRAM GB, carbon under paper Eq. 1 (carbon=paper_eq1);
        LLaMA-2 7B/13B/70B (conf/experiment/fig13_ablation.yaml).
Run:    .venv/bin/python -m experiments.fig13_ablation [--jobs 2] [OVERRIDE ...]
Output: results/paper/fig13_ablation.csv, results/paper/fig13_ablation.png   (~3 min)
"""

from __future__ import annotations

import pandas as pd

from experiments import common, plotting

NAME = "fig13_ablation"
STEPS = {  # (policy, DRAM cache) -> label, in the paper's order
    ("zero_infinity", "all_in_dram"): "ZeRO-Inf (DRAM)",
    ("zero_infinity", "layer_window"): "ZeRO-Inf (SSD)",
    ("mixed_precision_only", "all_in_dram"): "MP (DRAM)",
    ("mixed_precision_only", "layer_window"): "MP (SSD)",
    ("m2cache", "all_in_dram"): "MP+HBM (DRAM)",
    ("m2cache", "layer_window"): "MP+HBM+SSD",
}


def table(df: pd.DataFrame) -> pd.DataFrame:
    d = df.copy()
    d["step"] = [STEPS.get((p, c)) for p, c in zip(d.policy, d["policy/dram_cache"])]
    d["order"] = d.step.map({s: i for i, s in enumerate(STEPS.values())})
    cols = ["model", "step", "status", "error", "tokens_per_s", "decode_tokens_per_s",
            "tpot_s", "dram_peak_gib", "ssd_gb_per_token", "carbon_g_per_token"]
    t = d.sort_values(["model", "order"])[cols].reset_index(drop=True)
    for col, ref in (("tpot_s", "latency"), ("carbon_g_per_token", "carbon")):
        base = t[t.step == "ZeRO-Inf (DRAM)"].set_index("model")[col]
        t[f"{ref}_reduction_vs_zero_inf_dram"] = t.model.map(base) / t[col]
    return t


def plot(t: pd.DataFrame, out):
    d = t[t.status == "ok"]
    fig, axes = plotting.panels(3, ncols=3, size=(4.2, 3.4))
    for ax, col, label in zip(axes, ("tokens_per_s", "dram_peak_gib", "carbon_g_per_token"),
                              ("tokens/s", "peak DRAM (GiB)", "gCO2e/token (Eq. 1)")):
        plotting.bars(d, "step", col, "model", ax=ax, ylabel=label, logy=col != "dram_peak_gib",
                      title=label)
        ax.tick_params(axis="x", labelsize=6)
    fig.suptitle("Fig. 13: ablation", fontsize=10)
    return plotting.save(fig, out / NAME)


def main(argv: list[str] | None = None) -> None:
    args = common.parse_args(__doc__, argv)
    t = table(common.run_sweep(NAME, args))
    common.save_csv(t, args.out, NAME)
    plot(t, args.out)


if __name__ == "__main__":
    main()
