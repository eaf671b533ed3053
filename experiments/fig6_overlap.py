"""Figure 6: adjacent-token overlap of the active FFN neurons, per layer (paper §5.3).

Covers: activation traces: the synthetic generator (m2sim.trace.SyntheticTrace, per model) and
        recorded ``.m2trace`` files (m2sim.trace.RecordedTrace): given with --trace, recorded
        here by the real backend on SmolLM2-135M (--record-real N: N greedy decode steps, oracle
        top-k at the model's active_frac) or by the dense model reading held-out text
        (--teacher-forced N); see experiments/real_trace.py.
Run:    .venv/bin/python -m experiments.fig6_overlap [--models llama2_7b,...] [--tokens 64]
            [--trace a.m2trace ...] [--record-real 256] [--teacher-forced 256]
            [--top-frac 0.2 ...] [OVERRIDE ...]
Output: results/paper/fig6_overlap.csv, results/paper/fig6_overlap.png (~15 s; ~1.5 min with
        --record-real 256 --teacher-forced 256, whose traces go to results/traces/)

Overlap of token t+1 = |A(t) & A(t+1)| / |A(t+1)|: the share of its active set that the
previous token already loaded (the hit ratio an ATU cache can reach; paper: ~80%). Chance =
|A(t)| / N, the overlap of independent random sets. A recorded set is sorted by score, so
--top-frac F also reads each recorded trace at a sparser active set: its top F*N neurons.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from experiments import common, plotting, real_trace
from m2sim.compose import load_config
from m2sim.trace import RecordedTrace, build_source

NAME = "fig6_overlap"


def overlaps(source, num_tokens: int, label: str, top: int | None = None) -> pd.DataFrame:
    """Mean and spread of adjacent-token overlap per layer of one activation source (only the
    first ``top`` ids of each set, i.e. the highest-scored of a recorded one, if given)."""
    rows = []
    for layer in range(source.num_layers):
        prev = source.active(0, layer).ids[:top]
        vals, chance = [], []
        for t in range(1, num_tokens):
            ids = source.active(t, layer).ids[:top]
            vals.append(len(np.intersect1d(prev, ids, assume_unique=True)) / max(len(ids), 1))
            chance.append(len(prev) / source.num_neurons)
            prev = ids
        rows.append({"source": label, "layer": layer, "overlap_mean": float(np.mean(vals)),
                     "overlap_p10": float(np.quantile(vals, 0.1)),
                     "overlap_p90": float(np.quantile(vals, 0.9)),
                     "chance_overlap": float(np.mean(chance)), "tokens": num_tokens})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--models", default="llama2_7b,llama2_13b,llama2_70b,falcon_40b")
    ap.add_argument("--tokens", type=int, default=64, help="tokens per synthetic source "
                    "(a recorded trace: all of its tokens)")
    ap.add_argument("--trace", action="append", default=[], help="a recorded .m2trace file")
    ap.add_argument("--record-real", type=int, default=0, metavar="N",
                    help="record N decode steps with the real backend and add that trace")
    ap.add_argument("--teacher-forced", type=int, default=0, metavar="N",
                    help="add a trace of the dense model reading N held-out tokens")
    ap.add_argument("--real-model", default="smollm2_135m")
    ap.add_argument("--real-checkpoint", type=Path, default=None,
                    help="default: the model's bundled file (SmolLM2)")
    ap.add_argument("--trace-dir", type=Path, default=common.REPO / "results" / "traces",
                    help="where the traces of --record-real/--teacher-forced go")
    ap.add_argument("--top-frac", type=float, action="append", default=[],
                    help="also read recorded traces at their top F*N neurons")
    args = ap.parse_args(argv)
    tables = []
    for model in [m for m in args.models.split(",") if m]:
        cfg = load_config(f"model={model}", "trace=synthetic", *args.overrides)
        src = build_source(cfg.trace, cfg.model, cfg.workload.seed)
        tables.append(overlaps(src, args.tokens, f"synthetic {cfg.model.name}"))
    traces = [Path(p) for p in args.trace]
    for n, how, name in ((args.record_real, real_trace.record_real, "real"),
                         (args.teacher_forced, real_trace.teacher_forced, "teacher_forced")):
        if n:
            path = args.trace_dir / f"fig6_{args.real_model}_{name}.m2trace"
            traces.append(how(path, args.real_model, n, args.real_checkpoint))
    for path in traces:
        rec = RecordedTrace(path)
        label = f"recorded {rec.header.model} ({rec.path.name})"
        tables.append(overlaps(rec, rec.num_tokens, label))
        for frac in args.top_frac:
            top = max(1, round(frac * rec.num_neurons))
            tables.append(overlaps(rec, rec.num_tokens, f"{label}, top {frac:.0%}", top))
    t = pd.concat(tables, ignore_index=True)
    common.save_csv(t, args.out, NAME)
    plot(t, args.out, tops=[f", top {f:.0%}" for f in args.top_frac])


def plot(t: pd.DataFrame, out: Path, tops: list[str]) -> Path:
    """Each source at its own active set (left); recorded ones at --top-frac (right, if any),
    with the chance overlap of each subset size dotted."""
    sparse = t.source.str.endswith(tuple(tops)) if tops else pd.Series(False, index=t.index)
    views = [(t[~sparse], "at each source's active set", "lower right", False)]
    if sparse.any():
        views.append((t[sparse], "recorded, top-scored subsets (chance dotted)", "upper left",
                      True))
    fig, axes = plotting.panels(len(views), ncols=2, size=(6.0, 4.0))
    for ax, (part, title, where, chance) in zip(axes, views):
        plotting.lines(part, "layer", "overlap_mean", "source", ax=ax,
                       ylabel="adjacent-token overlap", title=title)
        ax.axhline(0.8, color="k", ls="--", lw=0.8, label="paper: ~80%")
        for c in part.chance_overlap.round(2).unique() if chance else []:
            ax.axhline(c, color="0.5", ls=":", lw=0.8)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=6, loc=where)
    fig.suptitle("Fig. 6: active neurons shared by adjacent tokens", fontsize=10)
    return plotting.save(fig, out / NAME)


if __name__ == "__main__":
    main()
