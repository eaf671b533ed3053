"""Beyond the paper: gCO2/token vs latency per token across GPU generations, new vs reused
hardware, M2Cache vs the best baseline each GPU can run, at three grid intensities.

Covers: stage 1 (pareto_speed): every policy on m40, p40, v100, t4, rtx3090, a100_80gb,
        h100_pcie, LLaMA-2 13B and 70B; stage 2 (pareto_carbon): m2cache and the fastest
        baseline that runs on each GPU (and the fastest FP16 one), carbon.grid
        coal/world/france x reused_hardware.
Run:    .venv/bin/python -m experiments.pareto_carbon [--jobs 2] [OVERRIDE ...]
Output: results/paper/pareto_speed.csv, results/paper/pareto_carbon.csv,
        results/paper/pareto_carbon.png   (~30 min on 2 cores)
"""

from __future__ import annotations

import pandas as pd

from experiments import common, plotting

SPEED, CARBON = "pareto_speed", "pareto_carbon"
FP16_BASELINES = {"zero_infinity", "accelerate_offload", "dense", "flash_window"}


def best_baselines(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, GPU): M2Cache's row, the fastest other policy that ran there, and the fastest
    one that keeps every weight in FP16 (no quantization loss)."""
    d = common.ok(df).sort_values("tpot_s")
    d["role"] = "m2cache"
    by = ["model", "gpu"]
    base = d[d.policy != "m2cache"].groupby(by).head(1).assign(role="best baseline")
    fp16 = d[d.policy.isin(FP16_BASELINES)].groupby(by).head(1).assign(role="best FP16 baseline")
    keep = pd.concat([d[d.policy == "m2cache"], base, fp16])
    cols = ["model", "gpu", "role", "policy", "tpot_s", "tokens_per_s", "carbon_g_per_token"]
    return keep[cols].sort_values(["model", "gpu", "role"]).reset_index(drop=True)


def carbon_table(df: pd.DataFrame, roles: pd.DataFrame) -> pd.DataFrame:
    d = common.ok(df).merge(roles[["model", "gpu", "policy", "role"]],
                            on=["model", "gpu", "policy"])  # a policy in two roles: two rows
    d["hardware"] = d["carbon.reused_hardware"].map({True: "reused", False: "new"})
    n = d.output_tokens * d.num_requests
    d["operational_g_per_token"] = d.carbon_operational_g / n
    d["embodied_g_per_token"] = d.carbon_embodied_g / n
    cols = ["model", "gpu", "role", "policy", "carbon.grid", "hardware", "tpot_s",
            "carbon_g_per_token", "operational_g_per_token", "embodied_g_per_token", "energy_j"]
    return d[cols].sort_values(cols[:6]).reset_index(drop=True)


def plot(t: pd.DataFrame, out):
    keys = list(dict.fromkeys(zip(t.model, t["carbon.grid"])))
    fig, axes = plotting.panels(len(keys), ncols=3, size=(4.6, 3.6))
    t = t.assign(kind=t.role + ", " + t.hardware)
    for i, (ax, (model, grid)) in enumerate(zip(axes, keys)):
        d = t[(t.model == model) & (t["carbon.grid"] == grid)]
        plotting.pareto(d, "tpot_s", "carbon_g_per_token", "gpu", "kind", ax=ax,
                        xlabel="latency per token (s)", ylabel="gCO2e / token",
                        title=f"{model}, grid {grid}",
                        legend="outside" if i == min(2, len(keys) - 1) else None)
    fig.suptitle("Carbon vs latency per token across GPU generations", fontsize=10)
    return plotting.save(fig, out / CARBON)


def main(argv: list[str] | None = None) -> None:
    args = common.parse_args(__doc__, argv)
    # Stage 1 at one carbon setting: stage 2's sweep keys must not multiply it.
    roles = best_baselines(common.run_sweep(SPEED, args, "carbon.grid=world",
                                            "carbon.reused_hardware=false"))
    common.save_csv(roles, args.out, SPEED)
    df = None
    for (model, gpu), g in roles.groupby(["model", "gpu"], sort=False):
        df = common.run_sweep(CARBON, args, f"model={model}", f"gpu={gpu}",
                              f"policy={','.join(g.policy.unique())}")
    if df is None:
        raise SystemExit("no policy ran in stage 1 (see multirun/pareto_speed/results.csv)")
    t = carbon_table(df, roles)
    common.save_csv(t, args.out, CARBON)
    if t.carbon_g_per_token.notna().any():
        plot(t, args.out)


if __name__ == "__main__":
    main()
