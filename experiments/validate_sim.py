"""Sim-to-real validation (issue 5): the simulator's error against the real backend.

Covers: for each configuration (tier budgets from all-in-DRAM to mostly-on-SSD, precision bands,
look-ahead depths, ATU vs LRU, baselines), the real backend and the simulator replay the same
recorded trace; the table puts real (mean of repeats, min-max) beside simulated TPOT, TTFT,
tokens/s, bytes per link, hit rates per tier, and measured vs modelled energy where measurable.
Run:    .venv/bin/python -m real.profile --model smollm2_135m --name vm_smollm2 --store S
        .venv/bin/python experiments/validate_sim.py --model smollm2_135m --profile vm_smollm2 \
            --store S [--repeats 3] [--tokens 24]
    or, profiling with one pass before each repeat and the backend's ops before every real run
    (the profile samples the same spells of a drifting machine as the real runs):
        .venv/bin/python experiments/validate_sim.py --profile vm_smollm2 --store S \
            --conf-dir C --interleave-profile [--repeats 24 --profile-every 2]
Output: OUT/validate_sim.csv, OUT/validate_sim.md (OUT: results/validate_sim by default),
        OUT/trace.m2trace (the recorded trace all configurations replay).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Optional

import pandas as pd
from tqdm import tqdm

from m2sim.calibrate import Measurements
from m2sim.compose import CONF_DIR, load_config
from real.checkpoint_cache import CheckpointCache
from real.profile import Options, fit_and_write, measure, measure_ops, measure_reads
from real.profile_decodes import BANDS_ONLY
from real.store import open_store
from real.validate import Case, Setup, check_setup, compare, real_run, record_trace, replay, sim_run


def cases(model: str) -> list[Case]:
    L = load_config(f"model={model}").model.num_layers
    deep = min(4, L - 1)  # the deepest look-ahead the model allows, up to 4
    half, ssd = f"policy.dram_cache.fixed_layers={L // 2}", "policy.dram_cache.fixed_layers=2"
    return [
        Case("m2cache_dram", "ATU, bands 25/25/50, every layer in DRAM", ("policy=m2cache",)),
        Case("m2cache_half", f"{L // 2} of {L} layers in DRAM, the rest read 2 ahead",
             ("policy=m2cache", half)),
        Case("m2cache_ssd", "2 layers in DRAM: mostly on SSD, 2 ahead", ("policy=m2cache", ssd)),
        Case("m2cache_ssd_d1", "mostly on SSD, look-ahead 1",
             ("policy=m2cache", ssd, "policy.preload.depth=1")),
        Case(f"m2cache_ssd_d{deep}", f"mostly on SSD, look-ahead {deep}",
             ("policy=m2cache", ssd, f"policy.preload.depth={deep}")),
        Case("lru_dram", "LRU HBM cache instead of ATU", ("policy=m2cache_hbm_lru",)),
        Case("bands_fp16", "FP16 band only", ("policy=m2cache", *BANDS_ONLY.format(1, 0, 0).split())),
        Case("bands_int4", "INT4 band only", ("policy=m2cache", *BANDS_ONLY.format(0, 0, 1).split())),
        Case("mp_only_half", "baseline: mixed precision, no HBM cache; half in DRAM",
             ("policy=mixed_precision_only", half)),
        Case("zero_inf_ssd", "baseline: dense FP16 FFN streamed (ZeRO-Infinity-like), "
             "attention resident, mostly on SSD",
             ("policy=zero_infinity", "policy.placement.mode=RESIDENT", ssd)),
        Case("powerinfer", "baseline: hot INT4 neurons resident, cold ones from DRAM",
             ("policy=powerinfer",)),
        Case("dense", "baseline: every weight resident, FP16, no sparsity", ("policy=dense",)),
    ]


def check_schedule(repeats: int, profile_every: int) -> None:
    """Refuse a schedule of real runs that cannot run, naming the field."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if profile_every < 1:
        raise ValueError(f"profile_every must be at least 1 (a profiling pass before every "
                         f"n-th repeat), got {profile_every}")


def validate(s: Setup, out: Path, repeats: int, only: list[str] | None = None,
             reuse: bool = False, interleave: Optional[Options] = None,
             profile_every: int = 1) -> pd.DataFrame:
    """Run (or, with ``reuse``, reread from OUT/real_runs.json) the real side, then simulate.

    ``interleave``: profile the machine (these options; they write the setup's profile) with
    one pass before every ``profile_every``-th repeat (about a minute each for SmolLM2) and the
    backend's ops (``measure_ops``, about 2 s) and the store's layers read from SSD
    (``measure_reads``, about 0.5 s) before every real run, so the profile samples the same
    spells of the machine and its disk as the real runs, and fit it once they are done. The
    real runs are saved to OUT/real_runs.json after every repeat, so a run stopped early
    keeps what it measured."""
    check_schedule(repeats, profile_every)
    out.mkdir(parents=True, exist_ok=True)
    todo = [c for c in cases(s.model) if not only or c.name in only]
    saved, trace = out / "real_runs.json", out / "trace.m2trace"
    meas, info = Measurements(), {}
    checkpoints = CheckpointCache()  # every run here reads the same checkpoint: read it once

    def profile_pass() -> None:  # one pass, then fit everything measured so far
        nonlocal info
        m, info = measure(dataclasses.replace(interleave, rounds=1), checkpoints)
        meas.extend(m)
        fit_and_write(interleave, meas, info)

    if interleave is not None and not reuse:
        profile_pass()
    check_setup(s)
    if reuse:
        reals = json.loads(saved.read_text())
    else:
        record_trace(s, trace, checkpoints=checkpoints)
        store = open_store(Path(s.store))  # built by now
        reals = {c.name: [] for c in todo}
        with tqdm(total=repeats * len(todo), desc="real runs", unit="run") as bar:
            for r in range(repeats):  # interleaved: a slow spell of the machine hits them all
                if interleave is not None and r > 0 and r % profile_every == 0:
                    profile_pass()
                for c in todo:
                    if interleave is not None:
                        meas.extend(measure_ops(interleave))
                        meas.extend(measure_reads(interleave, store))
                    reals[c.name].append(real_run(s, *replay(trace), "real.predictor=TRACE",
                                                  *c.overrides, checkpoints=checkpoints))
                    bar.update(1)
                saved.write_text(json.dumps(reals, default=str))  # what is measured, kept
        if interleave is not None:
            fit_and_write(interleave, meas, info)
    rows = [compare(c, reals[c.name], sim_run(s, trace, c), s.device) for c in todo]
    df = pd.DataFrame(rows)
    df.attrs["decode_tokens"] = s.output_tokens - 1
    df.to_csv(out / "validate_sim.csv", index=False)
    (out / "validate_sim.md").write_text(markdown(df))
    return df


def markdown(df: pd.DataFrame) -> str:
    def pct(x):
        return "–" if x is None or pd.isna(x) else f"{100 * x:+.1f}%"

    lines = ["| config | real TPOT ms, mean (min–max) | sim TPOT ms | TPOT err | real TTFT ms | sim TTFT "
             "ms | TTFT err | real tok/s | sim tok/s | SSD MB/token | DRAM→HBM MB/token | hit "
             "HBM | hit DRAM | bytes, hits equal |", "|" + "---|" * 14]
    n = df.attrs.get("decode_tokens", 1)
    for r in df.itertuples():
        lines.append(
            f"| {r.config} | {r.real_tpot_ms:.1f} ({r.real_tpot_ms_min:.1f}–{r.real_tpot_ms_max:.1f})"
            f" | {r.sim_tpot_ms:.1f} | {pct(r.err_tpot_ms)} | {r.real_ttft_ms:.0f} | "
            f"{r.sim_ttft_ms:.0f} | {pct(r.err_ttft_ms)} | {r.real_tokens_per_s:.2f} | "
            f"{r.sim_tokens_per_s:.2f} | {r.sim_bytes_SSD_TO_DRAM / 1e6 / n:.1f} | "
            f"{r.sim_bytes_DRAM_TO_HBM / 1e6 / n:.1f} | {r.sim_hit_hbm or 0:.3f} | "
            f"{r.sim_hit_dram or 0:.3f} | {'yes' if r.bytes_match and r.hits_match else 'NO'} |")
    e = df.err_tpot_ms.abs()
    lines.append(f"\n{len(df)} configurations; |TPOT error| median {100 * e.median():.1f}%, "
                 f"worst {100 * e.max():.1f}% ({df.config[e.idxmax()]}).")
    return "\n".join(lines) + "\n" + energy_markdown(df)


def energy_markdown(df: pd.DataFrame) -> str:
    """Measured against modelled energy per run, over the components the meter measured
    (``real.validate.modelled_energy_j``); where nothing was measurable, why, in one line."""
    if "real_energy_j" not in df or df.real_energy_j.isna().all():
        note = df.energy_note.iloc[0] if "energy_note" in df and len(df) else "not measured"
        return f"\nEnergy: not measured ({note}); the modelled figures are in the CSV.\n"
    lines = ["", "| config | measured J per run | modelled J | error | components | meter |",
             "|---|---|---|---|---|---|"]
    for r in df.itertuples():
        real = "–" if pd.isna(r.real_energy_j) else f"{r.real_energy_j:.1f}"
        err = "–" if r.err_energy is None or pd.isna(r.err_energy) else f"{100 * r.err_energy:+.1f}%"
        lines.append(f"| {r.config} | {real} | {r.sim_energy_j:.1f} | {err} | {r.energy_scope} "
                     f"| {r.energy_note} |")
    e = df.err_energy.dropna().abs()
    lines.append(f"\n|energy error| median {100 * e.median():.1f}%, worst {100 * e.max():.1f}%.")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2_135m")
    ap.add_argument("--profile", required=True)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--store", required=True)
    ap.add_argument("--conf-dir", default=None,
                    help="where real.profile wrote the profile's configs (default: conf/)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=24, help="output tokens per run")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--out", type=Path, default=Path("results/validate_sim"))
    ap.add_argument("--reuse-real", action="store_true",
                    help="simulate again against the real runs saved in OUT")
    ap.add_argument("--interleave-profile", action="store_true",
                    help="profile the machine (writing --profile into --conf-dir, default conf/) "
                         "with one pass before each repeat of the real runs, and its ops and "
                         "SSD layer reads before every real run")
    ap.add_argument("--profile-every", type=int, default=1, metavar="N",
                    help="with --interleave-profile: the profiling pass before every N-th "
                         "repeat only (the ops and SSD reads still before every real run)")
    a = ap.parse_args()
    try:
        check_schedule(a.repeats, a.profile_every)
    except ValueError as e:
        ap.error(str(e))
    s = Setup(model=a.model, profile=a.profile, checkpoint=a.checkpoint, store=a.store,
              prompt_tokens=a.prompt_tokens, output_tokens=a.tokens, device=a.device,
              conf_dir=a.conf_dir)
    inter = None
    if a.interleave_profile:
        conf = Path(a.conf_dir) if a.conf_dir else CONF_DIR
        inter = Options(model=a.model, name=a.profile, device=a.device, checkpoint=a.checkpoint,
                        store=a.store, conf_dir=conf,
                        out_json=a.out / f"profile_{a.profile}.json")
    df = validate(s, a.out, a.repeats, a.only, a.reuse_real, inter, a.profile_every)
    print((a.out / "validate_sim.md").read_text())
    assert len(df)


if __name__ == "__main__":
    main()
