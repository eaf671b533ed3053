"""Timed measurements of this machine for the profiler (``real/profile.py``).

Two kinds. *Rates*: GEMV (bytes/s), GEMM (FLOP/s), memcpy and host->device copies, O_DIRECT SSD
reads at several request sizes and queue depths, and whole-layer reads as the preloader issues
them. *The real backend's own ops at the model's shapes*: a synthetic decode over a randomly
initialized model of ``L`` layers that runs, per layer, the attention step (``Block``'s norms,
attention, residual), the evictions and loads of the device neuron cache from a DRAM table,
and the sparse FFN over the cache's slot pools (``sparse_ffn``, as ``RealExecutor`` feeds it),
then the LM head per token -- each op timed on its own, with the model's whole working set
cycling through the caches as in a real decode. Every function returns rows for
``m2sim.calibrate.Measurements``; medians are taken there.
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from m2sim.specs import ModelConfig, QuantConfig
from m2sim.types import BANDS, Precision
from real.bundle import decode, encode, quantize_bundles
from real.device_cache import DeviceNeuronCache
from real.dram import DRAMCache
from real.model import FFNPart, LlamaArgs, Transformer, _Pass, rope_cos_sin, sparse_ffn
from real.ssd import SSDReader
from real.store import Store


def syncer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def timed(fn: Callable[[], object], sync: Callable[[], None], *, repeats: int,
          warmup: int = 2) -> float:
    """Median seconds of ``fn()`` (synchronized) over ``repeats`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    sync()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


# ---- rates ----------------------------------------------------------------------------------

def gemv_rows(d: int, dtype: torch.dtype, device: torch.device, sizes_bytes: Sequence[int],
              repeats: int) -> list[tuple[int, float]]:
    """x (1, d) @ W.T for weights of each size, cycling over copies beyond the LLC."""
    sync, out = syncer(device), []
    esz = torch.empty(0, dtype=dtype).element_size()
    for nbytes in sizes_bytes:
        n = max(1, nbytes // (d * esz))
        copies = max(1, (512 << 20) // (n * d * esz))
        ws = [torch.randn(n, d, device=device).to(dtype) for _ in range(min(copies, 64))]
        x = torch.randn(1, d, device=device).to(dtype)
        it = iter(range(1 << 30))
        out.append((n * d * esz, timed(lambda ws=ws, it=it, x=x: F.linear(x, ws[next(it) % len(ws)]),
                                       sync, repeats=repeats)))
        del ws
    return out


def gemm_rows(d: int, tokens: int, dtype: torch.dtype, device: torch.device,
              repeats: int) -> list[tuple[float, float]]:
    sync = syncer(device)
    x = torch.randn(tokens, d, device=device).to(dtype)
    w = torch.randn(4 * d, d, device=device).to(dtype)
    return [(2.0 * tokens * d * 4 * d, timed(lambda: F.linear(x, w), sync, repeats=repeats))]


def memcpy_rows(sizes_bytes: Sequence[int], repeats: int) -> list[tuple[int, float]]:
    out = []
    for n in sizes_bytes:
        src = torch.randint(0, 255, (n,), dtype=torch.uint8)
        dst = torch.empty(n, dtype=torch.uint8)
        out.append((n, timed(lambda d=dst, s=src: d.copy_(s), lambda: None, repeats=repeats)))
    return out


def h2d_rows(device: torch.device, sizes_bytes: Sequence[int],
             repeats: int) -> list[tuple[int, float]]:
    """Pinned host -> device copies (CUDA only)."""
    sync, out = syncer(device), []
    for n in sizes_bytes:
        src = torch.empty(n, dtype=torch.uint8, pin_memory=True)
        dst = torch.empty(n, dtype=torch.uint8, device=device)
        out.append((n, timed(lambda d=dst, s=src: d.copy_(s, non_blocking=True), sync,
                             repeats=repeats)))
    return out


# ---- SSD ------------------------------------------------------------------------------------

def ssd_qd_rows(reader: SSDReader, store: Store, *, sizes: Sequence[int],
                depths: Sequence[int], requests: int, seed: int = 0
                ) -> list[tuple[int, int, int, float]]:
    """Batches of ``requests`` random aligned reads of each size, issued ``qd`` at a time."""
    rng = random.Random(seed)
    files = [(store.path / e.name, e.nbytes) for e in store.manifest.files
             if e.name.startswith("ffn_")]
    out = []
    for size in sizes:
        spans = [(p, n) for p, n in files if n >= size]
        if not spans:
            continue
        for qd in depths:
            reqs = []
            for _ in range(requests):
                path, n = rng.choice(spans)
                reqs.append((path, rng.randrange(0, max(1, (n - size) // 4096 + 1)) * 4096))
            with ThreadPoolExecutor(qd) as pool:
                t0 = time.perf_counter()
                list(pool.map(lambda r, n=size: reader.read_range(r[0], r[1], n), reqs))
                out.append((qd, size, requests, time.perf_counter() - t0))
    return out


def ssd_layer_rows(reader: SSDReader, store: Store, num_layers: int,
                   precision_sets: Sequence[Sequence[Precision]], rounds: int,
                   one_at_a_time: bool = False) -> list[tuple[int, float]]:
    """Whole layers read as the preloader reads them (every precision of a set at once, on the
    reader's I/O threads), ``num_layers`` queued back to back as a preloader running ahead
    keeps them, or with ``one_at_a_time`` each waited for before the next is asked for (a
    demand read): (bytes of one layer, seconds per layer)."""
    out = []
    for _ in range(rounds):
        for precisions in precision_sets:
            nbytes = 0
            t0 = time.perf_counter()
            if one_at_a_time:
                for layer in range(num_layers):
                    nbytes += sum(f.result().numel() for f in
                                  [reader.submit_layer(layer, p) for p in precisions])
            else:
                futs = [reader.submit_layer(layer, p) for layer in range(num_layers)
                        for p in precisions]
                nbytes = sum(f.result().numel() for f in futs)
            out.append((nbytes // num_layers, (time.perf_counter() - t0) / num_layers))
    return out


class BackgroundReads:
    """Context manager: the SSD reader reads whole layers (every stored precision, ``ahead``
    layers in flight, back to back, as a preloader running ahead does) on its I/O threads
    while the body runs; ``nbytes`` and ``wall_s`` say how much it read in how long, and
    ``bytes_within`` how much of it completed in a part of that time."""

    def __init__(self, reader: SSDReader, store: Store, num_layers: int, ahead: int = 2):
        self.reader, self.store, self.ahead = reader, store, ahead
        self.jobs = [(layer, p) for layer in range(num_layers) for p in store.manifest.precisions]
        self.nbytes, self.wall_s = 0, 0.0
        self.done: list[tuple[float, int]] = []  # (time.perf_counter() at completion, bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        width = self.ahead * len(self.store.manifest.precisions)
        inflight: deque = deque()
        k = 0
        while not self._stop.is_set():
            while len(inflight) < width:
                inflight.append(self.reader.submit_layer(*self.jobs[k % len(self.jobs)]))
                k += 1
            n = inflight.popleft().result().numel()
            self.nbytes += n
            self.done.append((time.perf_counter(), n))
        for f in inflight:
            f.result()

    def bytes_within(self, start_s: float, end_s: float) -> int:
        """Bytes of the reads that completed between two ``time.perf_counter()`` readings."""
        return sum(n for t, n in self.done if start_s <= t <= end_s)

    def __enter__(self) -> BackgroundReads:
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.wall_s = time.perf_counter() - self._t0
        self._stop.set()
        self._thread.join()


# ---- the backend's ops in a synthetic decode -------------------------------------------------

@dataclass(frozen=True)
class DecodeRows:
    attention: list = field(default_factory=list)  # (tokens, context, s)
    ffn: list = field(default_factory=list)  # (tokens, ids fp16, ids int8, ids int4, s)
    lm_head: list = field(default_factory=list)  # s
    load: list = field(default_factory=list)  # (band, ids, s) into the cache unit
    evict: list = field(default_factory=list)  # (band, ids, s)
    link: list = field(default_factory=list)  # (band, ids, s) copied to scratch (streaming)
    gather: list = field(default_factory=list)  # (band, ids, s) rows out of the unit


def llama_args(m: ModelConfig) -> LlamaArgs:
    return LlamaArgs(d_model=m.d_model, n_layers=m.num_layers, n_heads=m.num_heads,
                     n_kv_heads=m.num_kv_heads, head_dim=m.head_size, d_ff=m.d_ff,
                     vocab_size=m.vocab_size, norm_eps=m.norm_eps, rope_theta=m.rope_theta,
                     tie_embeddings=m.tie_embeddings, activation=m.activation.value,
                     max_context=m.max_context)


def _random_model(args: LlamaArgs, dtype: torch.dtype, device: torch.device) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(args)
    for block in model.layers:  # the tiers hold the FFN
        for lin in (block.feed_forward.w_gate, block.feed_forward.w_up, block.feed_forward.w_down):
            lin.weight = torch.nn.Parameter(torch.empty(0), requires_grad=False)
    with torch.no_grad():
        for p in model.parameters():
            if p.numel():
                p.normal_(0.0, 0.02)
    return model.to(device=device, dtype=dtype).eval()


def _layer_records(m: ModelConfig, quant: QuantConfig, seed: int) -> dict[Precision, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = [torch.randn(m.d_ff, m.d_model, generator=g) * 0.02 for _ in range(2)]
    down = torch.randn(m.d_model, m.d_ff, generator=g) * 0.02
    gate = w[0] if m.ffn_mats == 3 else None
    return {p: encode(quantize_bundles(gate, w[1], down, p, quant)) for p in BANDS}


def decode_rows(m: ModelConfig, quant: QuantConfig, *, dtype: torch.dtype, device: torch.device,
                combos: Sequence[tuple[int, int, int]], load_ids: Sequence[int],
                tokens: int, prompt_tokens: int, seed: int = 0) -> DecodeRows:
    """Time the backend's ops over ``tokens`` synthetic decode steps (after a warm-up step).

    Layer ``l`` holds ``combos[l % len(combos)]`` neurons per band (FP16, INT8, INT4) in its
    slot pools and, each step, evicts and reloads ``load_ids[(l + step) % len]`` of each band
    from its DRAM table (a whole layer, as the DRAM cache holds it)."""
    args, sync = llama_args(m), syncer(device)
    model = _random_model(args, dtype, device)
    L, rng = m.num_layers, np.random.default_rng(seed)
    base = _layer_records(m, quant, seed)
    dram = DRAMCache(None)
    for layer in range(L):  # distinct copies: every layer's table is its own memory
        dram.put_layer(layer, {p: t.clone() for p, t in base.items()})
    slots = [combos[layer % len(combos)] for layer in range(L)]
    dev = DeviceNeuronCache(d_model=m.d_model, ffn_mats=m.ffn_mats, quant=quant, slots=slots,
                            capacity_bytes=None, device=device)
    rows = DecodeRows()
    with dev, torch.inference_mode():
        for layer in range(L):
            for b, p in enumerate(BANDS):
                if slots[layer][b]:
                    ids = np.sort(rng.choice(m.d_ff, slots[layer][b], replace=False))
                    table, r = dram.lookup_records(layer, p, ids)
                    dev.load(layer, p, ids, table, rows=r)
        cache = model.new_cache(max_len=prompt_tokens + tokens + 2)
        for step in range(tokens + 1):
            keep = step > 0  # step 0 warms up
            ctx = prompt_tokens + step
            _decode_step(model, dram, dev, cache, ctx, step, load_ids, rng, sync,
                         rows if keep else DecodeRows())
    return rows


def _decode_step(model: Transformer, dram: DRAMCache, dev: DeviceNeuronCache, cache, ctx: int,
                 step: int, load_ids, rng, sync, rows: DecodeRows) -> None:
    device = model.tok_embeddings.weight.device
    t0 = time.perf_counter()
    x = model.tok_embeddings(torch.tensor([[step % model.args.vocab_size]], device=device))
    cos, sin = rope_cos_sin(ctx, 1, model.args.head_dim, model.args.rope_theta, device)
    p = _Pass(cache, ctx, cos, sin, None, None, None)
    sync()
    head_s = time.perf_counter() - t0
    for layer, block in enumerate(model.layers):
        t0 = time.perf_counter()
        h = x + block.attention(block.attention_norm(x), layer, p)
        hn = block.ffn_norm(h)
        sync()
        rows.attention.append((1, ctx + 1, time.perf_counter() - t0))
        n = load_ids[(layer + step) % len(load_ids)]
        for p_ in BANDS:
            have = dev.num_resident(layer, p_)
            if not have:
                continue
            k = min(n, have)
            ids = np.sort(rng.choice(dev.resident_ids(layer, p_), k, replace=False))
            t0 = time.perf_counter()
            dev.evict(layer, p_, ids)
            sync()
            rows.evict.append((BANDS.index(p_), k, time.perf_counter() - t0))
            b = BANDS.index(p_)
            t0 = time.perf_counter()
            table, r = dram.lookup_records(layer, p_, ids)
            dev.load(layer, p_, ids, table, rows=r)
            sync()
            rows.load.append((b, k, time.perf_counter() - t0))
            t0 = time.perf_counter()  # the same ids to scratch, as streaming loads them
            table, r = dram.lookup_records(layer, p_, ids)
            scratch = table.index_select(0, torch.from_numpy(r)).to(device)
            decode(scratch, model.args.d_model, dev.ffn_mats, p_, dev.quant)
            sync()
            rows.link.append((b, k, time.perf_counter() - t0))
            sub = np.sort(rng.choice(dev.resident_ids(layer, p_), k, replace=False))
            t0 = time.perf_counter()  # rows out of the unit, as an LRU unit's FFN reads them
            dev.gather(layer, p_, sub)
            sync()
            rows.gather.append((b, k, time.perf_counter() - t0))
        t0 = time.perf_counter()
        parts = [FFNPart(gate=b.gate, up=b.up, down=b.down) for b in dev.active(layer).values()]
        x = h + sparse_ffn(hn, parts, block.feed_forward.act)
        sync()
        counts = tuple(dev.num_resident(layer, q) for q in BANDS)
        rows.ffn.append((1, *counts, time.perf_counter() - t0))
    t0 = time.perf_counter()
    logits = F.linear(model.norm(x), model.tok_embeddings.weight if model.output is None
                      else model.output.weight)
    int(logits[0, -1].argmax())
    rows.lm_head.append(head_s + time.perf_counter() - t0)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
