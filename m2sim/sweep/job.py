"""One job of a multirun sweep: skipped when its results exist, recorded when it fails.

A job directory (``hydra.sweep.dir/hydra.sweep.subdir``) holds
  ``job.json``     the job's overrides, written before the run;
  ``summary.json`` written last by a run that finished (``Results.save``), so it means "done";
                   a compare-mode job (no ``policy``) is done once ``comparison.csv`` exists;
  ``failed.json``  ``{"error": <one line>, "kind": "user" | "bug"}`` for a job that failed;
  ``job.log``      what the job printed.
A rerun skips a done job whose ``config.yaml`` equals the newly composed one, reruns a failed or
unfinished one, and stops with one line on results of another schema version.
"""

from __future__ import annotations

import contextlib
import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from m2sim.errors import M2SimError
from m2sim.results import SCHEMA_VERSION, _atomic_text

SWEEP_SCHEMA = 1  # layout of job.json / failed.json / sweep.json
JOB, SUMMARY, FAILED, LOG, COMPARISON = ("job.json", "summary.json", "failed.json", "job.log",
                                         "comparison.csv")
EXCLUDED_KEYS = {"experiment"}  # overrides that name the sweep, not a point of it


class UserExit(SystemExit):
    """Exit status 2 after a one-line user error; a sweep job records ``message`` instead."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message


class IncompatibleResults(M2SimError):
    """A results directory written by another schema version of m2sim."""


def is_multirun() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


def parse_overrides(lines: list[str]) -> dict[str, Any]:
    """Task overrides as ``{key: typed value}`` (``model=tiny`` -> ``{"model": "tiny"}``)."""
    out: dict[str, Any] = {}
    for o in OverridesParser.create().parse_overrides(list(lines)):
        if o.key_or_group in EXCLUDED_KEYS or o.is_delete():
            continue
        out[o.key_or_group] = o.value()
    return out


def check_summary(path: Path) -> dict:
    """A ``summary.json`` of this schema version, or ``IncompatibleResults``."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise IncompatibleResults(f"{path}: not a readable summary ({e})") from None
    got = summary.get("schema_version") if isinstance(summary, dict) else None
    if got != SCHEMA_VERSION:
        raise IncompatibleResults(
            f"{path}: results of schema version {got}, this m2sim reads {SCHEMA_VERSION} "
            f"(delete that sweep directory or choose another hydra.sweep.dir)")
    return summary


def is_done(out: Path, config_yaml: str) -> bool:
    """True when ``out`` holds finished results of exactly this configuration."""
    if (out / COMPARISON).is_file():
        return True
    if not (out / SUMMARY).is_file():
        return False
    check_summary(out / SUMMARY)
    saved = out / "config.yaml"
    return saved.is_file() and saved.read_text() == config_yaml


def record_failure(out: Path, message: str, kind: str, trace: str = "") -> None:
    body = {"sweep_schema": SWEEP_SCHEMA, "error": message, "kind": kind}
    if trace:
        body["traceback"] = trace
    _atomic_text(out / FAILED, json.dumps(body, indent=2) + "\n")


def run_job(dcfg: DictConfig, task: Callable[[DictConfig], None],
            unknown_keys: Callable[[DictConfig], list]) -> str:
    """Run ``task`` as one sweep job unless it is done; returns "done", "skipped" or "failed".

    Unknown keys (``+trace.bogus=1,2``) would fail every job alike, so they stop the sweep.
    """
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    name = hc.job.override_dirname or out.name
    unknown = unknown_keys(dcfg)
    if unknown:
        key, allowed = unknown[0]
        print(f"m2sim: error: {key}: unknown key (allowed: {', '.join(allowed)})",
              file=sys.stderr)
        raise SystemExit(2)
    config_yaml = OmegaConf.to_yaml(dcfg)
    try:
        if is_done(out, config_yaml):
            print(f"[sweep] skipped (done): {name}", flush=True)
            return "skipped"
    except IncompatibleResults as e:
        print(f"m2sim: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    out.mkdir(parents=True, exist_ok=True)
    (out / FAILED).unlink(missing_ok=True)
    job = {"sweep_schema": SWEEP_SCHEMA, "overrides": list(hc.overrides.task),
           "num": hc.job.num}
    _atomic_text(out / JOB, json.dumps(job, indent=2) + "\n")
    status, error = "done", ""
    with open(out / LOG, "w") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        try:
            task(dcfg)
        except UserExit as e:
            status, error = "failed", e.message
            record_failure(out, e.message, "user")
        except Exception as e:  # a bug in one job must not lose the others
            first = str(e).splitlines()[0] if str(e) else ""
            status, error = "failed", f"{type(e).__name__}: {first}"
            record_failure(out, error, "bug", traceback.format_exc())
    print(f"[sweep] {status}: {name}" + (f": {error}" if error else ""), flush=True)
    return status
