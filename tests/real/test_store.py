"""real.store / real.manifest / real.bundle: conversion, layout, validation, atomicity."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

import real.store as store_mod
from m2sim.specs import FFNKind, ModelConfig, ModelSpec, QuantConfig
from m2sim.types import BANDS, Precision
from real.bundle import decode, encode, quantize_bundles
from real.manifest import FORMAT_VERSION, MANIFEST_NAME, StoreError
from real.store import convert_store, open_store

L, D, DFF, VOCAB = 2, 64, 128, 96


def tiny_weights(gated: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random LLaMA-named model: 2 layers, d_model 64, d_ff 128."""
    g = torch.Generator().manual_seed(seed)
    w = {"model.embed_tokens.weight": torch.randn(VOCAB, D, generator=g),
         "model.norm.weight": torch.rand(D, generator=g),
         "lm_head.weight": torch.randn(VOCAB, D, generator=g)}
    for i in range(L):
        p = f"model.layers.{i}."
        if gated:
            w[p + "mlp.gate_proj.weight"] = torch.randn(DFF, D, generator=g)
        w[p + "mlp.up_proj.weight"] = torch.randn(DFF, D, generator=g)
        w[p + "mlp.down_proj.weight"] = torch.randn(D, DFF, generator=g) * 0.1
        for n in "qkvo":
            w[p + f"self_attn.{n}_proj.weight"] = torch.randn(D, D, generator=g)
        w[p + "input_layernorm.weight"] = torch.rand(D, generator=g)
        w[p + "post_attention_layernorm.weight"] = torch.rand(D, generator=g)
    return w


def tiny_spec(gated: bool = True) -> ModelSpec:
    return ModelSpec.of(ModelConfig(name="tiny", num_layers=L, d_model=D, d_ff=DFF, num_heads=4,
                                    num_kv_heads=2, vocab_size=VOCAB, active_frac=0.25,
                                    ffn=FFNKind.GATED if gated else FFNKind.PLAIN))


def ffn(w: dict, i: int, gated: bool = True) -> tuple:
    p = f"model.layers.{i}.mlp."
    return (w[p + "gate_proj.weight"] if gated else None, w[p + "up_proj.weight"],
            w[p + "down_proj.weight"])


@pytest.fixture(scope="module")
def weights():
    return tiny_weights()


@pytest.fixture
def store(weights, tmp_path):
    return convert_store(weights, tmp_path / "store")


# ---- layout -----------------------------------------------------------------------------------
@pytest.mark.parametrize("gated", [True, False])
def test_records_are_spec_neuron_bytes_and_files_hold_d_ff_records(tmp_path, gated):
    s = convert_store(tiny_weights(gated), tmp_path / "s")
    spec = tiny_spec(gated)
    assert s.manifest.ffn_mats == (3 if gated else 2)
    for p in BANDS:
        assert s.record_bytes(p) == spec.neuron_bytes(p)
        for i in range(L):
            assert s.ffn_path(i, p).stat().st_size == spec.ffn_layer_bytes(p)


@pytest.mark.parametrize("gated", [True, False])
def test_records_read_back_reproduce_the_quantized_weights_exactly(tmp_path, gated):
    w = tiny_weights(gated)
    s = convert_store(w, tmp_path / "s")
    for i in range(L):
        for p in BANDS:
            raw = torch.frombuffer(bytearray(s.ffn_path(i, p).read_bytes()), dtype=torch.uint8)
            got = s.decode(raw.view(DFF, -1), p).dequantize()
            want = quantize_bundles(*ffn(w, i, gated), p, s.manifest.quant).dequantize()
            for a, b in zip(got, want):
                assert (a is None and b is None) or torch.equal(a, b)


def test_record_i_is_gate_row_up_row_down_column(store, weights):
    rb = store.record_bytes(Precision.FP16) // 3
    raw = store.ffn_path(1, Precision.FP16).read_bytes()
    gate, up, down = ffn(weights, 1)
    rec = torch.frombuffer(bytearray(raw[5 * 3 * rb:6 * 3 * rb]), dtype=torch.float16)
    assert torch.equal(rec[:D], gate[5].half())
    assert torch.equal(rec[D:2 * D], up[5].half())
    assert torch.equal(rec[2 * D:], down[:, 5].half())


def test_encode_decode_round_trip_is_exact(weights):
    for p in BANDS:
        b = quantize_bundles(*ffn(weights, 0), p, QuantConfig())
        records = encode(b)
        assert records.shape == (DFF, tiny_spec().neuron_bytes(p))
        assert torch.equal(encode(decode(records, D, 3, p, QuantConfig())), records)


def test_dense_weights_are_stored_fp16_per_layer_and_global(store, weights):
    layer1 = store.load_dense(1)
    assert set(layer1) == {k for k in weights if k.startswith("model.layers.1.")
                           and ".mlp." not in k}
    for k, v in layer1.items():
        assert v.dtype == torch.float16 and torch.equal(v, weights[k].half())
    assert set(store.load_dense(None)) == {"model.embed_tokens.weight", "model.norm.weight",
                                           "lm_head.weight"}


def test_manifest_records_shape_quant_sizes_and_checksums(store):
    d = json.loads((store.path / MANIFEST_NAME).read_text())
    assert d["format_version"] == FORMAT_VERSION
    assert d["model"] == {"num_layers": L, "d_model": D, "d_ff": DFF, "ffn_mats": 3}
    assert d["precisions"] == ["FP16", "INT8", "INT4"]
    assert d["quant"]["int4_group_size"] == 64 and d["quant"]["scale_bytes"] == 2
    assert len(d["files"]) == L * 3 + L + 1
    for f in d["files"]:
        data = (store.path / f["name"]).read_bytes()
        assert f["nbytes"] == len(data)
        assert f["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_subset_of_precisions_and_another_group_size(weights, tmp_path):
    quant = QuantConfig(int4_group_size=32)
    s = convert_store(weights, tmp_path / "s", precisions=[Precision.INT4], quant=quant)
    assert s.manifest.precisions == (Precision.INT4,)
    assert s.record_bytes(Precision.INT4) == ModelSpec.of(tiny_spec().cfg, quant).neuron_bytes(
        Precision.INT4)
    with pytest.raises(KeyError):
        s.ffn_path(0, Precision.FP16)


# ---- validation -------------------------------------------------------------------------------
def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_missing_store_and_missing_manifest_are_clear_errors(store, tmp_path):
    with pytest.raises(StoreError, match="no such store directory"):
        open_store(tmp_path / "nowhere")
    (store.path / MANIFEST_NAME).unlink()
    with pytest.raises(StoreError) as err:
        open_store(store.path)
    assert str(store.path / MANIFEST_NAME) in _one_line(err)


def test_truncated_file_is_detected_at_open_naming_the_file(store):
    victim = store.ffn_path(1, Precision.INT4)
    size = victim.stat().st_size
    with open(victim, "r+b") as f:
        f.truncate(size - 1)
    with pytest.raises(StoreError) as err:
        open_store(store.path)
    msg = _one_line(err)
    assert str(victim) in msg and "truncated" in msg and str(size) in msg


@pytest.mark.parametrize("version,word", [(FORMAT_VERSION - 1, "older"),
                                          (FORMAT_VERSION + 1, "newer")])
def test_other_manifest_versions_are_rejected(store, version, word):
    mpath = store.path / MANIFEST_NAME
    d = json.loads(mpath.read_text())
    d["format_version"] = version
    mpath.write_text(json.dumps(d))
    with pytest.raises(StoreError) as err:
        open_store(store.path)
    msg = _one_line(err)
    assert str(mpath) in msg and word in msg and f"version {version}" in msg


def test_manifest_without_a_layer_file_is_rejected(store):
    mpath = store.path / MANIFEST_NAME
    d = json.loads(mpath.read_text())
    d["files"] = [f for f in d["files"] if f["name"] != "ffn_L001_int8.bin"]
    mpath.write_text(json.dumps(d))
    with pytest.raises(StoreError, match="layer=1 precision=Precision.INT8"):
        open_store(store.path)


def test_checksum_verify_detects_a_flipped_byte(store):
    victim = store.ffn_path(0, Precision.INT8)
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    open_store(store.path)  # sizes still match
    with pytest.raises(StoreError) as err:
        open_store(store.path, verify=True)
    assert str(victim) in _one_line(err) and "sha256" in str(err.value)


# ---- atomic conversion ------------------------------------------------------------------------
def _fail_on_call(monkeypatch, n: int) -> None:
    real_write = store_mod._write_file
    calls = [0]

    def flaky(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            raise OSError("disk full (simulated)")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(store_mod, "_write_file", flaky)


@pytest.mark.parametrize("fail_at", [1, 4, 8])
def test_interrupted_conversion_leaves_nothing(weights, tmp_path, monkeypatch, fail_at):
    _fail_on_call(monkeypatch, fail_at)
    with pytest.raises(OSError, match="simulated"):
        convert_store(weights, tmp_path / "store")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(StoreError):
        open_store(tmp_path / "store")


def test_killed_conversion_leaves_only_a_temporary_that_does_not_open(weights, tmp_path,
                                                                      monkeypatch):
    _fail_on_call(monkeypatch, 5)
    monkeypatch.setattr(store_mod.shutil, "rmtree", lambda *a, **k: None)  # as if SIGKILLed
    with pytest.raises(OSError):
        convert_store(weights, tmp_path / "store")
    left = list(tmp_path.iterdir())
    assert len(left) == 1 and left[0].name.startswith(".store.tmp-")
    for path in (tmp_path / "store", left[0]):
        with pytest.raises(StoreError):
            open_store(path)


def test_existing_target_is_kept_unless_overwrite(weights, tmp_path):
    s = convert_store(weights, tmp_path / "s", precisions=[Precision.INT8])
    with pytest.raises(FileExistsError):
        convert_store(weights, tmp_path / "s")
    s2 = convert_store(tiny_weights(seed=1), tmp_path / "s", overwrite=True)
    assert s2.manifest.precisions == BANDS
    assert [p.name for p in tmp_path.iterdir()] == ["s"]
    assert s.path == s2.path


def test_failed_overwrite_keeps_the_old_store(weights, tmp_path, monkeypatch):
    convert_store(weights, tmp_path / "s")
    _fail_on_call(monkeypatch, 3)
    with pytest.raises(OSError):
        convert_store(weights, tmp_path / "s", overwrite=True)
    open_store(tmp_path / "s", verify=True)


def test_bad_weight_names_are_rejected(weights, tmp_path):
    w = dict(weights)
    w["model.layers.0.mlp.up_proj.bias"] = torch.zeros(DFF)
    with pytest.raises(ValueError, match="no biases"):
        convert_store(w, tmp_path / "a")
    w = {k: v for k, v in weights.items() if not k.startswith("model.layers.0.")}
    with pytest.raises(ValueError, match="expected 0..n-1"):
        convert_store(w, tmp_path / "b")
