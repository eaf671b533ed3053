"""Figure 10: the precision ratio, speed half (paper §6.3).

Covers: precision bands (FP16 vs INT4 shares, and 25/25/50 FP16/INT8/INT4), m2cache; LLaMA-2
        7B and 13B (conf/experiment/fig10_precision.yaml).
Run:    .venv/bin/python -m experiments.fig10_precision [--jobs 2] [OVERRIDE ...]
Output: results/paper/fig10_precision.csv, results/paper/fig10_precision.png   (~20 s)

Quality hook: the real backend writes ``<out>/fig10_quality.csv`` with columns model, fp16_frac,
int8_frac, int4_frac and its measures (e.g. ``entropy`` of paper Eq. 2, ``perplexity``,
accuracies); when that file exists its columns are joined here and plotted beside the speed.
"""

from __future__ import annotations

import pandas as pd

from experiments import common, plotting

NAME = "fig10_precision"
BANDS = ["fp16_frac", "int8_frac", "int4_frac"]
QUALITY = "fig10_quality.csv"


def table(df: pd.DataFrame, out) -> pd.DataFrame:
    d = common.ok(df).rename(columns={f"policy.bands.{b}": b for b in BANDS})
    d["mean_bits"] = 16 * d.fp16_frac + 8 * d.int8_frac + 4 * d.int4_frac
    cols = ["model", *BANDS, "mean_bits", "tokens_per_s", "decode_tokens_per_s", "tpot_s",
            "pcie_gb_per_token", "ssd_gb_per_token", "hbm_hit", "hbm_peak_gib"]
    t = d[cols].sort_values(["model", "mean_bits"]).reset_index(drop=True)
    quality = out / QUALITY
    if quality.is_file():  # the real backend's half of the figure
        t = t.merge(pd.read_csv(quality), on=["model", *BANDS], how="left")
    return t


def plot(t: pd.DataFrame, out):
    extra = [c for c in t.columns if c in ("entropy", "perplexity", "accuracy")]
    fig, axes = plotting.panels(1 + len(extra), ncols=2)
    t = t.assign(split=t.fp16_frac.map("{:.0%}".format) + "/" + t.int8_frac.map(
        "{:.0%}".format) + "/" + t.int4_frac.map("{:.0%}".format))
    plotting.lines(t, "mean_bits", "decode_tokens_per_s", "model", ax=axes[0],
                   xlabel="mean bits per active weight", ylabel="decode tokens/s",
                   title="speed vs precision split (FP16/INT8/INT4)")
    for ax, col in zip(axes[1:], extra):
        plotting.lines(t, "mean_bits", col, "model", ax=ax, xlabel="mean bits", title=col)
    fig.suptitle("Fig. 10: precision ratio", fontsize=10)
    return plotting.save(fig, out / NAME)


def main(argv: list[str] | None = None) -> None:
    args = common.parse_args(__doc__, argv)
    t = table(common.run_sweep(NAME, args), args.out)
    common.save_csv(t, args.out, NAME)
    plot(t, args.out)


if __name__ == "__main__":
    main()
