"""Neuron bundles: the byte record of one FFN neuron, and blocks of them (paper §4.1).

Record i of a layer at precision p is ``gate row i | up row i | down column i`` (gated FFNs) or
``up row i | down column i`` (plain FFNs), each a row of ``d_model`` weights in p's row layout
(``real.quant``), so a record is exactly ``ModelSpec.neuron_bytes(p)`` bytes. A block of n
records is a (n, record_bytes) uint8 tensor: what the SSD file, the DRAM cache and the device
slot pools all hold. ``Bundles`` views such a block as row blocks the FFN can use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from m2sim.specs import QuantConfig, row_bytes
from m2sim.types import Precision
from real.quant import QuantizedRows, quantize_rows, rows_from_bytes


def record_bytes(d_model: int, ffn_mats: int, precision: Precision, quant: QuantConfig) -> int:
    """Bytes of one neuron record (equals ``ModelSpec.neuron_bytes``)."""
    return ffn_mats * row_bytes(d_model, precision, quant)


@dataclass(frozen=True, eq=False)
class Bundles:
    """n neurons of one layer at one precision, as row blocks of shape (n, d_model).

    ``down`` holds columns of W_down as rows, so the FFN output is
    ``linear_t(act(linear(x, gate)) * linear(x, up), down)``.
    """

    gate: Optional[QuantizedRows]  # None for plain (2-matrix) FFNs
    up: QuantizedRows
    down: QuantizedRows

    @property
    def num_neurons(self) -> int:
        return self.up.shape[0]

    @property
    def nbytes(self) -> int:
        return sum(m.nbytes for m in self.mats())

    def mats(self) -> tuple[QuantizedRows, ...]:
        return (self.up, self.down) if self.gate is None else (self.gate, self.up, self.down)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> tuple[Optional[Tensor], Tensor,
                                                                      Tensor]:
        """(gate (n, d) or None, up (n, d), down (d, n)) as float tensors in HF orientation."""
        gate = None if self.gate is None else self.gate.dequantize(dtype)
        return gate, self.up.dequantize(dtype), self.down.dequantize(dtype).T


def quantize_bundles(gate: Optional[Tensor], up: Tensor, down: Tensor, precision: Precision,
                     quant: QuantConfig) -> Bundles:
    """HF weights (gate (d_ff, d), up (d_ff, d), down (d, d_ff)) -> quantized bundles."""
    qgate = None if gate is None else quantize_rows(gate, precision, quant)
    return Bundles(qgate, quantize_rows(up, precision, quant),
                   quantize_rows(down.T, precision, quant))


def encode(bundles: Bundles) -> Tensor:
    """Bundles -> records (n, record_bytes) uint8, contiguous."""
    return torch.cat([m.to_bytes() for m in bundles.mats()], dim=1).contiguous()


def decode(records: Tensor, d_model: int, ffn_mats: int, precision: Precision,
           quant: QuantConfig) -> Bundles:
    """Records (n, record_bytes) uint8 -> ``Bundles`` (views of ``records`` where aligned)."""
    rb = row_bytes(d_model, precision, quant)
    if records.dim() != 2 or records.shape[1] != ffn_mats * rb:
        raise ValueError(f"expected ({ffn_mats * rb}-byte records), got {tuple(records.shape)}")
    mats = [rows_from_bytes(records[:, k * rb:(k + 1) * rb], d_model, precision, quant)
            for k in range(ffn_mats)]
    return Bundles(None, *mats) if ffn_mats == 2 else Bundles(*mats)
