"""The parameter sweeps beyond the paper's figures, exported as compact tables for notebooks.

Covers: conf/experiment/{hbm_cache_size, dram_budget, ssd_generation, precision_bands,
        active_frac, lookahead_depth, gpu_generation, grid_intensity}.yaml
Run:    .venv/bin/python -m experiments.sweeps [--only a,b] [--jobs 2] [OVERRIDE ...]
Output: results/sweeps/<name>.csv: the job, status, override and metric columns of each
        sweep's results table (the full table stays in multirun/<name>/results.parquet)
        (~4 min for all of them)
"""

from __future__ import annotations

from experiments import common

SWEEPS = ["hbm_cache_size", "dram_budget", "ssd_generation", "precision_bands", "active_frac",
          "lookahead_depth", "gpu_generation", "grid_intensity"]
EXTRA = ["placement.dram_fixed_layers", "decode_time_breakdown_s.gpu_busy_s",
         "decode_time_breakdown_s.stall_ssd_s", "decode_time_breakdown_s.stall_link_s",
         "decode_time_breakdown_s.stall_cpu_s"]


def main(argv: list[str] | None = None) -> None:
    ap = common.parser(__doc__, out=common.REPO / "results" / "sweeps")
    ap.add_argument("--only", default=",".join(SWEEPS), help="comma-separated sweep names")
    args = ap.parse_args(argv)
    for name in [n for n in args.only.split(",") if n]:
        if name not in SWEEPS:
            ap.error(f"unknown sweep {name!r} (allowed: {', '.join(SWEEPS)})")
        df = common.run_sweep(name, args)
        compact = df.loc[:, :"carbon_model"].join(df[[c for c in EXTRA if c in df]])
        common.save_csv(compact, args.out, name)


if __name__ == "__main__":
    main()
