"""m2sim: simulate M2Cache-style LLM inference over HBM, DRAM and SSD on memory-poor GPUs.

The simulator imports and runs without torch. Entry points: ``m2sim.sim.engine.simulate`` and
the ``m2sim`` command; the real backend lives in the sibling package ``real``.
"""

__version__ = "0.1.0"
