"""The on-disk tiered store: per layer and per precision, one file of neuron records.

``convert_store`` turns Hugging Face LLaMA-named float weights into a store directory:
``ffn_L{layer}_{precision}.bin`` holds the layer's ``d_ff`` records back to back (record i at
byte ``i * record_bytes``; layout in ``real.bundle``), ``dense_L{layer}.safetensors`` the layer's
attention and norm weights, ``dense_global.safetensors`` the embedding, final norm and LM head
(dense weights in FP16), and ``manifest.json`` (``real.manifest``) describes them all.
Conversion is atomic: everything is written and fsynced in a temporary sibling directory that
is renamed into place last, so an interrupted conversion leaves no valid store.
``open_store`` validates a store; file contents are read by ``real.ssd.SSDReader``.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save
from torch import Tensor

from m2sim.specs import QuantConfig
from m2sim.types import BANDS, Precision
from real.bundle import Bundles, decode, encode, quantize_bundles
from real.manifest import (
    MANIFEST_NAME,
    FileEntry,
    FileKind,
    StoreError,
    StoreManifest,
    dense_file_name,
    ffn_file_name,
)

_LAYER_KEY = re.compile(r"model\.layers\.(\d+)\.(.+)")
_FFN_MATS = ("gate_proj", "up_proj", "down_proj")
_CHUNK_BYTES = 1 << 24


@dataclass(frozen=True)
class Store:
    """A validated store directory (no open files; ``SSDReader`` reads it)."""

    path: Path
    manifest: StoreManifest

    def ffn_path(self, layer: int, precision: Precision) -> Path:
        return self.path / self.manifest.ffn_entry(layer, precision).name

    def dense_path(self, layer: Optional[int]) -> Path:
        return self.path / self.manifest.dense_entry(layer).name

    def record_bytes(self, precision: Precision) -> int:
        return self.manifest.record_bytes(precision)

    def layer_bytes(self, precision: Precision) -> int:
        return self.manifest.d_ff * self.record_bytes(precision)

    def decode(self, records: Tensor, precision: Precision) -> Bundles:
        """Records (n, record_bytes) uint8 -> ``Bundles`` usable by the FFN."""
        m = self.manifest
        return decode(records, m.d_model, m.ffn_mats, precision, m.quant)

    def load_dense(self, layer: Optional[int]) -> dict[str, Tensor]:
        """Dense tensors of one layer (or the global ones), read through the page cache."""
        return load_file(self.dense_path(layer))

    def verify(self) -> None:
        """Recompute every file's sha256; raise ``StoreError`` naming the first mismatch."""
        for e in self.manifest.files:
            if _sha256_file(self.path / e.name) != e.sha256:
                raise StoreError(f"{self.path / e.name}: sha256 mismatch (file is corrupt)")


def open_store(path: str | os.PathLike, *, verify: bool = False) -> Store:
    """Open and validate a store; ``verify`` also checks every file's sha256."""
    path = Path(path)
    if not path.is_dir():
        raise StoreError(f"{path}: no such store directory")
    mpath = path / MANIFEST_NAME
    if not mpath.is_file():
        raise StoreError(f"{mpath}: missing (not a store, or an interrupted conversion)")
    m = StoreManifest.parse(mpath.read_text(), mpath)
    for layer in range(m.num_layers):
        for p in m.precisions:
            _entry(m, mpath, layer, p)
        _entry(m, mpath, layer, None)
    _entry(m, mpath, None, None)
    for e in m.files:
        f = path / e.name
        if not f.is_file():
            raise StoreError(f"{f}: missing")
        size = f.stat().st_size
        if size != e.nbytes:
            raise StoreError(f"{f}: {size} bytes on disk, manifest says {e.nbytes} "
                             f"({'truncated' if size < e.nbytes else 'too long'})")
        if e.kind is FileKind.FFN and e.nbytes != m.d_ff * m.record_bytes(e.precision):
            raise StoreError(f"{f}: manifest size {e.nbytes} is not d_ff={m.d_ff} records of "
                             f"{m.record_bytes(e.precision)} bytes")
    store = Store(path, m)
    if verify:
        store.verify()
    return store


def _entry(m: StoreManifest, mpath: Path, layer: Optional[int], p: Optional[Precision]) -> None:
    try:
        m.ffn_entry(layer, p) if p is not None else m.dense_entry(layer)  # type: ignore[arg-type]
    except KeyError as err:
        raise StoreError(f"{mpath}: {err.args[0]}") from None


def convert_store(weights: Mapping[str, Tensor], path: str | os.PathLike, *,
                  precisions: Sequence[Precision] = BANDS, quant: Optional[QuantConfig] = None,
                  overwrite: bool = False) -> Store:
    """Write ``weights`` (HF LLaMA names, float tensors) as a store at ``path``, atomically."""
    path, quant = Path(path), quant or QuantConfig()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists (pass overwrite=True to replace it)")
    layers, global_dense = _split_layers(weights)
    ffn_mats = _ffn_mats(layers)
    d_ff, d_model = layers[0]["mlp.up_proj.weight"].shape
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir(parents=True)
    try:
        files = []
        for i, tensors in enumerate(layers):
            gate = tensors.get("mlp.gate_proj.weight")
            up, down = tensors["mlp.up_proj.weight"], tensors["mlp.down_proj.weight"]
            if up.shape != (d_ff, d_model) or down.shape != (d_model, d_ff) or (
                    gate is not None and gate.shape != up.shape):
                raise ValueError(f"layer {i}: FFN shapes differ from layer 0's")
            for p in precisions:
                records = encode(quantize_bundles(gate, up, down, p, quant))
                files.append(_write_file(tmp, ffn_file_name(i, p), FileKind.FFN, i, p,
                                         records.numpy().tobytes()))
            dense = {f"model.layers.{i}.{k}": v for k, v in tensors.items()
                     if not k.startswith("mlp.")}
            files.append(_write_dense(tmp, i, dense))
        files.append(_write_dense(tmp, None, global_dense))
        manifest = StoreManifest(num_layers=len(layers), d_model=d_model, d_ff=d_ff,
                                 ffn_mats=ffn_mats, precisions=tuple(precisions), quant=quant,
                                 files=tuple(files))
        _write_bytes(tmp / MANIFEST_NAME, manifest.to_json().encode())
        _fsync_dir(tmp)
        _replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return open_store(path)


def _split_layers(weights: Mapping[str, Tensor]) -> tuple[list[dict[str, Tensor]],
                                                            dict[str, Tensor]]:
    by_layer: dict[int, dict[str, Tensor]] = {}
    rest = {}
    for name, t in weights.items():
        m = _LAYER_KEY.fullmatch(name)
        if m:
            by_layer.setdefault(int(m.group(1)), {})[m.group(2)] = t
        else:
            rest[name] = t
    if not by_layer or sorted(by_layer) != list(range(len(by_layer))):
        raise ValueError(f"weights name layers {sorted(by_layer)}; expected 0..n-1 "
                         "(model.layers.{i}.mlp.up_proj.weight, ...)")
    layers = [by_layer[i] for i in range(len(by_layer))]
    for i, tensors in enumerate(layers):
        odd = [k for k in tensors if k.startswith("mlp.")
               and k not in {f"mlp.{n}.weight" for n in _FFN_MATS}]
        if odd:
            raise ValueError(f"layer {i}: unsupported FFN tensors {odd} (no biases)")
        if "mlp.up_proj.weight" not in tensors or "mlp.down_proj.weight" not in tensors:
            raise ValueError(f"layer {i}: mlp.up_proj.weight and mlp.down_proj.weight required")
    return layers, rest


def _ffn_mats(layers: list[dict[str, Tensor]]) -> int:
    gated = {"mlp.gate_proj.weight" in t for t in layers}
    if len(gated) != 1:
        raise ValueError("some layers have mlp.gate_proj.weight and some do not")
    return 3 if gated.pop() else 2


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write_file(directory: Path, name: str, kind: FileKind, layer: Optional[int],
                precision: Optional[Precision], data: bytes) -> FileEntry:
    _write_bytes(directory / name, data)
    return FileEntry(name=name, kind=kind, layer=layer, precision=precision, nbytes=len(data),
                     sha256=hashlib.sha256(data).hexdigest())


def _write_dense(directory: Path, layer: Optional[int], tensors: dict[str, Tensor]) -> FileEntry:
    fp16 = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous()
            for k, v in tensors.items()}
    return _write_file(directory, dense_file_name(layer), FileKind.DENSE, layer, None, save(fp16))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` to ``path``; an old store at ``path`` is moved aside, then deleted."""
    old = None
    if path.exists():
        old = path.parent / f".{path.name}.old-{secrets.token_hex(4)}"
        os.rename(path, old)
    os.rename(tmp, path)
    _fsync_dir(path.parent)
    if old is not None:
        shutil.rmtree(old)
