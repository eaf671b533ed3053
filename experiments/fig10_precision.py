"""Figure 10: the precision ratio, speed half (paper §6.3).

Covers: precision bands (FP16 vs INT4 shares, and 25/25/50 FP16/INT8/INT4), m2cache; LLaMA-2
        7B and 13B (conf/experiment/fig10_precision.yaml).
Run:    .venv/bin/python -m experiments.fig10_precision [--jobs 2] [OVERRIDE ...]
Output: results/paper/fig10_precision.csv, results/paper/fig10_precision.png   (~20 s)

Quality half: ``experiments/fig10_quality.py`` writes ``<out>/fig10_quality.csv`` (perplexity
and Eq. 2 entropy per split and selector, measured on SmolLM2-135M by the real backend); when
that file exists its split rows are joined here by split (one column per measure and selector,
e.g. ``perplexity_oracle``, and ``quality_model``) and plotted beside the speed.
"""

from __future__ import annotations

import pandas as pd

from experiments import common, plotting

NAME = "fig10_precision"
BANDS = ["fp16_frac", "int8_frac", "int4_frac"]
QUALITY = "fig10_quality.csv"
MEASURES = {"perplexity": "perplexity (held-out text)",
            "entropy_per_token_nats": "Eq. 2 entropy (nats/token)"}


def quality_columns(q: pd.DataFrame) -> pd.DataFrame:
    """The quality half per split: ``<measure>_<selector>`` columns and the model measured."""
    s = q[q.config == "split"]
    wide = s.pivot_table(index=BANDS, columns="selector", values=list(MEASURES))
    wide.columns = [f"{m}_{sel}" for m, sel in wide.columns]
    return wide.reset_index().assign(quality_model=",".join(s.model.unique()))


def table(df: pd.DataFrame, out) -> pd.DataFrame:
    d = common.ok(df).rename(columns={f"policy.bands.{b}": b for b in BANDS})
    d["mean_bits"] = 16 * d.fp16_frac + 8 * d.int8_frac + 4 * d.int4_frac
    cols = ["model", *BANDS, "mean_bits", "tokens_per_s", "decode_tokens_per_s", "tpot_s",
            "pcie_gb_per_token", "ssd_gb_per_token", "hbm_hit", "hbm_peak_gib"]
    t = d[cols].sort_values(["model", "mean_bits"]).reset_index(drop=True)
    quality = out / QUALITY
    if quality.is_file():  # the real backend's half of the figure
        t = t.merge(quality_columns(pd.read_csv(quality)), on=BANDS, how="left")
    return t


def quality_panel(ax, q: pd.DataFrame, col: str) -> None:
    """``col`` against mean bits per selector; Algorithm 1's choices as stars, dense FP16 as a
    dashed line."""
    s = q[q.config == "split"]
    plotting.lines(s, "mean_bits", col, "selector", ax=ax, xlabel="mean bits per active weight",
                   ylabel=MEASURES[col], title=f"{','.join(s.model.unique())}: {col}")
    for i, sel in enumerate(dict.fromkeys(s.selector)):  # lines() colours selectors in order
        a1 = q[(q.config == "algorithm1") & (q.selector == sel)]
        ax.scatter(a1.mean_bits, a1[col], marker="*", s=110, color=f"C{i}", edgecolor="k",
                   zorder=3, label=f"Algorithm 1 ({sel})")
    for v in q.loc[q.config == "dense_fp16", col]:
        ax.axhline(v, color="0.4", ls="--", lw=0.8, label="dense FP16")
    ax.legend(fontsize=7)


def plot(t: pd.DataFrame, out, quality: pd.DataFrame | None = None):
    fig, axes = plotting.panels(1 if quality is None else 1 + len(MEASURES), ncols=3)
    plotting.lines(t, "mean_bits", "decode_tokens_per_s", "model", ax=axes[0],
                   xlabel="mean bits per active weight", ylabel="decode tokens/s",
                   title="speed vs precision split (FP16/INT8/INT4)")
    for ax, col in zip(axes[1:], MEASURES):
        quality_panel(ax, quality, col)
    fig.suptitle("Fig. 10: precision ratio", fontsize=10)
    return plotting.save(fig, out / NAME)


def main(argv: list[str] | None = None) -> None:
    args = common.parse_args(__doc__, argv)
    t = table(common.run_sweep(NAME, args), args.out)
    common.save_csv(t, args.out, NAME)
    quality = args.out / QUALITY
    plot(t, args.out, pd.read_csv(quality) if quality.is_file() else None)


if __name__ == "__main__":
    main()
