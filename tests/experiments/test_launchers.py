"""The shipped launcher configs (conf/hydra/launcher): joblib and a local Ray instance run two
jobs each and gather them; the SLURM (submitit) one composes to Hydra's submitit launcher."""

from __future__ import annotations

import importlib.util

import pandas as pd
import pytest

from tests.conftest import run_cli

TWO_JOBS = ("-m", "model=tiny", "workload=tiny", "workload.output_tokens=3",
            "policy=m2cache,zero_infinity")


def _needs(module: str):
    return pytest.mark.skipif(importlib.util.find_spec(module) is None,
                              reason=f"{module} not installed (pip install -e '.[sweep,ray]')")


def _check_two_jobs(sweep, r):
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    df = pd.read_parquet(sweep / "results.parquet")
    assert sorted(df.policy) == ["m2cache", "zero_infinity"]
    assert (df.status == "ok").all() and df.tokens_per_s.gt(0).all()


@_needs("hydra_plugins.hydra_joblib_launcher")
def test_joblib_launcher_runs_two_jobs_in_parallel_processes(tmp_path):
    sweep = tmp_path / "s"
    r = run_cli(*TWO_JOBS, "hydra/launcher=local", f"hydra.sweep.dir={sweep}")
    _check_two_jobs(sweep, r)
    assert "Joblib.Parallel" in r.stdout + r.stderr


@_needs("hydra_plugins.hydra_ray_launcher")
@_needs("ray")
def test_ray_launcher_runs_two_jobs_on_a_local_ray_instance(tmp_path):
    sweep = tmp_path / "s"
    r = run_cli(*TWO_JOBS, "hydra/launcher=ray_local", f"hydra.sweep.dir={sweep}",
                timeout=300)
    _check_two_jobs(sweep, r)
    assert "Ray Launcher is launching 2 jobs" in r.stdout + r.stderr


@_needs("hydra_plugins.hydra_submitit_launcher")
def test_slurm_launcher_config_composes_to_submitit(tmp_path):
    r = run_cli("model=tiny", "hydra/launcher=slurm", "--cfg", "hydra", "--package",
                "hydra.launcher")
    assert r.returncode == 0, r.stderr
    assert "SlurmLauncher" in r.stdout and "timeout_min: 60" in r.stdout


@_needs("hydra_plugins.hydra_submitit_launcher")
def test_submitit_local_executor_runs_two_jobs(tmp_path):
    """The SLURM launcher's code path (submitit) with its local executor: no cluster needed."""
    sweep = tmp_path / "s"
    r = run_cli(*TWO_JOBS, "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}",
                timeout=300)
    _check_two_jobs(sweep, r)
