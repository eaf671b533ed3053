"""CheckpointCache: each file read once, every model its own, a rewritten file read again."""

from __future__ import annotations

import os

import pytest
import torch

from real.checkpoint import MissingCheckpointError, load_model
from real.checkpoint_cache import CheckpointCache


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_models_equal_a_fresh_load_and_the_file_is_read_once(make_tiny_llama):
    _, path = make_tiny_llama()
    cache = CheckpointCache()
    a, b = cache.model(path), cache.model(path)
    assert cache.reads == 1
    assert a.args == b.args == load_model(path).args
    assert _same_weights(a, load_model(path)) and _same_weights(b, load_model(path))
    lean = cache.model(path, ffn=False)  # another key: the dense weights only
    assert cache.reads == 2
    assert _same_weights(lean, load_model(path, ffn=False))


def test_a_model_changed_in_place_leaves_the_next_one_alone(make_tiny_llama):
    _, path = make_tiny_llama()
    cache = CheckpointCache()
    first = cache.model(path)
    with torch.no_grad():
        first.tok_embeddings.weight.zero_()
        first.layers[0].feed_forward.w_up.weight.add_(1.0)
    assert _same_weights(cache.model(path), load_model(path))


def test_a_rewritten_checkpoint_is_read_again(make_tiny_llama):
    hf, path = make_tiny_llama()
    cache = CheckpointCache()
    before = cache.model(path)
    with torch.no_grad():
        hf.model.embed_tokens.weight.mul_(2.0)
    hf.save_pretrained(path)
    st = os.stat(path / "model.safetensors")  # a later mtime even on a coarse clock
    os.utime(path / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    after = cache.model(path)
    assert cache.reads == 2
    torch.testing.assert_close(after.tok_embeddings.weight, 2 * before.tok_embeddings.weight)


def test_missing_checkpoint_and_missing_tokenizer(make_tiny_llama, tmp_path):
    cache = CheckpointCache()
    with pytest.raises(MissingCheckpointError, match="nope.gguf"):
        cache.model(tmp_path / "nope.gguf")
    assert cache.tokenizer(tmp_path / "nope.gguf") is None
    _, path = make_tiny_llama()  # saved without tokenizer files
    assert cache.tokenizer(path) is None and cache.tokenizer(path) is None
    assert cache.reads == 1


def test_smollm2_tokenizer_is_read_once(smollm2_path, smollm2_tokenizer):
    cache = CheckpointCache()
    tok = cache.tokenizer(smollm2_path)
    assert cache.tokenizer(smollm2_path) is tok and cache.reads == 1
    text = "Timing a model on a small machine"
    assert tok.encode(text) == smollm2_tokenizer.encode(text)


def test_a_cache_that_keeps_nothing_reads_every_time(make_tiny_llama):
    _, path = make_tiny_llama()
    cache = CheckpointCache(keep=False)
    a, b = cache.model(path), cache.model(path)
    assert cache.reads == 2 and _same_weights(a, b) and _same_weights(a, load_model(path))
    assert cache.tokenizer(path) is None and cache.tokenizer(path) is None
    assert cache.reads == 4
