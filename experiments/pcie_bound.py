"""Paper §1: the PCIe bound. LLaMA-13B with its FFN weights in DRAM cannot exceed ~4 tokens/s
over a link slower than 64 GB/s.

Covers: zero_infinity with attention resident (dense FP16 FFN over the link every token) vs
        m2cache; host links PCIe 3 x4 .. PCIe 6 x16 at their theoretical bandwidth
        (conf/experiment/pcie_bound.yaml).
Run:    .venv/bin/python -m experiments.pcie_bound [--jobs 2] [OVERRIDE ...]
Output: results/paper/pcie_bound.csv, results/paper/pcie_bound.png   (~30 s)
"""

from __future__ import annotations

import pandas as pd

from experiments import common, plotting
from m2sim.hardware import pcie_gb_per_s

NAME = "pcie_bound"
PAPER_TOKENS_PER_S = 4.0  # paper §1: at most ~4 tokens/s below 64 GB/s
PAPER_LINK_GB_PER_S = 64.0
EFFICIENCY = 1.0  # host.pcie_efficiency_frac in conf/experiment/pcie_bound.yaml


def table(df: pd.DataFrame) -> pd.DataFrame:
    d = common.ok(df)
    d["link_gb_per_s"] = [pcie_gb_per_s(int(g), int(n)) * EFFICIENCY
                          for g, n in zip(d["host.pcie_gen"], d["host.pcie_lanes"])]
    d["link_bound_tokens_per_s"] = d.link_gb_per_s / d.pcie_gb_per_token  # bytes-only ceiling
    cols = ["model", "policy", "host.pcie_gen", "host.pcie_lanes", "link_gb_per_s",
            "decode_tokens_per_s", "tokens_per_s", "pcie_gb_per_token", "link_bound_tokens_per_s"]
    return d[cols].sort_values(["policy", "link_gb_per_s"]).reset_index(drop=True)


def plot(t: pd.DataFrame, out):
    ax = plotting.lines(t, "link_gb_per_s", "decode_tokens_per_s", "policy", logx=True,
                        logy=True, xlabel="host link GB/s (theoretical)",
                        ylabel="decode tokens/s", title=f"PCIe bound, {t.model.iloc[0]}")
    ax.hlines(PAPER_TOKENS_PER_S, ax.get_xlim()[0], PAPER_LINK_GB_PER_S, colors="k",
              linestyles="--", lw=0.8, label="paper §1: <= ~4 tok/s below 64 GB/s")
    ax.legend(fontsize=7)
    return plotting.save(ax, out / NAME)


def main(argv: list[str] | None = None) -> None:
    args = common.parse_args(__doc__, argv)
    t = table(common.run_sweep(NAME, args))
    common.save_csv(t, args.out, NAME)
    plot(t, args.out)


if __name__ == "__main__":
    main()
