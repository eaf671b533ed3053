"""Every experiment runs on the tiny model and writes its table with the expected columns; the
notebooks execute headless on those small tables.

Each experiment runs as its own process (two at a time), with overrides that shrink its sweep to
a few tiny jobs; the tests then check what each one wrote.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO

TINY = ["model=tiny", "workload=tiny", "workload.output_tokens=3"]
# script module -> (extra arguments, {CSV written under paper/: columns it must have})
SCRIPTS = {
    "fig4_tiers": ([], {"fig4_tiers": ["weights_in", "tokens_per_s", "slowdown_vs_hbm"]}),
    "fig6_overlap": (["--models", "tiny", "--tokens", "6", "--trace",
                      str(REPO / "tests" / "data" / "tiny.m2trace")],
                     {"fig6_overlap": ["source", "layer", "overlap_mean"]}),
    "fig9_speed": (["workload.prompt_tokens=8"],
                   {"fig9_speed": ["model", "prompt_tokens", "output_tokens", "m2cache",
                                   "zero_infinity", "speedup"]}),
    "fig10_precision": (["policy.bands={fp16_frac:0.5,int8_frac:0.0,int4_frac:0.5},"
                         "{fp16_frac:0.25,int8_frac:0.25,int4_frac:0.5}"],
                        {"fig10_precision": ["model", "fp16_frac", "int8_frac", "int4_frac",
                                            "mean_bits", "decode_tokens_per_s"]}),
    "fig11_breakdown": ([], {"fig11_breakdown": ["model", "policy", "phase", "ttft_s",
                                                 "gpu_busy_s", "stall_ssd_s", "stall_link_s"]}),
    "fig12_carbon": ([], {"fig12_carbon": ["model", "carbon_model", "policy", "carbon_g_per_token",
                                           "energy_j_per_token", "reduction_vs_zero_infinity"]}),
    "fig13_ablation": (["policy=mixed_precision_only,m2cache", "host.dram_gib=16,64"],
                       {"fig13_ablation": ["model", "step", "dram_gib", "tokens_per_s",
                                           "dram_peak_gib", "carbon_g_per_token"],
                        "fig13_ablation_summary": ["model", "cache_latency_cut_vs_mp",
                                                   "ssd_dram_saved_gib_same_speed"]}),
    "pcie_bound": (["host.pcie_gen=3,5", "host.pcie_lanes=16"],
                   {"pcie_bound": ["policy", "link_gb_per_s", "decode_tokens_per_s",
                                   "pcie_gb_per_token"]}),
    "pareto_carbon": (["gpu=rtx3090", "policy=m2cache,zero_infinity", "carbon.grid=coal,france",
                       "carbon.reused_hardware=false,true"],
                      {"pareto_speed": ["model", "gpu", "role", "policy", "tpot_s"],
                       "pareto_carbon": ["gpu", "role", "carbon.grid", "hardware", "tpot_s",
                                         "carbon_g_per_token"]}),
}
# sweep experiment -> overrides that shrink it (its own override column must survive)
SWEEPS = {
    "hbm_cache_size": ["policy.hbm_cache.capacity_scale=1.0,2.0"],
    "precision_bands": ["policy.bands={fp16_frac:1.0,int8_frac:0.0,int4_frac:0.0},"
                        "{fp16_frac:0.0,int8_frac:0.0,int4_frac:1.0}"],
    "dram_budget": ["policy=m2cache", "host.dram_gib=32,64"],
    "ssd_generation": ["host/ssd=samsung_970_evo_plus_1tb,samsung_9100_pro", "host.pcie_gen=5"],
    "active_frac": ["policy=m2cache", "trace.active_frac=0.1,0.5"],
    "lookahead_depth": ["policy.preload.depth=1,2"],
    "gpu_generation": ["policy=m2cache", "gpu=m40,h100_pcie"],
    "grid_intensity": ["policy=m2cache", "carbon.grid=coal,france",
                       "carbon.reused_hardware=false,true"],
}
SWEEP_COLUMN = {"hbm_cache_size": "policy.hbm_cache.capacity_scale",
                "precision_bands": "policy.bands.fp16_frac", "dram_budget": "host.dram_gib",
                "ssd_generation": "host/ssd", "active_frac": "trace.active_frac",
                "lookahead_depth": "policy.preload.depth", "gpu_generation": "gpu",
                "grid_intensity": "carbon.grid"}
EXPORTED = ("hbm_cache_size", "precision_bands")  # through experiments/sweeps.py (notebooks)
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *cmd], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, dict[str, subprocess.CompletedProcess]]:
    root = tmp_path_factory.mktemp("results")
    common = ["--sweep-root", str(root / "multirun")]
    cmds = {name: ["-m", f"experiments.{name}", "--out", str(root / "paper"), *common, *extra,
                   *TINY] for name, (extra, _) in SCRIPTS.items()}
    for name, extra in SWEEPS.items():
        cmds[name] = (["-m", "experiments.sweeps", "--only", name, "--out", str(root / "sweeps"),
                       *common, *TINY, *extra] if name in EXPORTED else
                      ["-m", "m2sim", f"+experiment={name}",
                       f"hydra.sweep.dir={root / 'multirun' / name}", *TINY, *extra])
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(zip(cmds, pool.map(_run, cmds.values())))
    return root, done


def test_every_experiment_config_is_exercised():
    names = {p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")}
    by_scripts = {e for s in SCRIPTS for e in (s, "pareto_speed")} - {"fig6_overlap"}
    assert names == (by_scripts | set(SWEEPS)) & names
    assert names - by_scripts == set(SWEEPS)


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_script_writes_its_table_and_figure(runs, script):
    root, done = runs
    r = done[script]
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    for csv, columns in SCRIPTS[script][1].items():
        df = pd.read_csv(root / "paper" / f"{csv}.csv")
        assert len(df) > 0, csv
        assert set(columns) <= set(df.columns), set(columns) - set(df.columns)
    png = root / "paper" / f"{script}.png"
    assert png.is_file() and png.stat().st_size < 200_000


@pytest.mark.parametrize("sweep", list(SWEEPS))
def test_sweep_experiment_gathers_its_table(runs, sweep):
    root, done = runs
    r = done[sweep]
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    df = pd.read_parquet(root / "multirun" / sweep / "results.parquet")
    assert (df.status == "ok").all(), df.error.dropna().tolist()
    assert df[SWEEP_COLUMN[sweep]].nunique() >= 2
    assert {"tokens_per_s", "tpot_s", "carbon_g_per_token", "energy_j"} <= set(df.columns)
    if sweep in EXPORTED:
        compact = pd.read_csv(root / "sweeps" / f"{sweep}.csv")
        assert len(compact) == len(df) and SWEEP_COLUMN[sweep] in compact.columns


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes_on_small_tables(runs, notebook, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    root, done = runs
    assert all(r.returncode == 0 for r in done.values())
    monkeypatch.setenv("M2SIM_RESULTS", str(root))  # the kernel inherits it
    nb = nbformat.read(notebook, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(notebook.parent)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert os.environ["M2SIM_RESULTS"] == str(root)
