"""A LLaMA-family decoder in plain PyTorch with a neuron-sparse FFN path (gpt-fast register).

``Transformer`` is built on the meta device and loaded with ``load_state_dict(assign=True)``
(real/checkpoint.py). Its FFN runs dense (prefill, or decode with every neuron active) or sparse
through ``sparse_ffn``, which computes only a token's active neurons from per-precision slot
pools (``FFNPart``). Decode callers pick the parts per layer with ``ffn_parts_fn``; the true
importance |act(gate x) * up x| of every neuron is reported for free through ``ffn_record_fn``.
Shapes: B batch, T new tokens, S cached + new tokens, d d_model, f d_ff, k active neurons.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional, Protocol, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"silu": F.silu, "relu": F.relu}


@dataclass(frozen=True, kw_only=True)
class LlamaArgs:
    """Shapes and constants of a LLaMA-family decoder."""

    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int  # grouped-query attention: each KV head serves n_heads // n_kv_heads heads
    head_dim: int
    d_ff: int  # FFN neurons per layer
    vocab_size: int
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_embeddings: bool = False  # LM head reuses the token embedding matrix
    activation: str = "silu"  # 'silu' (SwiGLU) or 'relu' (ReGLU)
    max_context: int = 4096  # tokens (prompt + generated)

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff",
                     "vocab_size", "max_context"):
            if getattr(self, name) < 1:
                raise ValueError(f"LlamaArgs.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"LlamaArgs.n_kv_heads={self.n_kv_heads} must divide "
                             f"n_heads={self.n_heads}")
        if self.head_dim % 2:
            raise ValueError(f"LlamaArgs.head_dim must be even for RoPE, got {self.head_dim}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"LlamaArgs.activation must be one of {sorted(ACTIVATIONS)}, "
                             f"got {self.activation!r}")


class Dequantizable(Protocol):
    """Quantized rows (real/quant.py) that expand to float rows (k, d)."""

    def dequantize(self) -> Tensor: ...


Rows = Union[Tensor, Dequantizable]


@dataclass(frozen=True, kw_only=True)
class FFNPart:
    """One precision's slot pool for a token: k_b gathered neurons of one layer.

    ``down`` holds columns of W_down stored as rows, so all three are (k_b, d).
    """

    gate: Rows
    up: Rows
    down: Rows


FFNPartsFn = Callable[[int, Tensor], Optional[Sequence[FFNPart]]]  # (layer, h_normed) -> parts
FFNRecordFn = Callable[[int, Tensor, Tensor], None]  # (layer, h_normed, importance (B,T,f))


class OpTimer(Protocol):
    """Times the forward's ops where they run (the profiler's in-decode samples)."""

    def clock(self) -> float: ...  # seconds, with the device's queued work done

    def add(self, op: str, layer: int, seconds: float) -> None: ...  # attention, ffn, lm_head


def _float_rows(w: Rows, dtype: torch.dtype) -> Tensor:
    """Rows in ``dtype``. real.quant's row blocks (they name their ``precision``) dequantize
    straight to ``dtype``: FP16 rows in a float16 model are the slot pool's own strided view."""
    if isinstance(w, Tensor):
        return w.to(dtype)
    if getattr(w, "precision", None) is not None:
        return w.dequantize(dtype)  # type: ignore[call-arg]
    return w.dequantize().to(dtype)


def sparse_ffn(x: Tensor, parts: Sequence[FFNPart], act: Callable[[Tensor], Tensor]) -> Tensor:
    """Gated FFN over the active neurons only: sum_b down_b^T (act(gate_b x) * (up_b x)).

    Args:
        x: (..., d) normalized FFN input; every token uses the same parts.
        parts: slot pools, one per precision band; empty pools are allowed.
        act: the model's activation (``ACTIVATIONS[args.activation]``).
    Returns:
        (..., d), equal to the dense FFN when the parts hold every neuron once.
    """
    out = torch.zeros_like(x)
    for part in parts:
        dtype = _compute_dtype(part, x.dtype)
        xc = x.to(dtype)
        gate, up, down = (_float_rows(w, dtype) for w in (part.gate, part.up, part.down))
        if not (gate.shape == up.shape == down.shape and gate.shape[-1] == x.shape[-1]):
            raise ValueError(f"FFNPart rows must all be (k, {x.shape[-1]}), got gate "
                             f"{tuple(gate.shape)}, up {tuple(up.shape)}, down {tuple(down.shape)}")
        hidden = act(xc @ gate.T) * (xc @ up.T)  # (..., k_b)
        out = out + (hidden @ down).to(x.dtype)  # (..., d)
    return out


def _compute_dtype(part: FFNPart, dtype: torch.dtype) -> torch.dtype:
    """Float rows and FP16 rows run in the model's dtype; INT8/INT4 rows in a half-precision
    model dequantize to float32 and run there (CPU int->float16 conversion is ~2x slower)."""
    precision = getattr(part.up, "precision", None)
    if precision is None or precision.name == "FP16" or dtype not in (torch.float16,
                                                                       torch.bfloat16):
        return dtype
    return torch.float32


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()  # normalise in float32 like Hugging Face's LlamaRMSNorm
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rope_cos_sin(start_pos: int, n_tokens: int, head_dim: int, theta: float,
                 device: torch.device) -> tuple[Tensor, Tensor]:
    """cos and sin tables (T, head_dim) in float32 for positions start_pos.. (HF convention)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    pos = torch.arange(start_pos, start_pos + n_tokens, device=device).float()
    freqs = pos[:, None] * inv_freq[None, :]  # (T, head_dim / 2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (T, head_dim)
    return emb.cos(), emb.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, H, T, hd) by position with the rotate_half convention."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class KVCache:
    """Preallocated keys and values of every layer for positions [0, max_len)."""

    def __init__(self, args: LlamaArgs, *, batch_size: int, max_len: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        shape = (batch_size, args.n_kv_heads, max_len, args.head_dim)
        self.max_len = max_len
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(args.n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(args.n_layers)]

    def update(self, layer: int, start_pos: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store (B, Hkv, T, hd) at start_pos; return keys and values (B, Hkv, S, hd)."""
        end = start_pos + k.shape[2]
        self.k[layer][:, :, start_pos:end] = k
        self.v[layer][:, :, start_pos:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


@dataclass(frozen=True)
class _Pass:
    """What every block of one forward call shares."""

    cache: KVCache
    start_pos: int
    cos: Tensor  # (T, hd)
    sin: Tensor  # (T, hd)
    mask: Optional[Tensor]  # (T, S) bool, True = may attend; None when T == 1
    parts_fn: Optional[FFNPartsFn]
    record_fn: Optional[FFNRecordFn]
    timer: Optional[OpTimer] = None


class Attention(nn.Module):
    def __init__(self, args: LlamaArgs) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        q_dim, kv_dim = args.n_heads * args.head_dim, args.n_kv_heads * args.head_dim
        self.wq = nn.Linear(args.d_model, q_dim, bias=False)
        self.wk = nn.Linear(args.d_model, kv_dim, bias=False)
        self.wv = nn.Linear(args.d_model, kv_dim, bias=False)
        self.wo = nn.Linear(q_dim, args.d_model, bias=False)

    def forward(self, x: Tensor, layer: int, p: _Pass) -> Tensor:
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, hd)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, hd)
        q, k = apply_rope(q, p.cos, p.sin), apply_rope(k, p.cos, p.sin)
        k_all, v_all = p.cache.update(layer, p.start_pos, k, v)  # (B, Hkv, S, hd)
        y = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=p.mask,
                                           enable_gqa=self.n_heads != self.n_kv_heads)
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, T, H * hd)
        return self.wo(y)


class FeedForward(nn.Module):
    def __init__(self, args: LlamaArgs) -> None:
        super().__init__()
        self.act = ACTIVATIONS[args.activation]
        self.w_gate = nn.Linear(args.d_model, args.d_ff, bias=False)  # weight (f, d)
        self.w_up = nn.Linear(args.d_model, args.d_ff, bias=False)  # weight (f, d)
        self.w_down = nn.Linear(args.d_ff, args.d_model, bias=False)  # weight (d, f)

    def hidden(self, x: Tensor) -> Tensor:
        """act(gate x) * (up x): (..., d) -> (..., f); its magnitude is neuron importance."""
        return self.act(self.w_gate(x)) * self.w_up(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.w_down(self.hidden(x))

    def part(self, ids: Tensor) -> FFNPart:
        """Gather neurons ``ids`` (k,) of the dense weights into one float slot pool."""
        return FFNPart(gate=self.w_gate.weight.index_select(0, ids),  # (k, d)
                       up=self.w_up.weight.index_select(0, ids),  # (k, d)
                       down=self.w_down.weight.index_select(1, ids).T)  # (d, k) -> (k, d)


class Block(nn.Module):
    def __init__(self, args: LlamaArgs) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(args.d_model, args.norm_eps)
        self.attention = Attention(args)
        self.ffn_norm = RMSNorm(args.d_model, args.norm_eps)
        self.feed_forward = FeedForward(args)

    def forward(self, x: Tensor, layer: int, p: _Pass) -> Tensor:
        t = p.timer
        t0 = t.clock() if t is not None else 0.0
        h = x + self.attention(self.attention_norm(x), layer, p)  # (B, T, d)
        h_normed = self.ffn_norm(h)
        if t is not None:
            t.add("attention", layer, t.clock() - t0)
        parts = p.parts_fn(layer, h_normed) if p.parts_fn is not None else None
        if parts is not None:
            t0 = t.clock() if t is not None else 0.0
            out = h + sparse_ffn(h_normed, parts, self.feed_forward.act)
            if t is not None:
                t.add("ffn", layer, t.clock() - t0)
            return out
        hidden = self.feed_forward.hidden(h_normed)  # (B, T, f)
        if p.record_fn is not None:
            p.record_fn(layer, h_normed, hidden.abs())
        return h + self.feed_forward.w_down(hidden)


class Transformer(nn.Module):
    def __init__(self, args: LlamaArgs) -> None:
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.d_model)
        self.layers = nn.ModuleList(Block(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.d_model, args.norm_eps)
        self.output = None if args.tie_embeddings else nn.Linear(args.d_model, args.vocab_size,
                                                                  bias=False)

    def new_cache(self, *, batch_size: int = 1, max_len: Optional[int] = None) -> KVCache:
        """An empty KV cache on the weights' device and dtype (default: max_context tokens)."""
        w = self.tok_embeddings.weight
        return KVCache(self.args, batch_size=batch_size, max_len=max_len or self.args.max_context,
                       dtype=w.dtype, device=w.device)

    def forward(self, tokens: Tensor, cache: KVCache, start_pos: int = 0, *,
                ffn_parts_fn: Optional[FFNPartsFn] = None,
                ffn_record_fn: Optional[FFNRecordFn] = None, last_only: bool = False,
                op_timer: Optional[OpTimer] = None) -> Tensor:
        """Logits (B, T, vocab) for ``tokens`` (B, T) at positions start_pos..start_pos+T-1.

        Args:
            ffn_parts_fn: per layer, returns the sparse FFN parts, or None for the dense FFN.
            ffn_record_fn: called on dense-FFN layers with |act(gate x) * up x| (B, T, f).
            last_only: return logits of the last position only, (B, 1, vocab).
            op_timer: told each block's attention step (norms, attention, residual) and FFN
                (with its residual), and the rest (embedding, final norm, LM head) as lm_head.
        """
        t0 = op_timer.clock() if op_timer is not None else 0.0
        T = tokens.shape[1]
        if start_pos + T > cache.max_len:
            raise ValueError(f"positions up to {start_pos + T} exceed the KV cache of "
                             f"{cache.max_len} tokens")
        device = tokens.device
        cos, sin = rope_cos_sin(start_pos, T, self.args.head_dim, self.args.rope_theta, device)
        mask = None
        if T > 1:  # query t sees keys 0..start_pos+t
            q_pos = torch.arange(start_pos, start_pos + T, device=device)
            mask = torch.arange(start_pos + T, device=device)[None, :] <= q_pos[:, None]  # (T, S)
        p = _Pass(cache, start_pos, cos, sin, mask, ffn_parts_fn, ffn_record_fn, op_timer)
        x = self.tok_embeddings(tokens)  # (B, T, d)
        t1 = op_timer.clock() if op_timer is not None else 0.0
        for layer, block in enumerate(self.layers):
            x = block(x, layer, p)
        t2 = op_timer.clock() if op_timer is not None else 0.0
        x = self.norm(x[:, -1:] if last_only else x)
        head = self.tok_embeddings.weight if self.output is None else self.output.weight
        logits = F.linear(x, head)  # (B, T, vocab)
        if op_timer is not None:
            op_timer.add("lm_head", -1, (t1 - t0) + (op_timer.clock() - t2))
        return logits


@torch.inference_mode()
def record_ffn(model: Transformer, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """FFN inputs and true neuron importance of every layer for ``tokens`` (1, T), dense.

    Returns:
        inputs (n_layers, T, d): the normalized FFN input (what a predictor sees);
        importance (n_layers, T, f): |act(gate x) * up x| per neuron.
    """
    inputs: list[Tensor] = []
    importance: list[Tensor] = []

    def record(layer: int, h_normed: Tensor, imp: Tensor) -> None:
        inputs.append(h_normed[0])
        importance.append(imp[0])

    # last_only: the LM head over all T would cost ~10% more (SmolLM2) for unused logits
    model(tokens, model.new_cache(max_len=tokens.shape[1]), 0, ffn_record_fn=record,
          last_only=True)
    return torch.stack(inputs), torch.stack(importance)
