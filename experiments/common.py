"""Plumbing shared by the experiment scripts: run an experiment's sweep, read its table, save.

A script runs ``m2sim +experiment=NAME`` in a subprocess (so a rerun resumes: finished jobs are
skipped), reads the sweep's tidy table (``m2sim.sweep.gather``) and writes its figure's CSV and
PNG. Every script takes the same arguments:

    python -m experiments.fig9_speed [--out DIR] [--sweep-root DIR] [--jobs N] [OVERRIDE ...]

``OVERRIDE`` are Hydra overrides passed to every job (``model=tiny workload=tiny`` in tests;
a value for a swept key replaces the experiment's list).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd

from m2sim.sweep import gather

REPO = Path(__file__).resolve().parent.parent
PAPER_OUT = REPO / "results" / "paper"


def parser(doc: str | None, out: Path = PAPER_OUT) -> argparse.ArgumentParser:
    """The arguments every script takes (a script may add its own)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=out, help=f"CSV/PNG folder (default {out})")
    ap.add_argument("--sweep-root", type=Path, default=REPO / "multirun",
                    help="parent of the sweep directories (default multirun/)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="parallel jobs (Hydra's joblib launcher, conf/hydra/launcher/local)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for every job")
    return ap


def parse_args(doc: str | None, argv: list[str] | None = None) -> argparse.Namespace:
    return parser(doc).parse_args(argv)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def run_sweep(name: str, args: argparse.Namespace, *extra: str) -> pd.DataFrame:
    """Run (or resume) experiment ``name`` and return its results table."""
    sweep_dir = args.sweep_root / name
    mine = {_key(o) for o in extra}  # the script's overrides win over the user's same keys
    user = [o for o in args.overrides if _key(o) not in mine]
    cmd = [sys.executable, "-m", "m2sim", f"+experiment={name}",
           f"hydra.sweep.dir={sweep_dir}", *extra, *user]
    if args.jobs > 1:
        cmd += ["hydra/launcher=local", f"hydra.launcher.n_jobs={args.jobs}"]
    print("$ " + " ".join(cmd[2:]), flush=True)
    r = subprocess.run(cmd, cwd=REPO)
    if r.returncode:
        sys.exit(r.returncode)
    return gather(sweep_dir)


def ok(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of jobs that finished."""
    return df[df.status == "ok"].copy()


def save_csv(df: pd.DataFrame, out: Path, name: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.csv"
    df.to_csv(path, index=False, float_format="%.6g")
    print(f"wrote {path}")
    return path


def job_table(sweep_root: Path, name: str, job: str, table: str) -> pd.DataFrame:
    """One job's own table (``layers``, ``transfers``, ``requests``), parquet or CSV."""
    d = sweep_root / name / job
    pq = d / f"{table}.parquet"
    return pd.read_parquet(pq) if pq.is_file() else pd.read_csv(d / f"{table}.csv")
