"""The Hydra callback of every multirun (``conf/config.yaml``, ``hydra.callbacks``).

Before the jobs: refuse a sweep directory written by another schema version, then stamp it
(``sweep.json``). After them: gather every job into ``results.parquet`` + ``results.csv`` and
print one line of counts, plus each distinct error once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from m2sim.results import SCHEMA_VERSION, _atomic_text
from m2sim.sweep.job import SWEEP_SCHEMA, IncompatibleResults
from m2sim.sweep.table import write_table

STAMP = "sweep.json"


def check_stamp(sweep_dir: Path) -> None:
    """Raise ``IncompatibleResults`` unless ``sweep_dir`` is new or of this schema version."""
    path = sweep_dir / STAMP
    if not path.is_file():
        return
    try:
        stamp = json.loads(path.read_text())
    except ValueError as e:
        raise IncompatibleResults(f"{path}: not readable ({e})") from None
    want = {"sweep_schema": SWEEP_SCHEMA, "summary_schema": SCHEMA_VERSION}
    got = {k: stamp.get(k) for k in want}
    if got != want:
        raise IncompatibleResults(f"{sweep_dir}: written by another m2sim (schema {got}, this "
                                  f"one writes {want}); delete it or choose another "
                                  f"hydra.sweep.dir")


class SweepTable(Callback):
    """Checks the sweep directory before a multirun and gathers its table after it."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            check_stamp(sweep_dir)
        except IncompatibleResults as e:
            print(f"m2sim: error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        sweep_dir.mkdir(parents=True, exist_ok=True)
        stamp = {"sweep_schema": SWEEP_SCHEMA, "summary_schema": SCHEMA_VERSION}
        _atomic_text(sweep_dir / STAMP, json.dumps(stamp) + "\n")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            df, path = write_table(sweep_dir)
        except IncompatibleResults as e:
            print(f"m2sim: error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        counts = df.drop_duplicates("job").status.value_counts()
        parts = ", ".join(f"{counts.get(s, 0)} {s}" for s in ("ok", "failed", "incomplete")
                          if counts.get(s, 0))
        print(f"[sweep] {df.job.nunique()} jobs: {parts} -> {path}")
        for error in df.error.dropna().unique()[:10]:
            print(f"[sweep]   failed: {error}")
        if len(df) and (df.status == "failed").all():
            print(f"m2sim: error: every job of the sweep failed ({df.error.iloc[0]})",
                  file=sys.stderr)
            raise SystemExit(2)
