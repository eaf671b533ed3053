"""Figure 11: time to first token and the time breakdown (paper §6.2).

Covers: m2cache, zero_infinity; the paper's four models, prompt 128, output 64; the summary's
        decode_time_breakdown_s and each job's layers table (conf/experiment/fig11_breakdown.yaml).
Run:    .venv/bin/python -m experiments.fig11_breakdown [--jobs 2] [OVERRIDE ...]
Output: results/paper/fig11_breakdown.csv, results/paper/fig11_breakdown.png   (~15 s)
"""

from __future__ import annotations

import pandas as pd

from experiments import common, plotting

NAME = "fig11_breakdown"
PARTS = ["gpu_busy_s", "stall_ssd_s", "stall_link_s", "stall_cpu_s"]


def table(df: pd.DataFrame, sweep_root) -> pd.DataFrame:
    """Per (model, policy, phase): seconds per token in each part (prefill: the whole TTFT)."""
    rows = []
    for r in common.ok(df).itertuples():
        layers = common.job_table(sweep_root, NAME, r.job, "layers")
        for phase, g in layers.groupby("phase"):
            n = max(g.token.nunique(), 1) if phase == "decode" else 1
            rows.append({"model": r.model, "policy": r.policy, "phase": phase,
                         "ttft_s": r.ttft_s, "tpot_s": r.tpot_s, "tokens": n,
                         "wall_s_per_token": (g.end_s.max() - g.start_s.min()) / n,
                         **{p: g[p].sum() / n for p in PARTS}})
    t = pd.DataFrame(rows)
    t["other_s"] = (t.wall_s_per_token - t[PARTS].sum(axis=1)).clip(lower=0)
    return t.sort_values(["phase", "model", "policy"]).reset_index(drop=True)


def plot(t: pd.DataFrame, out):
    fig, axes = plotting.panels(3, ncols=3, size=(4.0, 3.4))
    pre = t[t.phase == "prefill"]
    plotting.bars(pre, "model", "ttft_s", "policy", ax=axes[0], logy=True,
                  ylabel="seconds", title="time to first token")
    labels = ["GPU busy", "wait SSD", "wait PCIe", "wait CPU", "other"]
    parts = [*PARTS, "other_s"]
    for ax, phase in zip(axes[1:], ("prefill", "decode")):
        d = t[t.phase == phase].assign(run=lambda x: x.model + " " + x.policy)
        d[parts] = d[parts].div(d[parts].sum(axis=1), axis=0)  # shares of the time
        plotting.stacked(d, "run", parts, ax=ax, ylabel="share of time", labels=labels,
                         title=f"{phase} time by cause")
    fig.suptitle("Fig. 11: TTFT and where the time goes", fontsize=10)
    return plotting.save(fig, out / NAME)


def main(argv: list[str] | None = None) -> None:
    args = common.parse_args(__doc__, argv)
    t = table(common.run_sweep(NAME, args), args.sweep_root)
    common.save_csv(t, args.out, NAME)
    plot(t, args.out)


if __name__ == "__main__":
    main()
