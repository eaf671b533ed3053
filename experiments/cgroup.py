"""Run a command in its own cgroup-v1 memory cgroup, with a cold page cache (benchmarks).

``run_limited(name, limit_bytes, argv)`` creates ``/sys/fs/cgroup/memory/m2bench_<name>``, sets
``memory.limit_in_bytes`` (and the memory+swap limit where the kernel has one) to the budget,
syncs and drops the page cache, starts the child, moves its pid into the cgroup before it
execs (so every page it touches, page cache included, is charged there from the first byte),
waits, reads the peak usage and the limit-hit count, and removes the cgroup. Needs root and a
writable v1 memory controller; ``available()`` says whether this machine has one.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ROOT = Path("/sys/fs/cgroup/memory")


def available() -> bool:
    return os.geteuid() == 0 and (ROOT / "memory.limit_in_bytes").exists() and os.access(
        ROOT, os.W_OK)


def drop_page_cache() -> None:
    """``sync; echo 3 > /proc/sys/vm/drop_caches``: the next reads go to the disk."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


@dataclass(frozen=True)
class Limited:
    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    limit_bytes: Optional[int]
    peak_bytes: Optional[int]  # memory.max_usage_in_bytes: anonymous + page cache
    limit_hits: Optional[int]  # memory.failcnt: times the charge hit the limit (then reclaim)


def _write(path: Path, value: int | str) -> None:
    path.write_text(f"{value}\n")


def run_limited(name: str, limit_bytes: Optional[int], argv: list[str], *,
                env: Optional[dict] = None, cwd: Optional[str] = None,
                timeout_s: Optional[float] = None, drop_cache: bool = True) -> Limited:
    """Run ``argv`` in cgroup ``m2bench_<name>`` limited to ``limit_bytes`` (None: no limit,
    still measured)."""
    cg = ROOT / f"m2bench_{name}"
    if cg.exists():
        _remove(cg)
    cg.mkdir()
    try:
        if limit_bytes is not None:
            _write(cg / "memory.limit_in_bytes", limit_bytes)
            memsw = cg / "memory.memsw.limit_in_bytes"
            if memsw.exists():
                _write(memsw, limit_bytes)  # no swapping out of the budget either
        _write(cg / "memory.swappiness", 0)
        if drop_cache:
            drop_page_cache()
        procs = str(cg / "cgroup.procs")

        def enter() -> None:  # in the child, before exec
            with open(procs, "w") as f:
                f.write(f"{os.getpid()}\n")

        t0 = time.perf_counter()
        r = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd,
                           timeout=timeout_s, preexec_fn=enter)
        wall = time.perf_counter() - t0
        peak = int((cg / "memory.max_usage_in_bytes").read_text())
        hits = int((cg / "memory.failcnt").read_text())
    finally:
        _remove(cg)
    return Limited(r.returncode, r.stdout, r.stderr, wall, limit_bytes, peak, hits)


def _own_cgroup() -> Path:
    """This process's memory cgroup (where leftover tasks go back to)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return ROOT / path.lstrip("/")
    return ROOT


def _remove(cg: Path) -> None:
    """Move leftover tasks out (there should be none), free the charge, remove the cgroup."""
    home = _own_cgroup() / "cgroup.procs"
    for pid in (cg / "cgroup.procs").read_text().split():
        try:
            home.write_text(f"{pid}\n")
        except OSError:
            pass
    try:
        _write(cg / "memory.force_empty", 0)
    except OSError:
        pass
    for _ in range(50):
        try:
            cg.rmdir()
            return
        except OSError:
            time.sleep(0.1)
    cg.rmdir()
