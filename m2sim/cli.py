"""The ``m2sim`` command (also ``python -m m2sim``): a Hydra app over ``conf/``.

``m2sim policy=P ...`` simulates one policy and writes its results to the run directory;
``m2sim`` with no policy compares every preset in ``compare`` on the same scenario and prints one
table (a preset that cannot run there says why in its row). User errors print one line and exit
with status 2; nothing is written for a configuration that fails validation.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import hydra
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from m2sim.config import M2SimConfig, register_configs
from m2sim.errors import M2SimError
from m2sim.results import _atomic, _atomic_text
from m2sim.sim.engine import simulate

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")

TABLE_COLUMNS = ["policy", "tokens_per_s", "decode_tokens_per_s", "ttft_s", "tpot_s",
                 "hbm_hit", "dram_hit", "ssd_gb_per_token", "pcie_gb_per_token", "note"]


def _fail(err: Exception) -> None:
    print(f"m2sim: error: {err}", file=sys.stderr)
    sys.exit(2)


def _to_config(dcfg: DictConfig) -> M2SimConfig:
    try:
        return OmegaConf.to_object(dcfg)  # type: ignore[return-value]
    except M2SimError as e:
        _fail(e)
    except Exception as e:  # OmegaConf validation (missing value, bad type) -> one line
        cause = e.__cause__ if isinstance(e.__cause__, M2SimError) else e
        _fail(cause if isinstance(cause, M2SimError) else _one_line(e))
    raise AssertionError("unreachable")


def _one_line(e: Exception) -> Exception:
    return M2SimError(str(e).splitlines()[0] if str(e) else type(e).__name__)


def row_of(summary: dict) -> dict:
    n = summary["output_tokens"] * summary["num_requests"]
    b = summary["bytes_by_link"]
    h = summary["hit_rate_by_tier"]
    return {"policy": summary["policy"], "tokens_per_s": summary["tokens_per_s"],
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
                        justify="left")


def run_one(cfg: M2SimConfig, out: Path, yaml: str) -> dict:
    results = simulate(cfg)
    results.config_yaml = yaml
    results.save(out, parquet=cfg.sim.parquet, chrome=cfg.sim.chrome_trace)
    return results.summary


def compare(cfg: M2SimConfig, out: Path) -> list[dict]:
    """Run every preset in ``cfg.compare`` with the user's other overrides."""
    task = [o for o in HydraConfig.get().overrides.task if not o.startswith("compare")]
    rows = []
    for name in cfg.compare:
        dcfg = hydra.compose(config_name="config", overrides=[*task, f"policy={name}"])
        try:
            one: M2SimConfig = OmegaConf.to_object(dcfg)  # type: ignore[assignment]
            summary = run_one(one, out / name, OmegaConf.to_yaml(dcfg))
            rows.append(row_of(summary))
        except M2SimError as e:
            rows.append({"policy": name, "note": f"cannot run: {e}"})
    return rows


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _main(dcfg: DictConfig) -> None:
    cfg = _to_config(dcfg)
    out = Path(HydraConfig.get().runtime.output_dir)
    try:
        if cfg.policy is not None:
            summary = run_one(cfg, out, OmegaConf.to_yaml(dcfg))
            print(format_table([row_of(summary)]))
            print(f"results: {out}")
            return
        rows = compare(cfg, out)
    except M2SimError as e:
        _fail(e)
    w = cfg.workload
    print(f"{cfg.model.name} on {cfg.gpu.name} + {cfg.host.name} ({cfg.host.ssd.name}), "
          f"prompt {w.prompt_tokens}, output {w.output_tokens}, batch 1")
    print(format_table(rows))
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    _atomic(out / "comparison.csv", lambda p: table.to_csv(p, index=False))
    _atomic_text(out / "comparison.md", format_table(rows) + "\n")
    print(f"results: {out}")


def main() -> None:
    register_configs()
    _main()


if __name__ == "__main__":
    main()
