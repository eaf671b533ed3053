"""Shared fixtures: configs composed from ``conf/`` with Hydra's compose API, and an RNG.

``register_configs()`` runs once per session (the entry point's job in production); every
compose then goes through the same ``conf/`` the ``m2sim`` command reads.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from m2sim.config import M2SimConfig, register_configs

REPO = Path(__file__).resolve().parent.parent
CONF_DIR = REPO / "conf"
TINY = ["model=tiny", "workload=tiny"]
# Files a run writes; none may exist after a run that was refused.
RESULT_SUFFIXES = {".json", ".csv", ".parquet", ".md", ".yaml"}


@pytest.fixture(scope="session")
def registered() -> None:
    register_configs()


@pytest.fixture(scope="session")
def compose_dict(registered) -> Callable[..., DictConfig]:
    """``compose_dict(*overrides)``: the composed root ``DictConfig`` (before conversion)."""

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))

    return _compose


@pytest.fixture(scope="session")
def load_cfg(compose_dict) -> Callable[..., M2SimConfig]:
    """``load_cfg(*overrides)``: compose, then ``OmegaConf.to_object`` (validation runs)."""

    def _load(*overrides: str) -> M2SimConfig:
        return OmegaConf.to_object(compose_dict(*overrides))  # type: ignore[return-value]

    return _load


@pytest.fixture
def tiny_cfg(load_cfg) -> M2SimConfig:
    return load_cfg(*TINY, "policy=m2cache")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def run_cli(*args: str, cwd: Path = REPO, exe: list[str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """The real command in a fresh process (``python -m m2sim`` unless ``exe`` is given)."""
    cmd = (exe or [sys.executable, "-m", "m2sim"]) + list(args)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def result_files(run_dir: Path) -> list[str]:
    """Result files under ``run_dir`` (an absent directory holds none)."""
    if not run_dir.exists():
        return []
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
                  if p.is_file() and p.suffix in RESULT_SUFFIXES)
