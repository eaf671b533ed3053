"""The sweep table (m2sim.sweep.table.gather) on hand-made job directories: one row per run,
override columns, carbon columns present or empty, failed and unfinished jobs, bad directories."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from m2sim.results import SCHEMA_VERSION
from m2sim.sweep import METRIC_COLUMNS, IncompatibleResults, gather, write_table
from m2sim.sweep.job import SWEEP_SCHEMA, parse_overrides


def _summary(policy: str = "m2cache", *, tokens_per_s: float = 10.0, carbon: bool = False,
             schema: int = SCHEMA_VERSION) -> dict:
    s = {"schema_version": schema, "backend": "sim", "policy": policy, "model": "tiny",
         "gpu": "rtx3090", "host": "paper_3090", "ssd": "x", "prompt_tokens": 8,
         "output_tokens": 4, "num_requests": 1, "seed": 0, "tokens_per_s": tokens_per_s,
         "decode_tokens_per_s": tokens_per_s, "ttft_s": 0.1, "tpot_s": 1 / tokens_per_s,
         "total_s": 1.0, "bytes_by_link": {"SSD_TO_DRAM": 4e9, "DRAM_TO_HBM": 8e9},
         "hit_rate_by_tier": {"hbm": 0.8, "dram": 1.0},
         "peak_bytes_by_tier": {"hbm": 2**30, "dram": 2 * 2**30, "ssd": 0},
         "placement": {"stored_precisions": ["FP16", "INT4"]}}
    if carbon:
        s.update({"energy_j": 100.0, "carbon_g": 2.0, "carbon_g_per_token": 0.5,
                  "carbon_breakdown_g": {"operational": {"gpu": 1.0, "dram": 0.5},
                                         "embodied": {"gpu": 0.5}},
                  "carbon_constants": {"pue": {"value": 1.0, "unit": "", "source": "x"}}})
    return s


def _job(root: Path, name: str, overrides: list[str], *, summary: dict | None = None,
         failed: str | None = None) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "job.json").write_text(json.dumps({"sweep_schema": SWEEP_SCHEMA,
                                            "overrides": overrides, "num": 0}))
    if summary is not None:
        (d / "summary.json").write_text(json.dumps(summary))
    if failed is not None:
        (d / "failed.json").write_text(json.dumps({"error": failed, "kind": "user"}))
    return d


def test_one_row_per_job_with_override_columns(tmp_path):
    for i, (p, n) in enumerate([("m2cache", 3), ("m2cache", 4), ("zero_infinity", 3),
                                ("zero_infinity", 4)]):
        _job(tmp_path, f"j{i}", ["+experiment=x", f"policy={p}", f"workload.output_tokens={n}"],
             summary=_summary(p, tokens_per_s=n))
    df = gather(tmp_path)
    assert len(df) == 4
    assert list(df.columns[:5]) == ["job", "status", "error", "policy", "workload.output_tokens"]
    assert "experiment" not in df.columns  # it names the sweep, not a point of it
    assert set(METRIC_COLUMNS) <= set(df.columns)
    assert sorted(zip(df.policy, df["workload.output_tokens"])) == [
        ("m2cache", 3), ("m2cache", 4), ("zero_infinity", 3), ("zero_infinity", 4)]
    assert (df.status == "ok").all()
    assert df.ssd_gb_per_token.iloc[0] == pytest.approx(1.0)  # 4 GB over 4 tokens
    assert df.hbm_peak_gib.iloc[0] == pytest.approx(1.0)
    assert df["placement.stored_precisions"].iloc[0] == "FP16,INT4"


def test_carbon_columns_filled_when_present_and_empty_otherwise(tmp_path):
    _job(tmp_path, "a", ["policy=m2cache"], summary=_summary(carbon=True))
    _job(tmp_path, "b", ["policy=dense"], summary=_summary("dense"))
    df = gather(tmp_path).set_index("policy")
    assert df.loc["m2cache", "carbon_g_per_token"] == 0.5
    assert df.loc["m2cache", "carbon_operational_g"] == pytest.approx(1.5)
    assert df.loc["m2cache", "carbon_embodied_g"] == pytest.approx(0.5)
    assert df.loc["m2cache", "carbon_breakdown_g.operational.gpu"] == 1.0
    assert pd.isna(df.loc["dense", "carbon_g"]) and pd.isna(df.loc["dense", "energy_j"])
    assert not any(c.startswith("carbon_constants") for c in df.columns)


def test_failed_and_unfinished_jobs_keep_their_overrides(tmp_path):
    _job(tmp_path, "ok", ["policy.preload.depth=1"], summary=_summary())
    _job(tmp_path, "bad", ["policy.preload.depth=10"], failed="policy.preload.depth: got 10")
    _job(tmp_path, "cut", ["policy.preload.depth=2"])  # interrupted: job.json only
    df = gather(tmp_path).set_index("policy.preload.depth").sort_index()
    assert list(df.status) == ["ok", "incomplete", "failed"]
    assert df.loc[10, "error"] == "policy.preload.depth: got 10"
    assert pd.isna(df.loc[10, "tokens_per_s"])


def test_dict_overrides_spread_into_columns_and_types_stay_writable(tmp_path):
    _job(tmp_path, "a", ["policy.bands={fp16_frac:1.0,int8_frac:0.0,int4_frac:0.0}",
                         "policy.dram_cache.fixed_layers=null"], summary=_summary())
    _job(tmp_path, "b", ["policy.bands={fp16_frac:0.25,int8_frac:0.25,int4_frac:0.5}",
                         "policy.dram_cache.fixed_layers=auto"], summary=_summary())
    df, path = write_table(tmp_path)
    assert sorted(df["policy.bands.fp16_frac"]) == [0.25, 1.0]
    back = pd.read_parquet(path)
    assert len(back) == 2 and (tmp_path / "results.csv").is_file()


def test_compare_mode_job_gives_one_row_per_policy(tmp_path):
    d = _job(tmp_path, "cmp", ["gpu=t4"])
    (d / "comparison.csv").write_text("policy\n")
    for p in ("m2cache", "dense"):
        (d / p).mkdir()
        (d / p / "summary.json").write_text(json.dumps(_summary(p)))
    df = gather(tmp_path)
    assert sorted(df.policy) == ["dense", "m2cache"] and set(df.gpu) == {"t4"}


def test_results_of_another_schema_are_refused(tmp_path):
    _job(tmp_path, "old", ["policy=m2cache"], summary=_summary(schema=SCHEMA_VERSION - 1))
    with pytest.raises(IncompatibleResults, match="schema version"):
        gather(tmp_path)


def test_job_record_of_another_schema_is_refused(tmp_path):
    d = _job(tmp_path, "x", ["policy=m2cache"], summary=_summary())
    (d / "job.json").write_text(json.dumps({"sweep_schema": 99, "overrides": []}))
    with pytest.raises(IncompatibleResults, match="sweep schema 99"):
        gather(tmp_path)


@pytest.mark.parametrize("make", [lambda p: p / "absent", lambda p: p])
def test_a_directory_without_jobs_is_refused(tmp_path, make):
    with pytest.raises(IncompatibleResults):
        gather(make(tmp_path))


def test_parse_overrides_types_values():
    got = parse_overrides(["+experiment=fig9", "gpu=m40", "host.dram_gib=32",
                           "trace.active_frac=0.1", "carbon.reused_hardware=true", "~policy"])
    assert got == {"gpu": "m40", "host.dram_gib": 32, "trace.active_frac": 0.1,
                   "carbon.reused_hardware": True}
    assert not any(isinstance(v, float) and math.isnan(v) for v in got.values())
