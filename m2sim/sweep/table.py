"""Gather a sweep's jobs into one tidy table: one row per job (per policy in compare mode).

Columns: ``job`` (directory under the sweep), ``status`` (ok / failed / incomplete), ``error``,
one column per override key (dict values spread into ``key.sub`` columns), then the summary:
``METRIC_COLUMNS`` first (always present, empty where a run did not report them: carbon fields
appear once a run writes them), then every other scalar of ``summary.json`` flattened with
dots (``bytes_by_link.SSD_TO_DRAM``, ``carbon_breakdown_g.operational.gpu``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from m2sim.results import _atomic
from m2sim.sweep.job import (
    COMPARISON,
    FAILED,
    JOB,
    SUMMARY,
    SWEEP_SCHEMA,
    IncompatibleResults,
    check_summary,
    parse_overrides,
)

TABLE_NAME = "results"  # results.parquet and results.csv in the sweep directory
JOB_COLUMNS = ["job", "status", "error"]
METRIC_COLUMNS = [
    "policy", "model", "gpu", "host", "ssd", "prompt_tokens", "output_tokens", "seed",
    "tokens_per_s", "decode_tokens_per_s", "ttft_s", "tpot_s", "total_s",
    "hbm_hit", "dram_hit", "ssd_gb_per_token", "pcie_gb_per_token",
    "hbm_peak_gib", "dram_peak_gib",
    "energy_j", "carbon_g", "carbon_g_per_token", "carbon_operational_g", "carbon_embodied_g",
    "carbon_model",
]
_SKIP = {"carbon_constants"}  # provenance, not a measurement: kept in summary.json only


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if key in _SKIP:
            continue
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = ",".join(map(str, v))
        else:
            out[key] = v
    return out


def summary_row(s: dict) -> dict[str, Any]:
    """The table's metric columns of one ``summary.json``."""
    row = _flatten(s)
    n = (s.get("output_tokens") or 0) * (s.get("num_requests") or 1)
    links = s.get("bytes_by_link", {})
    hits = s.get("hit_rate_by_tier", {})
    peak = s.get("peak_bytes_by_tier", {})
    breakdown = s.get("carbon_breakdown_g") or {}
    row.update({
        "hbm_hit": hits.get("hbm"), "dram_hit": hits.get("dram"),
        "ssd_gb_per_token": links.get("SSD_TO_DRAM", math.nan) / n / 1e9 if n else None,
        "pcie_gb_per_token": links.get("DRAM_TO_HBM", math.nan) / n / 1e9 if n else None,
        "hbm_peak_gib": peak.get("hbm", math.nan) / 2**30,
        "dram_peak_gib": peak.get("dram", math.nan) / 2**30,
    })
    for part in ("operational", "embodied"):
        if isinstance(breakdown.get(part), dict):
            row[f"carbon_{part}_g"] = math.fsum(breakdown[part].values())
    return row


def _job_rows(job_dir: Path, sweep_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows of one job and its override columns."""
    try:
        job = json.loads((job_dir / JOB).read_text())
    except (OSError, ValueError) as e:
        raise IncompatibleResults(f"{job_dir / JOB}: not a readable job record ({e})") from None
    if job.get("sweep_schema") != SWEEP_SCHEMA:
        raise IncompatibleResults(f"{job_dir / JOB}: sweep schema {job.get('sweep_schema')}, "
                                  f"this m2sim reads {SWEEP_SCHEMA}")
    overrides = _spread(parse_overrides(job.get("overrides", [])))
    base = {"job": str(job_dir.relative_to(sweep_dir)), "error": None}
    if (job_dir / SUMMARY).is_file():
        summaries = [check_summary(job_dir / SUMMARY)]
    elif (job_dir / COMPARISON).is_file():
        summaries = [check_summary(p) for p in sorted(job_dir.glob(f"*/{SUMMARY}"))]
    else:
        summaries = []
    if summaries:
        rows = [{**summary_row(s), **base, "status": "ok", **overrides} for s in summaries]
    elif (job_dir / FAILED).is_file():
        error = json.loads((job_dir / FAILED).read_text()).get("error", "")
        rows = [{**base, "status": "failed", "error": error, **overrides}]
    else:
        rows = [{**base, "status": "incomplete", **overrides}]
    return rows, list(overrides)


def _spread(overrides: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in overrides.items():
        if isinstance(v, dict):
            out.update(_flatten(v, k + "."))
        elif isinstance(v, (list, tuple)):
            out[k] = ",".join(map(str, v))
        else:
            out[k] = v
    return out


def gather(sweep_dir: str | Path) -> pd.DataFrame:
    """Every job under ``sweep_dir`` as one row per run (see the module docstring)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise IncompatibleResults(f"{sweep_dir}: no such sweep directory")
    job_dirs = sorted(p.parent for p in sweep_dir.rglob(JOB))
    if not job_dirs:
        raise IncompatibleResults(f"{sweep_dir}: holds no sweep job ({JOB}): not a directory "
                                  f"written by `m2sim -m` of this version")
    rows: list[dict[str, Any]] = []
    keys: dict[str, None] = {}  # override columns, in order of appearance
    for d in job_dirs:
        job_rows, job_keys = _job_rows(d, sweep_dir)
        rows += job_rows
        keys.update(dict.fromkeys(job_keys))
    df = pd.DataFrame(rows)
    for c in JOB_COLUMNS + METRIC_COLUMNS:
        if c not in df:
            df[c] = None
    front = JOB_COLUMNS + list(keys) + [c for c in METRIC_COLUMNS if c not in keys]
    rest = sorted(c for c in df.columns if c not in set(front))
    return _uniform_types(df[front + rest].copy())


def _uniform_types(df: pd.DataFrame) -> pd.DataFrame:
    """Object columns of mixed types become strings (parquet needs one type per column)."""
    for c in df.columns:
        if df[c].dtype == object:
            kinds = {type(v) for v in df[c] if v is not None and not _isnan(v)}
            if len(kinds) > 1:
                df[c] = df[c].map(lambda v: None if v is None or _isnan(v) else str(v))
    return df


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def write_table(sweep_dir: str | Path) -> tuple[pd.DataFrame, Path]:
    """Gather ``sweep_dir`` and write ``results.parquet`` and ``results.csv`` into it."""
    sweep_dir = Path(sweep_dir)
    df = gather(sweep_dir)
    path = sweep_dir / f"{TABLE_NAME}.parquet"
    _atomic(path, lambda p: df.to_parquet(p, index=False))
    _atomic(sweep_dir / f"{TABLE_NAME}.csv", lambda p: df.to_csv(p, index=False))
    return df, path
