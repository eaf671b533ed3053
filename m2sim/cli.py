"""The ``m2sim`` command (also ``python -m m2sim``): a Hydra app over ``conf/``.

``m2sim policy=P ...`` simulates one policy and writes its results to the run directory;
``m2sim`` with no policy compares every preset in ``compare`` on the same scenario and prints one
table (a preset that cannot run there says why in its row). User errors print one line and exit
with status 2; nothing is written for a configuration that fails validation. In a multirun
(``m2sim -m ...``, ``m2sim +experiment=NAME``) each job goes through ``m2sim.sweep.run_job``: a
finished job is skipped, a failing one is recorded in its ``failed.json`` and the sweep goes on.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import hydra
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from m2sim.config import M2SimConfig, register_configs
from m2sim.errors import ConfigError, M2SimError
from m2sim.results import _atomic, _atomic_text
from m2sim.sim.engine import simulate
from m2sim.sweep.job import UserExit, is_multirun, run_job

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")  # also m2sim.compose.CONF_DIR

TABLE_COLUMNS = ["policy", "tokens_per_s", "g_co2_per_token", "decode_tokens_per_s", "ttft_s",
                 "tpot_s", "hbm_hit", "dram_hit", "ssd_gb_per_token", "pcie_gb_per_token",
                 "note"]


def _fail(err: Exception) -> None:
    print(f"m2sim: error: {err}", file=sys.stderr)
    raise UserExit(str(err))  # exit status 2; a sweep job records the line instead


def _to_config(dcfg: DictConfig) -> M2SimConfig:
    try:
        return to_config(dcfg)
    except M2SimError as e:
        _fail(e)
    raise AssertionError("unreachable")


def to_config(dcfg: DictConfig) -> M2SimConfig:
    """``OmegaConf.to_object`` that reports every user error as one ``M2SimError`` line."""
    unknown = _unknown_keys(dcfg)
    if unknown:
        key, allowed = unknown[0]
        raise ConfigError(key, f"unknown key (allowed: {', '.join(allowed)})")
    try:
        return OmegaConf.to_object(dcfg)  # type: ignore[return-value]
    except M2SimError:
        raise
    except Exception as e:  # OmegaConf validation (missing value, bad type) -> one line
        if isinstance(e.__cause__, M2SimError):
            raise e.__cause__ from None
        raise _one_line(e) from None


def _unknown_keys(node: DictConfig, prefix: str = "") -> list[tuple[str, list[str]]]:
    """Keys a structured node holds that its dataclass lacks (``+key=...`` adds them silently)."""
    t = OmegaConf.get_type(node)
    names = [f.name for f in dataclasses.fields(t)] if dataclasses.is_dataclass(t) else None
    out = []
    for k in node.keys():
        key = f"{prefix}{k}"
        if names is not None and k not in names:
            out.append((key, names))
        child = node._get_node(k)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            out += _unknown_keys(child, key + ".")
    return out


def _one_line(e: Exception) -> M2SimError:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    key = getattr(e, "full_key", None)
    return ConfigError(key, msg) if key else M2SimError(msg)


def check_compare(names: list[str]) -> None:
    """Every name in ``compare`` must be a ``conf/policy`` preset."""
    presets = sorted(p.stem for p in (Path(CONF_DIR) / "policy").glob("*.yaml"))
    if not names:
        raise ConfigError("compare", f"is empty (allowed: one or more of {', '.join(presets)})")
    for name in names:
        if name not in presets:
            raise ConfigError("compare", f"unknown preset {name!r} "
                                         f"(allowed: {', '.join(presets)})")


def row_of(summary: dict) -> dict:
    n = summary["output_tokens"] * summary["num_requests"]
    b = summary["bytes_by_link"]
    h = summary["hit_rate_by_tier"]
    return {"policy": summary["policy"], "tokens_per_s": summary["tokens_per_s"],
            "g_co2_per_token": summary.get("carbon_g_per_token"),
            "decode_tokens_per_s": summary["decode_tokens_per_s"], "ttft_s": summary["ttft_s"],
            "tpot_s": summary["tpot_s"], "hbm_hit": h["hbm"], "dram_hit": h["dram"],
            "ssd_gb_per_token": b["SSD_TO_DRAM"] / n / 1e9,
            "pcie_gb_per_token": b["DRAM_TO_HBM"] / n / 1e9, "note": ""}


def format_table(rows: list[dict]) -> str:
    df = pd.DataFrame(rows, columns=TABLE_COLUMNS)

    def fmt(x):
        if isinstance(x, float):
            return "-" if math.isnan(x) else f"{x:.4g}"
        return "-" if x is None else str(x)

    return df.to_string(index=False, formatters={c: fmt for c in TABLE_COLUMNS[1:-1]},
                        na_rep="-", justify="left")


def format_constants(summary: dict) -> str:
    """The carbon model's constants, one line each (value, unit, source)."""
    consts = summary.get("carbon_constants") or {}
    lines = [f"carbon constants (carbon={summary.get('carbon_model')}):"]
    for name, c in consts.items():
        v = c["value"]
        v = f"{v:.6g}" if isinstance(v, float) else str(v)
        src = c.get("source", "")
        src = src if len(src) <= 72 else src[:69] + "..."
        lines.append(f"  {name} = {v} {c.get('unit', '')}  [{src}]")
    return "\n".join(lines)


def run_one(cfg: M2SimConfig, out: Path, yaml: str) -> dict:
    results = simulate(cfg)
    results.config_yaml = yaml
    results.save(out, parquet=cfg.sim.parquet, chrome=cfg.sim.chrome_trace)
    return results.summary


def compare(cfg: M2SimConfig, out: Path) -> tuple[list[dict], dict | None]:
    """Run every preset in ``cfg.compare`` with the user's other overrides.

    Returns the table rows and the first summary (for the constants it used).
    """
    task = [o for o in HydraConfig.get().overrides.task if not o.startswith("compare")]
    rows = []
    first = None
    for name in cfg.compare:
        dcfg = hydra.compose(config_name="config", overrides=[*task, f"policy={name}"])
        try:
            one = to_config(dcfg)
            summary = run_one(one, out / name, OmegaConf.to_yaml(dcfg))
            rows.append(row_of(summary))
            first = first or summary
        except M2SimError as e:
            rows.append({"policy": name, "note": f"cannot run: {e}"})
    for row in rows:
        row["note"] = row.get("note") or ""
    return rows, first


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _app(dcfg: DictConfig) -> None:
    if is_multirun():  # resume: skip finished jobs, record failed ones (m2sim/sweep/job.py)
        run_job(dcfg, _main, _unknown_keys)
    else:
        _main(dcfg)


def _main(dcfg: DictConfig) -> None:
    cfg = _to_config(dcfg)
    out = Path(HydraConfig.get().runtime.output_dir)
    try:
        if cfg.policy is not None:
            summary = run_one(cfg, out, OmegaConf.to_yaml(dcfg))
            print(format_table([row_of(summary)]))
            print(format_constants(summary))
            print(f"results: {out}")
            return
        check_compare(cfg.compare)
        rows, first = compare(cfg, out)
    except M2SimError as e:
        _fail(e)
    w = cfg.workload
    print(f"{cfg.model.name} on {cfg.gpu.name} + {cfg.host.name} ({cfg.host.ssd.name}), "
          f"prompt {w.prompt_tokens}, output {w.output_tokens}, batch 1")
    print(format_table(rows))
    if first is not None:
        print(format_constants(first))
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    _atomic(out / "comparison.csv", lambda p: table.to_csv(p, index=False))
    _atomic_text(out / "comparison.md", format_table(rows) + "\n")
    print(f"results: {out}")


def main() -> None:
    register_configs()
    _app()


if __name__ == "__main__":
    main()
