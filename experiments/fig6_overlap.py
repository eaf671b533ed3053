"""Figure 6: adjacent-token overlap of the active FFN neurons, per layer (paper §5.3).

Covers: activation traces: the synthetic generator (m2sim.trace.SyntheticTrace, per model) and
        recorded ``.m2trace`` files (m2sim.trace.RecordedTrace, e.g. from the real backend).
Run:    .venv/bin/python -m experiments.fig6_overlap [--models llama2_7b,...] [--tokens 64]
            [--trace a.m2trace ...] [OVERRIDE ...]
Output: results/paper/fig6_overlap.csv, results/paper/fig6_overlap.png   (~15 s)

Overlap of token t+1 = |A(t) & A(t+1)| / |A(t+1)|: the share of its active set that the
previous token already loaded (the hit ratio an ATU cache can reach; paper: ~80%).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from experiments import common, plotting
from m2sim.compose import load_config
from m2sim.trace import RecordedTrace, build_source

NAME = "fig6_overlap"


def overlaps(source, num_tokens: int, label: str) -> pd.DataFrame:
    """Mean and spread of adjacent-token overlap per layer of one activation source."""
    rows = []
    for layer in range(source.num_layers):
        prev = source.active(0, layer).ids
        vals = []
        for t in range(1, num_tokens):
            ids = source.active(t, layer).ids
            vals.append(len(np.intersect1d(prev, ids, assume_unique=True)) / max(len(ids), 1))
            prev = ids
        rows.append({"source": label, "layer": layer, "overlap_mean": float(np.mean(vals)),
                     "overlap_p10": float(np.quantile(vals, 0.1)),
                     "overlap_p90": float(np.quantile(vals, 0.9)), "tokens": num_tokens})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--models", default="llama2_7b,llama2_13b,llama2_70b,falcon_40b")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--trace", action="append", default=[], help="a recorded .m2trace file")
    args = ap.parse_args(argv)
    tables = []
    for model in [m for m in args.models.split(",") if m]:
        cfg = load_config(f"model={model}", "trace=synthetic", *args.overrides)
        src = build_source(cfg.trace, cfg.model, cfg.workload.seed)
        tables.append(overlaps(src, args.tokens, f"synthetic {cfg.model.name}"))
    for path in args.trace:
        rec = RecordedTrace(path)
        n = min(args.tokens, rec.num_tokens)
        tables.append(overlaps(rec, n, f"recorded {rec.header.model} ({rec.path.name})"))
    t = pd.concat(tables, ignore_index=True)
    common.save_csv(t, args.out, NAME)
    ax = plotting.lines(t, "layer", "overlap_mean", "source", ylabel="adjacent-token overlap",
                        title="Fig. 6: active neurons shared by adjacent tokens")
    ax.axhline(0.8, color="k", ls="--", lw=0.8, label="paper: ~80%")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    plotting.save(ax, args.out / NAME)


if __name__ == "__main__":
    main()
