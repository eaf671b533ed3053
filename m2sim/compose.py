"""Compose a config from ``conf/`` in Python (notebooks, experiments, tests), no CLI needed.

    cfg = load_config("policy=m2cache", "model=llama2_13b", "workload.output_tokens=64")
    results = simulate(cfg)
"""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from m2sim.config import M2SimConfig, register_configs

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def compose_dict(*overrides: str, config_name: str = "config") -> DictConfig:
    """The composed ``DictConfig`` (before conversion), e.g. to print or save it."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def load_config(*overrides: str) -> M2SimConfig:
    """Compose ``conf/config.yaml`` with Hydra overrides and convert it to ``M2SimConfig``."""
    return OmegaConf.to_object(compose_dict(*overrides))  # type: ignore[return-value]
