"""LRU and window neuron caches: capacity, recency order, max age."""

import numpy as np

from m2sim.policy.layout import NeuronLayout
from m2sim.policy.lru import LRU, LRUConfig, WindowConfig
from m2sim.policy.records import BandedSet

E = np.empty(0, np.int32)


def _layout(n=20):
    return NeuronLayout(num_layers=1, num_ids=n, neurons_per_id=1, id_bytes=(10, 5, 3),
                        max_active=(4,), fracs=(1.0, 0.0, 0.0))


def _fp16(*ids):
    return BandedSet(ids=(np.array(ids, np.int32), E, E))


def test_lru_evicts_least_recently_used_first():
    lru = LRU(_layout(), capacity_bytes=[30])  # three FP16 entries
    lru.update(0, 0, _fp16(1, 2))
    lru.update(1, 0, _fp16(3))
    lru.update(2, 0, _fp16(1))  # 1 is recent again; 2 is now the oldest
    u = lru.update(3, 0, _fp16(4))
    assert u.evicted == 1
    assert [x.tolist() for x in u.evict] == [[2], [], []]
    assert lru.is_resident(0, 0, np.array([1, 3, 4])).all()
    assert not lru.is_resident(0, 0, np.array([2]))[0]
    assert u.resident_bytes == 30


def test_lru_hits_count_resident_entries_at_the_same_precision_only():
    lru = LRU(_layout(), capacity_bytes=[100])
    lru.update(0, 0, _fp16(1, 2))
    u = lru.update(1, 0, BandedSet(ids=(np.array([1], np.int32), np.array([2], np.int32), E)))
    assert u.hits == (1, 0, 0)
    assert [x.tolist() for x in u.load] == [[], [2], []]


def test_lru_capacity_follows_the_active_unit():
    lru = LRU.from_config(LRUConfig(capacity_scale=2.0), _layout())
    assert lru.capacity == [2 * 4 * 10]


def test_window_drops_entries_unused_for_w_tokens():
    lru = LRU.from_config(WindowConfig(window_tokens=2), _layout())
    lru.update(0, 0, _fp16(1, 2))
    lru.update(1, 0, _fp16(2))
    u = lru.update(2, 0, _fp16(3))  # 1 was last used at token 0: age 2 -> dropped
    assert not lru.is_resident(0, 0, np.array([1]))[0]
    assert lru.is_resident(0, 0, np.array([2, 3])).all()
    assert u.evicted == 1 and u.evict[0].tolist() == [1]
