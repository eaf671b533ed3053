"""Results of a run: ``summary.json`` plus tidy tables, one schema for sim and real.

Tables: ``layers`` (one row per token and layer: time, stalls, hits), ``transfers`` (one row per
job on a link or device), ``requests`` (TTFT, end-to-end). ``Results.save`` writes each file
atomically and ``summary.json`` last, so a directory with a summary is complete.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from m2sim.carbon.report import CarbonReport
from m2sim.sim.executor import LayerRecord
from m2sim.sim.server import JobRecord
from m2sim.types import Link

SCHEMA_VERSION = 1


@dataclass
class Results:
    summary: dict[str, Any]
    layers: pd.DataFrame
    transfers: pd.DataFrame
    requests: pd.DataFrame
    config_yaml: str = ""
    extra_files: dict[str, str] = field(default_factory=dict)  # name -> text

    def chrome_trace(self) -> dict:
        """Chrome/Perfetto trace events: one complete event per job, one row per server."""
        events = [{"name": f"{r.label} L{r.layer}", "cat": r.server, "ph": "X",
                   "ts": r.start_s * 1e6, "dur": (r.end_s - r.start_s) * 1e6, "pid": 0,
                   "tid": r.server, "args": {"token": int(r.token), "nbytes": int(r.nbytes),
                                             "prefetch": bool(r.prefetch)}}
                  for r in self.transfers.itertuples()]
        return {"traceEvents": events, "displayTimeUnit": "ms"}

    def save(self, out_dir: str | Path, *, parquet: bool = True, chrome: bool = False) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, df in (("layers", self.layers), ("transfers", self.transfers),
                         ("requests", self.requests)):
            _atomic(out / f"{name}.csv", lambda p, df=df: df.to_csv(p, index=False))
            if parquet:
                _atomic(out / f"{name}.parquet", lambda p, df=df: df.to_parquet(p, index=False))
        if chrome:
            _atomic_text(out / "timeline.json", json.dumps(self.chrome_trace()))
        if self.config_yaml:
            _atomic_text(out / "config.yaml", self.config_yaml)
        for name, text in self.extra_files.items():
            _atomic_text(out / name, text)
        _atomic_text(out / "summary.json", json.dumps(self.summary, indent=2, default=_json))
        return out


def _json(x: Any) -> Any:
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    raise TypeError(f"not JSON serializable: {type(x).__name__}")


def _atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_text(path: Path, text: str) -> None:
    def write(p: str) -> None:
        with open(p, "w") as f:
            f.write(text)

    _atomic(path, write)


def _rate(num: float, den: float) -> Optional[float]:
    return float(num / den) if den > 0 else None


def summarize(run, hw, records, log, mem, requests, token_end_s, *,
              carbon: Optional[CarbonReport] = None) -> Results:
    """Build ``Results`` from an executed run (simulator or real backend)."""
    cfg, policy = run.cfg, run.policy
    layers = pd.DataFrame.from_records(records, columns=LayerRecord._fields)
    for col in ("hits", "loads", "want"):
        if col in layers:
            arr = np.array(layers.pop(col).tolist(), dtype=np.int64).reshape(-1, 3)
            for i, band in enumerate(("fp16", "int8", "int4")):
                layers[f"{col}_{band}"] = arr[:, i]
    transfers = pd.DataFrame.from_records(log, columns=JobRecord._fields)
    req = pd.DataFrame(requests, columns=["request", "start_s", "first_token_s", "end_s"])
    req["ttft_s"] = req.first_token_s - req.start_s
    req["e2e_s"] = req.end_s - req.start_s
    w = cfg.workload
    n_out = w.output_tokens
    req["tpot_s"] = (req.end_s - req.first_token_s) / max(n_out - 1, 1)
    total_s = float(req.end_s.max() - req.start_s.min()) if len(req) else 0.0
    decode_s = float((req.end_s - req.first_token_s).sum())
    n_decode = w.num_requests * (n_out - 1)

    links = transfers[transfers.server.isin([link.name for link in Link])]
    bytes_by_link = {link.name: int(links.nbytes[links.server == link.name].sum())
                     for link in Link}
    dec = layers[layers.phase == "decode"] if len(layers) else layers
    hbm_hits = int(dec[["hits_fp16", "hits_int8", "hits_int4"]].to_numpy().sum()) if len(dec) else 0
    want = int(dec[["want_fp16", "want_int8", "want_int4"]].to_numpy().sum()) if len(dec) else 0
    dram_miss = int(dec.dram_miss_ids.sum()) if len(dec) else 0
    breakdown = {}
    if len(dec):
        breakdown = {k: float(dec[k].sum()) for k in
                     ("gpu_busy_s", "stall_ssd_s", "stall_link_s", "stall_cpu_s")}
    pl = run.placement
    summary = {
        "schema_version": SCHEMA_VERSION,
        "backend": "sim",
        "policy": policy.name,
        "model": cfg.model.name,
        "gpu": cfg.gpu.name,
        "host": cfg.host.name,
        "ssd": cfg.host.ssd.name,
        "prompt_tokens": w.prompt_tokens,
        "output_tokens": n_out,
        "num_requests": w.num_requests,
        "seed": w.seed,
        "tokens_per_s": _rate(n_out * w.num_requests, total_s),
        "decode_tokens_per_s": _rate(n_decode, decode_s),
        "ttft_s": float(req.ttft_s.mean()) if len(req) else None,
        "tpot_s": float(decode_s / n_decode) if n_decode else None,
        "total_s": total_s,
        "bytes_by_link": bytes_by_link,
        "hit_rate_by_tier": {
            "hbm": _rate(hbm_hits, want),  # active ids already in HBM at their precision
            "dram": _rate(want - dram_miss, want),
        },
        "peak_bytes_by_tier": {"hbm": int(mem.peak_hbm), "dram": int(mem.peak_dram),
                               "ssd": int(_ssd_bytes(run))},
        "decode_time_breakdown_s": breakdown,
        "placement": {
            "attn_layers_resident": pl.num_attn_resident,
            "num_layers": run.num_layers,
            "lm_head_resident": pl.lm_head_resident,
            "dense_pinned_in_dram": pl.dense_in_dram,
            "hbm_plan_bytes": {k: int(v) for k, v in pl.hbm_bytes.items()},
            "dram_plan_bytes": {k: int(v) for k, v in pl.dram_bytes.items()},
            "dram_fixed_layers": len(run.dram.initial_layers()),
            "stored_precisions": [p.name for p in run.sizes.stored],
        },
        "busy_s": {"gpu": hw.gpu.busy_s, "cpu_mgmt": hw.mgmt.busy_s, "cpu": hw.cpu.busy_s,
                   **{link.name: hw.links[link].busy_s for link in Link}},
        "neurons_per_id": run.layout.neurons_per_id,
    }
    if carbon is not None:
        summary.update(carbon.to_summary())
        summary["carbon_model"] = cfg.carbon.name
    return Results(summary=summary, layers=layers, transfers=transfers, requests=req)


def _ssd_bytes(run) -> int:
    s = run.sizes
    return run.num_layers * (s.dram_layer + s.attn_layer) + run.spec.embedding_bytes() + s.lm_head
