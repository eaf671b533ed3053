"""Weight-only quantization primitives and quantized row blocks (gpt-fast style).

Symmetric round-to-nearest (DECISION, m2cache.md). INT8: one scale per row, ``max|w| / 127``,
values in [-127, 127]. INT4: one scale per group of ``group_size`` consecutive weights of a row,
``max|w| / 7``, values in [-7, 7] (-8 is never produced), stored as ``q + 8`` in a nibble; two
per byte, element ``2j`` in the LOW nibble and ``2j + 1`` in the HIGH nibble; an odd last
element is padded with a zero (nibble 8). Scales are stored as FP16 (``scale_bytes=2``) or FP32
(``4``) and rounded *up* to that format, so ``|w| / scale <= qmax`` and no value is clamped:
every element dequantizes within half a step (``scale / 2``) of its original.

Row byte layout (``m2sim.specs.row_bytes``): FP16 ``2*cols`` bytes; INT8 ``cols`` int8 bytes |
one scale; INT4 ``ceil(cols/2)`` packed bytes | ``ceil(cols/group)`` scales. Little-endian.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import ClassVar, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from m2sim.specs import QuantConfig, row_bytes
from m2sim.types import Precision

INT8_QMAX = 127
INT4_QMAX = 7
INT4_OFFSET = 8  # stored nibble = q + 8

if sys.byteorder != "little":
    raise ImportError("real.quant: the stored row layout is little-endian")


def scale_dtype(scale_bytes: int) -> torch.dtype:
    """The float type of a stored scale: FP16 for 2 bytes, FP32 for 4."""
    dtypes = {2: torch.float16, 4: torch.float32}
    if scale_bytes not in dtypes:
        raise ValueError(f"quant.scale_bytes={scale_bytes} is not supported (2 or 4)")
    return dtypes[scale_bytes]


def _round_up_scale(amax: Tensor, qmax: int, dtype: torch.dtype) -> Tensor:
    """``amax / qmax`` in ``dtype``, rounded up to the next representable value if needed."""
    scale = (amax / qmax).to(dtype)
    if not torch.isfinite(scale).all():
        raise ValueError(f"weights too large for {dtype} scales (max |w| = {amax.max():.3g})")
    low = scale.float() * qmax < amax
    if low.any():  # positive floats: the next value up is the next bit pattern
        int_t = torch.int16 if dtype == torch.float16 else torch.int32
        scale = torch.where(low, (scale.view(int_t) + 1).view(dtype), scale)
    return scale


def _divide(w: Tensor, scale: Tensor) -> Tensor:
    return w / torch.where(scale == 0, torch.ones_like(scale), scale)


# ---- INT8 ---------------------------------------------------------------------------------
def quantize_int8(w: Tensor, scale_bytes: int = 2) -> tuple[Tensor, Tensor]:
    """(rows, cols) float -> int8 values (rows, cols) and one scale per row (rows,)."""
    w = w.float()
    scales = _round_up_scale(w.abs().amax(dim=1), INT8_QMAX, scale_dtype(scale_bytes))
    q = torch.round(_divide(w, scales.float()[:, None])).clamp_(-INT8_QMAX, INT8_QMAX)
    return q.to(torch.int8), scales


def dequantize_int8(q: Tensor, scales: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """(rows, cols) in ``dtype``; computed in ``dtype`` when it is a float type: q * s is exact
    in float32 (8 + 11 significant bits), so one rounding to ``dtype`` gives the same value."""
    if dtype in _DIRECT:
        return q.to(dtype).mul_(scales.to(dtype)[:, None])  # (rows, cols)
    return (q.float() * scales.float()[:, None]).to(dtype)


# ---- INT4 ---------------------------------------------------------------------------------
def num_groups(cols: int, group_size: int) -> int:
    return -(-cols // group_size)


def _grouped(w: Tensor, group_size: int) -> Tensor:
    """(rows, cols) -> (rows, groups, group_size), zero-padded."""
    rows, cols = w.shape
    pad = num_groups(cols, group_size) * group_size - cols
    return F.pad(w, (0, pad)).view(rows, -1, group_size)


def quantize_int4(w: Tensor, group_size: int = 64, scale_bytes: int = 2) -> tuple[Tensor, Tensor]:
    """(rows, cols) float -> int8 values in [-7, 7] (rows, cols), scales (rows, groups)."""
    rows, cols = w.shape
    g = _grouped(w.float(), group_size)  # (rows, groups, group_size)
    scales = _round_up_scale(g.abs().amax(dim=2), INT4_QMAX, scale_dtype(scale_bytes))
    q = torch.round(_divide(g, scales.float()[:, :, None])).clamp_(-INT4_QMAX, INT4_QMAX)
    return q.view(rows, -1)[:, :cols].to(torch.int8), scales


def dequantize_int4(q: Tensor, scales: Tensor, group_size: int = 64,
                    dtype: torch.dtype = torch.float32) -> Tensor:
    rows, cols = q.shape
    g = _grouped(q.float(), group_size) * scales.float()[:, :, None]
    return g.view(rows, -1)[:, :cols].to(dtype)


def dequantize_packed_int4(packed: Tensor, scales: Tensor, cols: int, group_size: int = 64,
                           dtype: torch.dtype = torch.float32) -> Tensor:
    """``dequantize_int4(unpack_int4(packed, cols), ...)`` in fewer passes (the decode hot
    path): nibbles -> ``dtype`` -> minus the offset -> times the group scales, in place. Equal
    to it: (q - 8) and (q - 8) * s are exact in float32, rounded once to ``dtype``."""
    rows = packed.shape[0]
    groups = scales.shape[1]
    if dtype not in _DIRECT or groups * group_size != 2 * packed.shape[1] or cols % 2:
        return dequantize_int4(unpack_int4(packed, cols), scales, group_size, dtype)
    w = torch.stack((packed & 0x0F, packed >> 4), dim=2).to(dtype)  # (rows, cols/2, 2)
    w = w.view(rows, groups, group_size).sub_(INT4_OFFSET)
    return w.mul_(scales.to(dtype)[:, :, None]).view(rows, -1)[:, :cols]


_DIRECT = (torch.float32, torch.float16)  # a float16 scale converts to these exactly


def pack_int4(q: Tensor) -> Tensor:
    """int values in [-8, 7] (rows, cols) -> uint8 (rows, ceil(cols/2)); low nibble first."""
    rows, cols = q.shape
    u = (q.to(torch.int16) + INT4_OFFSET).to(torch.uint8)
    if cols % 2:
        u = F.pad(u, (0, 1), value=INT4_OFFSET)
    return u[:, 0::2] | (u[:, 1::2] << 4)


def unpack_int4(packed: Tensor, cols: int) -> Tensor:
    """uint8 (rows, ceil(cols/2)) -> int8 (rows, cols); inverse of ``pack_int4``."""
    lo = (packed & 0x0F).to(torch.int8) - INT4_OFFSET
    hi = (packed >> 4).to(torch.int8) - INT4_OFFSET
    return torch.stack((lo, hi), dim=2).view(packed.shape[0], -1)[:, :cols]


# ---- byte views -----------------------------------------------------------------------------
def _as_dtype(buf: Tensor, start: int, stop: int, dtype: torch.dtype) -> Tensor:
    """Columns [start, stop) of a (rows, row_bytes) uint8 tensor viewed as ``dtype``.

    Zero-copy when byte offsets and the row stride are multiples of the element size, else a
    copy (odd row sizes)."""
    part = buf[:, start:stop]
    size = torch.empty((), dtype=dtype).element_size()
    aligned = (part.storage_offset() % size == 0 and part.stride(0) % size == 0
               and part.data_ptr() % size == 0)
    return (part if aligned else part.clone(memory_format=torch.contiguous_format)).view(dtype)


def _bytes_of(t: Tensor, rows: int) -> Tensor:
    """A (rows, ...) tensor's bytes as (rows, nbytes / rows) uint8, whatever its strides."""
    flat = t.reshape(-1).clone(memory_format=torch.contiguous_format)  # size-1 dims may carry
    return flat.view(torch.uint8).view(rows, -1)  # odd strides that .contiguous() keeps


def _check_buf(buf: Tensor, expect_bytes: int) -> None:
    if buf.dtype != torch.uint8 or buf.dim() != 2 or buf.shape[1] != expect_bytes:
        raise ValueError(f"expected a (rows, {expect_bytes}) uint8 tensor, got "
                         f"{tuple(buf.shape)} {buf.dtype}")


# ---- row blocks -----------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Fp16Rows:
    """A block of FP16 rows: ``weight`` (rows, cols) float16."""

    precision: ClassVar[Precision] = Precision.FP16
    weight: Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.weight.shape)  # type: ignore[return-value]

    @property
    def nbytes(self) -> int:
        return self.weight.numel() * 2

    def dequantize(self, dtype: torch.dtype = torch.float32) -> Tensor:
        return self.weight.to(dtype)

    def to_bytes(self) -> Tensor:
        return _bytes_of(self.weight, self.weight.shape[0])  # (rows, 2 * cols)

    @staticmethod
    def from_bytes(buf: Tensor, cols: int, quant: QuantConfig) -> Fp16Rows:
        _check_buf(buf, row_bytes(cols, Precision.FP16, quant))
        return Fp16Rows(_as_dtype(buf, 0, 2 * cols, torch.float16))


@dataclass(frozen=True, eq=False)
class Int8Rows:
    """A block of INT8 rows: ``q`` (rows, cols) int8 and ``scales`` (rows,)."""

    precision: ClassVar[Precision] = Precision.INT8
    q: Tensor
    scales: Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.q.shape)  # type: ignore[return-value]

    @property
    def nbytes(self) -> int:
        return self.q.numel() + self.scales.numel() * self.scales.element_size()

    def dequantize(self, dtype: torch.dtype = torch.float32) -> Tensor:
        return dequantize_int8(self.q, self.scales, dtype)

    def to_bytes(self) -> Tensor:
        rows = self.q.shape[0]
        return torch.cat((self.q.view(torch.uint8), _bytes_of(self.scales, rows)), dim=1)

    @staticmethod
    def from_bytes(buf: Tensor, cols: int, quant: QuantConfig) -> Int8Rows:
        _check_buf(buf, row_bytes(cols, Precision.INT8, quant))
        dt = scale_dtype(quant.scale_bytes)
        return Int8Rows(buf[:, :cols].view(torch.int8),
                        _as_dtype(buf, cols, cols + quant.scale_bytes, dt)[:, 0])


@dataclass(frozen=True, eq=False)
class Int4Rows:
    """A block of INT4 rows: ``packed`` (rows, ceil(cols/2)) uint8, ``scales`` (rows, groups)."""

    precision: ClassVar[Precision] = Precision.INT4
    packed: Tensor
    scales: Tensor
    cols: int
    group_size: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.packed.shape[0], self.cols)

    @property
    def nbytes(self) -> int:
        return self.packed.numel() + self.scales.numel() * self.scales.element_size()

    def dequantize(self, dtype: torch.dtype = torch.float32) -> Tensor:
        return dequantize_packed_int4(self.packed, self.scales, self.cols, self.group_size,
                                      dtype)

    def to_bytes(self) -> Tensor:
        return torch.cat((self.packed, _bytes_of(self.scales, self.packed.shape[0])), dim=1)

    @staticmethod
    def from_bytes(buf: Tensor, cols: int, quant: QuantConfig) -> Int4Rows:
        _check_buf(buf, row_bytes(cols, Precision.INT4, quant))
        half = -(-cols // 2)
        dt = scale_dtype(quant.scale_bytes)
        return Int4Rows(buf[:, :half], _as_dtype(buf, half, buf.shape[1], dt), cols,
                        quant.int4_group_size)


QuantizedRows = Union[Fp16Rows, Int8Rows, Int4Rows]
_ROWS = {Precision.FP16: Fp16Rows, Precision.INT8: Int8Rows, Precision.INT4: Int4Rows}


def quantize_rows(w: Tensor, precision: Precision, quant: QuantConfig) -> QuantizedRows:
    """Quantize a (rows, cols) float matrix row by row at ``precision``."""
    if precision is Precision.FP16:
        return Fp16Rows(w.to(torch.float16).contiguous())
    if precision is Precision.INT8:
        return Int8Rows(*quantize_int8(w, quant.scale_bytes))
    q, scales = quantize_int4(w, quant.int4_group_size, quant.scale_bytes)
    return Int4Rows(pack_int4(q), scales, w.shape[1], quant.int4_group_size)


def rows_from_bytes(buf: Tensor, cols: int, precision: Precision,
                    quant: QuantConfig) -> QuantizedRows:
    """Rows of ``row_bytes(cols, precision, quant)`` bytes each -> a row block (views if aligned)."""
    return _ROWS[precision].from_bytes(buf, cols, quant)


def linear(x: Tensor, w: QuantizedRows) -> Tensor:
    """``x @ W.T``: (..., cols) -> (..., rows), like ``F.linear``."""
    if isinstance(w, Int8Rows):  # gpt-fast WeightOnlyInt8Linear: scale after the matmul
        return F.linear(x, w.q.to(x.dtype)) * w.scales.to(x.dtype)
    return F.linear(x, w.dequantize(x.dtype))


def linear_t(h: Tensor, w: QuantizedRows) -> Tensor:
    """``h @ W``: (..., rows) -> (..., cols); the down projection over stored columns."""
    if isinstance(w, Int8Rows):
        return (h * w.scales.to(h.dtype)) @ w.q.to(h.dtype)
    return h @ w.dequantize(h.dtype)
