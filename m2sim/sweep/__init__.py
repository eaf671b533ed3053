"""Sweeps: resumable multirun jobs, failure records and one tidy results table per sweep.

``m2sim -m ...`` or ``m2sim +experiment=NAME`` runs each job through ``run_job`` (skip if done,
record if failed); the ``SweepTable`` callback writes ``results.parquet``/``results.csv``;
``python -m m2sim.sweep DIR`` gathers a sweep directory by hand (e.g. after a cluster run).
"""

from m2sim.sweep.job import IncompatibleResults, UserExit, is_multirun, run_job
from m2sim.sweep.table import METRIC_COLUMNS, gather, write_table

__all__ = ["IncompatibleResults", "METRIC_COLUMNS", "UserExit", "gather", "is_multirun",
           "run_job", "write_table"]
