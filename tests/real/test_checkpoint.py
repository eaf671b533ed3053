"""Checkpoint loading: Hugging Face dirs (plain and sharded), GGUF files, metadata, and errors.

Every loader error must be one line that names the offending file.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from real.checkpoint import (
    CheckpointError,
    MissingCheckpointError,
    load_model,
    unpermute_qk,
)


def _tokens() -> torch.Tensor:
    return torch.randint(3, 97, (1, 10), generator=torch.Generator().manual_seed(0))  # (1, T)


@torch.no_grad()
def _logits(model, tokens: torch.Tensor) -> torch.Tensor:
    return model(tokens, model.new_cache(max_len=tokens.shape[1]), 0)


def _assert_one_line_naming(err: pytest.ExceptionInfo, path) -> None:
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg


def test_sharded_checkpoint_loads_like_the_single_file(make_tiny_llama):
    hf, single = make_tiny_llama(name="single")
    _, sharded = make_tiny_llama(name="sharded", max_shard_size="40KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("*.safetensors"))) > 2
    a, b = load_model(single), load_model(sharded)
    assert a.args == b.args
    torch.testing.assert_close(_logits(a, _tokens()), _logits(b, _tokens()), atol=0, rtol=0)


def test_hf_config_fields_reach_llama_args(make_tiny_llama):
    _, path = make_tiny_llama(tie=True, act="relu", head_dim=32)
    args = load_model(path).args
    assert (args.d_model, args.n_layers, args.n_heads, args.n_kv_heads, args.head_dim) == (
        64, 2, 4, 2, 32)
    assert (args.d_ff, args.vocab_size, args.max_context) == (96, 97, 48)
    assert (args.rope_theta, args.norm_eps, args.tie_embeddings, args.activation) == (
        500.0, 1e-5, True, "relu")


def test_load_in_half_precision(make_tiny_llama):
    _, path = make_tiny_llama()
    model = load_model(path, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in model.parameters())


def test_loading_without_ffn_weights_keeps_the_dense_ones(make_tiny_llama, tmp_path):
    hf, path = make_tiny_llama()
    _write_tiny_gguf(tmp_path / "tiny.gguf", hf)
    for source in (path, tmp_path / "tiny.gguf"):
        full, lean = load_model(source), load_model(source, ffn=False)
        for name, t in full.state_dict().items():
            if ".feed_forward." in name:
                assert lean.state_dict()[name].numel() == 0
            else:
                assert torch.equal(lean.state_dict()[name], t)


def test_missing_path_is_reported(tmp_path):
    with pytest.raises(MissingCheckpointError) as err:
        load_model(tmp_path / "nope.gguf")
    _assert_one_line_naming(err, tmp_path / "nope.gguf")
    assert isinstance(err.value, FileNotFoundError)


def test_directory_without_config_is_reported(tmp_path):
    with pytest.raises(MissingCheckpointError, match="config.json: no such file") as err:
        load_model(tmp_path)
    _assert_one_line_naming(err, tmp_path)


def test_unknown_file_kind_is_reported(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0" * 8)
    with pytest.raises(CheckpointError, match="nor a .gguf file"):
        load_model(tmp_path / "weights.bin")


@pytest.mark.parametrize("change, problem", [
    ({"model_type": "gpt2"}, "unsupported architecture model_type='gpt2'"),
    ({"hidden_act": "gelu"}, "unsupported activation 'gelu'"),
    ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5}}, "unsupported RoPE"),
    ({"attention_bias": True}, "projection biases"),
    ({"hidden_size": None}, "config lacks 'hidden_size'"),
    ({"num_key_value_heads": 3}, "n_kv_heads=3 must divide n_heads=4"),
])
def test_unsupported_or_broken_config_is_reported(make_tiny_llama, change, problem):
    _, path = make_tiny_llama()
    config = path / "config.json"
    cfg = json.loads(config.read_text())
    cfg.update(change)
    cfg = {k: v for k, v in cfg.items() if v is not None}
    config.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=problem) as err:
        load_model(path)
    _assert_one_line_naming(err, config)


def test_truncated_safetensors_is_reported(make_tiny_llama):
    _, path = make_tiny_llama()
    file = path / "model.safetensors"
    file.write_bytes(file.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="corrupt or truncated safetensors") as err:
        load_model(path)
    _assert_one_line_naming(err, file)


def test_missing_tensor_is_reported(make_tiny_llama):
    from safetensors.torch import load_file, save_file

    _, path = make_tiny_llama()
    file = path / "model.safetensors"
    state = load_file(file)
    del state["model.layers.1.mlp.up_proj.weight"]
    save_file(state, file, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="missing \\['layers.1.feed_forward.w_up.weight'\\]"):
        load_model(path)


def test_missing_shard_is_reported(make_tiny_llama):
    _, path = make_tiny_llama(max_shard_size="40KB")
    shard = sorted(path.glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(MissingCheckpointError) as err:
        load_model(path)
    _assert_one_line_naming(err, shard)


# ---- GGUF --------------------------------------------------------------------------------
def _llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute: what llama.cpp applies to Q and K rows."""
    return (w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def _write_tiny_gguf(path, hf, arch: str = "llama", extra: dict | None = None) -> None:
    """Write a HF tiny LLaMA as llama.cpp would (F32 tensors, Q/K permuted)."""
    import gguf

    cfg = hf.config
    w = gguf.GGUFWriter(path, arch)
    for key, value in (extra or {}).items():
        (w.add_string if isinstance(value, str) else w.add_uint32)(key, value)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    names = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output",
             "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q",
             "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for name, t in hf.state_dict().items():
        a = t.numpy().astype(np.float32)
        stem = name.removesuffix(".weight")
        if stem.startswith("model.layers."):
            _, _, layer, rest = stem.split(".", 3)
            if rest == "self_attn.q_proj":
                a = _llama_cpp_permute(a, cfg.num_attention_heads)
            elif rest == "self_attn.k_proj":
                a = _llama_cpp_permute(a, cfg.num_key_value_heads)
            gguf_name = f"blk.{layer}.{names[rest]}.weight"
        else:
            gguf_name = f"{names[stem]}.weight"
        w.add_tensor(gguf_name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_unpermute_undoes_llama_cpp_permute_for_q_and_gqa_k():
    w = np.arange(6 * 16 * 5, dtype=np.float32).reshape(6 * 16, 5)  # 6 heads of 16 rows
    for n_heads in (6, 2):
        permuted = _llama_cpp_permute(w, n_heads)
        assert not np.array_equal(permuted, w)
        np.testing.assert_array_equal(unpermute_qk(permuted, n_heads), w)


def test_tiny_gguf_matches_its_transformers_source(make_tiny_llama, tmp_path):
    hf, hf_dir = make_tiny_llama()
    _write_tiny_gguf(tmp_path / "tiny.gguf", hf)
    from_gguf = load_model(tmp_path / "tiny.gguf")
    args = from_gguf.args
    assert args.norm_eps == pytest.approx(1e-5, rel=1e-6)  # GGUF stores float32
    assert replace(args, norm_eps=1e-5) == load_model(hf_dir).args
    with torch.no_grad():
        ref = hf(_tokens()).logits
    torch.testing.assert_close(_logits(from_gguf, _tokens()), ref, atol=1e-5, rtol=0)


def test_gguf_of_another_architecture_is_reported(make_tiny_llama, tmp_path):
    hf, _ = make_tiny_llama()
    _write_tiny_gguf(tmp_path / "gpt2.gguf", hf, arch="gpt2")
    with pytest.raises(CheckpointError, match="unsupported architecture 'gpt2'") as err:
        load_model(tmp_path / "gpt2.gguf")
    _assert_one_line_naming(err, tmp_path / "gpt2.gguf")


@pytest.mark.parametrize("extra, problem", [
    ({"llama.rope.scaling.type": "yarn"}, "unsupported RoPE scaling 'yarn'"),
    ({"llama.rope.dimension_count": 8}, "unsupported partial rotary"),
])
def test_unsupported_gguf_llama_variant_is_reported(make_tiny_llama, tmp_path, extra, problem):
    hf, _ = make_tiny_llama()
    _write_tiny_gguf(tmp_path / "odd.gguf", hf, extra=extra)
    with pytest.raises(CheckpointError, match=problem) as err:
        load_model(tmp_path / "odd.gguf")
    _assert_one_line_naming(err, tmp_path / "odd.gguf")


@pytest.mark.parametrize("keep_bytes", [0, 10, 1000, -100])
def test_truncated_gguf_is_reported(make_tiny_llama, tmp_path, keep_bytes):
    hf, _ = make_tiny_llama()
    whole, cut = tmp_path / "whole.gguf", tmp_path / "cut.gguf"
    _write_tiny_gguf(whole, hf)
    data = whole.read_bytes()
    cut.write_bytes(data[:keep_bytes] if keep_bytes >= 0 else data[:len(data) + keep_bytes])
    with pytest.raises(CheckpointError, match="corrupt or truncated GGUF") as err:
        load_model(cut)
    _assert_one_line_naming(err, cut)


def test_smollm2_gguf_metadata(smollm2_path, smollm2):
    args = smollm2.args
    assert smollm2_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (args.d_model, args.n_layers, args.n_heads, args.n_kv_heads, args.head_dim) == (
        576, 30, 9, 3, 64)
    assert (args.d_ff, args.vocab_size, args.max_context) == (1536, 49152, 8192)
    assert args.rope_theta == 100000.0 and args.tie_embeddings and args.activation == "silu"
    assert args.norm_eps == pytest.approx(1e-5, rel=1e-6)
    assert smollm2.output is None  # tied: the LM head is the embedding matrix


def test_smollm2_tokenizer_round_trips_text(smollm2_tokenizer):
    ids = smollm2_tokenizer.encode("The capital of France is")
    assert ids == [504, 3575, 282, 4649, 314]
    assert smollm2_tokenizer.decode(ids) == "The capital of France is"
    assert smollm2_tokenizer.eos_id == 2


def test_tokenizer_of_a_missing_file_is_reported(tmp_path):
    from real.tokenizer import load_tokenizer

    with pytest.raises(MissingCheckpointError):
        load_tokenizer(tmp_path / "absent.gguf")

