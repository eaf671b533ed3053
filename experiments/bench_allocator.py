"""Host-allocator benchmark: the real backend's FFN ops with glibc's malloc as it comes, and with
the thresholds the backend sets (``real.malloc_*``, real/allocator.py).

Covers: ``real.microbench.decode_rows`` (the backend's own attention, FFN per precision mix,
device-cache loads) at SmolLM2-135M's shapes, each setting in a fresh process (the setting is
process-wide and cannot be undone), the settings alternating so a slow spell of the machine
hits both alike. Prints, per FFN shape, the median op time per setting, the ratio, and the
spread of the per-process medians (what made the CPU validation noisy).
Run:    .venv/bin/python experiments/bench_allocator.py [--processes 4] [--tokens 8]
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"glibc default": (0, 0), "real.malloc_* defaults": None}

CHILD = """
import collections, json, sys, numpy as np, torch
from m2sim.compose import load_config
from real import microbench as mb
from real.allocator import keep_freed_memory
from real.config import RealConfig
torch.set_num_threads(1)
mmap, trim = json.loads(sys.argv[1]) or (RealConfig().malloc_mmap_threshold_bytes,
                                          RealConfig().malloc_trim_threshold_bytes)
keep_freed_memory(mmap, trim)
cfg = load_config("model=smollm2_135m", "policy=m2cache")
m, k = cfg.model, max(8, round(cfg.model.active_frac * cfg.model.d_ff))
combos = [(m.d_ff, 0, 0), (m.d_ff // 2, 0, 0), (0, 0, m.d_ff // 2), (k // 4, k // 4, k // 2)]
rows = mb.decode_rows(m, cfg.quant, dtype=torch.float32, device=torch.device("cpu"),
                      combos=combos, load_ids=[max(1, k // d) for d in (16, 8, 4, 2)],
                      tokens=int(sys.argv[2]), prompt_tokens=16)
by = collections.defaultdict(list)
for r in rows.ffn:
    by[str(tuple(r[1:4]))].append(r[4])
print(json.dumps({key: float(np.median(v)) for key, v in by.items()}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--processes", type=int, default=4, help="fresh processes per setting")
    ap.add_argument("--tokens", type=int, default=8)
    a = ap.parse_args()
    got: dict[str, list[dict]] = collections.defaultdict(list)
    for _ in range(a.processes):
        for name, setting in SETTINGS.items():
            out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(setting), str(a.tokens)],
                                 cwd=ROOT, check=True, capture_output=True, text=True).stdout
            got[name].append(json.loads(out.strip().splitlines()[-1]))
    base, tuned = SETTINGS
    print(f"FFN op time per shape (FP16, INT8, INT4 neurons), ms: median over {a.processes} "
          f"processes (min-max of the per-process medians)")
    print(f"| shape | {base} | {tuned} | ratio |\n|---|---|---|---|")
    for shape in got[base][0]:
        b, t = ([p[shape] * 1e3 for p in got[n]] for n in (base, tuned))
        print(f"| {shape} | {np.median(b):.2f} ({min(b):.2f}-{max(b):.2f}) | {np.median(t):.2f} "
              f"({min(t):.2f}-{max(t):.2f}) | {np.median(b) / np.median(t):.2f}x |")


if __name__ == "__main__":
    main()
