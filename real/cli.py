"""The ``m2real`` command (also ``python -m real``): run a policy on real weights.

    m2real model=smollm2_135m policy=m2cache real.device=cpu workload.prompt="..." \\
        workload.output_tokens=32 hydra.run.dir=D      # -> D/summary.json (+ tables)

Shares ``conf/`` with ``m2sim``; user errors print one line and exit 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from m2sim.cli import format_constants, format_table, row_of, to_config
from m2sim.errors import M2SimError
from real.checkpoint import CheckpointError
from real.config import register_real_configs
from real.run import run_real

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def _fail(err: Exception) -> None:
    print(f"m2real: error: {err}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="real")
def _main(dcfg: DictConfig) -> None:
    out = Path(HydraConfig.get().runtime.output_dir)
    try:
        cfg = to_config(dcfg)
        if cfg.policy is None:
            raise M2SimError("policy: required (e.g. policy=m2cache)")
        results = run_real(cfg)
    except (M2SimError, CheckpointError, FileNotFoundError) as e:
        _fail(e)
    results.config_yaml = OmegaConf.to_yaml(dcfg)
    results.save(out, parquet=cfg.sim.parquet, chrome=cfg.sim.chrome_trace)
    s = results.summary
    print(format_table([row_of(s)]))
    print(f"generated: {s['generated_text']!r}")
    print(format_constants(s))
    print(f"results: {out}")


def main() -> None:
    register_real_configs()
    _main()


if __name__ == "__main__":
    main()
