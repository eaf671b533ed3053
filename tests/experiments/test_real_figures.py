"""The figure scripts that run the real backend, on the seeded random tiny LLaMA: Fig. 10's quality
half writes its table (and fig10_precision joins and plots it beside the speed); Fig. 6 records a
trace with the real backend and reads its overlap per layer.

The scripts run as subprocesses (they set torch's thread count), a few seconds each.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from experiments import fig10_precision
from experiments.fig10_quality import speed_splits
from real.tiny import save_tiny_llama
from tests.conftest import REPO

BANDS = ["fp16_frac", "int8_frac", "int4_frac"]
TINY_ACTIVE_FRAC = 0.25  # conf/model/tiny.yaml
TINY_D_FF, TINY_LAYERS = 256, 4


def _run(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def quality(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("paper")
    _run("experiments.fig10_quality", "--out", str(out), "--model", "tiny", "--checkpoint",
         str(tiny_checkpoint), "--tokens", "48", "--prompt-tokens", "8", "--new-tokens", "3",
         "--selectors", "oracle", "--algorithm1", "run")
    return out, pd.read_csv(out / "fig10_quality.csv")


def test_fig10_quality_measures_every_speed_split_at_the_active_frac(quality):
    _, q = quality
    assert {"model", *BANDS, "selector", "config", "keep_frac", "mean_bits", "perplexity",
            "entropy_nats", "entropy_per_token_nats", "ppl_vs_dense_fp16"} <= set(q.columns)
    assert list(q.config.unique()) == ["dense_fp16", "split", "algorithm1"]
    splits = q[q.config == "split"]
    assert sorted(map(tuple, splits[BANDS].to_numpy())) == sorted(speed_splits())
    assert (splits.model == "tiny").all() and (splits.keep_frac == TINY_ACTIVE_FRAC).all()
    assert np.allclose(q[BANDS].sum(axis=1), 1.0)
    assert (q.perplexity > 1).all() and (q.entropy_per_token_nats > 0).all()
    assert (q.entropy_tokens == 4 * 3).all()  # 4 prompts x 3 decode steps (Eq. 2)


def test_fig10_precision_joins_the_quality_half_by_split_and_plots_it(quality):
    out, q = quality
    speed = pd.DataFrame([{"status": "ok", "model": "tiny", **{f"policy.bands.{b}": v
                                                                for b, v in zip(BANDS, fr)},
                           "tokens_per_s": 1.0, "decode_tokens_per_s": 1.0, "tpot_s": 1.0,
                           "pcie_gb_per_token": 0.0, "ssd_gb_per_token": 0.0, "hbm_hit": 1.0,
                           "hbm_peak_gib": 0.0} for fr in speed_splits()])
    t = fig10_precision.table(speed, out)
    assert len(t) == len(speed) and (t.quality_model == "tiny").all()
    by_split = q[q.config == "split"].set_index(BANDS).perplexity
    assert np.allclose(t.perplexity_oracle, [by_split[tuple(r)] for r in t[BANDS].to_numpy()])
    assert t.entropy_per_token_nats_oracle.notna().all()
    png = fig10_precision.plot(t, out, q)
    assert png.is_file() and png.stat().st_size < 200_000


def test_fig6_overlap_from_traces_of_the_real_backend_and_of_teacher_forcing(tiny_checkpoint,
                                                                           tmp_path):
    _run("experiments.fig6_overlap", "--out", str(tmp_path), "--models", "", "--record-real",
         "5", "--teacher-forced", "7", "--real-model", "tiny", "--real-checkpoint",
         str(tiny_checkpoint), "--trace-dir", str(tmp_path), "--top-frac", "0.1")
    t = pd.read_csv(tmp_path / "fig6_overlap.csv")
    assert t.source.nunique() == 4 and len(t) == 4 * TINY_LAYERS
    real = t[t.source.str.contains("_real.m2trace")]
    assert (real.tokens == 5).all() and (t[~t.index.isin(real.index)].tokens == 7).all()
    assert t.overlap_mean.between(0, 1).all()
    assert np.allclose(t[~t.source.str.contains("top")].chance_overlap, TINY_ACTIVE_FRAC)
    assert np.allclose(t[t.source.str.contains("top 10%")].chance_overlap,
                       round(0.1 * TINY_D_FF) / TINY_D_FF)
    assert (tmp_path / "fig6_tiny_real.summary.json").is_file()
    assert (tmp_path / "fig6_overlap.png").is_file()
