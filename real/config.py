"""Config of the real backend: the ``real`` node of ``conf/real.yaml`` and its schema.

Tier budgets are the same fields the simulator reads: ``gpu.memory_gib`` (device memory, a
budgeted pool on CPU), ``host.dram_gib`` (DRAM cache), and the store on disk stands for the SSD.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from hydra.core.config_store import ConfigStore

from m2sim.config import M2SimConfig, register_configs
from m2sim.errors import ConfigError, check_range


class PredictorKind(Enum):
    AUTO = "auto"  # LOWRANK if the store has a trained predictor, else ORACLE
    ORACLE = "oracle"  # true |act(gate x) * up x| from dense gate/up (studies only)
    LOWRANK = "lowrank"  # the Deja Vu predictor saved with the store
    TRACE = "trace"  # replay trace.path (trace=replay): sim/real parity runs


@dataclass
class RealConfig:
    device: str = "cpu"  # "cpu" or "cuda[:i]"
    checkpoint: Optional[str] = None  # HF LLaMA dir or .gguf; None: the model's bundled file
    store_dir: Optional[str] = None  # the tiered store; None: stores/<model> (built if absent)
    predictor: PredictorKind = PredictorKind.AUTO
    record_trace: Optional[str] = None  # write this run's active sets as a .m2trace
    torch_threads: int = 0  # 0: leave torch's default
    io_threads: int = 4
    # float type of the dense weights and activations: float32 (exact, the default) or
    # float16 / bfloat16 (half the memory for the resident dense weights)
    dtype: str = "float32"
    stop_at_eos: bool = False  # False: always generate workload.output_tokens (as the paper)
    measure_energy: bool = True  # RAPL / NVML where readable (m2sim's real/energy.py)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise ConfigError("real.device", f"got {self.device!r} (allowed: cpu, cuda, cuda:N)")
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise ConfigError("real.dtype", f"got {self.dtype!r} (allowed: float32, float16, "
                              f"bfloat16)")
        check_range("real.torch_threads", self.torch_threads, 0, 1024)
        check_range("real.io_threads", self.io_threads, 1, 256)


@dataclass
class RealRunConfig(M2SimConfig):
    real: RealConfig = field(default_factory=RealConfig)


def register_real_configs(cs: Optional[ConfigStore] = None) -> None:
    cs = cs or ConfigStore.instance()
    register_configs(cs)
    cs.store(name="base_m2real", node=RealRunConfig)
