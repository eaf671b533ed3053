"""Sweeps through the real ``m2sim`` command: the 2x2 table, resume, failure records, an
interrupted sweep, and bad input (unknown experiment, unknown field, results of another schema).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO, run_cli

TINY = ("model=tiny", "workload=tiny")


def _table(sweep: Path) -> pd.DataFrame:
    return pd.read_parquet(sweep / "results.parquet")


def _summaries(sweep: Path) -> dict[str, float]:
    return {str(p.parent.name): p.stat().st_mtime_ns for p in sweep.rglob("summary.json")}


@pytest.fixture(scope="module")
def two_by_two(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    sweep = tmp_path_factory.mktemp("sweep") / "s"
    r = run_cli("-m", *TINY, "policy=m2cache,zero_infinity", "workload.output_tokens=3,4",
                f"hydra.sweep.dir={sweep}")
    return sweep, r


def test_2x2_sweep_gathers_4_rows_with_override_columns(two_by_two):
    sweep, r = two_by_two
    assert r.returncode == 0, r.stderr
    df = _table(sweep)
    assert len(df) == 4 and (df.status == "ok").all()
    assert {"policy", "workload.output_tokens", "model", "workload"} <= set(df.columns)
    assert sorted(zip(df.policy, df["workload.output_tokens"])) == [
        ("m2cache", 3), ("m2cache", 4), ("zero_infinity", 3), ("zero_infinity", 4)]
    assert df.tokens_per_s.gt(0).all()
    csv = pd.read_csv(sweep / "results.csv")
    assert list(csv.columns) == list(df.columns) and len(csv) == 4
    assert "4 jobs: 4 ok" in r.stdout


def test_rerun_skips_finished_jobs(two_by_two):
    sweep, _ = two_by_two
    before = _summaries(sweep)
    r = run_cli("-m", *TINY, "policy=m2cache,zero_infinity", "workload.output_tokens=3,4",
                f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("skipped (done)") == 4
    assert _summaries(sweep) == before  # nothing rewritten
    assert len(_table(sweep)) == 4


def test_failing_job_is_recorded_and_the_others_finish(tmp_path):
    sweep = tmp_path / "s"
    r = run_cli("-m", *TINY, "policy=m2cache", "policy.preload.depth=1,10,2",
                f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr
    df = _table(sweep).set_index("policy.preload.depth")
    assert df.status.to_dict() == {1: "ok", 10: "failed", 2: "ok"}
    failed = next(sweep.rglob("failed.json"))
    record = json.loads(failed.read_text())
    assert record["kind"] == "user" and record["error"].startswith("policy.preload.depth")
    assert "\n" not in record["error"]
    assert df.loc[10, "error"] == record["error"]
    assert not (failed.parent / "summary.json").exists()


def test_interrupted_sweep_resumes_without_redoing_finished_jobs(tmp_path):
    sweep = tmp_path / "s"
    args = [*TINY, "policy=m2cache", "workload.output_tokens=200", "workload.seed=0,1,2,3",
            "sim.parquet=false", f"hydra.sweep.dir={sweep}"]
    p = subprocess.Popen([sys.executable, "-m", "m2sim", "-m", *args], cwd=REPO,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    deadline = time.monotonic() + 90
    while len(_summaries(sweep)) < 2 and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)  # a crash, not a polite stop
    p.wait()
    done = _summaries(sweep)
    assert 2 <= len(done) < 4, "the sweep finished before it could be interrupted"
    r = run_cli("-m", *args)
    assert r.returncode == 0, r.stderr
    after = _summaries(sweep)
    assert len(after) == 4
    assert {k: after[k] for k in done} == done  # finished jobs untouched
    assert r.stdout.count("skipped (done)") == len(done)
    assert (_table(sweep).status == "ok").all()


def test_results_of_another_schema_stop_the_sweep_in_one_line(tmp_path):
    sweep = tmp_path / "s"
    args = ["-m", *TINY, "policy=m2cache", "workload.output_tokens=3",
            f"hydra.sweep.dir={sweep}"]
    assert run_cli(*args).returncode == 0
    summary = next(sweep.rglob("summary.json"))
    s = json.loads(summary.read_text())
    summary.write_text(json.dumps({**s, "schema_version": -1}))
    r = run_cli(*args)
    assert r.returncode == 2
    assert "Traceback" not in r.stdout + r.stderr
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("m2sim: error:")]
    assert "schema version -1" in line and "hydra.sweep.dir" in line
    stamp = sweep / "sweep.json"
    stamp.write_text(json.dumps({"sweep_schema": 0, "summary_schema": 0}))
    r = run_cli(*args)
    assert r.returncode == 2 and "written by another m2sim" in r.stderr


def test_gather_command_reports_bad_directories(tmp_path):
    r = subprocess.run([sys.executable, "-m", "m2sim.sweep", str(tmp_path)], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "holds no sweep job" in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_experiment_names_the_options():
    r = run_cli("+experiment=nope", *TINY)
    assert r.returncode != 0
    assert "experiment/nope" in r.stderr and "fig9_speed" in r.stderr
    assert "Traceback" not in r.stderr


def test_sweep_over_unknown_field_is_refused_before_any_job(tmp_path):
    sweep = tmp_path / "s"
    r = run_cli("+experiment=precision_bands", *TINY, "trace.bogus=1,2",
                f"hydra.sweep.dir={sweep}")
    assert r.returncode != 0 and "trace.bogus" in r.stderr and "Traceback" not in r.stderr
    assert not list(sweep.rglob("summary.json"))
    r = run_cli("-m", *TINY, "policy=m2cache", "+trace.bogus=1,2", f"hydra.sweep.dir={sweep}")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("m2sim: error: trace.bogus: unknown key")
    assert not list(sweep.rglob("summary.json"))


def test_single_run_user_error_still_exits_2_in_one_line(tmp_path):
    r = run_cli(*TINY, "policy=m2cache", "policy.preload.depth=10",
                f"hydra.run.dir={tmp_path / 'r'}")
    assert r.returncode == 2
    assert r.stderr.strip() == r.stderr.strip().splitlines()[0]
    assert r.stderr.startswith("m2sim: error: policy.preload.depth")
