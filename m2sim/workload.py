"""Workload: what is asked of the model (batch-1 requests of a prompt and an output length)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from m2sim.errors import ConfigError, check_range


@dataclass
class WorkloadConfig:
    name: str = "default"
    prompt_tokens: int = 64
    output_tokens: int = 64
    batch_size: int = 1  # M2Cache serves one sequence at a time (paper §6.1)
    num_requests: int = 1  # served back to back
    seed: int = 0
    prompt: Optional[str] = None  # real backend: the prompt text (its token count wins)

    def __post_init__(self) -> None:
        check_range("workload.prompt_tokens", self.prompt_tokens, 1, None)
        check_range("workload.output_tokens", self.output_tokens, 1, None)
        if self.batch_size != 1:
            raise ConfigError("workload.batch_size", f"got {self.batch_size} (allowed: 1)")
        check_range("workload.num_requests", self.num_requests, 1, None)
        check_range("workload.seed", self.seed, 0, None)
