"""Figure 13: ablation, mixed precision -> + HBM cache -> + SSD tier (paper §6.5).

Covers: zero_infinity (reference), mixed_precision_only (MP), m2cache (MP + HBM cache), each
        with every weight in DRAM (policy/dram_cache=all_in_dram) or with the SSD tier
        (layer_window), DRAM budgets 16/32/64 GiB; tokens/s, peak DRAM, carbon under paper
        Eq. 1 (carbon=paper_eq1); LLaMA-2 7B/13B/70B (conf/experiment/fig13_ablation.yaml).
Run:    .venv/bin/python -m experiments.fig13_ablation [--jobs 2] [OVERRIDE ...]
Output: results/paper/fig13_ablation.csv (every run), fig13_ablation_summary.csv (the paper's
        ratios per model), fig13_ablation.png   (~3 min)
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
SAME_SPEED_FRAC = 0.95  # "at the same speed": within 5% of the all-in-DRAM tokens/s


def table(df: pd.DataFrame) -> pd.DataFrame:
    d = df.rename(columns={"host.dram_gib": "dram_gib"})
    d["step"] = [STEPS.get((p, c)) for p, c in zip(d.policy, d["policy/dram_cache"])]
    d["order"] = d.step.map({s: i for i, s in enumerate(STEPS.values())})
    cols = ["model", "step", "dram_gib", "status", "error", "tokens_per_s",
            "decode_tokens_per_s", "tpot_s", "dram_peak_gib", "ssd_gb_per_token",
            "carbon_g_per_token"]
    return d.sort_values(["model", "order", "dram_gib"])[cols].reset_index(drop=True)


def _cut(full: pd.DataFrame, step: str, than: str, col: str) -> float:
    """How many times lower ``col`` is at ``step`` than at ``than`` (NaN if either is absent)."""
    nan = float("nan")
    return full[col].get(than, nan) / full[col].get(step, nan)


def summary(t: pd.DataFrame) -> pd.DataFrame:
    """Per model, the paper's ratios: MP vs ZeRO-Inf, + HBM cache vs MP, DRAM the SSD saves."""
    rows = []
    for model, g in t[t.status == "ok"].groupby("model"):
        full = g[g.dram_gib == g.dram_gib.max()].set_index("step")
        dram_speed = full.tokens_per_s.get("MP+HBM (DRAM)", float("inf"))
        ssd = g[(g.step == "MP+HBM+SSD") & (g.tokens_per_s >= SAME_SPEED_FRAC * dram_speed)]
        rows.append({
            "model": model,
            "mp_latency_cut_vs_zero_inf": _cut(full, "MP (DRAM)", "ZeRO-Inf (DRAM)", "tpot_s"),
            "mp_carbon_cut_vs_zero_inf": _cut(full, "MP (DRAM)", "ZeRO-Inf (DRAM)",
                                              "carbon_g_per_token"),
            "cache_latency_cut_vs_mp": _cut(full, "MP+HBM (DRAM)", "MP (DRAM)", "tpot_s"),
            "cache_carbon_cut_vs_mp": _cut(full, "MP+HBM (DRAM)", "MP (DRAM)",
                                           "carbon_g_per_token"),
            "mp_tokens_per_s": full.tokens_per_s.get("MP (DRAM)"),
            "mp_hbm_tokens_per_s": full.tokens_per_s.get("MP+HBM (DRAM)"),
            "ssd_dram_saved_gib_same_speed": (full.dram_peak_gib.get("MP+HBM (DRAM)", float("nan"))
                                              - ssd.dram_peak_gib.min()) if len(ssd) else
            float("nan"),
        })
    return pd.DataFrame(rows)


def plot(t: pd.DataFrame, out):
    d = t[t.status == "ok"]
    full = d[d.dram_gib == d.dram_gib.max()]
    fig, axes = plotting.panels(3, ncols=3, size=(4.2, 3.4))
    plotting.bars(full, "step", "tokens_per_s", "model", ax=axes[0], logy=True,
                  ylabel="tokens/s", title=f"speed ({full.dram_gib.max():g} GiB DRAM)")
    ssd = d[d.step.isin(["MP+HBM+SSD", "MP+HBM (DRAM)"])].assign(
        run=lambda x: x.model + " " + x.step)
    plotting.lines(ssd, "dram_peak_gib", "tokens_per_s", "run", ax=axes[1], logy=True,
                   xlabel="peak DRAM (GiB)", ylabel="tokens/s", title="M2Cache: DRAM vs speed")
    plotting.bars(full, "step", "carbon_g_per_token", "model", ax=axes[2], logy=True,
                  ylabel="gCO2e/token (Eq. 1)", title="carbon (paper Eq. 1)")
    for ax in (axes[0], axes[2]):
        ax.tick_params(axis="x", labelsize=6)
    fig.suptitle("Fig. 13: ablation", fontsize=10)
    return plotting.save(fig, out / NAME)


def main(argv: list[str] | None = None) -> None:
    args = common.parse_args(__doc__, argv)
    t = table(common.run_sweep(NAME, args))
    common.save_csv(t, args.out, NAME)
    common.save_csv(summary(t), args.out, f"{NAME}_summary")
    plot(t, args.out)


if __name__ == "__main__":
    main()
