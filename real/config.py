"""Config of the real backend: the ``real`` node of ``conf/real.yaml`` and its schema.

Tier budgets are the same fields the simulator reads: ``gpu.memory_gib`` (device memory, a
budgeted pool on CPU), ``host.dram_gib`` (DRAM cache), and the store on disk stands for the SSD.
``real.predictor_train`` is read only by ``m2real-train-predictor`` (real/train_predictor.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from hydra.core.config_store import ConfigStore

from m2sim.config import M2SimConfig, register_configs
from m2sim.errors import ConfigError, check_range
from real.allocator import MAX_THRESHOLD_BYTES


class PredictorKind(Enum):
    AUTO = "auto"  # LOWRANK if the store has a trained predictor, else ORACLE
    ORACLE = "oracle"  # true |act(gate x) * up x| from dense gate/up (studies only)
    LOWRANK = "lowrank"  # the Deja Vu predictor saved with the store
    TRACE = "trace"  # replay trace.path (trace=replay): sim/real parity runs


@dataclass
class PredictorTrainConfig:
    """How ``m2real-train-predictor`` trains the low-rank predictor saved in ``<store>/predictor``.

    Text, split and defaults: real/predictor_training.py; the fields up to ``seed`` are
    ``real.predictor.PredictorConfig``'s.
    """

    rank: int = 128  # r of Linear(d_model, r) -> Linear(r, d_ff); at most d_model
    # DECISION: positives are each token's top 20% of neurons by importance while the predictor
    # runs its top active_frac: on SmolLM2, keep-0.5 perplexity 20.5 against 27.9 with labels =
    # the top 50%, at about the same recall (results/predictor_metrics.csv, quality_table.py).
    label_frac: Optional[float] = 0.2  # null: active_frac
    active_frac: Optional[float] = None  # null: trace.active_frac, else model.active_frac (m2real's)
    epochs: int = 6
    batch_tokens: int = 256
    lr: float = 1e-2  # peak of the one-cycle schedule (Adam)
    weight_decay: float = 0.0
    seed: int = 0
    train_tokens: int = 6144  # from 50% of the text on (SmolLM2, 2 cores: ~70 s of forwards,
    # ~30 s of training)
    heldout_tokens: int = 1024  # from 80% of the text on: the reported recall
    window_tokens: int = 512  # length of each dense forward that collects FFN inputs

    def __post_init__(self) -> None:
        f = "real.predictor_train."
        check_range(f + "rank", self.rank, 1, 65536)
        check_range(f + "label_frac", self.label_frac, 0.0, 1.0, lo_open=True, hi_open=True,
                    optional=True)
        check_range(f + "active_frac", self.active_frac, 0.0, 1.0, lo_open=True, hi_open=True,
                    optional=True)
        check_range(f + "epochs", self.epochs, 1, 10_000)
        check_range(f + "batch_tokens", self.batch_tokens, 1, 1_000_000)
        check_range(f + "lr", self.lr, 0.0, 1.0, lo_open=True)
        check_range(f + "weight_decay", self.weight_decay, 0.0, 1.0)
        check_range(f + "seed", self.seed, 0, 2**63 - 1)
        check_range(f + "train_tokens", self.train_tokens, 1, 10_000_000)
        check_range(f + "heldout_tokens", self.heldout_tokens, 1, 10_000_000)
        check_range(f + "window_tokens", self.window_tokens, 1, 1_000_000)


@dataclass
class RealConfig:
    device: str = "cpu"  # "cpu" or "cuda[:i]"
    checkpoint: Optional[str] = None  # HF LLaMA dir or .gguf; None: the model's bundled file
    store_dir: Optional[str] = None  # the tiered store; None: stores/<model> (built if absent)
    predictor: PredictorKind = PredictorKind.AUTO
    record_trace: Optional[str] = None  # write this run's active sets as a .m2trace
    torch_threads: int = 0  # 0: leave torch's default
    # the host allocator (real/allocator.py): blocks up to this size come from malloc's heap,
    # not a fresh mmap per call, and this much freed heap stays mapped; 0 leaves glibc's own
    malloc_mmap_threshold_bytes: int = 32 << 20
    malloc_trim_threshold_bytes: int = 256 << 20
    io_threads: int = 4
    # float type of the dense weights and activations: float32 (exact, the default) or
    # float16 / bfloat16 (half the memory for the resident dense weights)
    dtype: str = "float32"
    stop_at_eos: bool = False  # False: always generate workload.output_tokens (as the paper)
    measure_energy: bool = True  # RAPL / NVML where readable (m2sim's real/energy.py)
    # the summary's executor_op_samples: every decode op (attention, FFN, LM head, and the
    # cache unit's evictions and loads) as timed in the run (the profiler fits the simulator's
    # costs to them; on CUDA each timed op waits for the device, so the run loses overlap)
    record_op_times: bool = False
    predictor_train: PredictorTrainConfig = field(default_factory=PredictorTrainConfig)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise ConfigError("real.device", f"got {self.device!r} (allowed: cpu, cuda, cuda:N)")
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise ConfigError("real.dtype", f"got {self.dtype!r} (allowed: float32, float16, "
                              f"bfloat16)")
        check_range("real.torch_threads", self.torch_threads, 0, 1024)
        check_range("real.io_threads", self.io_threads, 1, 256)
        check_range("real.malloc_mmap_threshold_bytes", self.malloc_mmap_threshold_bytes, 0,
                    MAX_THRESHOLD_BYTES)
        check_range("real.malloc_trim_threshold_bytes", self.malloc_trim_threshold_bytes, 0,
                    MAX_THRESHOLD_BYTES)


@dataclass
class RealRunConfig(M2SimConfig):
    real: RealConfig = field(default_factory=RealConfig)


def register_real_configs(cs: Optional[ConfigStore] = None) -> None:
    cs = cs or ConfigStore.instance()
    register_configs(cs)
    cs.store(name="base_m2real", node=RealRunConfig)
