"""Pool runs of ``validate_sim.py`` into one validation with more repeats.

Runs that replayed the same trace with the same real backend on the same machine are repeats of
one experiment spread over more time. Their real runs and their profiles' samples, taken
together and fitted with the current code, give a table whose real side is the mean over every
repeat of every run. On a noisy machine that separates the simulator's systematic error from
the run-to-run noise (docs/sim_to_real.md, "More repeats, pooled"). The table's "bytes, hits
equal" column checks every pooled repeat against the simulation of the trace given.

Run:    .venv/bin/python experiments/pool_validations.py RUN_DIR [RUN_DIR ...] \\
            --trace results/validate_sim/trace.m2trace --store S --out OUT
Each RUN_DIR holds ``real_runs.json`` and ``profile_<profile>.json`` (or ``.json.gz``), as
``validate_sim.py --interleave-profile`` writes them.
Output: OUT/validate_sim.md, OUT/validate_sim.csv, OUT/conf (the pooled profile's configs),
        OUT/profile_<profile>.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script

from experiments.validate_sim import cases, markdown  # noqa: E402
from m2sim.calibrate import Measurements  # noqa: E402
from m2sim.errors import M2SimError  # noqa: E402
from real.profile import Options, fit_and_write  # noqa: E402
from real.validate import Setup, compare, sim_run  # noqa: E402


def read_json(path: Path) -> dict:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return json.load(f)


def load_run(run_dir: Path, profile: str) -> tuple[dict, dict]:
    """(real runs by configuration, the saved profile) of one validation run."""
    real = run_dir / "real_runs.json"
    prof = [p for p in (run_dir / f"profile_{profile}.json",
                        run_dir / f"profile_{profile}.json.gz") if p.is_file()]
    if not real.is_file() or not prof:
        raise M2SimError(f"{run_dir}: a validation run needs real_runs.json and "
                         f"profile_{profile}.json(.gz) (as validate_sim.py "
                         f"--interleave-profile writes them)")
    return read_json(real), read_json(prof[0])


def pool(run_dirs: Sequence[Path], s: Setup, trace: Path, out: Path) -> pd.DataFrame:
    """Fit the pooled samples into ``s.conf_dir`` (as profile ``s.profile``), simulate every
    configuration the runs share, and write the table to ``out``."""
    reals: dict[str, list] = {}
    meas, first = Measurements(), None
    for d in run_dirs:
        runs, saved = load_run(Path(d), s.profile)
        hdr = saved["header"]
        if first is None:
            first = saved
        for field in ("machine", "model", "device", "dtype", "torch_threads"):
            if hdr[field] != first["header"][field]:
                raise M2SimError(f"{d}: profile.{field} is {hdr[field]!r}, but the first run's "
                                 f"is {first['header'][field]!r}: only runs of one machine "
                                 f"and setup pool")
        meas.extend(Measurements.from_dict(saved["measurements"]))
        for name, rows in runs.items():
            reals.setdefault(name, []).extend(rows)
    todo = [c for c in cases(s.model) if c.name in reals]
    short = [c.name for c in todo if len(reals[c.name]) < len(run_dirs)]
    if short:
        raise M2SimError(f"configurations {short} are missing from some runs: pool runs of the "
                         f"same configurations")
    o = Options(model=s.model, name=s.profile, device=s.device, dtype=s.dtype,
                threads=s.threads, checkpoint=s.checkpoint, store=s.store,
                conf_dir=Path(s.conf_dir), out_json=out / f"profile_{s.profile}.json")
    out.mkdir(parents=True, exist_ok=True)
    fit_and_write(o, meas, first["info"], first["header"])
    df = pd.DataFrame([compare(c, reals[c.name], sim_run(s, trace, c), s.device)
                       for c in todo])
    df.attrs["decode_tokens"] = s.output_tokens - 1
    df.to_csv(out / "validate_sim.csv", index=False)
    (out / "validate_sim.md").write_text(markdown(df))
    return df


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--trace", type=Path, required=True, help="the trace every run replayed")
    ap.add_argument("--model", default="smollm2_135m")
    ap.add_argument("--profile", default="vm_smollm2")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--store", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=24, help="output tokens per run")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    s = Setup(model=a.model, profile=a.profile, checkpoint=a.checkpoint, store=a.store,
              prompt_tokens=a.prompt_tokens, output_tokens=a.tokens, device=a.device,
              conf_dir=str(a.out / "conf"))
    try:
        pool(a.runs, s, a.trace, a.out)
    except M2SimError as e:
        print(f"pool_validations: error: {e}", file=sys.stderr)
        sys.exit(2)
    print((a.out / "validate_sim.md").read_text())


if __name__ == "__main__":
    main()
