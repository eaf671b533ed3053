"""Figure 4: HBM- vs DRAM- vs SSD-resident weights (paper §3).

Covers: dense (FP16 resident in HBM), zero_infinity with every layer in DRAM, zero_infinity with
        no DRAM fixed area (every layer read from SSD each token); LLaMA-2-7B on an RTX 3090
        (conf/experiment/fig4_tiers.yaml).
Run:    .venv/bin/python -m experiments.fig4_tiers [OVERRIDE ...]
Output: results/paper/fig4_tiers.csv, results/paper/fig4_tiers.png   (~10 s)
"""

from __future__ import annotations

import pandas as pd

from experiments import common, plotting

NAME = "fig4_tiers"
FIXED = "policy.dram_cache.fixed_layers"


def tier(policy: str, fixed) -> str:
    if policy == "dense":
        return "HBM"
    return "SSD" if fixed == 0 else "DRAM"


def table(df: pd.DataFrame) -> pd.DataFrame:
    d = common.ok(df)
    d = d[(d.policy != "dense") | d[FIXED].isna()]  # dense ignores the DRAM cache: keep one
    d["weights_in"] = [tier(p, f) for p, f in zip(d.policy, d[FIXED])]
    cols = ["model", "weights_in", "policy", "tokens_per_s", "decode_tokens_per_s", "tpot_s",
            "pcie_gb_per_token", "ssd_gb_per_token", "placement.dram_fixed_layers"]
    t = d[cols].set_index("weights_in").reindex(["HBM", "DRAM", "SSD"]).reset_index()
    t["slowdown_vs_previous"] = t.tpot_s / t.tpot_s.shift(1)
    t["slowdown_vs_hbm"] = t.tpot_s / t.tpot_s.iloc[0]
    return t


def plot(t: pd.DataFrame, out):
    ax = plotting.bars(t, "weights_in", "decode_tokens_per_s", logy=True,
                       ylabel="decode tokens/s", title="Fig. 4: where the weights live "
                       f"({t.model.iloc[0]}, dense FP16)")
    return plotting.save(ax, out / NAME)


def main(argv: list[str] | None = None) -> None:
    args = common.parse_args(__doc__, argv)
    t = table(common.run_sweep(NAME, args))
    common.save_csv(t, args.out, NAME)
    plot(t, args.out)


if __name__ == "__main__":
    main()
