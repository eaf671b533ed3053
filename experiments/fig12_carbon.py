"""Figure 12: carbon per token, M2Cache vs ZeRO-Infinity (paper §6.4).

Covers: m2cache, zero_infinity; the paper's four models; carbon=paper_eq1 (paper Eq. 1: DRAM +
        SSD power x runtime x 820 gCO2/kWh, reused GPU) and carbon=default (m2sim's fuller
        model: GPU/CPU power by state, embodied carbon) (conf/experiment/fig12_carbon.yaml).
Run:    .venv/bin/python -m experiments.fig12_carbon [--jobs 2] [OVERRIDE ...]
Output: results/paper/fig12_carbon.csv, results/paper/fig12_carbon.png   (~30 s)
"""

from __future__ import annotations

import pandas as pd

from experiments import common, plotting

NAME = "fig12_carbon"
COLS = ["model", "carbon_model", "policy", "tokens_per_s", "energy_j_per_token",
        "carbon_g_per_token", "operational_g_per_token", "embodied_g_per_token"]


def table(df: pd.DataFrame) -> pd.DataFrame:
    d = common.ok(df)
    n = d.output_tokens * d.num_requests
    d["energy_j_per_token"] = d.energy_j / n
    d["operational_g_per_token"] = d.carbon_operational_g / n
    d["embodied_g_per_token"] = d.carbon_embodied_g / n
    t = d[COLS].sort_values(["carbon_model", "model", "policy"]).reset_index(drop=True)
    base = t[t.policy == "zero_infinity"].set_index(["model", "carbon_model"]).carbon_g_per_token
    key = pd.MultiIndex.from_frame(t[["model", "carbon_model"]])
    t["reduction_vs_zero_infinity"] = base.reindex(key).to_numpy() / t.carbon_g_per_token
    return t


def plot(t: pd.DataFrame, out):
    groups = list(dict.fromkeys(t.carbon_model))
    fig, axes = plotting.panels(len(groups), ncols=2)
    for ax, g in zip(axes, groups):
        plotting.bars(t[t.carbon_model == g], "model", "carbon_g_per_token", "policy", ax=ax,
                      logy=True, ylabel="gCO2e per token", title=f"carbon={g}")
    fig.suptitle("Fig. 12: carbon per generated token", fontsize=10)
    return plotting.save(fig, out / NAME)


def main(argv: list[str] | None = None) -> None:
    args = common.parse_args(__doc__, argv)
    t = table(common.run_sweep(NAME, args))
    common.save_csv(t, args.out, NAME)
    plot(t, args.out)


if __name__ == "__main__":
    main()
