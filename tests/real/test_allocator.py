"""real/allocator.py: the thresholds really change where glibc's malloc puts big blocks."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from m2sim.errors import ConfigError
from real.config import RealConfig

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc")

# Frees an 8 MiB block (glibc then raises its mmap threshold to 8 MiB), then allocates 16 MiB
# and reports how many bytes of it were mmapped rather than taken from the heap.
CHILD = """
import ctypes, json, sys
from real.allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                "usmblks", "fsmblks", "uordblks", "fordblks",
                                                "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
took = keep_freed_memory(32 << 20, 256 << 20) if sys.argv[1] == "keep" else None
libc.free(libc.malloc(8 << 20))
before = libc.mallinfo2().hblkhd
p = libc.malloc(16 << 20)
print(json.dumps({"took": took, "mmapped": libc.mallinfo2().hblkhd - before}))
libc.free(p)
"""


def _child(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@glibc_only
def test_big_blocks_come_from_the_heap_once_the_thresholds_are_set():
    as_is, kept = _child("as-is"), _child("keep")
    assert as_is["mmapped"] >= 16 << 20  # glibc's own: a fresh mapping for the 16 MiB block
    assert kept == {"took": True, "mmapped": 0}


@pytest.mark.parametrize("field, value", [("malloc_mmap_threshold_bytes", -1),
                                          ("malloc_trim_threshold_bytes", 2**31)])
def test_thresholds_out_of_range_name_the_field(field, value):
    with pytest.raises(ConfigError, match=f"real.{field}"):
        RealConfig(**{field: value})
