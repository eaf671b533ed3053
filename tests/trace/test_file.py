"""The versioned trace file: round trip, and clear errors for damage and mismatches."""

import json

import numpy as np
import pytest

from m2sim.trace import RecordedTrace, SyntheticTrace, SyntheticTraceConfig, write_trace
from m2sim.trace.file import TraceFormatError, TraceWriter


def _synthetic():
    return SyntheticTrace(SyntheticTraceConfig(), num_layers=2, d_ff=64, default_active_frac=0.25,
                          default_overlap_frac=0.8, seed=1)


def test_round_trip_preserves_every_set(tmp_path):
    path = write_trace(_synthetic(), tmp_path / "t.m2trace", num_tokens=5, model="tiny",
                       d_model=16)
    rec, ref = RecordedTrace(path), _synthetic()
    assert (rec.num_tokens, rec.num_layers, rec.num_neurons) == (5, 2, 64)
    for t in range(5):
        for layer in range(2):
            a, b = rec.active(t, layer), ref.active(t, layer)
            assert sorted(a.ids.tolist()) == sorted(b.ids.tolist())
            assert np.all(np.diff(a.scores) <= 0)  # stored by descending score
    assert rec.max_active(0) == ref.max_active(0)


def test_model_mismatch_is_a_clear_error(tmp_path):
    path = write_trace(_synthetic(), tmp_path / "t.m2trace", num_tokens=1, model="tiny",
                       d_model=16)
    with pytest.raises(TraceFormatError, match="recorded on tiny"):
        RecordedTrace(path).check_model(model="llama2_7b", num_layers=32, d_ff=11008,
                                        d_model=4096)


def test_reading_past_the_end_names_the_workload_field(tmp_path):
    path = write_trace(_synthetic(), tmp_path / "t.m2trace", num_tokens=2, model="tiny",
                       d_model=16)
    with pytest.raises(TraceFormatError, match="output_tokens"):
        RecordedTrace(path).active(2, 0)


def test_older_schema_version_and_corruption_are_detected(tmp_path):
    path = write_trace(_synthetic(), tmp_path / "t.m2trace", num_tokens=2, model="tiny",
                       d_model=16)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(bytes(arrays["header"]).decode())
    header["schema_version"] = 0
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    old = tmp_path / "old.m2trace"
    with open(old, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(TraceFormatError, match="schema version 0"):
        RecordedTrace(old)
    truncated = tmp_path / "cut.m2trace"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(TraceFormatError, match="not a readable"):
        RecordedTrace(truncated)
    with pytest.raises(TraceFormatError, match="not found"):
        RecordedTrace(tmp_path / "missing.m2trace")


def test_writer_demands_token_layer_order(tmp_path):
    w = TraceWriter(model="m", num_layers=2, num_neurons=8, d_model=4)
    w.add(0, 0, [1, 2], [0.5, 0.1])
    with pytest.raises(ValueError, match="order"):
        w.add(1, 0, [1], [0.5])
