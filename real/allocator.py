"""The host allocator: keep freed memory for reuse instead of handing it back to the OS.

On CPU, the FFN of an FP16 or quantized band converts its rows into float temporaries (3.5 MB
per matrix for SmolLM2's 1536 neurons), every layer, every token. glibc's malloc serves blocks
above its mmap threshold (128 KiB at start, raised on the fly as big blocks are freed) with a
fresh ``mmap`` and unmaps them on ``free``; it also trims the heap's free top above its trim
threshold. Which of these happens depends on what was allocated and freed before, so the same
op page-faults its temporaries on every call in one process state and reuses warm heap memory
in another. On the development VM (``experiments/bench_allocator.py``, 4 fresh processes per
setting) the FFN over every neuron in FP16 took 4.36 ms with glibc's defaults and 2.19 ms with
both thresholds fixed; the two states made the same op's timings noisy, in the real backend
and in the profile alike.

Serving stacks solve this with a caching allocator (jemalloc or tcmalloc preloaded, or CUDA's
caching allocator on a GPU). We set glibc's two thresholds instead (``mallopt``), at the start
of a run: blocks up to ``mmap_threshold_bytes`` come from the heap, and up to
``trim_threshold_bytes`` of freed heap stay mapped. Process-wide, like ``torch.set_num_threads``;
elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MAX_THRESHOLD_BYTES = 2**31 - 1  # mallopt takes an int


def _glibc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def keep_freed_memory(mmap_threshold_bytes: int, trim_threshold_bytes: int) -> bool:
    """Fix glibc's mmap and trim thresholds (0 leaves that one as it is). Returns whether the
    allocator is glibc's and took every nonzero setting."""
    libc = _glibc()
    if libc is None:
        return False
    ok = True
    for option, value in ((M_MMAP_THRESHOLD, mmap_threshold_bytes),
                          (M_TRIM_THRESHOLD, trim_threshold_bytes)):
        if value:
            ok = bool(libc.mallopt(ctypes.c_int(option), ctypes.c_int(value))) and ok
    return ok
