"""ATU: loads exactly the new (id, band) pairs, evicts exactly the departed ones."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from m2sim.policy.atu import ATU, ATUConfig
from m2sim.policy.layout import NeuronLayout
from m2sim.policy.records import BandedSet

EMPTY = np.empty(0, np.int32)


def _layout(n=100, layers=2):
    return NeuronLayout(num_layers=layers, num_ids=n, neurons_per_id=1, id_bytes=(60, 33, 18),
                        max_active=(n,) * layers, fracs=(0.25, 0.25, 0.5))


def _set(*bands):
    return BandedSet(ids=tuple(np.array(b, dtype=np.int32) for b in bands))


def test_first_token_loads_the_whole_active_set():
    atu = ATU(ATUConfig(), _layout())
    u = atu.update(0, 0, _set([1, 2], [3], [4, 5, 6]))
    assert u.hits == (0, 0, 0)
    assert [sorted(x.tolist()) for x in u.load] == [[1, 2], [3], [4, 5, 6]]
    assert u.evicted == 0
    assert u.resident_bytes == 2 * 60 + 33 + 3 * 18


def test_second_token_loads_new_minus_previous_and_evicts_previous_minus_new():
    atu = ATU(ATUConfig(), _layout())
    atu.update(0, 0, _set([1, 2], [3], [4, 5, 6]))
    # 1 stays FP16; 2 leaves; 3 moves INT8 -> FP16 (a miss at FP16); 4, 5 stay INT4; 6 leaves;
    # 7 is new at INT8
    u = atu.update(1, 0, _set([1, 3], [7], [4, 5]))
    assert u.hits == (1, 0, 2)
    assert [sorted(x.tolist()) for x in u.load] == [[3], [7], []]
    # departed entries: (2, FP16), (3, INT8), (6, INT4)
    assert u.evicted == 3


def test_layers_are_independent():
    atu = ATU(ATUConfig(), _layout())
    atu.update(0, 0, _set([1], [], []))
    u = atu.update(0, 1, _set([1], [], []))
    assert u.hits == (0, 0, 0)


def test_hit_ratio_equals_trace_overlap():
    from m2sim.trace import SyntheticTrace, SyntheticTraceConfig

    trace = SyntheticTrace(SyntheticTraceConfig(overlap_frac=0.8, score_jitter=0.0), num_layers=1,
                           d_ff=2000, default_active_frac=0.2, default_overlap_frac=0.8, seed=3)
    atu = ATU(ATUConfig(), _layout(n=2000, layers=1))
    hits = want = 0
    for t in range(30):
        a = trace.active(t, 0)
        u = atu.update(t, 0, BandedSet(ids=(a.ids, EMPTY, EMPTY)))  # one band
        if t > 0:
            hits += sum(u.hits)
            want += len(a)
    assert hits / want == 0.8


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sets(st.integers(0, 49), max_size=20),
                          st.sets(st.integers(0, 49), max_size=20)), min_size=1, max_size=8))
def test_atu_never_evicts_a_neuron_of_the_new_set_and_bytes_are_conserved(tokens):
    layout = _layout(n=50, layers=1)
    atu = ATU(ATUConfig(), layout)
    resident: set[tuple[int, int]] = set()
    for t, (fp16, int4) in enumerate(tokens):
        int4 = int4 - fp16
        want = _set(sorted(fp16), [], sorted(int4))
        new = {(i, 0) for i in fp16} | {(i, 2) for i in int4}
        u = atu.update(t, 0, want)
        loaded = {(int(i), b) for b, ids in enumerate(u.load) for i in ids}
        assert loaded == new - resident  # exactly what was missing
        assert u.evicted == len(resident - new)  # exactly what departed
        evicted = {(int(i), b) for b, ids in enumerate(u.evict) for i in ids}
        assert evicted == resident - new and not evicted & new
        resident = new
        assert u.resident_bytes == sum(layout.id_bytes[b] for _, b in resident)


def test_evict_names_the_departed_entries_by_band():
    atu = ATU(ATUConfig(), _layout())
    atu.update(0, 0, _set([1, 2], [3], [4, 5, 6]))
    u = atu.update(1, 0, _set([1, 3], [7], [4, 5]))
    assert [sorted(x.tolist()) for x in u.evict] == [[2], [3], [6]]
