"""The manifest of an on-disk store (``manifest.json``): shape, precisions, files, checksums.

One JSON object: format name and version, the FFN shape (layers, d_model, d_ff, matrices per
neuron), the stored precisions, the quantization parameters, and per file its kind (``ffn`` or
``dense``), layer, precision, size in bytes and sha256. Parsing checks the format version and
the arithmetic (file size = d_ff * record bytes); every problem is a one-line ``StoreError``
naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from m2sim.errors import M2SimError
from m2sim.specs import QuantConfig
from m2sim.types import Precision
from real.bundle import record_bytes

FORMAT_NAME = "m2sim-neuron-store"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"


class StoreError(M2SimError):
    """A store on disk is missing, incomplete, corrupt or of another format version."""


class FileKind(Enum):
    FFN = "ffn"  # neuron records of one layer at one precision
    DENSE = "dense"  # safetensors: one layer's attention + norms, or the global tensors


@dataclass(frozen=True, slots=True, kw_only=True)
class FileEntry:
    name: str  # relative to the store directory
    kind: FileKind
    layer: Optional[int]  # None: the global dense file (embedding, final norm, LM head)
    precision: Optional[Precision]  # FFN files only
    nbytes: int
    sha256: str


def ffn_file_name(layer: int, precision: Precision) -> str:
    return f"ffn_L{layer:03d}_{precision.name.lower()}.bin"


def dense_file_name(layer: Optional[int]) -> str:
    return "dense_global.safetensors" if layer is None else f"dense_L{layer:03d}.safetensors"


@dataclass(frozen=True, kw_only=True)
class StoreManifest:
    num_layers: int
    d_model: int
    d_ff: int
    ffn_mats: int  # 3 gated (gate | up | down), 2 plain (up | down)
    precisions: tuple[Precision, ...]
    quant: QuantConfig
    files: tuple[FileEntry, ...]
    format_version: int = FORMAT_VERSION

    def record_bytes(self, precision: Precision) -> int:
        return record_bytes(self.d_model, self.ffn_mats, precision, self.quant)

    def ffn_entry(self, layer: int, precision: Precision) -> FileEntry:
        return self._find(FileKind.FFN, layer, precision)

    def dense_entry(self, layer: Optional[int]) -> FileEntry:
        return self._find(FileKind.DENSE, layer, None)

    def _find(self, kind: FileKind, layer: Optional[int], p: Optional[Precision]) -> FileEntry:
        for e in self.files:
            if e.kind is kind and e.layer == layer and e.precision is p:
                return e
        raise KeyError(f"store has no {kind.value} file for layer={layer} precision={p}")

    def to_json(self) -> str:
        return json.dumps({
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "model": {"num_layers": self.num_layers, "d_model": self.d_model, "d_ff": self.d_ff,
                      "ffn_mats": self.ffn_mats},
            "precisions": [p.name for p in self.precisions],
            "quant": {"int4_group_size": self.quant.int4_group_size,
                      "scale_bytes": self.quant.scale_bytes,
                      "int4_nibbles": "low nibble = even column, stored value q + 8"},
            "files": [{"name": e.name, "kind": e.kind.value, "layer": e.layer,
                       "precision": None if e.precision is None else e.precision.name,
                       "nbytes": e.nbytes, "sha256": e.sha256} for e in self.files],
        }, indent=1)

    @staticmethod
    def parse(text: str, where: Path) -> StoreManifest:
        """Parse and check a manifest; ``where`` names it in errors."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as err:
            raise StoreError(f"{where}: not valid JSON ({err.msg} at line {err.lineno})") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT_NAME:
            raise StoreError(f"{where}: not an {FORMAT_NAME} manifest")
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            age = ("older" if isinstance(version, int) and version < FORMAT_VERSION else "newer"
                   if isinstance(version, int) else "unknown")
            raise StoreError(f"{where}: store format version {version} is {age} than the "
                             f"supported version {FORMAT_VERSION}; convert the model again")
        try:
            return _from_dict(d)
        except (KeyError, TypeError, ValueError) as err:
            raise StoreError(f"{where}: malformed manifest ({type(err).__name__}: {err})") from None


def _from_dict(d: dict[str, Any]) -> StoreManifest:
    m, q = d["model"], d["quant"]
    files = tuple(FileEntry(name=f["name"], kind=FileKind(f["kind"]), layer=f["layer"],
                            precision=None if f["precision"] is None else Precision[f["precision"]],
                            nbytes=int(f["nbytes"]), sha256=str(f["sha256"]))
                  for f in d["files"])
    for f in files:
        if Path(f.name).name != f.name:
            raise ValueError(f"file name {f.name!r} is not a plain name")
    return StoreManifest(num_layers=int(m["num_layers"]), d_model=int(m["d_model"]),
                         d_ff=int(m["d_ff"]), ffn_mats=int(m["ffn_mats"]),
                         precisions=tuple(Precision[p] for p in d["precisions"]),
                         quant=QuantConfig(int4_group_size=int(q["int4_group_size"]),
                                           scale_bytes=int(q["scale_bytes"])),
                         files=files, format_version=int(d["format_version"]))
