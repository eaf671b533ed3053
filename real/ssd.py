"""The SSD tier: reads store files from disk, bypassing the page cache.

Reads use O_DIRECT into page-aligned anonymous mmap buffers: offsets and lengths are rounded out
to ``align_bytes`` (4096) and the wanted bytes are sliced out. Where O_DIRECT is unsupported
(EINVAL at open or at the first read, e.g. some tmpfs), the file is read buffered and the range
is dropped from the page cache afterwards (``posix_fadvise(DONTNEED)``), so the next read goes
to the device again. Two read shapes: a whole layer file, read as
``chunk_bytes`` pieces in parallel, and scattered records of one (layer, precision), whose
aligned spans are coalesced when they touch and read in parallel. The parallel pieces run on
``span_threads`` (queue depth > 1); background reads run on a second pool (``submit_*`` return
futures); ``os.preadv`` releases the GIL. Buffers are numpy arrays, so the I/O path never wakes
torch's intra-op thread pool.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from torch import Tensor

from m2sim.types import Precision
from real.manifest import StoreError
from real.meter import TierMeter, TierStats
from real.store import Store

_MAX_SYSCALL_BYTES = 1 << 26  # one preadv at most (Linux caps a read near 2 GiB)


def _round_down(x: int, a: int) -> int:
    return x // a * a


def _round_up(x: int, a: int) -> int:
    return -(-x // a) * a


class SSDReader:
    """Reads a ``Store``'s files with O_DIRECT (or buffered + DONTNEED); a context manager.

    Args:
        store: an opened store.
        num_threads: I/O threads for ``submit_*``.
        span_threads: threads reading the spans of one scattered read concurrently (1: none).
        direct: True requires O_DIRECT, False reads buffered + DONTNEED, None tries O_DIRECT.
        align_bytes: O_DIRECT alignment of offsets, lengths and buffers.
        chunk_bytes: piece size of a parallel whole-file read.
    """

    def __init__(self, store: Store, *, num_threads: int = 4, span_threads: int = 4,
                 direct: Optional[bool] = None, align_bytes: int = 4096,
                 chunk_bytes: int = 4 << 20):
        if align_bytes <= 0 or align_bytes % 512 or mmap.PAGESIZE % align_bytes:
            raise ValueError(f"align_bytes={align_bytes}: must be a multiple of 512 dividing "
                             f"the page size {mmap.PAGESIZE}")
        self.store = store
        self.num_threads = num_threads
        self.span_threads = span_threads
        self.direct = direct
        self.align_bytes = align_bytes
        self.chunk_bytes = _round_up(chunk_bytes, align_bytes)
        self.meter = TierMeter("ssd")
        self._fds: dict[Path, tuple[int, bool]] = {}  # path -> (fd, O_DIRECT in use)
        self._stale: list[int] = []  # descriptors replaced after an O_DIRECT fallback
        self._lock = threading.Lock()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._span_pool: Optional[ThreadPoolExecutor] = None

    # ---- lifecycle ------------------------------------------------------------------------
    def open(self) -> SSDReader:
        if self._pool is not None:
            raise RuntimeError("SSDReader is already open")
        try:
            for e in self.store.manifest.files:
                path = self.store.path / e.name
                self._fds[path] = self._open_fd(path, self.direct is not False)
        except BaseException:
            self._close_fds()
            raise
        self._pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix="ssd-io")
        if self.span_threads > 1:  # a separate pool: ssd-io tasks wait on it, never the reverse
            self._span_pool = ThreadPoolExecutor(self.span_threads, thread_name_prefix="ssd-span")
        return self

    def close(self) -> None:
        for pool in (self._pool, self._span_pool):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self._pool = self._span_pool = None
        self._close_fds()

    def __enter__(self) -> SSDReader:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> TierStats:
        return self.meter.stats()

    def uses_direct_io(self, path: Path) -> bool:
        return self._fds[path][1]

    # ---- reads ------------------------------------------------------------------------------
    def read_layer(self, layer: int, precision: Precision) -> Tensor:
        """All records of a layer at ``precision``: (d_ff, record_bytes) uint8."""
        rb = self.store.record_bytes(precision)
        buf = self._read(self.store.ffn_path(layer, precision), 0,
                         self.store.layer_bytes(precision), parallel=True)
        return torch.from_numpy(buf.reshape(-1, rb))

    def read_records(self, layer: int, precision: Precision, ids: np.ndarray) -> Tensor:
        """Records ``ids`` of a layer, in the order given: (len(ids), record_bytes) uint8."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        rb, d_ff = self.store.record_bytes(precision), self.store.manifest.d_ff
        if len(ids) and (ids.min() < 0 or ids.max() >= d_ff):
            raise IndexError(f"neuron ids must be in [0, {d_ff}), got {ids.min()}..{ids.max()}")
        uniq, inverse = np.unique(ids, return_inverse=True)
        runs = np.split(uniq, np.flatnonzero(np.diff(uniq) != 1) + 1) if len(uniq) else []
        path = self.store.ffn_path(layer, precision)
        spans = self._coalesce([(int(r[0]) * rb, int(r[-1] + 1) * rb) for r in runs])
        bufs = self._map(lambda sp: self._read(path, sp[0], sp[1] - sp[0]), spans)
        # numpy copies: single-threaded memcpy (torch would wake its OpenMP pool per copy)
        out = np.empty((len(uniq), rb), dtype=np.uint8)
        row = 0
        for (start, _, members), buf in zip(spans, bufs):
            for lo, hi in members:  # runs inside this span: contiguous bytes
                n = (hi - lo) // rb
                out[row:row + n] = buf[lo - start:hi - start].reshape(n, rb)
                row += n
        if not (len(uniq) == len(ids) and np.array_equal(uniq, ids)):
            out = out[inverse.reshape(-1)]
        return torch.from_numpy(out)

    def read_dense(self, layer: Optional[int]) -> dict[str, Tensor]:
        """The dense tensors of a layer (or the global ones), read from disk."""
        path = self.store.dense_path(layer)
        return load_safetensors(self._read(path, 0, path.stat().st_size, parallel=True).tobytes())

    def read_range(self, path: Path, offset: int, nbytes: int) -> np.ndarray:
        """Bytes [offset, offset + nbytes) of one of the store's files, as one request (the
        profiler times these at several sizes and queue depths)."""
        return self._read(Path(path), offset, nbytes)

    def submit_layer(self, layer: int, precision: Precision) -> Future[Tensor]:
        return self._submit(self.read_layer, layer, precision)

    def submit_records(self, layer: int, precision: Precision,
                       ids: np.ndarray) -> Future[Tensor]:
        return self._submit(self.read_records, layer, precision, ids)

    def submit_dense(self, layer: Optional[int]) -> Future[dict[str, Tensor]]:
        return self._submit(self.read_dense, layer)

    def release(self, blocks: list) -> Future[None]:
        """Let go of ``blocks`` (tensors this reader read) on an I/O thread: unmapping a layer's
        buffers takes ~0.5 ms, which the thread that computes should not pay. The caller must
        keep no other reference; the list is emptied there."""
        return self._submit(blocks.clear)

    # ---- internals --------------------------------------------------------------------------
    def _submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        if self._pool is None:
            raise RuntimeError("SSDReader is not open (use `with SSDReader(store) as ssd:`)")
        return self._pool.submit(fn, *args)

    def _coalesce(self, ranges: list[tuple[int, int]]) -> list[tuple[int, int, list]]:
        """Sorted byte ranges -> read spans (start, stop, member ranges); spans whose aligned
        extents touch are merged, so no device block is read twice."""
        a, spans = self.align_bytes, []
        for lo, hi in ranges:
            if spans and _round_down(lo, a) <= _round_up(spans[-1][1], a):
                spans[-1][1] = hi
                spans[-1][2].append((lo, hi))
            else:
                spans.append([lo, hi, [(lo, hi)]])
        return [(s[0], s[1], s[2]) for s in spans]

    def _map(self, fn: Callable[[Any], np.ndarray], spans: list) -> list[np.ndarray]:
        """Read several spans at once on the span threads (queue depth > 1)."""
        if self._span_pool is None or len(spans) < 2:
            return [fn(sp) for sp in spans]
        return list(self._span_pool.map(fn, spans))

    def _read(self, path: Path, offset: int, nbytes: int, parallel: bool = False) -> np.ndarray:
        """Bytes [offset, offset + nbytes) of ``path`` as a 1-D uint8 array.

        ``parallel`` splits the read over the span threads; never set it on a span thread."""
        if self._pool is None:
            raise RuntimeError("SSDReader is not open (use `with SSDReader(store) as ssd:`)")
        fd, direct = self._fds[path]
        if direct:
            try:
                return self._read_direct(path, fd, offset, nbytes, parallel)
            except OSError as err:
                if err.errno != errno.EINVAL:
                    raise
                fd = self._fall_back(path, fd)
        return self._read_buffered(path, fd, offset, nbytes, parallel)

    def _read_direct(self, path: Path, fd: int, offset: int, nbytes: int,
                     parallel: bool) -> np.ndarray:
        a = self.align_bytes
        start, stop = _round_down(offset, a), _round_up(offset + nbytes, a)
        # private anonymous mmap: page-aligned, plain process memory (a shared one is shmem)
        buf = mmap.mmap(-1, max(stop - start, a), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.meter.reserve(len(buf))
        try:
            calls = self._fill(path, fd, memoryview(buf)[:stop - start], start,
                               offset + nbytes - start, parallel)
        finally:
            self.meter.release(len(buf))
        self.meter.moved(nbytes, num_reads=calls, io_bytes=stop - start)  # whole blocks
        skip = offset - start
        return np.frombuffer(buf, dtype=np.uint8)[skip:skip + nbytes]

    def _read_buffered(self, path: Path, fd: int, offset: int, nbytes: int,
                       parallel: bool) -> np.ndarray:
        buf = bytearray(max(nbytes, 1))
        self.meter.reserve(len(buf))
        try:
            calls = self._fill(path, fd, memoryview(buf)[:nbytes], offset, nbytes, parallel)
            os.posix_fadvise(fd, offset, nbytes, os.POSIX_FADV_DONTNEED)
        finally:
            self.meter.release(len(buf))
        self.meter.moved(nbytes, num_reads=calls)
        return np.frombuffer(buf, dtype=np.uint8)[:nbytes]

    def _fill(self, path: Path, fd: int, view: memoryview, offset: int, need: int,
              parallel: bool) -> int:
        """``_preadv_all``, split into ``chunk_bytes`` pieces on the span threads if parallel."""
        chunk = self.chunk_bytes
        if not parallel or self._span_pool is None or need <= chunk:
            return self._preadv_all(path, fd, view, offset, need)
        futs = [self._span_pool.submit(self._preadv_all, path, fd, view[lo:lo + chunk],
                                       offset + lo, min(lo + chunk, need) - lo)
                for lo in range(0, need, chunk)]
        return sum(f.result() for f in futs)

    @staticmethod
    def _preadv_all(path: Path, fd: int, view: memoryview, offset: int, need: int) -> int:
        """Read into ``view`` from ``offset`` until ``need`` bytes are in; returns syscalls.

        The aligned tail past ``need`` may stay unread (end of file)."""
        done = calls = 0
        while done < need:
            n = os.preadv(fd, [view[done:done + _MAX_SYSCALL_BYTES]], offset + done)
            calls += 1
            if n == 0:
                raise StoreError(f"{path}: short read at byte {offset + done} (file truncated?)")
            done += n
        return calls

    def _open_fd(self, path: Path, direct: bool) -> tuple[int, bool]:
        if direct:
            try:
                return os.open(path, os.O_RDONLY | os.O_DIRECT), True
            except OSError as err:
                if err.errno != errno.EINVAL or self.direct:
                    raise
        return os.open(path, os.O_RDONLY), False

    def _fall_back(self, path: Path, fd: int) -> int:
        """O_DIRECT read failed with EINVAL: switch this file to buffered reads."""
        if self.direct:
            raise StoreError(f"{path}: O_DIRECT reads are not supported here (direct=True)")
        with self._lock:
            cur, direct = self._fds[path]
            if direct:  # first thread to get here swaps the descriptor; the old one stays open
                self._fds[path] = (os.open(path, os.O_RDONLY), False)  # until close()
                self._stale.append(cur)
            return self._fds[path][0]

    def _close_fds(self) -> None:
        for fd, _ in self._fds.values():
            os.close(fd)
        for fd in self._stale:
            os.close(fd)
        self._fds.clear()
        self._stale.clear()
