"""Model shapes and the byte and FLOP arithmetic every other module relies on.

A *neuron* of an FFN is row i of W_gate and W_up (gated FFNs) or W_up (plain FFNs) plus column
i of W_down, stored together as one *bundle* of ``ffn_mats * d_model`` weights (paper §4.1).
``ModelSpec`` answers: bytes of a bundle at FP16/INT8/INT4 (scales included), bytes of the dense
weights (attention, norms, embedding, LM head), KV bytes per token, FLOPs per token. All sizes
are bytes, all rates FLOPs; nothing here knows about time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from omegaconf import MISSING

from m2sim.errors import ConfigError, check_frac, check_range
from m2sim.types import BANDS, Precision


class FFNKind(Enum):
    GATED = "gated"  # SwiGLU / ReGLU: down(act(gate(x)) * up(x)); 3 matrices
    PLAIN = "plain"  # down(act(up(x))); 2 matrices (Falcon, OPT)


class Activation(Enum):
    SILU = "silu"
    RELU = "relu"
    GELU = "gelu"


@dataclass
class ModelConfig:
    """Shapes of a decoder-only transformer plus its activation-sparsity defaults."""

    name: str = MISSING
    num_layers: int = MISSING
    d_model: int = MISSING
    d_ff: int = MISSING
    num_heads: int = MISSING
    num_kv_heads: int = MISSING
    head_dim: Optional[int] = None  # default d_model // num_heads
    vocab_size: int = MISSING
    ffn: FFNKind = FFNKind.GATED
    activation: Activation = Activation.SILU
    tie_embeddings: bool = False
    max_context: int = 4096
    # DECISION (m2cache.md): per-model default fraction of FFN neurons active per decode token.
    active_frac: float = MISSING
    overlap_frac: float = 0.8  # adjacent-token overlap of the active set (paper §5.3: ~80%)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    source: str = ""

    def __post_init__(self) -> None:
        for f in ("num_layers", "d_model", "d_ff", "num_heads", "num_kv_heads", "vocab_size",
                  "max_context"):
            check_range(f"model.{f}", getattr(self, f), 1, None)
        check_range("model.head_dim", self.head_dim, 1, None, optional=True)
        if self.num_heads % self.num_kv_heads:
            raise ConfigError("model.num_kv_heads",
                              f"{self.num_kv_heads} must divide num_heads={self.num_heads}")
        if self.head_dim is None and self.d_model % self.num_heads:
            raise ConfigError("model.head_dim", "required when num_heads does not divide d_model")
        check_range("model.active_frac", self.active_frac, 0, 1, lo_open=True)
        check_frac("model.overlap_frac", self.overlap_frac)

    @property
    def head_size(self) -> int:
        return self.head_dim if self.head_dim is not None else self.d_model // self.num_heads

    @property
    def ffn_mats(self) -> int:
        return 3 if self.ffn is FFNKind.GATED else 2


@dataclass
class QuantConfig:
    """Symmetric round-to-nearest weight quantization (DECISION, m2cache.md)."""

    int4_group_size: int = 64  # weights per INT4 scale, along the input dimension
    scale_bytes: int = 2  # one FP16 scale per row (INT8) or per group (INT4)

    def __post_init__(self) -> None:
        check_range("quant.int4_group_size", self.int4_group_size, 2, None)
        if self.int4_group_size % 2:
            raise ConfigError("quant.int4_group_size", "must be even (two INT4 per byte)")
        check_range("quant.scale_bytes", self.scale_bytes, 1, 8)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def row_bytes(cols: int, precision: Precision, quant: QuantConfig) -> int:
    """Bytes of one weight row of ``cols`` inputs, scales included."""
    if precision is Precision.FP16:
        return 2 * cols
    if precision is Precision.INT8:
        return cols + quant.scale_bytes
    return _ceil_div(cols, 2) + _ceil_div(cols, quant.int4_group_size) * quant.scale_bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """Derived sizes of a model under a quantization format. Build with ``ModelSpec.of``."""

    cfg: ModelConfig
    quant: QuantConfig = field(default_factory=QuantConfig)

    @staticmethod
    def of(cfg: ModelConfig, quant: Optional[QuantConfig] = None) -> ModelSpec:
        return ModelSpec(cfg=cfg, quant=quant or QuantConfig())

    # ---- FFN neurons -------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return self.cfg.num_layers

    @property
    def num_neurons(self) -> int:
        """FFN neurons per layer (d_ff)."""
        return self.cfg.d_ff

    def neuron_bytes(self, precision: Precision) -> int:
        """Bytes of one neuron bundle (gate row | up row | down column) at ``precision``."""
        return self.cfg.ffn_mats * row_bytes(self.cfg.d_model, precision, self.quant)

    def neuron_bytes_by_band(self) -> tuple[int, int, int]:
        return tuple(self.neuron_bytes(p) for p in BANDS)  # type: ignore[return-value]

    def ffn_layer_bytes(self, precision: Precision) -> int:
        return self.num_neurons * self.neuron_bytes(precision)

    def ffn_params_per_layer(self) -> int:
        return self.cfg.ffn_mats * self.cfg.d_model * self.cfg.d_ff

    # ---- dense weights -----------------------------------------------------------------
    @property
    def q_dim(self) -> int:
        return self.cfg.num_heads * self.cfg.head_size

    @property
    def kv_dim(self) -> int:
        return self.cfg.num_kv_heads * self.cfg.head_size

    def attn_params_per_layer(self) -> int:
        d = self.cfg.d_model
        return d * self.q_dim + 2 * d * self.kv_dim + self.q_dim * d

    def attn_layer_bytes(self, precision: Precision = Precision.FP16) -> int:
        """Attention projections (q, k, v rows over d_model; o rows over q_dim) + 2 norms."""
        d, q = self.cfg.d_model, self.q_dim
        rows_over_d = q + 2 * self.kv_dim
        proj = rows_over_d * row_bytes(d, precision, self.quant) + d * row_bytes(q, precision,
                                                                                  self.quant)
        return proj + 2 * d * 2  # two RMSNorm weight vectors stay FP16

    def embedding_bytes(self) -> int:
        return self.cfg.vocab_size * self.cfg.d_model * 2

    def lm_head_bytes(self, precision: Precision = Precision.FP16) -> int:
        return self.cfg.vocab_size * row_bytes(self.cfg.d_model, precision, self.quant)

    def total_params(self) -> int:
        c = self.cfg
        per_layer = self.attn_params_per_layer() + self.ffn_params_per_layer() + 2 * c.d_model
        head = 0 if c.tie_embeddings else c.vocab_size * c.d_model
        return c.num_layers * per_layer + c.vocab_size * c.d_model + head + c.d_model

    def total_bytes(self, precision: Precision = Precision.FP16) -> int:
        """Every weight at one precision (embedding and norms FP16)."""
        c = self.cfg
        per_layer = self.attn_layer_bytes(precision) + self.ffn_layer_bytes(precision)
        head = 0 if c.tie_embeddings else self.lm_head_bytes(precision)
        return c.num_layers * per_layer + self.embedding_bytes() + head + 2 * c.d_model

    # ---- KV cache and FLOPs ------------------------------------------------------------
    def kv_bytes_per_token(self) -> int:
        """K and V for every layer, FP16."""
        return 2 * self.cfg.num_layers * self.kv_dim * 2

    def attn_score_flops(self, context_tokens: int) -> int:
        """QK^T and AV for one query over ``context_tokens`` keys, one layer."""
        return 2 * 2 * self.q_dim * context_tokens

    def decode_flops_per_token(self, context_tokens: int, active_frac: float = 1.0) -> float:
        """FLOPs of one decode step (2 per multiply-add) with a fraction of FFN neurons active."""
        c = self.cfg
        per_layer = (2 * self.attn_params_per_layer() + self.attn_score_flops(context_tokens)
                     + 2 * self.ffn_params_per_layer() * active_frac)
        return c.num_layers * per_layer + 2 * c.vocab_size * c.d_model

    def prefill_flops(self, prompt_tokens: int) -> float:
        """FLOPs of a dense prefill over ``prompt_tokens`` (causal attention), LM head on the last."""
        c = self.cfg
        t = prompt_tokens
        proj = 2 * (self.attn_params_per_layer() + self.ffn_params_per_layer()) * t
        scores = 2 * 2 * self.q_dim * t * (t + 1) / 2
        return c.num_layers * (proj + scores) + 2 * c.vocab_size * c.d_model
