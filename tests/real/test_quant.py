"""real.quant: INT4 packing, round-trip error bounds, row byte sizes, serialization."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from m2sim.specs import QuantConfig, row_bytes
from m2sim.types import BANDS, Precision
from real.quant import (
    Fp16Rows,
    Int4Rows,
    Int8Rows,
    dequantize_int4,
    dequantize_int8,
    dequantize_packed_int4,
    linear,
    linear_t,
    pack_int4,
    quantize_int4,
    quantize_int8,
    quantize_rows,
    rows_from_bytes,
    unpack_int4,
)

FAST = settings(max_examples=60, deadline=None)


@st.composite
def matrices(draw, max_rows: int = 6, max_cols: int = 150) -> torch.Tensor:
    rows = draw(st.integers(1, max_rows))
    cols = draw(st.integers(1, max_cols))
    scale = draw(st.sampled_from([1e-30, 1e-6, 1e-2, 1.0, 3e3]))
    a = draw(hnp.arrays(np.float32, (rows, cols),
                        elements=st.floats(-1, 1, width=32, allow_subnormal=True)))
    return torch.from_numpy(a) * scale


def _assert_within_half_step(w: torch.Tensor, deq: torch.Tensor, step: torch.Tensor) -> None:
    err = (deq - w).abs()
    bound = step / 2 + 1e-6 * w.abs() + 1e-45
    worst = (err - bound).max()
    assert worst <= 0, f"error exceeds half a step by {worst}"


# ---- INT4 packing ---------------------------------------------------------------------------
@FAST
@given(st.integers(1, 5), st.integers(1, 40), st.data())
def test_int4_pack_unpack_is_exact(rows, cols, data):
    q = torch.tensor(data.draw(hnp.arrays(np.int8, (rows, cols), elements=st.integers(-8, 7))))
    packed = pack_int4(q)
    assert packed.dtype == torch.uint8 and packed.shape == (rows, (cols + 1) // 2)
    assert torch.equal(unpack_int4(packed, cols), q)


def test_int4_nibble_order_is_low_nibble_first_offset_8():
    packed = pack_int4(torch.tensor([[1, -2, 7]], dtype=torch.int8))
    # element 0 -> low nibble 1+8=9, element 1 -> high nibble -2+8=6, odd tail padded with 8
    assert packed.tolist() == [[0x69, 0x80 | 0x0F]]


# ---- round-trip error -----------------------------------------------------------------------
@FAST
@given(matrices())
def test_int8_round_trip_within_half_a_step(w):
    q, scales = quantize_int8(w)
    assert q.dtype == torch.int8 and scales.dtype == torch.float16 and scales.shape == (w.shape[0],)
    assert q.abs().max() <= 127
    step = scales.float()[:, None].expand_as(w)
    _assert_within_half_step(w, dequantize_int8(q, scales), step)


@FAST
@given(matrices(), st.sampled_from([2, 4, 64]))
def test_int4_round_trip_within_half_a_step(w, group):
    q, scales = quantize_int4(w, group)
    assert q.abs().max() <= 7
    assert scales.shape == (w.shape[0], -(-w.shape[1] // group))
    col_group = torch.arange(w.shape[1]) // group
    step = scales.float()[:, col_group]
    _assert_within_half_step(w, dequantize_int4(q, scales, group), step)


def test_scale_is_rounded_up_so_the_largest_weight_is_not_clamped():
    # amax/127 = 0.1001.../127 rounds DOWN to the nearest fp16; the stored scale must not
    w = torch.tensor([[0.1001, -0.05]])
    q, scales = quantize_int8(w)
    assert scales.float().item() * 127 >= 0.1001
    assert abs(q[0, 0].item() * scales.float().item() - 0.1001) <= scales.float().item() / 2


def test_all_zero_rows_quantize_to_zero():
    w = torch.zeros(3, 10)
    for p in BANDS:
        assert torch.equal(quantize_rows(w, p, QuantConfig()).dequantize(), w)


def test_fp32_scales_when_scale_bytes_is_4():
    quant = QuantConfig(scale_bytes=4)
    w = torch.randn(4, 100, generator=torch.Generator().manual_seed(1))
    for p in (Precision.INT8, Precision.INT4):
        rows = quantize_rows(w, p, quant)
        assert rows.scales.dtype == torch.float32
        assert rows.nbytes == 4 * row_bytes(100, p, quant)


def test_non_finite_scales_are_rejected():
    with pytest.raises(ValueError, match="too large"):
        quantize_int8(torch.tensor([[1e10, 1.0]]))


# ---- byte layout ----------------------------------------------------------------------------
@pytest.mark.parametrize("precision", BANDS)
@pytest.mark.parametrize("cols", [1, 7, 63, 64, 65, 130])
@pytest.mark.parametrize("group", [2, 32, 64])
def test_sizes_equal_spec_row_bytes(precision, cols, group):
    quant = QuantConfig(int4_group_size=group)
    rows = quantize_rows(torch.randn(3, cols), precision, quant)
    rb = row_bytes(cols, precision, quant)
    assert rows.nbytes == 3 * rb
    assert rows.to_bytes().shape == (3, rb)
    assert rows.shape == (3, cols)


@FAST
@given(matrices(max_cols=70), st.sampled_from(BANDS), st.sampled_from([2, 4, 64]))
def test_serialization_round_trip_is_exact(w, precision, group):
    quant = QuantConfig(int4_group_size=group)
    rows = quantize_rows(w, precision, quant)
    buf = rows.to_bytes()
    back = rows_from_bytes(buf, w.shape[1], precision, quant)
    assert type(back) is type(rows)
    assert torch.equal(back.to_bytes(), buf)
    assert torch.equal(back.dequantize(), rows.dequantize())


@pytest.mark.parametrize("precision", BANDS)
@pytest.mark.parametrize("rows,cols", [(1, 1), (1, 2), (2, 1), (1, 64)])
def test_single_row_and_column_blocks_serialize(precision, rows, cols):
    quant = QuantConfig(int4_group_size=2)
    buf = quantize_rows(torch.randn(rows, cols), precision, quant).to_bytes()
    back = rows_from_bytes(buf, cols, precision, quant)  # views with odd size-1 strides
    assert torch.equal(back.to_bytes(), buf)


def test_row_layout_is_data_then_scale():
    w = torch.tensor([[2.0, -1.0, 0.5, 0.0]])
    q8 = quantize_rows(w, Precision.INT8, QuantConfig())
    buf = q8.to_bytes()
    assert buf[0, :4].view(torch.int8).tolist() == q8.q[0].tolist() == [127, -63, 32, 0]  # -1/scale = -63.49
    assert buf[0, 4:6].view(torch.float16).item() == q8.scales[0].item()
    q4 = quantize_rows(w, Precision.INT4, QuantConfig(int4_group_size=2))
    buf = q4.to_bytes()  # 2 packed bytes, then one fp16 scale per group of 2
    assert buf.shape == (1, 2 + 2 * 2)
    assert torch.equal(buf[:, 4:6].view(torch.float16), q4.scales[:, 1:])


def test_from_bytes_views_the_buffer_when_aligned():
    quant = QuantConfig()
    for cls, p in ((Fp16Rows, Precision.FP16), (Int8Rows, Precision.INT8),
                   (Int4Rows, Precision.INT4)):
        buf = quantize_rows(torch.randn(4, 64), p, quant).to_bytes().clone()
        rows = rows_from_bytes(buf, 64, p, quant)
        assert isinstance(rows, cls)
        before = rows.dequantize().clone()
        buf.zero_()  # a view sees the change
        assert not torch.equal(rows.dequantize(), before)


@pytest.mark.parametrize("precision", BANDS)
def test_linear_and_linear_t_match_the_dequantized_matrix(precision):
    g = torch.Generator().manual_seed(0)
    w, x, h = torch.randn(8, 64, generator=g), torch.randn(3, 64, generator=g), torch.randn(
        3, 8, generator=g)
    rows = quantize_rows(w, precision, QuantConfig())
    deq = rows.dequantize()
    torch.testing.assert_close(linear(x, rows), x @ deq.T)
    torch.testing.assert_close(linear_t(h, rows), h @ deq)


@FAST
@given(w=matrices(max_cols=200), dtype=st.sampled_from([torch.float32, torch.float16,
                                                       torch.bfloat16]))
def test_fast_dequantization_equals_the_reference(w, dtype):
    """The decode path's dequantizers give bit for bit what the two-step reference gives."""
    quant = QuantConfig()
    q, s = quantize_int4(w, quant.int4_group_size)
    ref = dequantize_int4(q, s, quant.int4_group_size, dtype)
    got = dequantize_packed_int4(pack_int4(q), s, w.shape[1], quant.int4_group_size, dtype)
    assert got.dtype == dtype and torch.equal(got, ref)
    q8, s8 = quantize_int8(w)
    assert torch.equal(dequantize_int8(q8, s8, dtype), (q8.float() * s8.float()[:, None]).to(dtype))
